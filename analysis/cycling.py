"""Cycling summary of one cycler file (BDF CSV or a vendor file, see analysis.readers): capacities, CE, plateau.

Columns are read by BDF label (extra columns are ignored). Capacities come from the file's own
capacity columns (the cycler's coulomb counting; counter resets are tolerated) or, when a file
has none, from integrating `Current / A` over `Test Time / s` (positive current = charge).
Each cycle starts with a charge; CE = discharge / charge.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.readers import read_cycling_file
from common.bdf_columns import CHARGE_AH, CURRENT, CYCLE, DISCHARGE_AH, TEST_TIME, VOLTAGE

CHARGE_COLUMN, DISCHARGE_COLUMN = CHARGE_AH, DISCHARGE_AH
LI2S_EQUILIBRIUM_V = 1.59
"""Li2S <-> S equilibrium vs In-Li: the paper's 1.69 V activation plateau less its ~100 mV overpotential."""


def _capacity_ah(time_s: np.ndarray, current_a: np.ndarray, sign: float) -> np.ndarray:
    """Cumulative charge passed with the given current sign (Ah), trapezoid rule."""
    part = np.clip(sign * current_a, 0, None)
    steps = 0.5 * (part[1:] + part[:-1]) * np.diff(time_s)
    return np.concatenate([[0.0], np.cumsum(steps)]) / 3600.0


