"""Whole runs on the built-in simulated station: real drivers over the pty, TCP and automation folder.

Covers the runner's promises: every point acquired once into a complete dataset, the plan's
estimate against the simulated duration, resume after SIGKILL at moments the test chooses (a
hook on the journal or the virtual clock, installed by tests/hooked_exsylab.py; never after a
real-time guess), control from another process, notifications.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nmrglue as ng
import numpy as np
import pytest
import yaml

from acquisition.api import run_status, start_run
from acquisition.bdf import find_cell_bdf, metadata_path, read_bdf
from acquisition.journal import Journal
from acquisition.nmr_lane import MARK_FILE
from drivers.bruker_params import dataset_complete, expno_has_data
from protocols import load_plan

DATA = Path(__file__).resolve().parent / "data"
SHORT = DATA / "exsy-short.yaml"
MEDIUM = DATA / "exsy-medium.yaml"
CYCLING = DATA / "cycling-short.yaml"
EXE = [sys.executable, "-m", "acquisition.cli"]
HOOKED = [sys.executable, str(Path(__file__).resolve().parent / "hooked_exsylab.py")]


def _hooked(args: list[str], hook: dict, **kwargs) -> subprocess.Popen:
    """exsylab with a kill (or Ctrl-C) hook at the point `hook` names (see tests/hooked_exsylab.py)."""
    env = {**os.environ, "EXSYLAB_TEST_HOOK": json.dumps(hook)}
    return subprocess.Popen([*HOOKED, *args], env=env, **kwargs)


def _grid(protocol: Path) -> set[tuple[float, float]]:
    plan, _ = load_plan([protocol])
    return {(s.temperature_k, s.mixing_time_s) for s in plan.steps if s.kind == "acquire_2d"}


def _assert_every_point_once(run_dir: Path, protocol: Path) -> None:
    datasets = json.loads((run_dir / "datasets.json").read_text())
    done = [d for d in datasets if d["status"] == "done"]
    assert all(d["kind"] == "acquire_2d" for d in done)
    points = [(d["temperature_k"], d["params"]["mixing_time_s"]) for d in done]
    assert sorted(points) == sorted(_grid(protocol)), "every grid point exactly once"
    for d in done:
        expno_dir = Path(d["path"])
        assert dataset_complete(expno_dir) and not (expno_dir / MARK_FILE).exists()
        dic, data = ng.bruker.read(str(expno_dir))
        assert dic["acqus"]["D"][8] == pytest.approx(d["params"]["mixing_time_s"])
        assert dic["acqus"]["TE"] == pytest.approx(d["temperature_k"], abs=1.0)  # status TE: measured by the VT
    used = {Path(d["path"]) for d in done}
    plan, _ = load_plan([protocol])
    # the templates a user set up by hand hold a test acquisition (the simulated TopSpin's do too)
    templates = {Path(done[0]["path"]).parent.parent / s.template.name / str(s.template.expno)
                 for s in plan.steps if s.kind == "acquire_2d"}
    for expno_dir in (Path(done[0]["path"]).parent).iterdir():
        if expno_dir in used or expno_dir in templates or not expno_has_data(expno_dir):
            continue
        assert (expno_dir / MARK_FILE).exists(), f"{expno_dir} holds data that is neither used nor marked"


def test_series_and_cycling_run_concurrently_and_match_the_plan(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    folder, result = start_run([SHORT, CYCLING], None, run_dir, show_progress=False)
    assert result.ok, result.lanes
    _assert_every_point_once(run_dir, SHORT)
    status = run_status(run_dir)
    assert status["steps"]["done"] == 14 and status["state"] == "done"
    plan = json.loads((run_dir / "plan.json").read_text())
    estimates = {s["index"]: s["estimate_s"] for s in plan["steps"]}
    nmr = [r for r in Journal(run_dir / "journal.sqlite").steps() if r.lane == "nmr"]
    acquisitions = [r for r in nmr if r.kind == "acquire_2d"]
    acquired_s = sum(r.ended_at - r.started_at for r in acquisitions)
    # acquisitions take their pulse-sequence time; the whole lane, VT settling included, is within 1 %
    assert acquired_s == pytest.approx(sum(estimates[r.index] for r in acquisitions), rel=0.002)
    lane_s = max(r.ended_at for r in nmr) - min(r.started_at for r in nmr)
    assert lane_s == pytest.approx(plan["lanes"]["nmr"], rel=0.01)
    bdf = find_cell_bdf(run_dir / "cycler", "test-cell")
    summary = (run_dir / "cycler" / "test-cell.cycles.csv").read_text().splitlines()
    assert bdf is not None and len(summary) == 3  # header + two cycles
    report = (run_dir / "report.md").read_text()
    assert "Nothing: every step finished" in report and "short_exsy/15" in report and "test-cell: 2 cycles" in report
    metadata = json.loads(metadata_path(bdf).read_text())
    columns = read_bdf(bdf)  # the station's VT ambient (293 K) and the cell's 2 MPa, on every row
    assert np.all(columns["Ambient Temperature / degC"] == pytest.approx(19.85))
    assert np.all(columns["Applied Pressure / Pa"] == 2e6) and metadata["applied_pressure_pa"] == 2e6
    assert "2450" in metadata["instrument"] and metadata["active_mass_g"] == pytest.approx(0.5e-3)
    assert metadata["protocol"] == "short-cycling" and metadata["area_cm2"] == pytest.approx(0.785)


def _hashes(data_dir: Path) -> dict[str, str]:
    out = {}
    for ser in data_dir.glob("*/*/ser"):
        if ser.stat().st_size:
            out[str(ser)] = hashlib.sha1(ser.read_bytes()).hexdigest()
    return out


def test_sigkill_at_chosen_moments_then_resume_acquires_every_point_once(tmp_path: Path) -> None:
    plan, _ = load_plan([MEDIUM])
    total_s = plan.total_estimate_s
    rng = random.Random(20261125)
    for trial in range(4):
        run_dir = tmp_path / f"run{trial}"
        seen: dict[str, str] = {}
        # the kill points: after a chosen number of committed journal transactions (between steps), or at a
        # chosen virtual time (mid-step, often mid-acquisition); the resume's kill comes before its work can end
        for kill, share in enumerate((0.6, 0.3)):
            if rng.random() < 0.3:
                hook = {"after_transitions": rng.randint(1, 4 if kill else len(plan.steps) // 2)}
            else:
                hook = {"at_virtual_s": rng.uniform(0.0, share * total_s)}
            args = (["run", str(MEDIUM), "--run-dir", str(run_dir)] if kill == 0 else ["resume", str(run_dir)])
            proc = _hooked([*args, "--quiet"], hook, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == -signal.SIGKILL, (hook, proc.returncode, err.decode()[-2000:])
            if (run_dir / "data").exists():
                now = _hashes(run_dir / "data")
                assert all(now.get(k) == v for k, v in seen.items()), "a dataset was overwritten"
                seen.update(now)
        proc = subprocess.Popen([*EXE, "resume", str(run_dir), "--quiet"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        final = _hashes(run_dir / "data")
        assert all(final.get(k) == v for k, v in seen.items()), "a dataset was overwritten"
        _assert_every_point_once(run_dir, MEDIUM)
        assert run_status(run_dir)["steps"]["running"] == 0
        report = (run_dir / "report.md").read_text()
        for d in json.loads((run_dir / "datasets.json").read_text()):
            if d["status"] == "partial":  # every interrupted acquisition is accounted for
                assert f"{d['name']}/{d['expno']} is **partial**" in report


def _poll(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _paused_at_a_safe_point(run_dir: Path) -> bool:
    """A lane journalled that it paused at a safe point, and no step started anywhere since.

    (In virtual time a paused lane holds the clock, so the other lanes stop where they are too.)
    """
    journal = Journal(run_dir / "journal.sqlite")
    try:
        events = journal.events(limit=1_000_000)
    finally:
        journal.close()
    pauses = [i for i, e in enumerate(events) if e["index"] is None and e["status"] == "paused"]
    return bool(pauses) and not any(e["status"] == "running" for e in events[pauses[0]:])


def test_pause_resume_and_stop_from_another_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    examples = Path(__file__).resolve().parents[1] / "examples"
    # `exsylab pause` from another process, run by the test's hook when step 3 starts (the run cannot end first)
    proc = _hooked(["run", str(examples / "vt-exsy-paper.yaml"), str(examples / "cycling-fixed-capacity.yaml"),
                    "--run-dir", str(run_dir), "--quiet"], {"step_running": 3, "action": "pause_cli"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _poll(lambda: (run_dir / "journal.sqlite").exists() and run_status(run_dir)["state"] == "paused", 60)
    assert _poll(lambda: _paused_at_a_safe_point(run_dir), 60)  # a lane pauses when its current step ends
    frozen = run_status(run_dir)["steps"]["done"]
    assert _paused_at_a_safe_point(run_dir), "a paused run made progress"
    assert subprocess.run([*EXE, "resume", str(run_dir)], capture_output=True).returncode == 0
    assert _poll(lambda: run_status(run_dir)["steps"]["done"] > frozen)
    assert subprocess.run([*EXE, "pause", str(run_dir)], capture_output=True).returncode == 0
    assert _poll(lambda: run_status(run_dir)["state"] == "paused")
    assert subprocess.run([*EXE, "stop", str(run_dir)], capture_output=True).returncode == 0
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"stopped" in err
    status = run_status(run_dir)
    assert status["steps"]["running"] == 0 and status["steps"]["pending"] > 0
    log = (run_dir / "logs" / "run.log").read_text()
    assert "holding safe set point" in log


def test_ctrl_c_once_pauses_twice_stops_safely(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # the first Ctrl-C comes from inside, when step 3 starts (the hooked lane waits until it is handled)
    proc = _hooked(["run", str(MEDIUM), str(CYCLING), "--run-dir", str(run_dir), "--quiet"],
                   {"step_running": 3, "action": "sigint"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _poll(lambda: (run_dir / "journal.sqlite").exists() and run_status(run_dir)["state"] == "paused", 60)
    assert _poll(lambda: _paused_at_a_safe_point(run_dir), 60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"Traceback" not in err
    log = (run_dir / "logs" / "run.log").read_text()
    assert "holding safe set point" in log
    assert run_status(run_dir)["steps"]["running"] == 0


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((json.loads(body), self.headers.get("Authorization", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_failure_and_completion_notifications_reach_a_webhook_without_leaking_the_token(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        station = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "station-sim.yaml").read_text())
        token = "s3cret-token-123"
        station["notifications"] = {"webhook_url": f"http://127.0.0.1:{server.server_port}/hook",
                                    "webhook_token": token, "command": [sys.executable, "-c",
                                    f"import sys; open({str(tmp_path / 'cmd.json')!r}, 'a').write(sys.stdin.read())"]}
        station_path = tmp_path / "station.yaml"
        station_path.write_text(yaml.safe_dump(station))
        run_dir = tmp_path / "run"
        _, result = start_run([SHORT], station_path, run_dir, show_progress=False)
        assert result.ok
        events = [body for body, _ in _Hook.received]
        assert events[-1]["event"] == "run done"
        assert all(auth == f"Bearer {token}" for _, auth in _Hook.received)
        assert "run done" in (tmp_path / "cmd.json").read_text()
        for path in run_dir.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".json", ".sqlite", ".yaml", ".sqlite-wal"):
                assert token.encode() not in path.read_bytes(), f"token leaked into {path}"
    finally:
        server.shutdown()


def test_a_relative_run_dir_records_absolute_paths_that_analysis_can_open(tmp_path: Path, monkeypatch) -> None:
    from analysis.api import analyze_series

    monkeypatch.chdir(tmp_path)
    _, result = start_run([SHORT], None, Path("runs") / "rel", show_progress=False)
    assert result.ok
    datasets = json.loads((tmp_path / "runs" / "rel" / "datasets.json").read_text())
    assert all(Path(d["path"]).is_absolute() for d in datasets)
    analysis = analyze_series(Path("runs") / "rel", sites=[2.31, 1.29, -4.56], names=["Li2S", "LPSC", "LiI"])
    assert len(analysis["points"]) == 6 and sorted(round(f["temperature_k"]) for f in analysis["fits"]) == [293, 313]  # measured TE


def test_a_cycler_step_killed_midway_continues_from_the_capacity_in_the_bdf_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    from acquisition.bdf import STEP_INDEX

    # killed 300 s of clock time into the second charge (300 mAh/g, about 2600 one-second samples)
    proc = _hooked(["run", str(DATA / "cycling-resume.yaml"), "--run-dir", str(run_dir), "--quiet"],
                   {"step_running": 2, "after_virtual_s": 300.0}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    bdf = find_cell_bdf(run_dir / "cycler", "test-cell")
    assert bdf is not None
    assert 250 < int((read_bdf(bdf)[STEP_INDEX] == 2).sum()) < 350
    resumed = subprocess.run([*EXE, "resume", str(run_dir), "--quiet"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = Journal(run_dir / "journal.sqlite").events(limit=1000)
    continued = [e for e in events if e["status"] == "resume_continue"]
    assert continued and continued[0]["index"] == 2 and continued[0]["detail"]["capacity_passed_ah"] > 0
    cols = read_bdf(bdf)
    assert np.all(np.diff(cols["Test Time / s"]) >= 0) and np.all(np.diff(cols["Unix Time / s"]) >= 0)
    rows = (run_dir / "cycler" / "test-cell.cycles.csv").read_text().splitlines()[1:]
    charges = [float(r.split(",")[1]) for r in rows]
    assert charges == [pytest.approx(200.0, rel=1e-3), pytest.approx(300.0, rel=1e-3)]


def test_a_planned_expno_holding_data_is_refused_before_any_instrument_is_opened(tmp_path: Path) -> None:
    data_dir = tmp_path / "topspin-data"
    existing = data_dir / "short_exsy" / "11"
    existing.mkdir(parents=True)
    (existing / "ser").write_bytes(b"\x01" * 4096)
    station = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "station-sim.yaml").read_text())
    station["spectrometer"]["data_dir"] = str(data_dir)
    station_path = tmp_path / "station.yaml"
    station_path.write_text(yaml.safe_dump(station))
    run = subprocess.run([*EXE, "run", str(SHORT), "--station", str(station_path), "--run-dir", str(tmp_path / "run"),
                          "--quiet"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "refusing to overwrite: short_exsy/11 already holds data" in run.stderr
    assert (existing / "ser").read_bytes() == b"\x01" * 4096
    assert not (data_dir / "short_exsy" / "10").exists()  # nothing was acquired, nothing was created
    assert "Traceback" not in run.stderr
