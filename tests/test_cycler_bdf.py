"""BDF files: header names, no overwrite, crash-safe append, per-cycle summary (pure file I/O, no instrument)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from acquisition.bdf import (BDF_COLUMNS, CHARGE_AH, CYCLE, DISCHARGE_AH, STEP_COUNT, BdfError, BdfRecorder,
                             BdfWriter, metadata_path, read_bdf)
from analysis.cycling import LI2S_EQUILIBRIUM_V, summarize_cycling, write_cycle_csv
from drivers.cycler import CyclerSample

MASS_G = 1e-3


def synthetic_step(recorder: BdfRecorder, mode: str, current_a: float, volts: float, seconds: int,
                   t0: float) -> float:
    """Feed `seconds` one-second samples of a constant-current step; returns the end time."""
    on_sample = recorder.begin_step(mode, 1 if mode == "charge" else 2)
    for k in range(seconds + 1):
        t = t0 + k
        sample = CyclerSample(t, 1.79e9 + t, volts, current_a)
        on_sample(sample, abs(current_a) * k / 3600.0, float(k))
    return t0 + seconds + 1


def test_header_uses_bdf_labels_and_metadata_sits_beside(tmp_path: Path) -> None:
    path = tmp_path / "cell.bdf.csv"
    with BdfWriter(path, {"active_mass_g": MASS_G, "instrument": "KEITHLEY 2450"}):
        pass
    assert path.read_text().splitlines()[0].split(",") == BDF_COLUMNS
    assert BDF_COLUMNS[:3] == ["Test Time / s", "Voltage / V", "Current / A"]
    meta = json.loads(metadata_path(path).read_text())
    assert meta["active_mass_g"] == MASS_G and meta["instrument"] == "KEITHLEY 2450"
    assert metadata_path(path).name == "cell.bdf.json"


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "cell.bdf.csv"
    BdfWriter(path, {}).close()
    with pytest.raises(BdfError, match="refusing to overwrite"):
        BdfWriter(path, {})


def test_crash_leaves_a_valid_file_and_append_resumes_counters(tmp_path: Path) -> None:
    path = tmp_path / "cell.bdf.csv"
    writer = BdfWriter(path, {"active_mass_g": MASS_G})
    recorder = BdfRecorder(writer)
    t = synthetic_step(recorder, "charge", 1e-3, 1.7, 36, 0.0)
    t = synthetic_step(recorder, "discharge", -1e-3, 1.4, 18, t)
    t = synthetic_step(recorder, "rest", 0.0, 1.5, 5, t)
    # simulate a crash: no close(), and a torn half-row at the end of the file
    writer._file.write("123.0,1.6")
    writer._file.flush()
    cols = read_bdf(path)  # the torn row is ignored, every complete row is there
    assert len(cols[CYCLE]) == 37 + 19 + 6
    resumed = BdfWriter(path, {"note": "resumed"}, append=True)
    assert resumed.last_row is not None and resumed.last_row[STEP_COUNT] == 3
    recorder = BdfRecorder(resumed)
    synthetic_step(recorder, "charge", 1e-3, 1.7, 36, t)
    resumed.close()
    cols = read_bdf(path)
    assert list(cols[STEP_COUNT][-1:]) == [4] and cols[CYCLE][-1] == 2  # a charge after a discharge: new cycle
    assert cols[CHARGE_AH][-1] == pytest.approx(2 * 1e-3 * 36 / 3600)
    assert json.loads(metadata_path(path).read_text())["resumed_count"] == 1
    assert "123.0,1.6" not in path.read_text()


def test_cycle_summary_capacities_efficiency_and_voltages(tmp_path: Path) -> None:
    path = tmp_path / "cell.bdf.csv"
    with BdfWriter(path, {"active_mass_g": MASS_G}) as writer:
        recorder = BdfRecorder(writer)
        t = 0.0
        for charge_s, discharge_s in ((3600, 3420), (3600, 3564)):
            t = synthetic_step(recorder, "charge", 1e-4, 1.70, charge_s, t)
            t = synthetic_step(recorder, "discharge", -1e-4, 1.48, discharge_s, t)
    cols = read_bdf(path)
    summary, _ = summarize_cycling(path, equilibrium_v=LI2S_EQUILIBRIUM_V)  # mass from the metadata JSON
    rows = summary["cycles"]
    assert [r["cycle"] for r in rows] == [1, 2]
    assert rows[0]["charge_mah_per_g"] == pytest.approx(100.0, rel=1e-3)  # 0.1 mAh on 1 mg
    assert rows[0]["discharge_mah_per_g"] == pytest.approx(95.0, rel=1e-3)
    assert rows[0]["coulombic_efficiency_pct"] == pytest.approx(95.0, rel=1e-3)
    assert rows[1]["coulombic_efficiency_pct"] == pytest.approx(99.0, rel=1e-3)
    assert rows[1]["mean_charge_voltage_v"] == pytest.approx(1.70)
    assert rows[1]["mean_discharge_voltage_v"] == pytest.approx(1.48)
    assert rows[1]["polarisation_v"] == pytest.approx(0.11)
    assert rows[1]["charge_plateau_v"] == pytest.approx(1.70, abs=0.01)
    assert rows[1]["activation_overpotential_v"] == pytest.approx(1.70 - 1.59, abs=0.01)
    assert cols[DISCHARGE_AH][-1] == pytest.approx((3420 + 3564) * 1e-4 / 3600)

    out = tmp_path / "summary.csv"
    write_cycle_csv(rows, out)
    with open(out, newline="") as f:
        back = list(csv.DictReader(f))
    assert float(back[1]["coulombic_efficiency_pct"]) == pytest.approx(99.0, rel=1e-3)


def test_non_finite_values_are_refused(tmp_path: Path) -> None:
    with BdfWriter(tmp_path / "cell.bdf.csv", {}) as writer:
        with pytest.raises(BdfError, match="non-finite"):
            writer.write(CyclerSample(0.0, 1.79e9, float("nan"), 0.0), 1, 1, 1, 0.0, 0.0)


def test_reading_a_file_without_required_columns_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(BdfError, match="missing required columns"):
        read_bdf(path)
