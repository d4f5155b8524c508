"""Selftest against simulated benches: passes on a healthy one, fails with a clear table when one is stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from acquisition import cli
from acquisition.selftest import selftest
from acquisition.sim_cmd import write_station_file
from hardware_sim.bench import SimBench
from protocols import simulated_station
from protocols.loader import load_station


@pytest.fixture
def bench(tmp_path: Path):
    with SimBench(tmp_path / "bench", speed=600.0) as bench:
        yield bench


def _write(bench: SimBench, path: Path) -> Path:
    write_station_file(path, bench.station())
    return path


def test_builtin_simulated_station_passes() -> None:
    results = selftest(simulated_station())
    assert results and all(r.ok for r in results), [r for r in results if not r.ok]
    assert {r.instrument for r in results} == {"TopSpin", "VT", "cycler ch1", "cycler ch2"}


def test_stopped_cycler_fails_its_rows_only(bench: SimBench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    station = _write(bench, tmp_path / "bench.yaml")
    bench.smus["ch2"].stop()
    assert cli.main(["selftest", "--station", str(station), "--timeout", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    results = selftest(load_station(station), timeout_s=0.5)
    failed = [r for r in results if not r.ok]
    assert {r.instrument for r in failed} == {"cycler ch2"}
    assert "Connection refused" in failed[0].detail or "cannot open" in failed[0].detail


def test_dead_topspin_side_fails(bench: SimBench, tmp_path: Path) -> None:
    station = _write(bench, tmp_path / "bench.yaml")
    bench.topspin.stop()
    results = selftest(load_station(station))
    failed = [r for r in results if not r.ok]
    assert [(r.instrument, r.check) for r in failed] == [("TopSpin", "open and preflight")]
    assert "heartbeat" in failed[0].detail


def test_stopped_vt_fails(bench: SimBench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    station = _write(bench, tmp_path / "bench.yaml")
    bench.vt.stop()
    assert cli.main(["selftest", "--station", str(station), "--timeout", "0.3"]) == 1
    vt_rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ VT")]
    assert vt_rows and "FAIL" in vt_rows[0]


def test_output_on_is_reported_not_touched(bench: SimBench, tmp_path: Path) -> None:
    station = _write(bench, tmp_path / "bench.yaml")
    bench.smus["ch1"].handle(":OUTP ON")
    results = selftest(load_station(station))
    row = next(r for r in results if r.instrument == "cycler ch1" and r.check == "output off")
    assert not row.ok and "ON" in row.detail
    assert bench.smus["ch1"].output_on  # left as found
    assert not any(r.check == "open-circuit voltage" and r.instrument == "cycler ch1" for r in results)


def test_bad_station_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: station\nname: x\nvt: {driver: lakeshore336}\n")
    assert cli.main(["selftest", "--station", str(bad)]) == 2
