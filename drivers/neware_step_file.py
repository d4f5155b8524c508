"""Neware BTS step files: a cell's program as the XML the BTS server loads, and the counters it will report.

Units as in Neware's step files (BTS Client 8, written by aurora-unicycler): current in mA,
voltage in 0.1 mV, time in ms, capacity in mAs. Repeated blocks of identical steps become one
block and a Loop step (Step_Type 5, Cycle_Count = total runs), so a 50-cycle protocol is a
short file and the instrument's own cycle counter counts its cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence
from xml.sax.saxutils import quoteattr

from .program_cycler import ChannelProgram, ProgramRefused, ProgramStep, not_compiled_reason

STEP_TYPE = {"charge": 1, "discharge": 2, "rest": 4}
LOOP_TYPE, END_TYPE = 5, 6
MAX_BLOCK_STEPS = 8
"""The longest block of steps that is looked for as a repeated unit."""


@dataclass(frozen=True)
class LoopStep:
    """Jump back to vendor step `start_step` until the block has run `count` times in total."""

    start_step: int
    count: int


VendorStep = ProgramStep | LoopStep


def refusal(steps: Sequence[ProgramStep]) -> ProgramRefused | None:
    """The first step a Neware step file cannot hold, as ProgramRefused; None when all fit (pure)."""
    for step in steps:
        if (reason := not_compiled_reason(step)) is not None:
            return ProgramRefused(step.index, reason)
        if step.mode == "rest":
            if step.end_capacity_ah is not None or step.end_voltage_v is not None:
                return ProgramRefused(step.index, "a Neware rest step (Step_Type 4) ends on time only")
            if step.end_time_s is None or step.end_time_s <= 0:
                return ProgramRefused(step.index, "a Neware rest step needs a duration")
        else:
            if step.current_a <= 0:
                return ProgramRefused(step.index, "a constant-current step needs a current > 0")
            if step.end_capacity_ah is None and step.end_voltage_v is None and step.end_time_s is None:
                return ProgramRefused(step.index, "a Neware step needs a capacity, voltage or time end")
        if step.end_time_s is not None and step.end_time_s * 1000 < 1:
            return ProgramRefused(step.index, "Neware step times are whole milliseconds; this one is shorter")
        if step.sample_interval_s * 1000 < 1:
            return ProgramRefused(step.index, "Neware records at most once per millisecond")
    if len({s.sample_interval_s for s in steps}) > 1:
        return ProgramRefused(steps[0].index, "a Neware step file has one record interval; the steps ask for several")
    return None


def program_refusal(program: ChannelProgram) -> ProgramRefused | None:
    """Refusal of the steps, or of limits the step file cannot carry."""
    if not program.steps:
        return ProgramRefused(0, "an empty program")
    if program.limits.temperature_max_k is not None:
        return ProgramRefused(program.steps[0].index, "a temperature limit needs a Neware auxiliary channel, which "
                              "exsylab does not configure; remove limits.temperature_max")
    return refusal(program.steps)


def _same(a: ProgramStep, b: ProgramStep) -> bool:
    return replace(a, index=0) == replace(b, index=0)


def vendor_steps(steps: Sequence[ProgramStep]) -> list[VendorStep]:
    """The program's steps with repeated blocks folded into loops (vendor step k is item k-1)."""
    out: list[VendorStep] = []
    i = 0
    while i < len(steps):
        best_len, best_runs = 1, 1
        for length in range(1, min(MAX_BLOCK_STEPS, (len(steps) - i) // 2) + 1):
            runs = 1
            while i + (runs + 1) * length <= len(steps) and all(
                    _same(steps[i + k], steps[i + runs * length + k]) for k in range(length)):
                runs += 1
            if runs > 1 and length * runs > best_len * best_runs:
                best_len, best_runs = length, runs
        start = len(out) + 1
        out.extend(steps[i:i + best_len])
        if best_runs > 1:
            out.append(LoopStep(start_step=start, count=best_runs))
        i += best_len * best_runs
    return out


def execution_order(vsteps: Sequence[VendorStep]) -> list[tuple[int, int]]:
    """(vendor step id, vendor cycle id) of each step as the instrument runs them.

    The rule the simulator follows too (an assumption, see docs/dialects/neware-bts.md): the cycle
    id starts at 1 and rises by one at every jump back of a Loop step.
    """
    order: list[tuple[int, int]] = []
    done_runs: dict[int, int] = {}
    cycle, k = 1, 0
    while k < len(vsteps):
        item = vsteps[k]
        if isinstance(item, LoopStep):
            runs = done_runs.get(k, 1)
            if runs < item.count:
                done_runs[k] = runs + 1
                cycle += 1
                k = item.start_step - 1
                continue
            done_runs.pop(k, None)
        else:
            order.append((k + 1, cycle))
        k += 1
    return order


def counter_map(program: ChannelProgram) -> dict[tuple[int, int], int]:
    """(vendor step id, vendor cycle id) -> the plan step it runs."""
    vsteps = vendor_steps(program.steps)
    return {counters: step.index for counters, step in zip(execution_order(vsteps), program.steps, strict=True)}


def _main(step: ProgramStep) -> str:
    parts = []
    if step.mode != "rest":
        parts.append(f'<Curr Value="{step.current_a * 1e3:.6f}" />')
    if step.end_capacity_ah is not None:
        parts.append(f'<Cap Value="{step.end_capacity_ah * 3.6e6:.6f}" />')
    if step.end_voltage_v is not None:
        parts.append(f'<Stop_Volt Value="{step.end_voltage_v * 1e4:.4f}" />')
    if step.end_time_s is not None:
        parts.append(f'<Time Value="{step.end_time_s * 1e3:.0f}" />')
    return "".join(parts)


def step_file_xml(program: ChannelProgram) -> str:
    """The step file for the program (raises ProgramRefused for what it cannot hold)."""
    problem = program_refusal(program)
    if problem is not None:
        raise problem
    lim = program.limits
    vsteps = vendor_steps(program.steps)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<root>",
             '  <config type="Step File" version="17" client_version="exsylab">',
             "    <Head_Info>", '      <Operate Value="66" />', '      <Scale Value="1" />',
             '      <Start_Step Value="1" Hide_Ctrl_Step="0" />', '      <Creator Value="exsylab" />',
             f"      <Remark Value={quoteattr(program.label)} />", '      <RateType Value="103" />', "    </Head_Info>",
             "    <Whole_Prt>", "      <Protect><Main>",
             f'        <Volt><Upper Value="{lim.voltage_max_v * 1e4:.4f}" /><Lower Value="{lim.voltage_min_v * 1e4:.4f}" /></Volt>',
             f'        <Curr><Upper Value="{lim.current_max_a * 1e3:.6f}" /></Curr>']
    if lim.capacity_max_ah is not None:
        lines.append(f'        <Cap><Upper Value="{lim.capacity_max_ah * 3.6e6:.6f}" /></Cap>')
    lines += ["      </Main></Protect>",
              f'      <Record><Main><Time Value="{program.steps[0].sample_interval_s * 1e3:.0f}" /></Main></Record>',
              "    </Whole_Prt>", f'    <Step_Info Num="{len(vsteps) + 1}">']
    for k, item in enumerate(vsteps, start=1):
        if isinstance(item, LoopStep):
            lines.append(f'      <Step{k} Step_ID="{k}" Step_Type="{LOOP_TYPE}"><Limit><Other>'
                         f'<Start_Step Value="{item.start_step}" /><Cycle_Count Value="{item.count}" />'
                         f"</Other></Limit></Step{k}>")
        else:
            lines.append(f'      <Step{k} Step_ID="{k}" Step_Type="{STEP_TYPE[item.mode]}"><Limit><Main>'
                         f"{_main(item)}</Main></Limit></Step{k}>")
    end = len(vsteps) + 1
    lines += [f'      <Step{end} Step_ID="{end}" Step_Type="{END_TYPE}" />', "    </Step_Info>", "  </config>", "</root>", ""]
    return "\n".join(lines)
