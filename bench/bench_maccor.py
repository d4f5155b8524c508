"""The paper's fixed-capacity protocol on a simulated Maccor channel over MacNet, in virtual time.

examples/cycling-fixed-capacity.yaml as written (1.5 mg Li2S, 5 activation cycles + 50 cycles,
60 s records) compiled by the protocol compiler, sent as a Maccor procedure to the MacNet
simulator and watched through the real driver: state every 10 min of cell time, the data file
read whenever the plan step changes (each read is the whole file: MacNet has no partial read).
Prints each step's end against its target, the wall time and what crossed the wire.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from drivers.clock import VirtualClock  # noqa: E402
from drivers.maccor_macnet import MaccorChannel  # noqa: E402
from drivers.program_cycler import ProgramRecord  # noqa: E402
from hardware_sim.cell import Li2SCell  # noqa: E402
from hardware_sim.macnet_sim import SimulatedMaccor  # noqa: E402
from maccor_support import example_plan_steps, program_from_plan  # noqa: E402

POLL_S = 600.0
MASS_G = 1.5e-3


def main() -> None:
    plan_steps = example_plan_steps()
    clock = VirtualClock()
    started = time.perf_counter()
    with SimulatedMaccor(clock, channels=8, cell_factory=lambda i: Li2SCell(active_mass_g=MASS_G, seed=i)) as sim:
        channel = MaccorChannel("127.0.0.1", sim.json_port, 1, clock=clock)
        print(channel.preflight())
        channel.start(program_from_plan(plan_steps, "bench:Li2S-LiI-LPSC-cell1"))
        records: list[ProgramRecord] = []
        polls, last_step = 0, None
        while True:
            clock.sleep(POLL_S)
            polls += 1
            state = channel.state()
            if state.step_index != last_step or state.state != "running":
                records += channel.records_after(records[-1].record_id if records else None)
                last_step = state.step_index
            if state.state != "running":
                break
        wall_s = time.perf_counter() - started
        rows = sim.channels[0].test.rows  # type: ignore[union-attr]
    worst_capacity, worst_voltage = 0.0, 0.0
    print(f"{'step':>4} {'mode':>9} {'target':>16} {'reached':>16} {'deviation':>10}")
    for step in plan_steps:
        mine = [r for r in records if r.step_index == step.index]
        column = "charge_capacity_ah" if step.mode == "charge" else "discharge_capacity_ah"
        passed_ah = getattr(mine[-1], column) - getattr(mine[0], column)
        end_status = rows[mine[-1].record_id - 1].end_status
        if end_status == 136 and step.end_capacity_ah:
            deviation = passed_ah / step.end_capacity_ah - 1
            worst_capacity = max(worst_capacity, abs(deviation))
            print(f"{step.index:>4} {step.mode:>9} {step.end_capacity_ah / MASS_G * 1e3:>10.2f} mAh/g "
                  f"{passed_ah / MASS_G * 1e3:>10.2f} mAh/g {deviation * 100:>9.4f}%")
        else:
            deviation = mine[-1].voltage_v - (step.end_voltage_v or 0.0)
            worst_voltage = max(worst_voltage, abs(deviation))
            print(f"{step.index:>4} {step.mode:>9} {step.end_voltage_v:>14.4f} V {mine[-1].voltage_v:>14.4f} V "
                  f"{deviation * 1e3:>7.2f} mV")
    ids = [r.record_id for r in records]
    print(f"final state: {state.state} ({state.reason}); {len(plan_steps)} steps, "
          f"{(clock.now() - sim.channels[0].test.start_unix_s) / 86400:.1f} days of cell time"  # type: ignore[union-attr]
          if sim.channels[0].test else "")
    print(f"records: {len(records)} read, every one once: {ids == list(range(1, len(rows) + 1))}")
    print(f"worst capacity end deviation: {worst_capacity * 100:.4f} % (target <= 0.1 %); "
          f"worst voltage end deviation: {worst_voltage * 1e3:.2f} mV")
    print(f"wall time: {wall_s:.1f} s; {polls} status polls; {channel.bytes_read / 1e6:.1f} MB of data files read")
    channel.close()


if __name__ == "__main__":
    main()
