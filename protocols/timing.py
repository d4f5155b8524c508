"""Pulse-sequence and ramp arithmetic: how long things take, from physics."""

from __future__ import annotations

from typing import Sequence

# F1 quadrature modes whose t1 increases every second FID (States, States-TPPI, echo-antiecho)
_PAIRED_FNMODES = {4, 5, 6}


def exsy_acquisition_s(*, ns: int, ds: int, td1: int, td2: int, d1_s: float, mixing_time_s: float,
                       in0_s: float, sw_ppm: float, sfo1_mhz: float, fn_mode: int, overhead_s: float) -> float:
    """Duration of one 2D EXSY: DS dummy scans, then NS scans of every t1 FID, each D1 + t1 + D8 + AQ."""
    aq_s = td2 / (2.0 * sw_ppm * sfo1_mhz)
    per_scan_fixed_s = d1_s + mixing_time_s + aq_s
    if fn_mode in _PAIRED_FNMODES:
        t1_sum_s = in0_s * sum(r // 2 for r in range(td1))
    else:
        t1_sum_s = in0_s * sum(range(td1))
    return overhead_s + ds * per_scan_fixed_s + ns * (td1 * per_scan_fixed_s + t1_sum_s)


def spectrum_1d_s(*, ns: int, ds: int, d1_s: float, aq_s: float, overhead_s: float) -> float:
    """Duration of a one-pulse 1D: DS + NS scans, each D1 + AQ (the pulse itself is negligible)."""
    return overhead_s + (ds + ns) * (d1_s + aq_s)


def t1_series_s(*, ns: int, ds: int, d1_s: float, aq_s: float, delays_s: Sequence[float], overhead_s: float) -> float:
    """Duration of a saturation/inversion-recovery pseudo-2D: DS dummy scans, then NS scans of D1 + vd + AQ per delay."""
    first_s = delays_s[0] if delays_s else 0.0
    return overhead_s + ds * (d1_s + first_s + aq_s) + ns * sum(d1_s + vd_s + aq_s for vd_s in delays_s)


def ramp_s(from_k: float, to_k: float, ramp_k_per_min: float) -> float:
    """Time to ramp the set point at the given rate."""
    return abs(to_k - from_k) / ramp_k_per_min * 60.0
