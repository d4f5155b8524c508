"""The adaptive VT-EXSY protocol end to end on the simulated station: stop reasons, the journal's decisions,
the datasets it leaves, and kill-and-resume making the same acquisitions as an uninterrupted run.

Small acquisitions (2 scans x 8 increments) on three temperatures keep each run to a few seconds;
kills come from tests/hooked_exsylab.py at a journal event or a virtual time, never a real-time guess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from acquisition.api import start_run
from acquisition.journal import Journal
from analysis.api import analyze_series
from protocols import InputError, load_plan
from protocols.adaptive_step import AdaptiveExsy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vt-exsy-adaptive.yaml"
HOOKED = [sys.executable, str(ROOT / "tests" / "hooked_exsylab.py")]
EXE = [sys.executable, "-m", "acquisition.cli"]
SITES = [2.31, 1.29, -4.56]
NAMES = ["Li2S", "LPSC", "LiI"]


def _station(tmp_path: Path) -> Path:
    """The simulated station with a sample that exchanges within a second and relaxes in a few (small 2Ds see it)."""
    station = yaml.safe_load((ROOT / "examples" / "station-sim.yaml").read_text())
    station["spectrometer"]["sample"] = {
        "sites": [{"name": "Li2S", "shift": 2.31, "population": 0.5, "linewidth": "30 Hz", "t1": "2 s"},
                  {"name": "LPSC", "shift": 1.29, "population": 0.35, "linewidth": "30 Hz", "t1": "1.5 s"},
                  {"name": "LiI", "shift": -4.56, "population": 0.15, "linewidth": "30 Hz", "t1": "2 s"}],
        "exchange": [{"sites": ["Li2S", "LPSC"], "k0": 20.0, "ea": 0.107},
                     {"sites": ["Li2S", "LiI"], "k0": 150.0, "ea": 0.142},
                     {"sites": ["LPSC", "LiI"], "k0": 40.0, "ea": 0.117}]}
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(station))
    return path


def _protocol(tmp_path: Path, *, target: dict, extra_h: float = 1.0, name: str = "adaptive.yaml") -> Path:
    """The example with three temperatures and small 2Ds; budget = the seeds' planned time + extra_h."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(temperatures=["20 degC", "60 degC", "100 degC"], target=target,
                mixing_times={"min": "10 ms", "max": "5 s", "candidates": 7},
                equilibration={"tolerance": "0.5 K", "hold": "1 min", "timeout": "60 min"})
    data["acquisition"].update(ns=4, ds=0, td1=16, td2=512, d1="5 s")
    data["budget"] = "100 h"
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    step = load_plan([path], _station(tmp_path))[0].steps[0]
    assert isinstance(step, AdaptiveExsy)
    seeds_s, at_k = 0.0, step.start_k
    for temperature_k, mixing_time_s in step.seed_points():
        seeds_s += step.move_s(at_k, temperature_k) + step.acquisition_s(mixing_time_s)
        at_k = temperature_k
    data["budget"] = f"{(seeds_s / 3600 + extra_h):.4f} h"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _decisions(run_dir: Path) -> list[dict]:
    journal = Journal(run_dir / "journal.sqlite")
    try:
        return [e["detail"] for e in journal.events(limit=1_000_000) if e["status"] == "adaptive_decision"]
    finally:
        journal.close()


def _done_points(run_dir: Path) -> list[tuple[int, float, float]]:
    """(point, temperature, mixing time) of every complete dataset, sorted."""
    journal = Journal(run_dir / "journal.sqlite")
    try:
        return sorted((d["params"]["point"], round(d["temperature_k"], 2), d["params"]["mixing_time_s"])
                      for d in journal.datasets() if d["status"] == "done")
    finally:
        journal.close()


def _choices(decisions: list[dict]) -> list[tuple]:
    return [(d["decision"], d["action"], d.get("temperature_k"), d.get("mixing_time_s"), d.get("stop_reason"))
            for d in decisions]


