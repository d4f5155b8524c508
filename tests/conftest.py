"""Shared test fixtures, and the two targets of the hardware-in-the-loop suite.

Without a station the HIL tests run against the simulators. `pytest --station FILE` (or
EXSYLAB_STATION=FILE) points them at a real bench: tests marked `hardware` then run against
it, and those also marked `hazardous` (heating, passing current) need `--allow-hazardous` too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference-data"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("exsylab", "hardware-in-the-loop target")
    group.addoption("--station", default=os.environ.get("EXSYLAB_STATION"),
                    help="station file of a real bench for the HIL tests (env EXSYLAB_STATION); "
                         "default: the simulators")
    group.addoption("--allow-hazardous", action="store_true", default=False,
                    help="also run tests that heat or pass current on the bench given by --station")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardware: moves real hardware; runs only with --station FILE")
    config.addinivalue_line("markers", "hazardous: heats or passes current; needs --station and --allow-hazardous")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    station = config.getoption("--station")
    allow = config.getoption("--allow-hazardous")
    for item in items:
        if "hardware" in item.keywords and not station:
            item.add_marker(pytest.mark.skip(reason="moves real hardware: give --station FILE (or EXSYLAB_STATION)"))
        elif "hazardous" in item.keywords and not (station and allow):
            item.add_marker(pytest.mark.skip(
                reason="heats or passes current: needs --station FILE and --allow-hazardous"))


@pytest.fixture(scope="session")
def bench_station(request: pytest.FixtureRequest) -> Path | None:
    """The real bench's station file given with --station, or None (the HIL tests then use simulators)."""
    value = request.config.getoption("--station")
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"--station {path}: no such station file")
    return path


@pytest.fixture
def reference_bruker() -> Path:
    """The real TopSpin datasets in ../shared/reference-data/bruker."""
    path = REFERENCE_DATA / "bruker"
    if not path.is_dir():
        pytest.fail(f"reference data missing at {path}: tests expect ../shared next to the repository")
    return path
