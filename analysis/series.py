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


def parse_sites(text: str | None, min_sites: int = 2) -> str | list[float]:
    """'auto' or '2.31,1.29,-4.56' -> 'auto' or a list of at least min_sites distinct ppm values."""
    if text is None or str(text).strip().lower() == "auto":
        return "auto"
    try:
        sites = [float(s) for s in str(text).split(",") if s.strip()]
    except ValueError as exc:
        raise AnalysisInputError(f"--sites: '{text}' is not a comma-separated list of ppm values or 'auto'") from exc
    if len(sites) < min_sites or len(set(sites)) != len(sites):
        raise AnalysisInputError(f"--sites: '{text}' needs at least {min_sites} distinct shift(s)")
    return sites


def series_datasets(run_dir: Path | str) -> list[Path]:
    """Expno folders of the EXSY entries (kind acquire_2d) with status 'done' in <run_dir>/datasets.json."""
    paths = run_datasets(run_dir, "acquire_2d")
    if not paths:
        raise AnalysisInputError(f"{Path(run_dir) / 'datasets.json'}: no EXSY entry with status 'done'")
    return paths


def run_datasets(run_dir: Path | str, kind: str) -> list[Path]:
    """Expno folders of the entries of one step kind with status 'done' in <run_dir>/datasets.json."""
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
        if entry.get("status") != "done" or entry.get("kind", "acquire_2d") != kind:
            continue
        base = Path(entry["dataset_dir"])
        base = base if base.is_absolute() else run_dir / base
        candidates = [base / str(entry.get("name", "")) / str(entry["expno"]), base / str(entry["expno"]), base]
        found = next((c for c in candidates if (c / "acqus").is_file()), None)
        if found is None:
            raise AnalysisInputError(f"{journal}: entry {index}: no dataset at {candidates[0]} or {candidates[1]}")
        paths.append(found)
    return paths


def expno_paths(dataset_dir: Path | str, expnos: list[int] | str) -> list[Path]:
    """Expno folders of a TopSpin data folder, each checked to hold acqus, acqu2s and ser."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise AnalysisInputError(f"{dataset_dir}: dataset folder not found")
    expno_list = parse_expnos(expnos) if isinstance(expnos, str) else [int(e) for e in expnos]
    paths = [dataset_dir / str(e) for e in expno_list]
    for path in paths:
        missing = [f for f in ("acqus", "acqu2s", "ser") if not (path / f).is_file()]
        if missing:
            raise AnalysisInputError(f"{path}: missing {', '.join(missing)} (expno not a TopSpin 2D dataset)")
    return paths


def parse_names(text: str | list[str] | None, n_sites: int | None = None) -> list[str] | None:
    """'Li2S,LPSC,LiI' -> names; distinct, non-empty, free of '-' (pairs are written 'A-B')."""
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if len(set(names)) != len(names) or any(not n or "-" in n for n in names):
        raise AnalysisInputError(f"--names: names must be distinct, non-empty and free of '-' ({','.join(names)})")
    if n_sites is not None and len(names) != n_sites:
        raise AnalysisInputError(f"--names: {len(names)} names for {n_sites} sites")
    return names
