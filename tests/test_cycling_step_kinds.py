"""Cycling steps beyond constant current: CC-CV and CV holds, rests that end on dV/dt, GITT trains, rate tests, loop ends.

The compile tests are pure; the end-to-end test runs examples/cycling-step-kinds.yaml on the
simulated Keithley 2450 (a real loopback SCPI socket) and checks, in the cell's BDF file, that each
step ended where it should.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from acquisition.api import start_run
from acquisition.bdf import read_bdf
from acquisition.journal import Journal
from common.bdf_columns import CURRENT, STEP_INDEX, TEST_TIME, VOLTAGE
from protocols import load_plan
from protocols.plan import CyclerStep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
AREA_CM2 = 0.785


def _protocol(tmp_path: Path, steps: list[dict]) -> Path:
    data = {"kind": "cycling", "name": "kinds", "cell": {"name": "c", "channel": "ch1", "active_mass": "1.5 mg",
                                                          "area": f"{AREA_CM2} cm2"},
            "sample_interval": "30 s", "steps": steps,
            "limits": {"voltage_min": "0.5 V", "voltage_max": "3.5 V", "current_max": "1 mA"}}
    path = tmp_path / "kinds.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _steps(tmp_path: Path, steps: list[dict]) -> list[CyclerStep]:
    plan, _ = load_plan([_protocol(tmp_path, steps)])
    return [s for s in plan.steps if isinstance(s, CyclerStep)]


def test_cccv_is_a_constant_current_part_then_a_voltage_hold_in_one_cycle(tmp_path: Path) -> None:
    cc, hold = _steps(tmp_path, [{"cccv": {"current_density": "0.264 mA/cm2", "voltage": "1.9 V",
                                           "until": {"current": "0.05 mA", "time": "6 h"}}}])
    assert (cc.mode, cc.control, cc.end_voltage_v) == ("charge", "current", 1.9)
    assert cc.current_a == pytest.approx(0.264e-3 * AREA_CM2)
    assert (hold.mode, hold.control, hold.hold_voltage_v, hold.end_current_a, hold.end_time_s) == \
        ("charge", "voltage", 1.9, pytest.approx(5e-5), 6 * 3600.0)
    assert hold.cycle == cc.cycle == 1


def test_gitt_pulses_carry_the_train_end_and_rate_test_currents_follow_the_densities(tmp_path: Path) -> None:
    train = _steps(tmp_path, [{"gitt": {"direction": "charge", "pulse": {"current_density": "0.066 mA/cm2",
                                                                          "time": "10 min"},
                                        "rest": {"duration": "1 h", "until_dvdt": "1 mV/h"}, "pulses": 3,
                                        "until_voltage": "2.2 V"}}])
    assert [s.mode for s in train] == ["charge", "rest"] * 3
    assert {s.cycle for s in train} == {1}  # one cycle, however many pulses
    for k, pulse in enumerate(train[0::2]):
        assert pulse.loop_exit is not None and pulse.loop_exit.on_voltage_end
        assert (pulse.loop_exit.first_index, pulse.loop_exit.last_index) == (2 * k + 2, 5)
    assert train[1].end_dvdt_v_per_s == pytest.approx(1e-3 / 3600) and train[1].dvdt_window_s == 600.0
    rate = _steps(tmp_path, [{"rate_test": {"current_densities": ["0.066 mA/cm2", "0.132 mA/cm2", "0.264 mA/cm2"],
                                            "cycles_each": 2, "charge": {"until": {"specific_capacity": "300 mAh/g"}},
                                            "discharge": {"until": {"voltage": "0.8 V"}}}}])
    assert [round(s.current_a / AREA_CM2 * 1e3, 6) for s in rate] == [0.066] * 4 + [0.132] * 4 + [0.264] * 4
    assert [s.cycle for s in rate[0::2]] == [1, 2, 3, 4, 5, 6]


def test_loop_stop_when_is_checked_after_every_iteration_but_the_last(tmp_path: Path) -> None:
    steps = _steps(tmp_path, [{"charge": {"current": "0.1 mA", "until": {"time": "1 h"}}},
                              {"loop": {"count": 3, "stop_when": {"coulombic_efficiency_below": 95,
                                                                  "discharge_capacity_below": {"percent": 80,
                                                                                               "of_cycle": 2}},
                                        "steps": [{"charge": {"current": "0.1 mA", "until": {"time": "1 h"}}},
                                                  {"discharge": {"current": "0.1 mA", "until": {"voltage": "0.8 V"}}}]}}])
    exits = [(s.index, s.loop_exit) for s in steps if s.loop_exit is not None]
    assert [i for i, _ in exits] == [2, 4]  # the discharge ending iterations 1 and 2
    assert all((e.first_index, e.last_index, e.coulombic_efficiency_below_pct) == (i + 1, 6, 95) for i, e in exits)
    assert [e.reference_cycle for _, e in exits] == [None, 3]  # iteration 2 of the loop is the cell's cycle 3


@pytest.mark.parametrize("step, message", [
    ({"cv_hold": {"direction": "charge", "voltage": "5 V", "current_limit": {"current": "0.1 mA"},
                  "until": {"time": "1 h"}}}, "outside the limits"),
    ({"cv_hold": {"direction": "charge", "voltage": "2 V", "current_limit": {"current": "0.1 mA"}, "until": {}}},
     "needs at least one end"),
    ({"rest": {"duration": "5 min", "until_dvdt": "1 mV/h"}}, "window 600 s is longer"),
])
def test_bad_step_kinds_are_refused_with_the_field(tmp_path: Path, step: dict, message: str) -> None:
    from protocols import InputError
    with pytest.raises(InputError, match=message):
        load_plan([_protocol(tmp_path, [step])])


def test_each_step_kind_ends_where_it_should_on_the_simulated_keithley(tmp_path: Path) -> None:
    folder, result = start_run([EXAMPLES / "cycling-step-kinds.yaml"], None, tmp_path / "run", show_progress=False)
    assert result.ok, result.lanes
    journal = Journal(folder.journal)
    records = {s.index: s for s in journal.steps()}
    plan = {s.index: s for s in load_plan([EXAMPLES / "cycling-step-kinds.yaml"])[0].steps}
    journal.close()
    data = read_bdf(next(folder.cycler.glob("*.csv")))

    def samples(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mine = data[STEP_INDEX] == index
        return data[TEST_TIME][mine], data[VOLTAGE][mine], data[CURRENT][mine]

    hold = next(i for i, s in plan.items() if isinstance(s, CyclerStep) and s.control == "voltage")
    assert records[hold].outcome["ended_by"] == "current"
    _, volts, amps = samples(hold)
    end_a = plan[hold].end_current_a  # type: ignore[attr-defined]
    assert abs(amps[-1]) < end_a <= abs(amps[-2])  # ended on the first sample below the end current
    assert np.all(np.abs(volts[1:] - 1.9) < 0.005)  # held at 1.9 V

    settle = next(i for i, s in plan.items() if isinstance(s, CyclerStep) and s.end_dvdt_v_per_s is not None)
    assert records[settle].outcome["ended_by"] == "slope"
    times, volts, _ = samples(settle)
    window = times >= times[-1] - 600.0
    slope_v_s = np.polyfit(times[window], volts[window], 1)[0]
    assert abs(slope_v_s) < plan[settle].end_dvdt_v_per_s  # type: ignore[attr-defined]
    assert records[settle].outcome["duration_s"] < plan[settle].end_time_s  # type: ignore[attr-defined]
    window = times <= times[0] + 600.0  # it did not settle at once
    assert abs(np.polyfit(times[window], volts[window], 1)[0]) > plan[settle].end_dvdt_v_per_s  # type: ignore[attr-defined]

    pulses = [i for i, s in plan.items() if isinstance(s, CyclerStep) and "GITT pulse" in s.label]
    ended = [records[i].outcome.get("ended_by") for i in pulses]
    k = ended.index("voltage")
    assert k < len(pulses) - 1 and all(e == "time" for e in ended[:k])
    assert all(records[i].status == "skipped" and "cut-off" in records[i].outcome["loop_exit"] for i in pulses[k + 1:])
    assert records[pulses[k] + 1].status == "done"  # the rest after the last pulse still ran

    loop = [i for i, s in plan.items() if isinstance(s, CyclerStep) and s.loop_exit is not None
            and s.loop_exit.coulombic_efficiency_below_pct is not None]
    stopped = next(i for i in loop if records[i + 1].status == "skipped")
    charge_ah = records[stopped - 1].outcome["capacity_ah"]
    assert records[stopped].outcome["capacity_ah"] / charge_ah < 0.999
    assert all(records[i].status == "skipped" for i in range(stopped + 1, max(plan) + 1))


def test_holds_and_settling_rests_export_to_an_experiment_pybamm_parses() -> None:
    from protocols.pybamm_export import pybamm_experiment

    plan, _ = load_plan([EXAMPLES / "cycling-step-kinds.yaml"])
    strings, notes = pybamm_experiment(plan, "cycling-step-kinds.yaml")
    assert "Hold at 1.9 V for 21600 seconds or until 0.05 mA" in strings
    assert any("dV/dt" in n for n in notes) and any("loop ends" in n for n in notes)
    import pybamm

    experiment = pybamm.Experiment(strings)
    assert len(experiment.steps) == len(strings)
