"""The paper's VT-EXSY grid run end to end on the simulated station, over the real transports.

Prints: wall time of the run (target <= 10 s on 2 cores), the plan's estimate against the
simulated (virtual) duration (target within 1 %), and the scheduled instrument time against
the physical minimum of pulse sequences + ramps at the maximum rate + required holds
(target at most 2 % above).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.api import start_run  # noqa: E402
from acquisition.journal import Journal  # noqa: E402
from protocols import load_plan  # noqa: E402
from protocols.timing import ramp_s  # noqa: E402

PAPER = Path(__file__).resolve().parents[1] / "examples" / "vt-exsy-paper.yaml"


def main() -> None:
    plan, station = load_plan([PAPER])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        _, result = start_run([PAPER], None, run_dir, show_progress=False)
        wall_s = time.perf_counter() - t0
        assert result.ok, result.lanes
        steps = Journal(run_dir / "journal.sqlite").steps()
    virtual_s = max(s.ended_at for s in steps) - min(s.started_at for s in steps)
    estimate_s = plan.total_estimate_s
    acquisitions = [s for s in plan.steps if s.kind == "acquire_2d"]
    moves = [s for s in plan.steps if s.kind == "move_temperature"]
    waits = [s for s in plan.steps if s.kind == "wait_stable"]
    pulse_s = sum(s.estimate_s for s in acquisitions)  # the pulse-sequence arithmetic (incl. zg start-up)
    ramps_s = sum(ramp_s(m.from_k, m.temperature_k, station.vt.limits.max_ramp_k_per_min) for m in moves)
    holds_s = sum(w.stability.hold_s for w in waits)
    minimum_s = pulse_s + ramps_s + holds_s
    print(f"paper grid: {len(acquisitions)} 2D EXSY, {virtual_s / 3600:.2f} h of instrument time simulated "
          f"in {wall_s:.2f} s wall (target <= 10 s, Python start-up excluded)")
    print(f"plan estimate {estimate_s:.0f} s vs simulated {virtual_s:.0f} s: "
          f"{(virtual_s / estimate_s - 1) * 100:+.3f} % (target within 1 %)")
    print(f"scheduled {virtual_s:.0f} s vs physical minimum {minimum_s:.0f} s "
          f"(pulse sequences {pulse_s:.0f} + ramps {ramps_s:.0f} + holds {holds_s:.0f}): "
          f"{(virtual_s / minimum_s - 1) * 100:+.3f} % (target at most +2 %)")


if __name__ == "__main__":
    main()
