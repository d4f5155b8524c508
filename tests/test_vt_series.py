"""The VT series on the simulated station: 1D, T1 and EXSY at each temperature, EXSY D1 = 3 x fitted T1 (clamped).

The end-to-end test needs the simulator's 1D/T1 datasets and `TopSpinDriver.write_list` (helper S) and
`analysis.t1.fit_t1` (helper A); the D1 look-up tests run on a journal alone, with a stand-in fit.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import nmrglue as ng
import pytest
import yaml

from acquisition.api import start_run
from protocols import load_plan
from acquisition.control import Control
from acquisition.journal import Journal
from acquisition.nmr_lane import NmrLane
from acquisition.notify import Notifier
from acquisition.runner import StepContext
from drivers.clock import VirtualClock
from protocols.plan import D1Rule

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRUE_T1_S = {"Li2S": 0.9, "LPSC": 0.45, "LiI": 0.6}  # the simulated sample's T1 (no temperature dependence)


def _short_series(tmp_path: Path) -> Path:
    """examples/vt-series-paper.yaml shortened: two temperatures, few scans, two mixing times."""
    data = yaml.safe_load((EXAMPLES / "vt-series-paper.yaml").read_text())
    data["temperatures"] = ["20 degC", "40 degC"]
    data["equilibration"] = {"tolerance": "0.5 K", "hold": "1 min", "timeout": "60 min"}
    one_d, t1, exsy = (e[k] for e, k in zip(data["experiments"], ("spectrum_1d", "t1", "exsy")))
    one_d.update(ns=2, td=512)
    t1.update(ns=1, td=512, delays=["10 ms", "50 ms", "100 ms", "300 ms", "1 s", "2 s", "5 s"])
    exsy["mixing_times"] = ["10 ms", "100 ms"]
    exsy["acquisition"].update(ns=2, ds=0, td1=4, td2=256)
    path = tmp_path / "series.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _station(tmp_path: Path) -> Path:
    """The simulated station with a sample whose T1s differ from the default (shorter: D1 below the maximum)."""
    station = yaml.safe_load((EXAMPLES / "station-sim.yaml").read_text())
    shifts = {"Li2S": 2.31, "LPSC": 1.29, "LiI": -4.56}
    populations = {"Li2S": 0.5, "LPSC": 0.35, "LiI": 0.15}
    station["spectrometer"]["sample"] = {
        "sites": [{"name": n, "shift": shifts[n], "population": populations[n], "linewidth": "30 Hz",
                   "t1": f"{TRUE_T1_S[n]} s", "t1_ea": 0.0, "reference_temperature": "293.15 K"} for n in shifts],
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(station))
    return path


def test_exsy_d1_is_three_times_the_fitted_t1_at_each_temperature(tmp_path: Path) -> None:
    series, station = _short_series(tmp_path), _station(tmp_path)
    planned = {s.index: s for s in load_plan([series], station)[0].steps}
    folder, result = start_run([series], station, tmp_path / "run", show_progress=True)
    assert result.ok, result.lanes
    journal = Journal(folder.journal)
    steps = journal.steps()
    for record in (s for s in steps if s.kind == "acquire_2d"):  # planned with D1 = 5 s, revised once T1 was fitted
        d1_s = next(s.outcome["d1_s"] for s in steps if s.index == record.index)
        assert record.estimate_s == pytest.approx(planned[record.index].with_d1(d1_s).estimate_s)
        assert record.estimate_s < planned[record.index].estimate_s
    datasets = journal.datasets()
    fits = {s.index: s.outcome["t1"] for s in steps if s.kind == "t1"}
    assert len(fits) == 2
    for fit in fits.values():
        assert not fit["error"]
        for site in fit["sites"]:
            assert site["ok"], site
            truth = TRUE_T1_S[site["name"]]
            assert abs(site["t1_s"] - truth) <= max(3 * site["t1_err_s"], 0.05 * truth), site
        assert fit["d1_s"] == pytest.approx(min(max(3 * max(s["t1_s"] for s in fit["sites"]), 1.0), 5.0))
    for d in (d for d in datasets if d["kind"] == "acquire_2d"):
        t1_step = next(s.index for s in steps if s.kind == "t1" and
                       any(x["idx"] == s.index and x["temperature_k"] == d["temperature_k"] for x in datasets))
        expected = fits[t1_step]["d1_s"]
        assert 1.0 < expected < 5.0  # the rule, not a clamp, set it
        assert d["params"]["d1_s"] == pytest.approx(expected)
        dic, _ = ng.bruker.read(d["path"])
        assert dic["acqus"]["D"][1] == pytest.approx(expected, rel=1e-6)
    one_d = [d for d in datasets if d["kind"] == "spectrum_1d"]
    assert len(one_d) == 2 and all(d["status"] == "done" for d in one_d)
    assert all((Path(d["path"]) / "fid").exists() for d in one_d)
    t1_sets = [d for d in datasets if d["kind"] == "t1"]
    assert all((Path(d["path"]) / "vdlist").read_text().split()[0] == "0.01s" for d in t1_sets)
    report = (folder.root / "report.md").read_text()
    assert "## Temperatures" in report and "Li2S " in report and f"{one_d[0]['dataset']}/{one_d[0]['expno']}" in report
    journal.close()


# ---- the D1 look-up reads the journal (no instruments) -----------------------------------------------


@dataclass(frozen=True)
class _SiteT1:
    shift_ppm: float
    t1_s: float | None
    t1_err_s: float | None
    amplitude: float
    ok: bool
    reason: str


@dataclass(frozen=True)
class _T1Fit:
    method: str
    sites: list[_SiteT1]


RULE = D1Rule(factor=3.0, min_s=1.0, max_s=5.0, sites_ppm=(2.31, -4.56), t1_step=3)


def _ctx(tmp_path: Path) -> StepContext:
    journal = Journal(tmp_path / "journal.sqlite")
    return StepContext(clock=VirtualClock(0.0), journal=journal, control=Control.__new__(Control),
                       notifier=Notifier.__new__(Notifier), step_index=4)


def _done_t1(ctx: StepContext, outcome: dict) -> None:
    step = types.SimpleNamespace(index=3, lane="nmr", kind="t1", label="T1", estimate_s=1.0)
    ctx.journal.add_steps([step])
    ctx.journal.transition(3, "running", at=0.0)
    ctx.journal.transition(3, "done", at=1.0, detail=outcome)


def test_d1_comes_from_the_t1_outcome_in_the_journal(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    lane = NmrLane.__new__(NmrLane)
    assert lane._d1_from_journal(RULE, ctx)[:2] == (5.0, "the T1 step 3 did not finish")
    _done_t1(ctx, {"t1": {"error": "", "sites": [{"shift_ppm": 2.31, "t1_s": 0.5, "ok": True},
                                               {"shift_ppm": -4.56, "t1_s": 0.7, "ok": True}]}})
    assert lane._d1_from_journal(RULE, ctx) == (pytest.approx(2.1), "", pytest.approx(2.1))


def test_a_failed_fit_falls_back_to_the_maximum_with_its_reason(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _done_t1(ctx, {"t1": {"error": "", "sites": [{"shift_ppm": 2.31, "t1_s": 0.5, "ok": True},
                                               {"shift_ppm": -4.56, "t1_s": None, "ok": False}]}})
    d1_s, reason, _ = NmrLane.__new__(NmrLane)._d1_from_journal(RULE, ctx)
    assert d1_s == 5.0 and "-4.56 ppm" in reason


def test_a_t1_reconciled_on_resume_is_fitted_from_its_dataset_not_measured_again(tmp_path: Path, monkeypatch) -> None:
    calls: list[Path] = []

    def stand_in_fit(expno_dir: Path, sites_ppm=None) -> _T1Fit:
        calls.append(Path(expno_dir))
        return _T1Fit("saturation", [_SiteT1(2.31, 0.4, 0.01, 1.0, True, ""), _SiteT1(-4.56, 1.2, 0.02, 1.0, True, "")])

    monkeypatch.setitem(sys.modules, "analysis.t1", types.SimpleNamespace(fit_t1=stand_in_fit))
    ctx = _ctx(tmp_path)
    _done_t1(ctx, {"reconciled": True})
    ctx.journal.record_dataset(dataset="s", expno=101, index=3, kind="t1", path=str(tmp_path / "s" / "101"),
                               temperature_k=293.15, params={}, status="done", at=1.0)
    lane = NmrLane.__new__(NmrLane)
    assert lane._d1_from_journal(RULE, ctx)[:2] == (pytest.approx(3.6), "")
    assert lane._d1_from_journal(RULE, ctx)[:2] == (pytest.approx(3.6), "")  # the next point reads the recorded fit
    assert calls == [tmp_path / "s" / "101"]
    assert [e["status"] for e in ctx.journal.events(limit=100)].count("t1_measured") == 1
