"""Benchmark: 40 simulated TopSpin EXSY datasets (TD1 32 x 2048 complex points) processed and fitted.

Target: at most 5 s wall on 2 cores for processing, integration, matrix-model fits and Arrhenius.
Prints the wall seconds of the analysis (writing the datasets is not timed).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.api import analyze_exsy  # noqa: E402
from hardware_sim.nmr_dataset import write_acquired_dataset  # noqa: E402
from hardware_sim.nmr_physics import paper_sample  # noqa: E402


def main() -> int:
    """Write the series, time analyze_exsy over it, print the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        sample = paper_sample()
        expno = 10
        for temperature_k in (293.0, 313.0, 333.0, 353.0, 373.0):
            for t in np.geomspace(0.01, 10, 8):
                params = {"TE": temperature_k, "D8": float(t), "TD": 4096, "TD1": 32, "IN0": 1e-3}
                write_acquired_dataset(root / str(expno), params, temperature_k, sample=sample, seed=expno)
                expno += 1
        start = time.perf_counter()
        result = analyze_exsy(root, "10-49", sites=[2.31, 1.29, -4.56], names=["Li2S", "LPSC", "LiI"])
        wall_s = time.perf_counter() - start
    eas = ", ".join(f"{a['pair']} {a['ea_ev']:.4f} eV" for a in result["arrhenius"])
    print(f"bench_analysis: 40 datasets 32 x 2048 processed, integrated and fitted in {wall_s:.2f} s "
          f"(target <= 5 s); {eas}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
