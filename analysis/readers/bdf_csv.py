"""Battery Data Format CSV: columns by label (or BDF notation, or older exsylab labels), metadata from the JSON beside it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from analysis.errors import AnalysisInputError
from common.bdf_columns import CURRENT, TEST_TIME, VOLTAGE, canonical_label

from .model import CyclingData

REQUIRED = (TEST_TIME, VOLTAGE, CURRENT)
"""The format's required quantities."""


def load_bdf(path: Path | str) -> dict[str, np.ndarray]:
    """Numeric columns of a BDF CSV as float arrays, keyed by the BDF preferred label (text columns are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisInputError(f"{path}: file not found")
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = [canonical_label(h) for h in next(reader)]
            rows = [r for r in reader if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise AnalysisInputError(f"{path}: unreadable CSV ({exc})") from exc
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise AnalysisInputError(f"{path}: missing column(s) {', '.join(missing)}")
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(header):
        try:
            columns[name] = np.array([float(r[index]) for r in rows])
        except (ValueError, IndexError) as exc:
            if name in REQUIRED:
                raise AnalysisInputError(f"{path}: column '{name}' has a non-numeric value ({exc})") from exc
    return columns


def load_metadata(path: Path | str) -> dict:
    """The metadata JSON beside a BDF CSV: '<stem>.json' (as exsylab writes it: X.bdf.csv -> X.bdf.json),
    '<file>.json' or '<stem>.metadata.json' ({} if none)."""
    path = Path(path)
    for candidate in (path.with_name(path.stem + ".json"), path.with_name(path.name + ".json"),
                      path.with_name(path.stem + ".metadata.json")):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise AnalysisInputError(f"{candidate}: unreadable JSON ({exc})") from exc
    return {}


def read(path: Path) -> CyclingData:
    """A BDF CSV and its sidecar metadata."""
    return CyclingData(load_bdf(path), {**load_metadata(path), "source_file": str(path), "reader": "exsylab BDF CSV"})