def test_budget_spent_run_records_every_decision_and_leaves_an_analysable_series(tmp_path: Path) -> None:
    protocol = _protocol(tmp_path, target={"ea_stderr": 0.0001}, extra_h=1.5)
    folder, result = start_run([protocol], _station(tmp_path), tmp_path / "run", show_progress=False)
    assert result.ok, result.lanes
    step = Journal(folder.journal).steps()[0]
    assert step.outcome["stop_reason"] == "budget spent"
    assert step.outcome["hours_used"] <= step.outcome["budget_h"] + 1e-9
    candidates = load_plan([protocol], _station(tmp_path))[0].steps[0].candidate_mixing_times_s  # type: ignore[attr-defined]
    decisions = _decisions(folder.root)
    assert [d["reason"] for d in decisions[:9]] == ["seed"] * 9  # three seeds at each of three temperatures
    design = [d for d in decisions if d["reason"] == "design"]
    assert design, "the budget left room for design points"
    for d in design:  # each choice carries the criterion and the fit it came from
        assert d["gain_per_h"] > 0 and d["objective_after"] < d["objective"]
        assert set(d["stderr"]) == {"Li2S-LPSC", "Li2S-LiI", "LPSC-LiI"}
        assert len(d["fit"]) == 3 and d["mixing_time_s"] in candidates
    assert decisions[-1]["action"] == "stop" and decisions[-1]["stop_reason"] == "budget spent"
    points = _done_points(folder.root)
    assert [p[0] for p in points] == list(range(len(decisions) - 1))  # one complete dataset per decided point
    # the datasets are ordinary EXSY points: the series analysis reads them from datasets.json
    analysis = analyze_series(folder.root, SITES, NAMES, t1_from_run=False)
    assert len(analysis["points"]) == len(points) and len(analysis["arrhenius"]) == 3
    report = (folder.root / "report.md").read_text()
    assert "## Adaptive EXSY" in report and "budget spent" in report
    assert report.count("| design |") == len(design)


@pytest.mark.parametrize("target, quantities", [({"ea_stderr": 0.5}, 3), ({"rate_relative_stderr": 0.9}, 9)],
                         ids=["ea", "rates"])
def test_reachable_target_stops_once_met(tmp_path: Path, target: dict, quantities: int) -> None:
    protocol = _protocol(tmp_path, target=target, extra_h=5.0)
    folder, result = start_run([protocol], _station(tmp_path), tmp_path / "run", show_progress=False)
    assert result.ok, result.lanes
    decisions = _decisions(folder.root)
    assert decisions[-1]["stop_reason"] == "target met"
    assert len(decisions) == 10  # nine seeds and the stop: the first fit meets so loose a target
    stderr = decisions[-1]["stderr"]  # every pair's Ea, or every pair's rate at each of three temperatures
    assert len(stderr) == quantities and all(v <= next(iter(target.values())) for v in stderr.values())


def test_budget_below_the_seed_points_is_refused(tmp_path: Path) -> None:
    protocol = _protocol(tmp_path, target={"ea_stderr": 0.01})
    data = yaml.safe_load(protocol.read_text())
    data["budget"] = "1 h"
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(InputError, match="budget.*seed points"):
        load_plan([protocol], _station(tmp_path))


