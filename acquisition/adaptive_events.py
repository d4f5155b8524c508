"""The journal events of an adaptive VT-EXSY run, and their one-line text (log, live view, status)."""

from __future__ import annotations

from typing import Any

DECISION = "adaptive_decision"  # written before the point it chose is acquired
POINT = "adaptive_point"  # a point taken: expno, elapsed clock time
PROGRESS = "adaptive_progress"  # after each fit: stderrs against the target, hours, ETA


def stderr_text(stderr: dict[str, Any] | None) -> str:
    """'Li2S-LPSC 0.0125, ...' (a quantity the analysis could not give: 'n/a')."""
    if not stderr:
        return "-"
    return ", ".join(f"{q} {v:.3g}" if v is not None else f"{q} n/a" for q, v in stderr.items())


def progress_text(detail: dict[str, Any]) -> str:
    """One line from an adaptive_progress event: points, hours of budget, stderrs against the target, ETA."""
    if detail.get("stop_reason"):
        tail = f"; stopping: {detail['stop_reason']}"
    elif detail.get("eta_h") is not None:
        tail = f"; about {detail['eta_h']:.1f} h more to the target"
    else:
        tail = "; the target is not predicted within the budget"
    return (f"adaptive EXSY: {detail.get('points', 0)} points, {detail.get('hours_used', 0.0):.2f} of "
            f"{detail.get('budget_h', 0.0):g} h; stderr {stderr_text(detail.get('stderr'))} "
            f"(target {detail.get('target', 0.0):g}){tail}")
