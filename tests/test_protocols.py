"""Protocol and station files: the examples load, plans add up, bad input is refused cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from acquisition.cli import main
from protocols import InputError, compile_plan, load_protocol, load_station, simulated_station
from protocols.compiler import order_temperatures
from protocols.station import is_sim
from protocols.timing import exsy_acquisition_s
from protocols.units import parse_quantity

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXSY = EXAMPLES / "vt-exsy-paper.yaml"
CYCLING = EXAMPLES / "cycling-fixed-capacity.yaml"


def test_units_convert_lab_units_to_internal() -> None:
    assert parse_quantity("20 degC", "temperature", bare_numbers_allowed=False) == pytest.approx(293.15)
    assert parse_quantity("10 ms", "time", bare_numbers_allowed=False) == pytest.approx(0.01)
    assert parse_quantity("0.132 mA/cm2", "current_density", bare_numbers_allowed=False) == pytest.approx(0.132)
    assert parse_quantity("2 min", "time", bare_numbers_allowed=False) == 120.0
    with pytest.raises(ValueError, match="no unit"):
        parse_quantity(5, "time", bare_numbers_allowed=False)
    with pytest.raises(ValueError, match="not a unit of time"):
        parse_quantity("5 V", "time", bare_numbers_allowed=False)


def test_paper_plan_has_40_acquisitions_and_5_moves_with_pulse_sequence_arithmetic() -> None:
    plan = compile_plan([load_protocol(EXSY)], simulated_station())
    kinds = [s.kind for s in plan.steps]
    assert kinds.count("acquire_2d") == 40
    assert kinds.count("move_temperature") == 5
    assert kinds.count("wait_stable") == 5
    # independent arithmetic: 512 scans of D1 + D8 + AQ, t1 sum for States-TPPI, 4 dummy scans, 2 s overhead
    aq = 2048 / (2 * 100 * 73.578)
    t1_sum = 0.001 * sum(r // 2 for r in range(32))
    expected_acq = sum(2.0 + 4 * (5 + d8 + aq) + 16 * (32 * (5 + d8 + aq) + t1_sum)
                       for d8 in (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10)) * 5
    acq_total = sum(s.estimate_s for s in plan.steps if s.kind == "acquire_2d")
    assert acq_total == pytest.approx(expected_acq, rel=1e-12)
    # the sample starts at ambient plus 4 K of MAS heating (the simulated station's calibration), then
    # ramps at 5 K/min down to 293.15 K and up to 373.15 K; five holds of 10 min and five settle allowances
    vt_total = sum(s.estimate_s for s in plan.steps if s.kind in ("move_temperature", "wait_stable"))
    assert vt_total == pytest.approx(((297.0 - 293.15) + (373.15 - 293.15)) / 5 * 60 + 5 * 600 + 5 * 45, rel=1e-6)
    assert 41 * 3600 < plan.total_estimate_s < 46 * 3600
    expnos = [s.expno for s in plan.steps if s.kind == "acquire_2d"]
    assert len(set(expnos)) == 40 and expnos[:3] == [100, 101, 102] and expnos[8] == 110


def test_acquisition_time_grows_with_each_parameter() -> None:
    base = dict(ns=16, ds=4, td1=32, td2=2048, d1_s=5.0, mixing_time_s=0.1, in0_s=1e-3, sw_ppm=100.0,
                sfo1_mhz=73.578, fn_mode=5, overhead_s=2.0)
    t0 = exsy_acquisition_s(**base)
    for key, bigger in (("ns", 32), ("td1", 64), ("d1_s", 10.0), ("mixing_time_s", 1.0), ("in0_s", 2e-3)):
        assert exsy_acquisition_s(**{**base, key: bigger}) > t0


def test_cycling_plan_follows_the_paper_schedule() -> None:
    protocol = load_protocol(CYCLING)
    plan = compile_plan([protocol], simulated_station())
    steps = plan.steps
    charges = [s for s in steps if s.mode == "charge"]
    assert len(charges) == 55
    mass_g = 1.5e-3
    assert [round(c.end_capacity_ah / mass_g * 1e3) for c in charges[:6]] == [200, 300, 400, 500, 600, 600]
    assert all(s.end_voltage_v == pytest.approx(0.8) for s in steps if s.mode == "discharge")
    assert steps[0].current_a == pytest.approx(0.132e-3 * 0.785)
    assert [s.cycle for s in steps[:4]] == [1, 1, 2, 2]
    # a 600 mAh/g charge at 0.1036 mA takes 0.9 mAh / 0.1036 mA
    assert charges[-1].estimate_s == pytest.approx(0.9e-3 / (0.132e-3 * 0.785) * 3600)


def test_both_protocols_run_on_separate_lanes() -> None:
    plan = compile_plan([load_protocol(EXSY), load_protocol(CYCLING)], simulated_station())
    assert set(plan.lanes) == {"nmr", "cycler:ch1"}
    assert plan.total_estimate_s == max(plan.lane_estimates_s().values())
    assert [s.index for s in plan.steps] == list(range(len(plan.steps)))


def test_shortest_ramp_order_starts_at_the_near_end() -> None:
    temps = [300.0, 350.0, 320.0, 280.0]
    order = order_temperatures(temps, "shortest-ramp", start_k=290.0)
    assert [temps[i] for i in order] == [280.0, 300.0, 320.0, 350.0]
    order = order_temperatures(temps, "shortest-ramp", start_k=345.0)
    assert [temps[i] for i in order] == [350.0, 320.0, 300.0, 280.0]


def test_station_files_load_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    bench = load_station(EXAMPLES / "station-bench.yaml")
    assert bench.vt.limits.max_ramp_k_per_min == 2.0 and bench.vt.calibration[0].mas_rate_hz == 10_000
    sim = load_station(EXAMPLES / "station-sim.yaml")
    # a simulated TopSpin's folders live in the run folder: they stay relative
    assert sim.simulated is None and sim.spectrometer.data_dir == Path("data")
    assert sim.spectrometer.folders(tmp_path) == (tmp_path / "automation", tmp_path / "data")
    assert all(is_sim(address) for address in sim.addresses().values())  # simulation is per address
    assert not any(is_sim(address) for address in bench.addresses().values())
    # a real spectrometer's relative folders are relative to the station file
    data = yaml.safe_load((EXAMPLES / "station-bench.yaml").read_text())
    data["spectrometer"].update(automation_dir="automation", data_dir="nmr-data")
    (tmp_path / "lab").mkdir()
    path = tmp_path / "lab" / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    real = load_station(path).spectrometer
    assert Path(real.automation_dir) == (tmp_path / "lab" / "automation").resolve()
    assert real.data_dir == (tmp_path / "lab" / "nmr-data").resolve()


def test_simulated_true_with_a_real_address_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`simulated:` is obsolete: it must never put a real instrument under a simulated TopSpin or virtual time."""
    data = yaml.safe_load((EXAMPLES / "station-bench.yaml").read_text())
    data["simulated"] = True
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="real address") as refused:
        load_station(path)
    message = refused.value.message()
    assert str(path) in message and "sim://" in message and "\n" not in message
    assert main(["plan", str(EXSY), "--station", str(path)]) == 2
    assert "real address" in capsys.readouterr().err
    sim = yaml.safe_load((EXAMPLES / "station-sim.yaml").read_text())
    sim["simulated"] = True  # harmless where every address is sim://
    path.write_text(yaml.safe_dump(sim))
    assert load_station(path).simulated is True


