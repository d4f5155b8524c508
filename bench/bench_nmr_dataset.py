"""Time the simulated TopSpin dataset writer: synthesis + files for a 32 x 2048 EXSY dataset."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from hardware_sim.nmr_dataset import synthesize_ser, to_int32_interleaved, write_acquired_dataset

PARAMS = {"TD": 2048, "TD1": 32, "NS": 16, "D8": 0.1, "TE": 333.0}
REPEATS = 30


def main() -> None:
    """Print median and worst milliseconds per dataset written, and for synthesis alone."""
    with tempfile.TemporaryDirectory() as folder:
        total_ms, synth_ms = [], []
        for i in range(REPEATS):
            start = time.perf_counter()
            write_acquired_dataset(Path(folder) / "exsy" / str(i + 1), PARAMS, 333.0, seed=i)
            total_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            to_int32_interleaved(synthesize_ser(PARAMS, 333.0, seed=i))
            synth_ms.append((time.perf_counter() - start) * 1e3)
    print(f"write_acquired_dataset 32 x 2048: median {statistics.median(total_ms):.1f} ms, "
          f"max {max(total_ms):.1f} ms per dataset ({REPEATS} datasets)")
    print(f"synthesis only (physics + FIDs + int32): median {statistics.median(synth_ms):.1f} ms")


if __name__ == "__main__":
    main()
