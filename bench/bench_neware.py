"""256 cells on 4 simulated Neware BTS devices, supervised by one exsylab run at 1 s polling for a simulated day.

The run is a real `start_run` (256 cycler lanes, BDF files, journal) on `sim://` channels in
virtual time; the BTS server is in the same process, so its CPU is measured apart (thread time
of its request handling) and taken off the process's. Printed:

- late polls: polls that started more than half an interval after they were due (clock time),
  and poll rounds whose wall time exceeded the 1 s interval (the rounds real time would not
  have kept up with): both must stay under 1 %;
- exsylab's CPU seconds per channel-hour, and the poll round's mean and worst wall time.

    python bench/bench_neware.py [--hours 24] [--channels 256] [--devices 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from acquisition import api, control  # noqa: E402
from acquisition.program_supervisor import ProgramSupervisor  # noqa: E402
from hardware_sim import bts_sim  # noqa: E402

PROTOCOL = """kind: cycling
name: bench-{cell}
cell: {{name: {cell}, channel: {channel}, active_mass: 1.5 mg, area: 0.785 cm2, theoretical_capacity: 1166 mAh/g}}
sample_interval: 60 s
steps:
  - loop:
      count: 20
      steps:
        - charge: {{current_density: 0.132 mA/cm2, until: {{specific_capacity: 300 mAh/g, voltage: 2.3 V}}}}
        - discharge: {{current_density: 0.132 mA/cm2, until: {{voltage: 0.8 V}}}}
limits: {{voltage_min: 0.5 V, voltage_max: 3.5 V, current_max: 1 mA}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours supervised")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--devices", type=int, default=4)
    args = parser.parse_args()
    per_device = args.channels // args.devices
    sim_cpu = [0.0]
    handle = bts_sim.BtsServer.handle

    def timed_handle(self: bts_sim.BtsServer, message: str) -> str:
        t0 = time.thread_time()
        try:
            return handle(self, message)
        finally:
            sim_cpu[0] += time.thread_time() - t0

    bts_sim.BtsServer.handle = timed_handle  # type: ignore[method-assign]
    supervisors: list[ProgramSupervisor] = []
    original_init = ProgramSupervisor.__init__

    def init(self: ProgramSupervisor, clock: object) -> None:
        original_init(self, clock)  # type: ignore[arg-type]
        supervisors.append(self)

    ProgramSupervisor.__init__ = init  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bench-neware-") as tmp:
        root = Path(tmp)
        cyclers, protocols = {}, []
        for n in range(args.channels):
            device, rest = divmod(n, per_device)
            sub, chl = divmod(rest, 8)
            name = f"c{n:03d}"
            cyclers[name] = {"driver": "neware-bts", "resource": "sim://bts", "device_id": device + 1,
                             "subdevice_id": sub + 1, "channel_id": chl + 1, "voltage_min": "0 V", "voltage_max": "5 V",
                             "current_max": "10 mA", "poll_interval": "1 s"}
            path = root / f"{name}.yaml"
            path.write_text(PROTOCOL.format(cell=f"cell{n:03d}", channel=name))
            protocols.append(path)
        station = root / "station.yaml"
        station.write_text(yaml.safe_dump({"kind": "station", "name": "bench", "cyclers": cyclers}))
        run_dir = root / "run"
        stop_at: list[float] = []

        def stopper() -> None:  # stops the run once the simulated day has passed (real-time watch, not a participant)
            while not (run_dir / "control").exists() or not supervisors:
                time.sleep(0.05)
            clock = supervisors[0].clock
            start = clock.now()
            while clock.now() - start < args.hours * 3600.0:
                time.sleep(0.05)
            stop_at.append(clock.now() - start)
            control.request(api.open_run_folder(run_dir), "stop")

        threading.Thread(target=stopper, daemon=True).start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        _, result = api.start_run(protocols, station, run_dir, show_progress=False)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    sup = supervisors[0]
    hours = (stop_at[0] if stop_at else args.hours * 3600.0) / 3600.0
    exsylab_cpu_s = cpu_s - sim_cpu[0]
    print(f"bench_neware: {args.channels} channels on {args.devices} simulated BTS devices, 1 s polling, "
          f"{hours:.2f} simulated h in {wall_s:.1f} s wall (run {result.status})")
    print(f"  polls: {sup.polls} channel polls in {sup.rounds} rounds")
    print(f"  late rounds (wall > 1 s interval): {sup.rounds_over_budget} = "
          f"{100.0 * sup.rounds_over_budget / max(sup.rounds, 1):.3f} %   (target < 1 %)")
    print(f"  late polls (clock, > 0.5 interval behind): {sup.late_polls} = "
          f"{100.0 * sup.late_polls / max(sup.polls, 1):.3f} %   (target < 1 %)")
    print(f"  poll round wall time: mean {1e3 * sup.round_wall_s_total / max(sup.rounds, 1):.2f} ms, "
          f"max {1e3 * sup.round_wall_s_max:.1f} ms")
    print(f"  CPU: process {cpu_s:.1f} s, simulated BTS {sim_cpu[0]:.1f} s, exsylab {exsylab_cpu_s:.1f} s = "
          f"{1e3 * exsylab_cpu_s / (args.channels * hours):.2f} ms per channel-hour "
          f"({100.0 * exsylab_cpu_s / (hours * 3600.0):.3f} % of one core in real time)")
    print(f"  cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
