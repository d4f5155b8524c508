"""Simulated bench in its own process: start-up time, selftest time, and a short series at --speed 600.

Prints: seconds until `exsylab sim` has written its station file, the selftest's wall time,
the wall time of examples/vt-exsy-short.yaml run against the bench, and the SIGTERM stop time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> tuple[int, float]:
    start = time.monotonic()
    code = subprocess.run([sys.executable, "-m", "acquisition.cli", *args], cwd=REPO, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    return code, time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        station = Path(tmp) / "bench.yaml"
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "sim", "--station-out", str(station),
                                 "--workdir", str(Path(tmp) / "bench"), "--speed", "600"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        while not station.exists():
            time.sleep(0.01)
        print(f"sim start-up: {time.monotonic() - start:.2f} s")
        code, took = _cli("selftest", "--station", str(station))
        print(f"selftest: exit {code}, {took:.2f} s")
        code, took = _cli("run", str(REPO / "examples" / "vt-exsy-short.yaml"), "--station", str(station),
                          "--run-dir", str(Path(tmp) / "run"), "--quiet")
        print(f"short series (2 temperatures x 2 mixing times) at speed 600: exit {code}, {took:.2f} s")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        print(f"stop on SIGTERM: exit {code}, {time.monotonic() - start:.2f} s")


if __name__ == "__main__":
    main()
