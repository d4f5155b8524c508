"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference-data"


@pytest.fixture
def reference_bruker() -> Path:
    """The real TopSpin datasets in ../shared/reference-data/bruker."""
    path = REFERENCE_DATA / "bruker"
    if not path.is_dir():
        pytest.fail(f"reference data missing at {path}: tests expect ../shared next to the repository")
    return path
