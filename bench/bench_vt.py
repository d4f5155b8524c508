"""Benchmark: a simulated 20 K move plus stability wait over the real pty, in virtual time.

Run twice: with the manual's 50 ms message gap on both ends (what a real instrument costs in
real time), and with the in-process gap the demo uses. Prints real seconds, virtual seconds and
serial lines.
"""

from __future__ import annotations

import time

from drivers.clock import VirtualClock
from drivers.lakeshore import MIN_COMMAND_GAP_S, LakeShore336
from drivers.vt import MasCalibration, VtLimits
from hardware_sim.vt_sim import IN_PROCESS_COMMAND_GAP_REAL_S, SimulatedLakeShore336


def move(label: str, gap_s: float) -> None:
    """One 293 -> 313 K (sensor) move at 5 K/min, then wait for 0.1 K over 5 min."""
    clock = VirtualClock()
    limits = VtLimits(min_k=250.0, max_k=400.0, max_ramp_k_per_min=5.0)
    calibration = MasCalibration(10_000.0, ((293.0, 297.0), (373.0, 377.0)))
    with SimulatedLakeShore336(clock, seed=0, min_command_gap_real_s=gap_s) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, limits, calibration, min_command_gap_real_s=gap_s)
        try:
            start_real = time.perf_counter()
            start_virtual = clock.now()
            vt.preflight()
            vt.set_sample_temperature_k(317.0)
            result = vt.wait_stable(317.0, tolerance_k=0.1, hold_s=300.0, timeout_s=7200.0, poll_s=10.0)
            real_s = time.perf_counter() - start_real
        finally:
            vt.close()
    print(f"vt_move_20k_{label}_real_s {real_s:.3f}")
    print(f"vt_move_20k_{label}_virtual_s {clock.now() - start_virtual:.0f}")
    print(f"vt_move_20k_{label}_serial_lines {vt.round_trips}")
    print(f"vt_move_20k_{label}_real_ms_per_line {1000.0 * real_s / vt.round_trips:.2f}")
    print(f"vt_move_20k_{label}_dropped_lines {len(sim.dropped)}")
    print(f"vt_move_20k_{label}_final_sample_reading_k {result.last_reading_k:.3f}")


def main() -> None:
    move("paced_50ms", MIN_COMMAND_GAP_S)
    move("in_process", IN_PROCESS_COMMAND_GAP_REAL_S)


if __name__ == "__main__":
    main()
