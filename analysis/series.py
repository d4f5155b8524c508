"""Which datasets make a series: expno lists ("10-19,21") and a run folder's datasets.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from analysis.errors import AnalysisInputError


def parse_expnos(text: str) -> list[int]:
    """'10-19,21' -> [10, ..., 19, 21]; AnalysisInputError on anything else."""
    expnos: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise AnalysisInputError(f"--expnos: '{part}' is not a number or a range like 10-19")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            raise AnalysisInputError(f"--expnos: range '{part}' runs backwards")
        if last - first > 10000:
            raise AnalysisInputError(f"--expnos: range '{part}' is too long")
        expnos.extend(range(first, last + 1))
    if not expnos:
        raise AnalysisInputError("--expnos: empty list")
    if len(set(expnos)) != len(expnos):
        raise AnalysisInputError("--expnos: an experiment number is listed twice")
    return expnos


def parse_sites(text: str | None) -> str | list[float] | None:
    """'auto' or '2.31,1.29,-4.56' -> 'auto' or a list of ppm; AnalysisInputError on bad numbers."""
    if text is None or str(text).strip().lower() == "auto":
        return "auto"
    try:
        sites = [float(s) for s in str(text).split(",") if s.strip()]
    except ValueError as exc:
        raise AnalysisInputError(f"--sites: '{text}' is not a comma-separated list of ppm values or 'auto'") from exc
    if len(sites) < 2 or len(set(sites)) != len(sites):
        raise AnalysisInputError(f"--sites: '{text}' needs at least two distinct shifts")
    return sites


def series_datasets(run_dir: Path | str) -> list[Path]:
    """Expno folders of the entries with status 'done' in <run_dir>/datasets.json."""
    run_dir = Path(run_dir)
    journal = run_dir / "datasets.json"
    if not run_dir.is_dir():
        raise AnalysisInputError(f"{run_dir}: run folder not found")
    if not journal.is_file():
        raise AnalysisInputError(f"{journal}: not found (the runner writes it)")
    try:
        entries = json.loads(journal.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnalysisInputError(f"{journal}: unreadable JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise AnalysisInputError(f"{journal}: expected a list of dataset entries")
    paths = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "dataset_dir" not in entry or "expno" not in entry:
            raise AnalysisInputError(f"{journal}: entry {index} lacks dataset_dir or expno")
        if entry.get("status") != "done":
            continue
        base = Path(entry["dataset_dir"])
        base = base if base.is_absolute() else run_dir / base
        candidates = [base / str(entry.get("name", "")) / str(entry["expno"]), base / str(entry["expno"]), base]
        found = next((c for c in candidates if (c / "acqus").is_file()), None)
        if found is None:
            raise AnalysisInputError(f"{journal}: entry {index}: no dataset at {candidates[0]} or {candidates[1]}")
        paths.append(found)
    if not paths:
        raise AnalysisInputError(f"{journal}: no entry with status 'done'")
    return paths
