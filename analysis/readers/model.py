"""The one in-memory shape of cycler data, whatever file it came from, and helpers that build it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CyclingData:
    """Columns under their BDF labels (SI units, capacities cumulative since test start) and the file's metadata."""

    columns: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)


def cumulative_from_step_counter(values: np.ndarray, step_count: np.ndarray) -> np.ndarray:
    """Cumulative totals from a counter that restarts at zero with every step (Neware, BioLogic half cycles).

    Within a step the increments are the counter's differences; a new step's first row adds its
    own value (the counter started from zero when the step began).
    """
    values = np.abs(np.asarray(values, dtype=float))
    new_step = np.concatenate([[True], step_count[1:] != step_count[:-1]])
    increments = np.where(new_step, values, np.concatenate([[0.0], np.diff(values)]))
    return np.cumsum(np.clip(increments, 0.0, None))


def step_count_of(step_ids: np.ndarray) -> np.ndarray:
    """BDF Step Count: 1 for the first step, +1 each time the step identifier changes."""
    step_ids = np.asarray(step_ids)
    changes = np.concatenate([[0], (step_ids[1:] != step_ids[:-1]).astype(int)])
    return 1 + np.cumsum(changes)


def library_version(distribution: str) -> str:
    """`name version` of an installed reader library (recorded in the metadata of what it read)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return distribution
