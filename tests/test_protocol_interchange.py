"""Protocol interchange: exsylab cycling -> PyBaMM experiment (parsed by pybamm itself) and aurora-unicycler -> exsylab
(files written by aurora-unicycler's own API); what does not translate is refused, naming the step and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from protocols import InputError, load_plan
from protocols.pybamm_export import pybamm_experiment
from protocols.unicycler_import import from_unicycler

ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "acquisition.cli"]


def _parsed(strings: list[str]) -> list[tuple]:
    """What PyBaMM makes of each step string: (type, value in A, duration in s, terminations)."""
    import pybamm

    experiment = pybamm.Experiment(strings)
    return [(type(s).__name__, round(float(s.value), 12), s.duration, [str(t) for t in s.termination])
            for s in experiment.steps]


def _unicycler(method: list, **safety: float) -> dict:
    """A protocol as aurora-unicycler itself writes it (its model, dumped to JSON)."""
    from aurora_unicycler import CyclingProtocol

    protocol = CyclingProtocol.from_dict({
        "record": {"time_s": 30}, "sample": {"name": "uc-cell", "capacity_mAh": 2.0},
        "safety": {"max_voltage_V": 3.5, "min_voltage_V": 0.5, "max_current_mA": 1.0, **safety}, "method": method})
    return json.loads(protocol.to_json())


def test_the_seed_cycling_protocol_exports_to_an_experiment_pybamm_parses() -> None:
    plan, _ = load_plan([ROOT / "examples" / "cycling-fixed-capacity.yaml"])
    strings, notes = pybamm_experiment(plan, "cycling-fixed-capacity.yaml")
    steps = _parsed(strings)
    assert len(steps) == len(plan.steps) == 110  # 5 activation cycles + 50 cycles, a charge and a discharge each
    kind, value_a, duration_s, ends = steps[0]  # 200 mAh/g of 1.5 mg at 0.132 mA/cm2 on 0.785 cm2
    assert kind == "Current" and value_a == pytest.approx(-0.132 * 0.785e-3)  # PyBaMM: charge is negative
    assert duration_s == pytest.approx(200 * 1.5e-3 / (0.132 * 0.785) * 3600, rel=1e-9) and "2.3" in ends[0]
    assert steps[1][1] > 0 and "0.8" in steps[1][3][0]  # discharge until 0.8 V (PyBaMM gives it its default duration)
    assert any("limits" in n for n in notes) and any("capacity ends" in n for n in notes)


def test_a_vt_exsy_protocol_is_refused_for_pybamm_in_one_line() -> None:
    result = subprocess.run([*EXE, "protocol", "export", str(ROOT / "examples" / "vt-exsy-short.yaml"), "--to",
                             "pybamm"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "only a cycling protocol" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_unicycler_protocol_imports_and_runs_the_same_experiment_as_unicyclers_own_export(tmp_path: Path) -> None:
    from aurora_unicycler import CyclingProtocol

    data = _unicycler([
        {"step": "open_circuit_voltage", "until_time_s": 600},
        {"step": "tag", "tag": "cycle"},
        {"step": "constant_current", "current_mA": 0.2, "until_voltage_V": 2.3, "until_time_s": 36000},
        {"step": "open_circuit_voltage", "until_time_s": 60},
        {"step": "tag", "tag": "pulse"},
        {"step": "constant_current", "rate_C": -0.05, "until_time_s": 600},
        {"step": "open_circuit_voltage", "until_time_s": 300},
        {"step": "loop", "loop_to": "pulse", "cycle_count": 2},
        {"step": "constant_current", "current_mA": -0.2, "until_voltage_V": 0.8},
        {"step": "loop", "loop_to": "cycle", "cycle_count": 3},
    ])
    source = tmp_path / "uc.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "imported.yaml"
    result = subprocess.run([*EXE, "protocol", "import", str(source), "--from", "unicycler", "--active-mass", "1.5 mg",
                             "--area", "0.785 cm2", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    protocol = yaml.safe_load(out.read_text())
    assert protocol["steps"][1]["loop"]["count"] == 3 and protocol["steps"][1]["loop"]["steps"][2]["loop"]["count"] == 2
    assert protocol["limits"] == {"voltage_min": "0.5 V", "voltage_max": "3.5 V", "current_max": "1 mA"}
    plan, _ = load_plan([out])
    ours, _ = pybamm_experiment(plan, str(out))
    theirs = CyclingProtocol.from_dict(data).to_pybamm_experiment()
    theirs = [s.replace("Discharge at 0.05C", "Discharge at 0.1 mA") for s in theirs]  # 0.05 C of 2 mAh
    assert _parsed(ours) == _parsed(theirs) and len(ours) == 1 + 3 * (2 + 2 * 2 + 1)
    again = subprocess.run([*EXE, "protocol", "import", str(source), "--from", "unicycler", "--active-mass", "1.5 mg",
                            "--area", "0.785 cm2", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


@pytest.mark.parametrize("method, safety, field, reason", [
    ([{"step": "constant_voltage", "voltage_V": 2.3, "until_current_mA": 0.01}], {}, "method[0].step",
     "write it as an exsylab cv_hold"),
    ([{"step": "impedance_spectroscopy", "amplitude_mA": 0.01, "start_frequency_Hz": 1e5, "end_frequency_Hz": 1}], {},
     "method[0].step", "no impedance"),
    ([{"step": "open_circuit_voltage", "until_time_s": 60}], {"delay_s": 5.0}, "safety.delay_s", "a delay"),
    ([{"step": "open_circuit_voltage", "until_time_s": 60}], {"max_current_mA": None}, "safety.max_current_mA",
     "current limit"),
])
def test_what_does_not_translate_is_refused_naming_the_field(method: list, safety: dict, field: str,
                                                            reason: str) -> None:
    with pytest.raises(InputError) as refused:
        from_unicycler(_unicycler(method, **safety), "uc.json", active_mass_g=1e-3, area_cm2=1.0)
    assert refused.value.field == field and reason in refused.value.reason


def test_a_file_that_is_not_a_unicycler_protocol_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": [{"step": "constant_current", "current_mA": 1}]}))
    result = subprocess.run([*EXE, "protocol", "import", str(bad), "--from", "unicycler", "--active-mass", "1 mg",
                             "--area", "1 cm2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a valid aurora-unicycler protocol" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
