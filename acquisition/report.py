"""The run report: on Monday, one file that says what was acquired and everything that went wrong."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from .adaptive_report import adaptive_section
from .journal import Journal
from .progress import format_duration
from .run_folder import RunFolder, write_atomic

REPORT_FILE = "report.md"
# journal events worth a line in the account of what happened
NOTABLE_EVENTS = {
    "vt_excursion": "sample temperature left the band during an acquisition",
    "reacquire": "point acquired again after an excursion",
    "partial": "interrupted acquisition kept and marked partial",
    "resume_continue": "cycler step continued after a restart",
    "reestablish_temperature": "VT set point sent again after a restart",
    "stop_requested": "stop requested; the running acquisition was let finish",
    "paused": "paused",
    "d1_fallback": "EXSY recycle delay set to the rule's maximum (no usable T1)",
}


def _when(unix_s: float | None) -> str:
    return dt.datetime.fromtimestamp(unix_s).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if unix_s else "-"


def _retries(log_path: Path) -> Counter[str]:
    """Retried transient faults per logger, counted from the run log."""
    counts: Counter[str] = Counter()
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            if " WARNING " in line and "retry" in line.lower():
                counts[line.split(" WARNING ", 1)[1].split(" ", 1)[0]] += 1
    return counts


def build_report(folder: RunFolder, journal: Journal, cycling: dict[str, Any]) -> str:
    """Markdown: state, steps, datasets with their status, problems, notable events, retries, cycling."""
    steps = journal.steps()
    meta = journal.meta()
    datasets = journal.datasets()
    started = [s.started_at for s in steps if s.started_at]
    ended = [s.ended_at for s in steps if s.ended_at]
    counts = Counter(s.status for s in steps)
    lines = [f"# Run report: {folder.root.name}", "",
             f"- state: **{meta.get('state', 'unknown')}**",
             f"- instrument time: {_when(min(started) if started else None)} to {_when(max(ended) if ended else None)}"
             + (f" ({format_duration(max(ended) - min(started))})" if started and ended else ""),
             "- steps: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "failed", "skipped", "pending", "running")),
             ""]
    if datasets:
        lines += ["## Datasets", "", "| dataset | step kind | T target / K | T sample / K | parameters | status | note |",
                  "|---|---|---|---|---|---|---|"]
        for d in sorted(datasets, key=lambda d: (d["dataset"], d["expno"])):
            sample = f"{d['sample_temperature_k']:.2f}" if d["sample_temperature_k"] is not None else "-"
            params = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in d["params"].items())
            lines.append(f"| {d['dataset']}/{d['expno']} | {d['kind']} | {d['temperature_k']:.2f} | {sample} | "
                         f"{params or '-'} | {d['status']} | {d['note'] or ''} |")
        lines.append("")
    lines += _temperature_table(journal)
    lines += _calibration_section(journal)
    lines += adaptive_section(journal)
    problems = [s for s in steps if s.status in ("failed", "running")]
    unusable = [d for d in datasets if d["status"] in ("partial", "flagged", "failed")]
    lines += ["## What went wrong", ""]
    if not problems and not unusable and counts.get("skipped", 0) == 0:
        lines.append("Nothing: every step finished and every dataset is complete.")
    for s in problems:
        reason = s.outcome.get("error", "still running when the runner stopped") if s.status == "failed" else \
            "left running: the runner stopped during it (resume reconciles it)"
        lines.append(f"- step {s.index} ({s.label}) **{s.status}**: {reason}")
    if counts.get("skipped", 0):
        lines.append(f"- {counts['skipped']} step(s) skipped after their lane failed; `exsylab resume` runs them")
    for d in unusable:
        lines.append(f"- dataset {d['dataset']}/{d['expno']} is **{d['status']}** (kept, marked in "
                     f"exsylab-status.txt): {d['note'] or ''}")
    lines.append("")
    notable = [e for e in journal.events(limit=100_000) if e["status"] in NOTABLE_EVENTS]
    if notable:
        lines += ["## Events", ""]
        for e in notable:
            detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
            step = f"step {e['index']}: " if e["index"] is not None else ""
            lines.append(f"- {_when(e['at'])}: {step}{NOTABLE_EVENTS[e['status']]} ({detail})")
        lines.append("")
    retries = _retries(folder.logs / "run.log")
    if retries:
        lines += ["## Transient faults recovered by retry", ""]
        lines += [f"- {logger}: {n}" for logger, n in sorted(retries.items())] + [""]
    if cycling:
        lines += ["## Cycling", ""]
        for cell, info in cycling.items():
            ce = info.get("mean_coulombic_efficiency_pct")
            lines.append(f"- {cell}: {info['cycles']} cycles" + (f", mean coulombic efficiency {ce:.2f} %" if ce else "")
                         + f"; data in {Path(info['bdf']).name}")
        lines.append("")
    return "\n".join(lines)


def _t1_text(fit: dict[str, Any]) -> str:
    """'Li2S 1.52 ± 0.03 s, LiI fit failed (reason)' for a T1 fit as the NMR lane records it."""
    if fit.get("error"):
        return f"fit failed: {fit['error']}"
    parts = []
    for site in fit.get("sites", []):
        name = site.get("name") or f"{site['shift_ppm']:g} ppm"
        if site.get("ok") and site.get("t1_s") is not None:
            err = site.get("t1_err_s")
            parts.append(f"{name} {site['t1_s']:.3g}" + (f" ± {err:.2g}" if err is not None else "") + " s")
        else:
            parts.append(f"{name} fit failed ({site.get('reason', '')})")
    return ", ".join(parts) or "-"


def _d1_text(d1_s: float, outcome: dict[str, Any]) -> str:
    """'5 (T1 rule: 61 s, clamped)' or '5 (maximum: no usable T1)' for an EXSY point's recycle delay."""
    wanted_s = outcome.get("d1_wanted_s")
    if outcome.get("d1_fallback"):
        return f"{d1_s:.3g} (maximum: {outcome['d1_fallback']})"
    if wanted_s is not None and abs(wanted_s - d1_s) > 1e-9:
        return f"{d1_s:.3g} (rule gave {wanted_s:.3g}, clamped)"
    return f"{d1_s:.3g}"


