"""Benchmark: what `exsylab serve` costs per page update, on a finished medium series with cycling (simulated).

Times the state snapshot the event stream sends (run_snapshot + instrument_state, asked every
0.5 s per open page), and the figures cold (first request: datasets processed) and warm
(cached). Target: snapshot well under the 0.5 s poll (<= 50 ms); a warm figure <= 5 ms.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.api import start_run  # noqa: E402
from acquisition.web.plots import FigureCache  # noqa: E402
from acquisition.web.views import instrument_state, run_snapshot  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _timed(action, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        action()
    return (time.perf_counter() - start) / repeat


def main() -> int:
    """Run the series, then time the snapshot and each figure; print the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        _, result = start_run([DATA / "exsy-medium.yaml", DATA / "cycling-short.yaml"], None, run_dir,
                              show_progress=False)
        assert result.ok, result.lanes
        snapshot = run_snapshot(run_dir)
        snapshot_s = _timed(lambda: (run_snapshot(run_dir), instrument_state(run_dir)), repeat=20)
        cache = FigureCache()
        lines = [f"bench_web: state snapshot of a run with {len(snapshot['datasets'])} datasets: "
                 f"{snapshot_s * 1000:.1f} ms (target <= 50 ms; the event stream asks every 500 ms)"]
        for name, cell in (("contour", None), ("buildup", None), ("temperature", None), ("cycling", "test-cell")):
            cold_s = _timed(lambda: cache.png(run_dir, name, "1", cell))
            warm_s = _timed(lambda: cache.png(run_dir, name, "1", cell), repeat=20)
            lines.append(f"bench_web: figure {name}: {cold_s * 1000:.0f} ms cold, {warm_s * 1000:.2f} ms warm "
                         "(target <= 5 ms)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
