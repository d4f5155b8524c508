"""Reading the vendor sample files (tests/data/vendor) into BDF columns, summarising and converting them.

Prints, per file: rows, read time, summary time and `exsylab convert --to bdf` time (best of 3),
so a slow reader or writer shows up as a number.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.convert_cmd import convert_to_bdf  # noqa: E402
from analysis.cycling import summarize_cycling  # noqa: E402
from analysis.readers import read_cycling_file  # noqa: E402
from common.bdf_columns import TEST_TIME  # noqa: E402

VENDOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "vendor"


def _best_s(action, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print(f"{'file':32s} {'rows':>7s} {'read/s':>8s} {'summary/s':>10s} {'convert/s':>10s} {'rows/s conv':>12s}")
    for path in sorted(VENDOR.iterdir()):
        rows = len(read_cycling_file(path).columns[TEST_TIME])
        read_s = _best_s(lambda: read_cycling_file(path))
        summary_s = _best_s(lambda: summarize_cycling(path, 1.0))
        with tempfile.TemporaryDirectory() as tmp:
            counter = iter(range(100))
            convert_s = _best_s(lambda: convert_to_bdf(path, Path(tmp), cell=f"c{next(counter)}", active_mass_g=1.0))
        print(f"{path.name:32s} {rows:7d} {read_s:8.3f} {summary_s:10.3f} {convert_s:10.3f} {rows / convert_s:12.0f}")


if __name__ == "__main__":
    main()