def _temperature_table(journal: Journal) -> list[str]:
    """Per temperature of a VT series: T1 per site ± error, the EXSY D1 used, the 1D spectrum."""
    steps = journal.steps()
    datasets = journal.datasets()
    if not any(s.kind in ("t1", "spectrum_1d") for s in steps):
        return []
    late_fits = {e["detail"].get("t1_step"): e["detail"] for e in journal.events(limit=100_000)
                 if e["status"] == "t1_measured" and "t1_step" in e["detail"]}  # fitted after a resume

    def by_temperature(kind: str) -> dict[float, list[dict[str, Any]]]:
        out: dict[float, list[dict[str, Any]]] = {}
        for d in datasets:
            if d["kind"] == kind and d["status"] == "done":
                out.setdefault(round(d["temperature_k"], 2), []).append(d)
        return out

    t1_sets, spectra, exsy = by_temperature("t1"), by_temperature("spectrum_1d"), by_temperature("acquire_2d")
    outcomes = {s.index: s.outcome for s in steps}
    temperatures = sorted({*t1_sets, *spectra, *exsy})
    if not temperatures:
        return []
    lines = ["## Temperatures", "", "| T / K | T1 per site | EXSY D1 / s | 1D spectrum |", "|---|---|---|---|"]
    for temperature_k in temperatures:
        fits = [outcomes.get(d["idx"], {}).get("t1") or late_fits.get(d["idx"]) for d in t1_sets.get(temperature_k, [])]
        t1 = "; ".join(_t1_text(f) for f in fits if f) or "-"
        d1 = ", ".join(sorted({_d1_text(float(d["params"]["d1_s"]), outcomes.get(d["idx"], {}))
                               for d in exsy.get(temperature_k, []) if "d1_s" in d["params"]})) or "-"
        spectrum = ", ".join(f"{d['dataset']}/{d['expno']}" for d in spectra.get(temperature_k, [])) or "-"
        lines.append(f"| {temperature_k:.2f} | {t1} | {d1} | {spectrum} |")
    return lines + [""]


def _calibration_section(journal: Journal) -> list[str]:
    """A MAS calibration run's result: set point, thermometer shift, sample temperature, and the station file."""
    fits = [s for s in journal.steps() if s.kind == "fit_calibration" and s.status == "done"]
    lines: list[str] = []
    for fit in fits:
        out = fit.outcome
        lines += [f"## MAS temperature calibration at {out['mas_rate_hz']:g} Hz", "",
                  f"Written to `{out['station_file']}` (rms residual {out['residual_k']:.3f} K about the fitted line).",
                  "", "| set point / K | line / ppm | sample / K | sample - set point / K |", "|---|---|---|---|"]
        lines += [f"| {r['setpoint_k']:.2f} | {r['shift_ppm']:.3f} | {r['sample_k']:.2f} | "
                  f"{r['sample_k'] - r['setpoint_k']:+.2f} |" for r in out["readings"]]
        lines.append("")
    return lines


def write_report(folder: RunFolder, journal: Journal, cycling: dict[str, Any]) -> Path:
    """Write RUN_DIR/report.md (atomically) and return its path."""
    path = folder.root / REPORT_FILE
    write_atomic(path, build_report(folder, journal, cycling))
    return path
