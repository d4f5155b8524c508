"""The mas-calibration protocol on the simulated station recovers the probe's frictional heating within 0.5 K.

A lead nitrate rotor spun at 15 kHz heats the simulated sample 9 K above the VT sensor (4 K x
(15/10)^2); the calibration run drives plain set points, reads the 207Pb line and writes a station
file whose calibration at 15 kHz gives that heating, keeping the station's other calibrations.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from acquisition.api import start_run
from acquisition.journal import Journal
from drivers.clock import VirtualClock
from hardware_sim.thermal import ThermalModel
from protocols import load_plan
from protocols.loader import load_station

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MAS_RATE_HZ = 15_000.0


def _station(tmp_path: Path) -> Path:
    station = yaml.safe_load((EXAMPLES / "station-sim-lead-nitrate.yaml").read_text())
    station["spectrometer"]["sample"]["mas_rate"] = f"{MAS_RATE_HZ:g} Hz"
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(station))
    return path


def _protocol(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((EXAMPLES / "mas-calibration-lead-nitrate.yaml").read_text())
    data["spectrum"]["mas_rate"] = f"{MAS_RATE_HZ:g} Hz"
    data["equilibration"] = {"tolerance": "0.3 K", "hold": "10 min", "timeout": "60 min"}
    data["spectrum"].update(changes.pop("wide", {}))
    data.update(changes)
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_calibration_recovers_the_frictional_heating_over_the_probe_range(tmp_path: Path) -> None:
    heating_k = ThermalModel(VirtualClock(0.0), mas_rate_hz=MAS_RATE_HZ).mas_heating_k()
    assert heating_k == pytest.approx(9.0)
    wide = {"sw": 300, "o1p": -3465.0}  # 180-430 K moves the line over 190 ppm
    folder, result = start_run([_protocol(tmp_path, setpoints=["180 K", "250 K", "320 K", "390 K", "420 K"], wide=wide)],
                               _station(tmp_path), tmp_path / "run", show_progress=False)
    assert result.ok, result.lanes
    journal = Journal(folder.journal)
    spectra = [d for d in journal.datasets() if d["kind"] == "spectrum_1d"]
    assert len(spectra) == 5
    assert all(abs(d["sample_temperature_k"] - d["temperature_k"]) < 0.5 for d in spectra)  # no calibration applied
    fit = next(s for s in journal.steps() if s.kind == "fit_calibration")
    journal.close()
    for setpoint_k, sample_k in fit.outcome["points"]:
        assert sample_k - setpoint_k == pytest.approx(heating_k, abs=0.5), (setpoint_k, sample_k)
    station = load_station(folder.root / "station-calibrated.yaml")
    assert station.vt is not None
    calibration = station.vt.calibration_for(MAS_RATE_HZ)
    assert calibration is not None and len(calibration.points) == 5
    assert calibration.sample_k(300.0) == pytest.approx(300.0 + heating_k, abs=0.5)
    assert station.vt.calibration_for(10_000.0) is not None  # the station's other calibration is kept
    report = (folder.root / "report.md").read_text()
    assert "MAS temperature calibration at 15000 Hz" in report and "station-calibrated.yaml" in report


def test_plan_shows_plain_set_points_and_the_fit(tmp_path: Path) -> None:
    plan, _ = load_plan([_protocol(tmp_path)], _station(tmp_path))
    kinds = [s.kind for s in plan.steps]
    assert kinds.count("spectrum_1d") == 6 and kinds[-1] == "fit_calibration"
    moves = [s for s in plan.steps if s.kind == "move_temperature"]
    assert all(s.temperature_is_setpoint for s in moves)
    assert [s.temperature_k for s in moves] == [250.0, 280.0, 310.0, 340.0, 370.0, 400.0]
    assert plan.templates() == (("PbNO3_calibration", 1, "1d"),)


@pytest.mark.parametrize("change, expected", [
    ({"setpoints": ["100 K", "300 K"]}, "setpoints[0] = '100 K': outside the probe's range"),
    ({"setpoints": ["300 K"]}, "setpoints"),
    ({"setpoints": ["300 K", "300 K"]}, "a set point is listed twice"),
    ({"setpoints": ["180 K", "300 K"]}, "setpoints[0] = '180 K': puts the 207Pb line at -3558.1 ppm at 180 K, outside"),
])
def test_bad_calibration_protocols_are_refused_in_one_line(tmp_path: Path, change: dict, expected: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "acquisition.cli", "plan", str(_protocol(tmp_path, **change)),
                           "--station", str(_station(tmp_path))], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
