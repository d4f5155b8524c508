"""Piecewise-linear calibration maps (VT set point <-> sample temperature), end segments extended."""

from __future__ import annotations

import bisect
from typing import Sequence


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """y(x) through points sorted by x; beyond the ends the end segments are extended (one point: an offset)."""
    if len(points) == 1:
        return x + (points[0][1] - points[0][0])
    xs = [p[0] for p in points]
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(points) - 2)
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
