"""Vendor cycler files written by real instruments (tests/data/SOURCES.md): per-cycle capacities and CE
match what the reader library itself reports; formats are found from content; bad files refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.cycling import summarize_cycling
from analysis.errors import AnalysisInputError
from analysis.readers import FORMATS, detect_format, read_cycling_file
from common.bdf_columns import CHARGE_AH, CURRENT, CYCLE, DISCHARGE_AH, STEP_COUNT, TEST_TIME

VENDOR = Path(__file__).parent / "data" / "vendor"
MPR = [VENDOR / "v1150_GCPL.mpr", VENDOR / "gcpl.issue_211.mpr"]
NEWARE = [VENDOR / "new_nda_file.nda", VENDOR / "TESTCELL0001-B2.ndax"]
EXE = [sys.executable, "-m", "acquisition.cli"]


def _galvani_per_cycle_mah(path: Path) -> dict[int, tuple[float, float]]:
    """Per EC-Lab cycle (half cycle // 2): the |Q charge/discharge| galvani reports at the end of each half cycle."""
    import pandas as pd
    from galvani import BioLogic

    frame = pd.DataFrame(BioLogic.MPRfile(str(path)).data)
    out: dict[int, list[float]] = {}
    for half, rows in frame.groupby("half cycle"):
        q_end = float(rows["Q charge/discharge/mA.h"].iloc[-1])
        pair = out.setdefault(int(half) // 2, [0.0, 0.0])
        pair[0 if q_end > 0 else 1] += abs(q_end)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _newarenda_per_cycle_mah(path: Path) -> dict[int, tuple[float, float]]:
    """Per Neware cycle: each step's final charge and discharge capacity as NewareNDA reports them, summed."""
    import NewareNDA

    frame = NewareNDA.read(str(path), log_level="ERROR")
    per_step = frame.groupby(["Cycle", "Step"])[["Charge_Capacity(mAh)", "Discharge_Capacity(mAh)"]].max()
    per_cycle = per_step.groupby(level="Cycle").sum()
    return {int(c): (float(r["Charge_Capacity(mAh)"]), float(r["Discharge_Capacity(mAh)"]))
            for c, r in per_cycle.iterrows()}


@pytest.mark.parametrize("path", MPR + NEWARE, ids=lambda p: p.name)
def test_per_cycle_capacities_and_ce_match_the_reader_library(path: Path) -> None:
    expected = _galvani_per_cycle_mah(path) if path.suffix == ".mpr" else _newarenda_per_cycle_mah(path)
    summary, _ = summarize_cycling(path, active_mass_g=1.0)  # 1 g: mAh/g reads as mAh
    got = {c["cycle"]: c for c in summary["cycles"]}
    assert sorted(got) == sorted(expected) and len(got) >= 2
    for cycle, (charge_mah, discharge_mah) in expected.items():
        assert got[cycle]["charge_mah_per_g"] == pytest.approx(charge_mah, rel=1e-5, abs=1e-9)
        assert got[cycle]["discharge_mah_per_g"] == pytest.approx(discharge_mah, rel=1e-5, abs=1e-9)
        ce = got[cycle]["coulombic_efficiency_pct"]
        if charge_mah > 0:
            assert ce == pytest.approx(100 * discharge_mah / charge_mah, rel=1e-5)
        else:
            assert ce is None
    assert any(c["discharge_mah_per_g"] > 0 and c["charge_mah_per_g"] > 0 for c in summary["cycles"])


@pytest.mark.parametrize("path", MPR + NEWARE, ids=lambda p: p.name)
def test_vendor_columns_follow_bdf_conventions(path: Path) -> None:
    data = read_cycling_file(path)
    cols = data.columns
    assert np.all(np.diff(cols[TEST_TIME]) >= 0) and cols[TEST_TIME][0] == 0.0
    assert np.all(np.diff(cols[CHARGE_AH]) >= 0) and np.all(np.diff(cols[DISCHARGE_AH]) >= 0)  # cumulative
    assert np.all(np.diff(cols[STEP_COUNT]) >= 0) and np.all(np.diff(cols[CYCLE]) >= 0)
    charging = cols[CURRENT] > 1e-9  # BDF: positive current charges; capacity grows only with its own sign
    assert np.all(np.diff(cols[DISCHARGE_AH])[charging[1:]] <= 1e-12)
    assert data.metadata["reader"].split()[0] in ("galvani", "NewareNDA")
    assert "Unix Time / s" not in cols and "unknown" in data.metadata["time_zone"]  # local times, no zone: said so


def test_the_format_is_found_from_content_not_the_name(tmp_path: Path) -> None:
    renamed = tmp_path / "cell-data.bin"
    shutil.copy(MPR[0], renamed)
    assert detect_format(renamed).name == "biologic-mpr"
    assert {detect_format(p).name for p in NEWARE} == {"neware-nda", "neware-ndax"}
    assert set(FORMATS) >= {"bdf-csv", "biologic-mpr", "neware-nda", "neware-ndax"}


def test_a_truncated_vendor_file_is_refused_in_one_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.mpr"
    cut.write_bytes(MPR[0].read_bytes()[:3000])
    with pytest.raises(AnalysisInputError, match="cut.mpr: BioLogic EC-Lab .mpr .*the reader failed"):
        read_cycling_file(cut)
    result = subprocess.run([*EXE, "analyze", "cycling", str(cut), "--active-mass-g", "0.001"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "cut.mpr" in result.stderr
    unknown = tmp_path / "notes.txt"
    unknown.write_text("not a cycler file\n")
    result = subprocess.run([*EXE, "analyze", "cycling", str(unknown)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a cycler data file" in result.stderr and "Traceback" not in result.stderr


def test_analyze_cycling_on_a_neware_file_gives_the_summary_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "cycling.png"
    result = subprocess.run([*EXE, "analyze", "cycling", str(NEWARE[1]), "--active-mass-g", "1", "--json",
                             "--plot", str(plot)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "neware-ndax" and summary["n_cycles"] == 8 and plot.stat().st_size > 10_000
    assert 95 < summary["cycles"][2]["coulombic_efficiency_pct"] < 100.5
