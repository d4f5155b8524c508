"""Runner overhead per step (journal commits included) beside Bluesky's RunEngine per-point overhead.

Both run an equivalent 1,000-point grid with instant devices, so what is measured is the
orchestration itself: exsylab's Runner with its SQLite journal (two committed transitions
per step) against Bluesky's RunEngine driving ophyd.sim devices in a grid_scan.
bluesky and ophyd are bench-only dependencies (pip install bluesky ophyd).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.control import Control  # noqa: E402
from acquisition.journal import Journal  # noqa: E402
from acquisition.notify import Notifier  # noqa: E402
from acquisition.run_folder import RunFolder  # noqa: E402
from acquisition.runner import Runner  # noqa: E402
from drivers.clock import VirtualClock  # noqa: E402
from protocols.plan import Plan, Stability, WaitStable  # noqa: E402
from protocols.station import NotificationSpec  # noqa: E402

POINTS = 1000


class InstantLane:
    def kinds(self):
        return {"wait_stable": self.execute}

    def execute(self, step, ctx):
        return {}

    def reconcile(self, step, progress, ctx):
        return "redo"

    def make_safe(self):
        pass


def exsylab_per_step_ms() -> float:
    steps = [WaitStable(index=i, lane="nmr", protocol="bench", label=f"point {i}", estimate_s=0.0, temperature_k=300.0,
                        stability=Stability(tolerance_k=0.5, hold_s=0.0, timeout_s=1.0)) for i in range(POINTS)]
    plan = Plan(protocols=["bench"], station="bench", steps=steps)
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite")
        runner = Runner(plan, journal, {"nmr": InstantLane()}, VirtualClock(start=0.0), Control(RunFolder(Path(tmp))),
                        Notifier(NotificationSpec()))
        t0 = time.perf_counter()
        result = runner.run()
        elapsed = time.perf_counter() - t0
        assert result.ok and all(r.status == "done" for r in journal.steps())
        journal.close()
        runner.notifier.close()
    return elapsed / POINTS * 1e3


def bluesky_per_point_ms() -> float | None:
    try:
        from bluesky import RunEngine
        from bluesky.plans import grid_scan
        from ophyd.sim import det4, motor1, motor2
    except ImportError:
        return None
    engine = RunEngine({})
    documents = []
    engine.subscribe(lambda name, doc: documents.append(name))
    t0 = time.perf_counter()
    engine(grid_scan([det4], motor1, -1, 1, 10, motor2, -1, 1, POINTS // 10))
    elapsed = time.perf_counter() - t0
    assert documents.count("event") == POINTS
    return elapsed / POINTS * 1e3


def main() -> None:
    ours = [exsylab_per_step_ms() for _ in range(3)]
    print(f"exsylab Runner: {statistics.median(ours):.3f} ms per step (median of 3 runs of {POINTS} steps, "
          f"journal commits included; target <= 0.3 ms)")
    theirs = [bluesky_per_point_ms() for _ in range(3)]
    if theirs[0] is None:
        print("Bluesky RunEngine: not installed (pip install bluesky ophyd to compare)")
    else:
        print(f"Bluesky RunEngine + ophyd.sim grid_scan: {statistics.median(theirs):.3f} ms per point "
              f"(median of 3 runs of {POINTS} points)")


if __name__ == "__main__":
    main()
