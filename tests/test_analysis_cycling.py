"""Cycling summary from a Battery Data Format CSV with a metadata JSON beside it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from analysis.cycling import summarize_cycling
from analysis.errors import AnalysisInputError

COLUMNS = ["Test Time / s", "Voltage / V", "Current / A", "Cycle Count / 1", "Step Count / 1", "Step Index / 1",
           "Charging Capacity / Ah", "Discharging Capacity / Ah", "Unix Time / s", "Temperature / K"]


def write_bdf(path, cycles=3, current_a=1e-4, charge_s=3600.0, efficiency=(0.9, 0.95, 0.975)):
    """Constant-current cycles: charge on a 1.69 V plateau, discharge on a 1.49 V plateau, 10 s rows."""
    t, rows = 0.0, []
    for c in range(1, cycles + 1):
        for step, (sign, duration, plateau) in enumerate(((1, charge_s, 1.69), (-1, charge_s * efficiency[c - 1], 1.49))):
            n = round(duration / 10)
            for k in range(n + 1):
                frac = k / n
                volt = plateau + 0.3 * (frac - 0.5) ** 3 * sign
                rows.append([t + k * 10, volt, sign * current_a, c, 2 * c + step - 1, step + 1,
                             current_a * k * 10 / 3600 if sign > 0 else 0, current_a * k * 10 / 3600 if sign < 0 else 0,
                             1.7e9 + t + k * 10, 298.0])
            t += n * 10 + 10
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def test_capacities_efficiency_and_plateau(tmp_path):
    bdf = write_bdf(tmp_path / "cell.csv")
    (tmp_path / "cell.metadata.json").write_text(json.dumps({"active_mass_g": 0.001, "area_cm2": 0.785}))
    summary, profiles = summarize_cycling(bdf)
    assert summary["n_cycles"] == 3 and summary["area_cm2"] == 0.785
    first = summary["cycles"][0]
    assert first["charge_mah_per_g"] == pytest.approx(100.0, rel=0.01)  # 0.1 mA x 1 h / 1 mg
    assert [c["coulombic_efficiency_pct"] for c in summary["cycles"]] == pytest.approx([90, 95, 97.5], abs=0.05)
    assert summary["average"]["coulombic_efficiency_pct"] == pytest.approx(94.17, abs=0.05)
    assert summary["activation"]["plateau_v"] == pytest.approx(1.69, abs=0.02)
    assert summary["activation"]["overpotential_v"] == pytest.approx(0.10, abs=0.02)
    assert {p["kind"] for p in profiles} == {"charge", "discharge"}


def test_mass_argument_and_file_json_name(tmp_path):
    bdf = write_bdf(tmp_path / "cell.csv", cycles=1, efficiency=(0.95,))
    (tmp_path / "cell.csv.json").write_text(json.dumps({"active_mass_g": 0.002}))
    assert summarize_cycling(bdf)[0]["cycles"][0]["charge_mah_per_g"] == pytest.approx(50.0, rel=0.01)
    assert summarize_cycling(bdf, active_mass_g=0.001)[0]["cycles"][0]["charge_mah_per_g"] == pytest.approx(100, rel=0.01)


def test_refusals(tmp_path):
    with pytest.raises(AnalysisInputError, match="not found"):
        summarize_cycling(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("Voltage / V,Current / A\n1,2\n")
    with pytest.raises(AnalysisInputError, match="missing column"):
        summarize_cycling(bad, 0.001)
    bdf = write_bdf(tmp_path / "cell.csv", cycles=1, efficiency=(0.95,))
    with pytest.raises(AnalysisInputError, match="active mass"):
        summarize_cycling(bdf)
    assert np.isfinite(summarize_cycling(bdf, 0.001)[0]["average"]["charge_mah_per_g"])
