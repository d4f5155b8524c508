"""Benchmark of the TopSpin automation channel against the simulated TopSpin (virtual time).

Prints the median and 95th-percentile job round trip (ms) and the wall time of a 40-acquisition
VT-EXSY series (paper-sized 2D datasets, mixing times 10 ms .. 10 s) run in virtual time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.clock import VirtualClock  # noqa: E402
from drivers.topspin import TopSpinDriver  # noqa: E402
from hardware_sim.nmr_dataset import acquisition_duration_s  # noqa: E402
from hardware_sim.topspin_sim import TEMPLATE_NAME, SimulatedTopSpin  # noqa: E402

ROUND_TRIPS = 300
MIXING_TIMES_S = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 0.05, 0.5, 5.0]
TEMPERATURES_K = [293.0, 313.0, 343.0, 373.0]
BASE = {"NS": 16, "DS": 4, "TD": 2048, "TD1": 64, "D1": 5.0, "IN0": 0.0004}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clock = VirtualClock()
        sim = SimulatedTopSpin(root / "automation", root / "data", clock)
        sim.start()
        try:
            driver = TopSpinDriver(root / "automation", root / "data", clock)
            driver.get_param(TEMPLATE_NAME, 1, "NS")
            trips_ms = []
            for _ in range(ROUND_TRIPS):
                start = time.perf_counter()
                driver.get_param(TEMPLATE_NAME, 1, "NS")
                trips_ms.append((time.perf_counter() - start) * 1e3)
            trips_ms.sort()
            print(f"job round trip: median {statistics.median(trips_ms):.2f} ms, "
                  f"p95 {trips_ms[int(0.95 * len(trips_ms))]:.2f} ms over {ROUND_TRIPS} jobs")

            wall = time.perf_counter()
            virtual_start = clock.now()
            expno = 1
            for temperature_k in TEMPERATURES_K:
                for mixing_s in MIXING_TIMES_S:
                    params = {**BASE, "D8": mixing_s, "TE": temperature_k, "TITLE": f"EXSY {temperature_k} K"}
                    expno = driver.next_free_expno("series", expno)
                    driver.create_dataset("series", expno, (TEMPLATE_NAME, 1))
                    driver.set_params("series", expno, params)
                    driver.start_acquisition("series", expno)
                    expected_s = acquisition_duration_s(params)
                    driver.wait_acquisition("series", expno, expected_s, poll_s=expected_s / 4)
            wall = time.perf_counter() - wall
            hours = (clock.now() - virtual_start) / 3600.0
            count = len(TEMPERATURES_K) * len(MIXING_TIMES_S)
            print(f"{count} acquisitions ({hours:.1f} h of spectrometer time): {wall:.2f} s wall "
                  f"({wall / count * 1e3:.0f} ms each, dataset writing included)")
        finally:
            sim.stop()


if __name__ == "__main__":
    main()
