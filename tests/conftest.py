"""Shared test fixtures, and the two targets of the hardware-in-the-loop suite.

Without a station the HIL tests (marked `hardware`) run against the simulated bench, started
as its own process (`exsylab sim`). `pytest --station FILE` (or EXSYLAB_STATION=FILE) points
them at a real bench instead; those also marked `hazardous` (heating, passing current) then
need `--allow-hazardous` too, and are skipped with the reason otherwise.

Hypothesis runs derandomized ("ci" profile, the default; HYPOTHESIS_PROFILE=explore for new
random examples, whose failures are then kept as @example). Instrument locks of every test go
to a temporary folder (EXSYLAB_LOCK_DIR, inherited by the processes tests start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference-data"


settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Instrument locks of a test (and of the processes it starts) live in a folder of its own."""
    monkeypatch.setenv("EXSYLAB_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("exsylab", "hardware-in-the-loop target")
    group.addoption("--station", default=os.environ.get("EXSYLAB_STATION"),
                    help="station file of a real bench for the HIL tests (env EXSYLAB_STATION); "
                         "default: the simulators")
    group.addoption("--allow-hazardous", action="store_true", default=False,
                    help="also run tests that heat or pass current on the bench given by --station")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardware: drives the bench of `hil_station`: the real one with --station "
                                       "FILE, else the simulated bench in its own process")
    config.addinivalue_line("markers", "hazardous: heats or passes current; on a real bench needs --allow-hazardous")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--station") or config.getoption("--allow-hazardous"):
        return
    for item in items:
        if "hazardous" in item.keywords:
            item.add_marker(pytest.mark.skip(
                reason="heats or passes current on the real bench given by --station: add --allow-hazardous to run it"))


@pytest.fixture(scope="session")
def real_station(request: pytest.FixtureRequest) -> Path | None:
    """The real bench's station file given with --station (or EXSYLAB_STATION), else None."""
    value = request.config.getoption("--station")
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"--station {path}: no such station file")
    return path


@pytest.fixture(scope="session")
def hil_station(real_station: Path | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Station file of the HIL target: the real bench, or `exsylab sim` started here (stopped with SIGTERM)."""
    if real_station is not None:
        yield real_station
        return
    root = tmp_path_factory.mktemp("sim-bench")
    station = root / "bench.yaml"
    log_path = root / "sim.out"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "sim", "--station-out", str(station),
                                 "--workdir", str(root / "bench"), "--speed", "600"],
                                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 30.0
        while not station.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"exsylab sim did not write its station file: {log_path.read_text()}")
            time.sleep(0.05)
        yield station
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("exsylab sim did not stop within 20 s of SIGTERM")
    if code != 0 or "simulated bench stopped" not in log_path.read_text():
        pytest.fail(f"exsylab sim ended with {code}: {log_path.read_text()}")


@pytest.fixture
def reference_bruker() -> Path:
    """The real TopSpin datasets in ../shared/reference-data/bruker."""
    path = REFERENCE_DATA / "bruker"
    if not path.is_dir():
        pytest.fail(f"reference data missing at {path}: tests expect ../shared next to the repository")
    return path
