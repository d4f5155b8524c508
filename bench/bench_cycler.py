"""Wall time of the paper's full fixed-capacity example over TCP (driver <-> simulator), in virtual time.

Stepped activation charges to 200..600 mAh/g, each followed by a discharge to 0.8 V vs In-Li,
then 50 cycles at 600 mAh/g; 0.132 mA/cm2 on 0.785 cm2, 1.5 mg Li2S, 60 s sampling, BDF file
written as it goes. Prints wall time, samples/s and the end-condition accuracy reached.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.bdf import BdfRecorder, BdfWriter  # noqa: E402
from acquisition.cycler_lane import limits_of, spec_of  # noqa: E402
from analysis.cycling import summarize_cycling  # noqa: E402
from drivers.clock import VirtualClock  # noqa: E402
from drivers.cycler import CyclerChannel, run_steps  # noqa: E402
from drivers.keithley2450 import Keithley2450  # noqa: E402
from hardware_sim.cell import Li2SCell  # noqa: E402
from hardware_sim.smu_sim import SimulatedKeithley2450  # noqa: E402
from protocols import CyclerStep, load_plan  # noqa: E402

ACTIVE_MASS_G = 1.5e-3
AREA_CM2 = 0.785
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cycling-fixed-capacity.yaml"


def main() -> None:
    """Run the example once and print the numbers."""
    clock = VirtualClock()
    sim = SimulatedKeithley2450(clock, Li2SCell(active_mass_g=ACTIVE_MASS_G, area_cm2=AREA_CM2))
    resource = sim.start()
    smu = Keithley2450(resource, clock=clock)
    smu.preflight()
    plan, _station = load_plan([EXAMPLE])  # the example file as the runner expands it
    plan_steps = [s for s in plan.steps if isinstance(s, CyclerStep)]
    channel = CyclerChannel("bench", smu, clock, limits_of(plan_steps[0]))
    steps = [spec_of(s) for s in plan_steps]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.bdf.csv"
        t0 = time.perf_counter()
        with BdfWriter(path, {"active_mass_g": ACTIVE_MASS_G, "area_cm2": AREA_CM2}) as writer:
            recorder = BdfRecorder(writer)
            results = run_steps(channel, steps,
                                lambda k, spec: recorder.begin_step(spec.mode, 1 if spec.mode == "charge" else 2))
        wall_s = time.perf_counter() - t0
        summary = summarize_cycling(path, ACTIVE_MASS_G)[0]["cycles"]
    channel.off()
    smu.close()
    sim.stop()
    samples = sum(r.samples for r in results)
    cap_err = max(abs(r.capacity_ah / (s.end_capacity_ah or r.capacity_ah) - 1) for s, r in zip(steps, results) if s.mode == "charge")
    v_err = max(abs(r.final_voltage_v - (s.end_voltage_v or 0.0)) for s, r in zip(steps, results)
                if s.mode == "discharge")
    virtual_days = sum(r.duration_s for r in results) / 86400.0
    print(f"bench_cycler: full example ({len(steps)} steps, {virtual_days:.1f} virtual days) over TCP")
    print(f"  wall time          {wall_s:8.2f} s")
    print(f"  samples            {samples:8d}  ({samples / wall_s:.0f} samples/s, {1e6 * wall_s / samples:.0f} us/sample)")
    print(f"  worst capacity end {100 * cap_err:8.4f} %   worst cut-off end {1000 * v_err:.2f} mV")
    print(f"  last cycle         {summary[-1]['discharge_mah_per_g']:.1f} mAh/g discharged, "
          f"CE {summary[-1]['coulombic_efficiency_pct']:.2f} %")


if __name__ == "__main__":
    main()
