"""The run report's account of an adaptive VT-EXSY run: why it stopped, what it reached, the path of decisions."""

from __future__ import annotations

from typing import Any

from .adaptive_events import DECISION, PROGRESS, progress_text, stderr_text
from .journal import Journal


def adaptive_section(journal: Journal) -> list[str]:
    """Per adaptive step: stop reason, hours of budget, final Ea, and one row per decision (seed, design, stop)."""
    lines: list[str] = []
    events = journal.events(limit=10_000_000)
    for step in (s for s in journal.steps() if s.kind == "adaptive_exsy"):
        decisions = [e["detail"] for e in events if e["index"] == step.index and e["status"] == DECISION]
        if not decisions:
            continue
        out = step.outcome if step.status == "done" else {}
        unit = "eV on Ea" if decisions[-1].get("target_kind", "ea_stderr_ev") == "ea_stderr_ev" else "relative, on rates"
        lines += [f"## Adaptive EXSY ({step.label})", ""]
        if out:
            lines += [f"- stopped: **{out['stop_reason']}** after {out['points']} points, {out['hours_used']:.2f} h of "
                      f"the {out['budget_h']:g} h budget (planned time of the points and VT moves taken)",
                      f"- target: stderr {out['target']:g} ({unit}); reached: {stderr_text(out['stderr'])}"]
            lines += [f"- Ea {a['pair']}: {a['ea_ev']:.4f} ± {a['ea_stderr_ev']:.4f} eV" for a in out["arrhenius"]]
        else:
            lines.append(f"- step {step.status}: {len(decisions)} decisions so far (`exsylab resume` continues)")
        lines += ["", "| # | reason | T / K | tmix / s | expno | gain / h | hours used | stderr before |",
                  "|---|---|---|---|---|---|---|---|"]
        for d in decisions:
            if d["action"] == "stop":
                lines.append(f"| {d['decision']} | stop: {d['stop_reason']} | - | - | - | - | {d['hours_used']:.2f} | "
                             f"{stderr_text(d.get('stderr'))} |")
                continue
            gain = f"{d['gain_per_h']:.3g}" if "gain_per_h" in d else "-"
            lines.append(f"| {d['decision']} | {d['reason']} | {d['temperature_k']:.2f} | {d['mixing_time_s']:g} | "
                         f"{d['expno']} | {gain} | {d['hours_used']:.2f} | {stderr_text(d.get('stderr'))} |")
        lines.append("")
    return lines


def adaptive_status(journal: Journal) -> list[dict[str, Any]]:
    """Per adaptive step, its live account: the latest progress (points, hours, stderrs vs target, ETA), stop reason."""
    events = journal.events(limit=10_000_000)
    out = []
    for step in (s for s in journal.steps() if s.kind == "adaptive_exsy"):
        mine = [e for e in events if e["index"] == step.index]
        progress: dict[str, Any] = next((e["detail"] for e in reversed(mine) if e["status"] == PROGRESS), {})
        out.append({"index": step.index, "status": step.status, "progress": progress,
                    "decisions": sum(1 for e in mine if e["status"] == DECISION),
                    "stop_reason": step.outcome.get("stop_reason") if step.status == "done" else None})
    return out


def adaptive_lines(accounts: list[dict[str, Any]]) -> list[str]:
    """One line per adaptive step for the terminal (`exsylab run`, `exsylab status`)."""
    lines = []
    for a in accounts:
        account = progress_text(a["progress"]) if a["progress"] else "adaptive EXSY: seed points"
        lines.append(f"{account} (step {a['status']}, {a['decisions']} decisions)")
    return lines