def _write(tmp_path: Path, base: Path, edit) -> Path:
    data = yaml.safe_load(base.read_text())
    edit(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BAD_EDITS = {
    "temperature beyond probe": (EXSY, lambda d: d.__setitem__("temperatures", ["20 degC", "250 degC"]), "temperatures[1]"),
    "zero mixing time": (EXSY, lambda d: d.__setitem__("mixing_times", ["0 s", "1 s"]), "mixing_times[0]"),
    "absurd t1 increment": (EXSY, lambda d: d["acquisition"].__setitem__("t1_increment", "8000 ms"), "spectral width"),
    "t1 increment folding the sites": (EXSY, lambda d: d["acquisition"].__setitem__("t1_increment", "8 ms"), "fold in F1"),
    "specific capacity above Li2S": (CYCLING, lambda d: d["steps"][1]["loop"]["steps"][0]["charge"]["until"].__setitem__(
        "specific_capacity", "1200 mAh/g"), "theoretical capacity"),
    "current above range": (CYCLING, lambda d: d["limits"].__setitem__("current_max", "500 mA"), "instrument's range"),
    "unknown key": (EXSY, lambda d: d.__setitem__("temperture_order", "ascending"), "unknown key"),
    "missing unit": (EXSY, lambda d: d["acquisition"].__setitem__("d1", 5), "no unit"),
    "unsafe dataset name": (EXSY, lambda d: d.__setitem__("dataset", "../../etc"), "safe TopSpin dataset name"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_bad_files_exit_2_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, edit, expected = BAD_EDITS[case]
    path = _write(tmp_path, base, edit)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and expected in err


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert main(["plan", str(path)]) == 2
    assert "expected a mapping" in capsys.readouterr().err


def test_python_objects_in_yaml_are_not_constructed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("kind: !!python/object/apply:os.system ['touch pwned']\n")
    assert main(["plan", str(path)]) == 2
    assert not (tmp_path / "pwned").exists()
    assert "not valid YAML" in capsys.readouterr().err


def test_console_script_plan_json_and_refusal_without_traceback(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "acquisition.cli"]
    out = subprocess.run([*exe, "plan", str(EXSY), "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert {"steps", "total_estimate_s"} <= data.keys()
    assert {"kind", "estimate_s", "temperature_k", "mixing_time_s", "expno"} <= data["steps"][2].keys()
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: vt-exsy\nname: x\n")
    run = subprocess.run([*exe, "plan", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr and str(bad) in run.stderr


def test_input_error_names_file_field_value_and_reason() -> None:
    err = InputError("p.yaml", "acquisition.ns", 0, "must be positive")
    assert err.message() == "p.yaml: acquisition.ns = 0: must be positive"
