"""A compiled cycling plan as a PyBaMM experiment: one step string per plan step, in PyBaMM's documented grammar.

PyBaMM (pybamm.step.string) reads "Charge at 0.1 mA for 3600 seconds or until 2.3 V",
"Discharge at 0.1 mA until 0.8 V", "Rest for 60 seconds": a current in A or mA, an end in
time ("for"), voltage, current or C-rate ("until"). It has no capacity end, so a capacity end
of a constant-current step becomes the time that capacity takes at that current (the same end
while the current is held). Safety limits are not part of an experiment and are returned as
notes; a voltage hold is "Hold at V for t or until I"; any other step kind is refused, naming the step.
"""

from __future__ import annotations

from .errors import MISSING, InputError
from .plan import CyclerStep, Plan


def _seconds(value_s: float) -> str:
    return f"{value_s:.10g} seconds"


def _step_string(step: CyclerStep) -> str:
    if step.mode == "rest":
        if not step.end_time_s:
            raise ValueError("a rest without a duration")
        return f"Rest for {_seconds(step.end_time_s)}"  # a dV/dt end is noted: PyBaMM rests for the maximum
    if step.control == "voltage":
        ends = [f"for {_seconds(step.end_time_s)}"] if step.end_time_s else []
        if step.end_current_a:
            ends.append(f"until {step.end_current_a * 1e3:.10g} mA")
        return f"Hold at {step.hold_voltage_v:.10g} V " + " or ".join(ends)
    verb = "Charge" if step.mode == "charge" else "Discharge"
    durations = [t for t in (step.end_time_s,) if t]
    if step.end_capacity_ah:
        durations.append(step.end_capacity_ah / step.current_a * 3600.0)
    ends = [f"for {_seconds(min(durations))}"] if durations else []
    if step.end_voltage_v is not None:
        ends.append(f"until {step.end_voltage_v:.10g} V")
    return f"{verb} at {step.current_a * 1e3:.10g} mA " + " or ".join(ends)


def pybamm_experiment(plan: Plan, source: str) -> tuple[list[str], list[str]]:
    """(PyBaMM step strings, notes on what an experiment cannot hold) for the cycling steps of a plan."""
    steps = plan.steps
    if not steps or not all(isinstance(s, CyclerStep) for s in steps):
        other = next((s for s in steps if not isinstance(s, CyclerStep)), None)
        raise InputError(source, "kind", MISSING, "only a cycling protocol translates to a PyBaMM experiment"
                         + (f" (step {other.index} is {other.kind})" if other is not None else ""))
    cycler_steps = [s for s in steps if isinstance(s, CyclerStep)]
    out = []
    for step in cycler_steps:
        try:
            out.append(_step_string(step))
        except ValueError as exc:
            raise InputError(source, f"step {step.index}", step.label, f"does not translate to PyBaMM: {exc}") from None
    first = cycler_steps[0]
    notes = [f"limits {first.voltage_min_v:g}..{first.voltage_max_v:g} V and {first.current_max_a * 1e3:g} mA are not "
             "part of a PyBaMM experiment: set the model's voltage cut-offs in its parameter values"]
    if any(s.end_capacity_ah for s in cycler_steps):
        notes.append("capacity ends are written as the time the capacity takes at the step's constant current")
    if any(s.end_dvdt_v_per_s for s in cycler_steps):
        notes.append("rests that end on dV/dt are written as their maximum duration (PyBaMM has no slope end)")
    if any(s.loop_exit for s in cycler_steps):
        notes.append("loop ends (CE or capacity fade, a GITT pulse at its cut-off) are not part of a PyBaMM "
                     "experiment: every expanded step is written")
    return out, notes
