"""The program-running cyclers (Neware BTS, Maccor MacNet) through the program-cycler lane, and what they refuse.

Steps exsylab does not yet compile into a vendor program (voltage holds, rests that end on dV/dt,
loop end conditions) are refused by `exsylab plan`, one line, exit 2, before anything starts; a
short protocol runs end to end on the simulated Maccor tester through the same lane as Neware.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from acquisition.api import start_run
from acquisition.bdf import read_bdf
from acquisition.journal import Journal
from common.bdf_columns import VOLTAGE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STATIONS = ["station-neware-sim.yaml", "station-maccor-sim.yaml"]
CELL = {"name": "cellP", "channel": "ch1", "active_mass": "1.5 mg", "area": "0.785 cm2"}
LIMITS = {"voltage_min": "0.5 V", "voltage_max": "3.5 V", "current_max": "1 mA"}


def _protocol(tmp_path: Path, steps: list[dict]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"kind": "cycling", "name": "p", "cell": CELL, "sample_interval": "60 s",
                                    "steps": steps, "limits": LIMITS}))
    return path


@pytest.mark.parametrize("station", STATIONS)
@pytest.mark.parametrize("step, reason", [
    ({"cv_hold": {"direction": "charge", "voltage": "2 V", "current_limit": {"current": "0.1 mA"},
                  "until": {"current": "0.01 mA"}}}, "constant-voltage hold"),
    ({"rest": {"duration": "2 h", "until_dvdt": "1 mV/h"}}, "dV/dt"),
    ({"loop": {"count": 2, "stop_when": {"coulombic_efficiency_below": 95},
               "steps": [{"charge": {"current": "0.1 mA", "until": {"time": "1 h"}}},
                         {"discharge": {"current": "0.1 mA", "until": {"voltage": "0.8 V"}}}]}}, "loop end condition"),
])
def test_plan_refuses_what_a_vendor_program_cannot_hold(tmp_path: Path, station: str, step: dict, reason: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "acquisition.cli", "plan", str(_protocol(tmp_path, [step])),
                           "--station", str(EXAMPLES / station)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "cyclers.ch1.driver" in lines[0] and "Traceback" not in lines[0]


def test_a_short_protocol_runs_on_the_simulated_maccor_through_the_program_lane(tmp_path: Path) -> None:
    steps = [{"charge": {"current_density": "0.264 mA/cm2", "until": {"specific_capacity": "100 mAh/g",
                                                                       "voltage": "2.3 V"}}},
             {"rest": {"duration": "10 min"}},
             {"discharge": {"current_density": "0.264 mA/cm2", "until": {"voltage": "0.8 V"}}}]
    folder, result = start_run([_protocol(tmp_path, steps)], EXAMPLES / "station-maccor-sim.yaml", tmp_path / "run",
                               show_progress=False)
    assert result.ok, result.lanes
    journal = Journal(folder.journal)
    records = journal.steps()
    journal.close()
    assert [r.status for r in records] == ["done"] * 3
    charge_target_ah = 100e-3 * 1.5e-3
    assert records[0].outcome["ended_by"] == "capacity"
    assert abs(records[0].outcome["capacity_ah"] - charge_target_ah) <= 1e-3 * charge_target_ah
    assert records[2].outcome["ended_by"] == "voltage"
    (bdf,) = folder.cycler.glob("*__cellP__*.bdf.csv")
    assert len(read_bdf(bdf)[VOLTAGE]) > 10