def _hooked_then_resumed(protocol: Path, hook: dict, run_dir: Path) -> Path:
    """Run with the kill hook, check it was killed, resume to the end."""
    env = {**os.environ, "EXSYLAB_TEST_HOOK": json.dumps(hook)}
    proc = subprocess.run([*HOOKED, "run", str(protocol), "--station", str(protocol.parent / "station.yaml"), "--run-dir", str(run_dir), "--quiet"], env=env,
                          cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # killed where the hook said
    resumed = subprocess.run([*EXE, "resume", str(run_dir), "--quiet"], cwd=ROOT, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    return run_dir


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(protocol, run folder) of an uninterrupted run, the reference both kill tests compare with."""
    tmp_path = tmp_path_factory.mktemp("straight")
    protocol = _protocol(tmp_path, target={"ea_stderr": 0.0001}, extra_h=1.5)
    run_dir = tmp_path / "straight"
    straight = subprocess.run([*EXE, "run", str(protocol), "--station", str(tmp_path / "station.yaml"), "--run-dir",
                               str(run_dir), "--quiet"], cwd=ROOT, capture_output=True, timeout=300)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    return protocol, run_dir


@pytest.mark.parametrize("hook", [
    {"after_event": "adaptive_decision", "count": 11},  # the second design decision is written, not yet acquired
    {"step_running": 0, "after_virtual_s": 2.1 * 3600.0},  # in the middle of a design point's acquisition
], ids=["after-a-decision", "mid-acquisition"])
def test_kill_and_resume_makes_the_same_acquisitions(tmp_path: Path, hook: dict,
                                                     straight_run: tuple[Path, Path]) -> None:
    protocol, straight = straight_run
    resumed = _hooked_then_resumed(protocol, hook, tmp_path / "killed")
    reference = _choices(_decisions(straight))
    assert any(c[1] == "acquire" for c in reference[9:])  # design points were made
    assert _choices(_decisions(resumed)) == reference  # no decision taken twice, none taken differently
    assert _done_points(resumed) == _done_points(straight)  # no point acquired twice
    journal = Journal(resumed / "journal.sqlite")
    try:
        steps = journal.steps()
        datasets = journal.datasets()
        started = [e["detail"]["expno"] for e in journal.events(limit=1_000_000) if e["status"] == "progress"]
    finally:
        journal.close()
    assert steps[0].status == "done" and steps[0].outcome["stop_reason"] == "budget spent"
    assert all(d["status"] == "done" for d in datasets) and len({d["expno"] for d in datasets}) == len(datasets)
    if "step_running" in hook:  # the kill cut an acquisition short: that one point was started again, once
        assert len(started) == len(set(started)) + 1
    else:  # the kill came between points: every acquisition ran once
        assert len(started) == len(set(started))


def test_bad_target_is_one_line_and_exit_2(tmp_path: Path) -> None:
    protocol = _protocol(tmp_path, target={"ea_stderr": 0.01})
    data = yaml.safe_load(protocol.read_text())
    data["target"] = {"ea_stderr": 0.01, "rate_relative_stderr": 0.05}
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run([*EXE, "plan", str(protocol)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "target" in lines[0] and "exactly one" in lines[0] and "Traceback" not in proc.stderr


def test_an_expno_the_run_may_use_that_holds_data_is_refused_before_anything_moves(tmp_path: Path) -> None:
    from acquisition.api import _refuse_collisions

    protocol = _protocol(tmp_path, target={"ea_stderr": 0.01})
    plan, station = load_plan([protocol], tmp_path / "station.yaml")
    root = tmp_path / "run"
    _, data_dir = station.spectrometer.folders(root)  # type: ignore[union-attr]
    old = data_dir / "Li2S_LiI_LPSC_adaptive" / "150"  # point 50's expno: beyond the seeds, within max_points
    old.mkdir(parents=True)
    (old / "ser").write_bytes(b"\1" * 1024)
    (old / "acqus").write_text("##END=\n")
    with pytest.raises(InputError, match="refusing to overwrite.*150"):
        _refuse_collisions(root, plan, station, started=set())
    _refuse_collisions(root, plan, station, started={0})  # once the step has started, its own data are expected


def test_pause_holds_between_points_and_resume_continues(tmp_path: Path, straight_run: tuple[Path, Path]) -> None:
    protocol, straight = straight_run
    run_dir = tmp_path / "paused"
    env = {**os.environ, "EXSYLAB_TEST_HOOK": json.dumps({"after_event": "adaptive_decision", "count": 11,
                                                          "action": "pause_cli"})}
    proc = subprocess.Popen([*HOOKED, "run", str(protocol), "--station", str(protocol.parent / "station.yaml"),
                             "--run-dir", str(run_dir), "--quiet"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240  # a bound on waiting for the run to reach its pause, not a race
        while not _paused_between_points(run_dir):
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not pause"
            time.sleep(0.2)
        assert len(_decisions(run_dir)) == 11  # held: nothing decided or acquired while paused
        assert subprocess.run([*EXE, "resume", str(run_dir)], cwd=ROOT, capture_output=True).returncode == 0
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert _choices(_decisions(run_dir)) == _choices(_decisions(straight))


def _paused_between_points(run_dir: Path) -> bool:
    if not (run_dir / "journal.sqlite").exists():
        return False
    journal = Journal(run_dir / "journal.sqlite")
    try:
        return any(e["status"] == "paused" and "adaptive" in e["detail"].get("reason", "")
                   for e in journal.events(limit=1_000_000))
    finally:
        journal.close()