def _counted_capacities_ah(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Cumulative charge and discharge Ah from the file's capacity columns, robust to counter resets.

    The columns are the cycler's coulomb counting since the test start (exact across a resumed
    step, unlike integrating current over a time gap); a counter that resets (a drop) adds nothing.
    """
    if CHARGE_COLUMN not in cols or DISCHARGE_COLUMN not in cols:
        return None
    out = []
    for name in (CHARGE_COLUMN, DISCHARGE_COLUMN):
        steps = np.clip(np.diff(cols[name], prepend=0.0), 0.0, None)
        out.append(np.cumsum(steps))
    return out[0], out[1]


def _mean_voltage(time_s: np.ndarray, voltage_v: np.ndarray, mask: np.ndarray) -> float | None:
    """Time-weighted mean voltage over consecutive rows in `mask` (gaps between runs not counted)."""
    both = mask[1:] & mask[:-1]
    dt = np.diff(time_s)[both]
    if dt.sum() <= 0:
        return None
    return float(np.sum(0.5 * (voltage_v[1:] + voltage_v[:-1])[both] * dt) / dt.sum())


def plateau_voltage(voltage_v: np.ndarray, capacity_mah_g: np.ndarray, bin_v: float = 0.01) -> float | None:
    """Voltage where most capacity is passed (peak of the dQ/dV histogram), the plateau."""
    if voltage_v.size < 3 or capacity_mah_g[-1] - capacity_mah_g[0] <= 0:
        return None
    dq = np.diff(capacity_mah_g)
    v_mid = 0.5 * (voltage_v[1:] + voltage_v[:-1])
    edges = np.arange(v_mid.min() - bin_v, v_mid.max() + 2 * bin_v, bin_v)
    hist, edges = np.histogram(v_mid, bins=edges, weights=dq)
    k = int(np.argmax(hist))
    return float(0.5 * (edges[k] + edges[k + 1]))


def summarize_cycling(path: Path | str, active_mass_g: float | None = None,
                      equilibrium_v: float | None = None) -> tuple[dict, list[dict]]:
    """(summary JSON, voltage profiles) of one cycler file (any format of analysis.readers); mass from the
    argument or the file's metadata."""
    data = read_cycling_file(path)
    cols, meta = data.columns, data.metadata
    if CYCLE not in cols:
        raise AnalysisInputError(f"{path}: no '{CYCLE}' column, cannot tell the cycles apart")
    if cols[TEST_TIME].size < 2:
        raise AnalysisInputError(f"{path}: fewer than two data rows")
    mass = active_mass_g if active_mass_g is not None else meta.get("active_mass_g")
    if mass is None or not float(mass) > 0:
        raise AnalysisInputError(f"{path}: active mass unknown (give --active-mass-g or active_mass_g in the metadata JSON)")
    mass = float(mass)
    t, v, i, cyc = cols[TEST_TIME], cols[VOLTAGE], cols[CURRENT], cols[CYCLE]
    cycles, profiles = [], []
    counted = _counted_capacities_ah(cols)
    for number in np.unique(cyc):
        sel = cyc == number
        ts, vs, cs = t[sel], v[sel], i[sel]
        if counted is not None:  # the cycler's own coulomb counts, since the end of the previous cycle
            start = int(np.argmax(sel))
            base = [c[start - 1] if start > 0 else 0.0 for c in counted]
            charge = (counted[0][sel] - base[0]) * 1000 / mass
            discharge = (counted[1][sel] - base[1]) * 1000 / mass
        else:
            charge = _capacity_ah(ts, cs, +1.0) * 1000 / mass
            discharge = _capacity_ah(ts, cs, -1.0) * 1000 / mass
        q_ch, q_dis = float(charge[-1]), float(discharge[-1])
        entry: dict[str, Any] = {"cycle": int(number), "charge_mah_per_g": q_ch, "discharge_mah_per_g": q_dis,
                 "coulombic_efficiency_pct": 100 * q_dis / q_ch if q_ch > 0 else None}
        on_charge, on_discharge = cs > 0, cs < 0
        entry["charge_plateau_v"] = plateau_voltage(vs[on_charge], charge[on_charge]) if on_charge.sum() > 2 else None
        entry["discharge_plateau_v"] = (plateau_voltage(vs[on_discharge], discharge[on_discharge])
                                        if on_discharge.sum() > 2 else None)
        entry["mean_charge_voltage_v"] = _mean_voltage(ts, vs, on_charge)
        entry["mean_discharge_voltage_v"] = _mean_voltage(ts, vs, on_discharge)
        means = (entry["mean_charge_voltage_v"], entry["mean_discharge_voltage_v"])
        entry["polarisation_v"] = 0.5 * (means[0] - means[1]) if None not in means else None
        entry["activation_overpotential_v"] = (entry["charge_plateau_v"] - equilibrium_v
                                               if equilibrium_v is not None and entry["charge_plateau_v"] is not None
                                               else None)
        cycles.append(entry)
        for kind, mask, cap in (("charge", on_charge, charge), ("discharge", on_discharge, discharge)):
            if mask.sum() > 1:
                profiles.append({"cycle": int(number), "kind": kind, "capacity_mah_per_g": cap[mask].tolist(),
                                 "voltage_v": vs[mask].tolist()})
    with_ce = [c["coulombic_efficiency_pct"] for c in cycles if c["coulombic_efficiency_pct"] is not None
               and c["discharge_mah_per_g"] > 0]
    first = cycles[0]
    activation: dict[str, Any] = {"plateau_v": first["charge_plateau_v"]}
    if equilibrium_v is not None and first["charge_plateau_v"] is not None:
        activation["overpotential_v"] = first["charge_plateau_v"] - equilibrium_v
        activation["overpotential_reference"] = "charge plateau minus equilibrium_v"
    else:
        both = next((c for c in cycles if c["charge_plateau_v"] is not None and c["discharge_plateau_v"] is not None), None)
        activation["overpotential_v"] = (0.5 * (both["charge_plateau_v"] - both["discharge_plateau_v"])
                                         if both else None)
        activation["overpotential_reference"] = "half the charge-discharge plateau gap"
    summary = {"file": str(path), "format": meta.get("source_format"), "reader": meta.get("reader"),
               "active_mass_g": mass, "area_cm2": meta.get("area_cm2"), "cycles": cycles,
               "n_cycles": len(cycles),
               "average": {"charge_mah_per_g": float(np.mean([c["charge_mah_per_g"] for c in cycles])),
                           "discharge_mah_per_g": float(np.mean([c["discharge_mah_per_g"] for c in cycles])),
                           "coulombic_efficiency_pct": float(np.mean(with_ce)) if with_ce else None},
               "activation": activation}
    keep = {cycles[0]["cycle"], cycles[min(1, len(cycles) - 1)]["cycle"], cycles[-1]["cycle"]}
    return summary, [p for p in profiles if p["cycle"] in keep]


def write_cycle_csv(cycles: list[dict], path: Path | str) -> None:
    """The per-cycle table as CSV, written atomically (a reader never sees half a file)."""
    path = Path(path)
    if not cycles:
        raise AnalysisInputError(f"{path}: no cycles to write")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(cycles[0]))
        writer.writeheader()
        writer.writerows(cycles)
    tmp.replace(path)
