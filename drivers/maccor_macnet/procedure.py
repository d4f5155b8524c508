"""A ChannelProgram as a Maccor test procedure (the XML `.000` file MacTest32 runs), and back to plan steps.

Layout of the file as Maccor writes it (seen in TRI-AMDD/beep `beep/protocol/procedure_templates/*.000`,
sources in docs/dialects/maccor-macnet.md): `<MaccorTestProcedure>` with a `header` and `ProcSteps`
of `TestStep`s, each with StepType (8 characters, centred: ` Charge `, `Dischrge`, `  Rest  `,
`AdvCycle`, `  End   `), StepMode (`Current `), StepValue (amps), `Ends` of `EndEntry`s (EndType,
Oper, the 1-based 3-digit Step to go to, Value), `Reports` of `ReportEntry`s and a StepNote.
The protocol's capacity limit is an extra Amp-hr end on every charge and discharge that goes to
the End step, marked ChanSafetyEnd as beep's templates mark their safety ends. Each step exsylab writes carries its plan step index in StepNote (`exsylab step N`), so that a
resumed exsylab maps the tester's step counter back to the plan from the procedure on the tester.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Sequence

from drivers.program_cycler import ChannelProgram, ProgramRefused, ProgramStep, not_compiled_reason

STEP_TYPES = {"charge": " Charge ", "discharge": "Dischrge", "rest": "  Rest  "}
ADV_CYCLE = "AdvCycle"
END = "  End   "
CAPACITY_END = " Amp-hr "
"""Assumed EndType text of a capacity end (not confirmed from a Maccor document; see the dialect file)."""
NOTE_PREFIX = "exsylab step "
TIME_RESOLUTION_S = 0.01
"""Maccor times are hh:mm:ss with at most centiseconds (`::.01` is the smallest value)."""
TIME_MAX_S = 3600 * 3600.0
"""The longest Maccor time field (3600 hours)."""
NAME_MAX = 250
"""JSON start (6, 2) accepts test and procedure names up to 250 characters."""
_NOTE_RE = re.compile(re.escape(NOTE_PREFIX) + r"(\d+)")


@dataclass(frozen=True)
class StepMap:
    """Which plan step each 1-based procedure step runs (None: AdvCycle or End, not a plan step)."""

    plan_index: tuple[int | None, ...]

    def index_of(self, vendor_step: int) -> int | None:
        """The plan step of a 1-based procedure step number, or None."""
        if 1 <= vendor_step <= len(self.plan_index):
            return self.plan_index[vendor_step - 1]
        return None


def maccor_time(seconds: float) -> str:
    """Seconds as a Maccor time field `hh:mm:ss.ss`."""
    centis = round(seconds / TIME_RESOLUTION_S)
    hours, rest = divmod(centis, 360000)
    minutes, rest = divmod(rest, 6000)
    return f"{hours:02d}:{minutes:02d}:{rest / 100:05.2f}"


def check_steps(steps: Sequence[ProgramStep], channel_current_max_a: float) -> None:
    """Raise ProgramRefused for the first step a Maccor procedure cannot express."""
    if not steps:
        raise ProgramRefused(0, "an empty program cannot be written as a Maccor procedure")
    for step in steps:
        _check_step(step, channel_current_max_a)


def _check_step(step: ProgramStep, channel_current_max_a: float) -> None:
    if (reason := not_compiled_reason(step)) is not None:
        raise ProgramRefused(step.index, reason)
    if step.mode not in STEP_TYPES:
        raise ProgramRefused(step.index, f"mode {step.mode!r} has no Maccor step type (charge, discharge, rest)")
    values = [step.current_a, step.sample_interval_s] + [v for v in (step.end_capacity_ah, step.end_voltage_v,
                                                                    step.end_time_s) if v is not None]
    if not all(math.isfinite(v) for v in values):
        raise ProgramRefused(step.index, "a value is not a finite number")
    if step.mode == "rest":
        if step.current_a != 0:
            raise ProgramRefused(step.index, f"a rest with current {step.current_a} A")
        if step.end_capacity_ah is not None:
            raise ProgramRefused(step.index, "a rest cannot end on capacity (no charge passes)")
        if step.end_voltage_v is not None:
            raise ProgramRefused(step.index, "a rest cannot end on voltage in exsylab's Maccor dialect "
                                             "(the direction of the relaxation is not part of the step)")
        if step.end_time_s is None:
            raise ProgramRefused(step.index, "a rest needs a time end")
    else:
        if not step.current_a > 0:
            raise ProgramRefused(step.index, f"{step.mode} current must be > 0 A (the sign follows the mode), "
                                             f"got {step.current_a}")
        if step.current_a > channel_current_max_a:
            raise ProgramRefused(step.index, f"{step.current_a} A exceeds the channel's largest current range "
                                             f"({channel_current_max_a} A)")
        if step.end_capacity_ah is None and step.end_voltage_v is None and step.end_time_s is None:
            raise ProgramRefused(step.index, f"a {step.mode} step needs a capacity, voltage or time end")
        if step.end_capacity_ah is not None and step.end_capacity_ah <= 0:
            raise ProgramRefused(step.index, f"capacity end {step.end_capacity_ah} Ah must be > 0")
    for what, seconds in (("time end", step.end_time_s), ("sample interval", step.sample_interval_s)):
        if seconds is None:
            continue
        if seconds < TIME_RESOLUTION_S or seconds > TIME_MAX_S:
            raise ProgramRefused(step.index, f"{what} {seconds} s is outside Maccor's 0.01 s .. 3600 h")
    if step.end_voltage_v is not None and step.end_voltage_v <= 0:
        raise ProgramRefused(step.index, f"voltage end {step.end_voltage_v} V must be > 0")


def check_limits(program: ChannelProgram) -> None:
    """Raise ProgramRefused for a step whose capacity end the program's capacity limit would cut short."""
    limit = program.limits.capacity_max_ah
    for step in program.steps:
        if limit is not None and step.end_capacity_ah is not None and step.end_capacity_ah >= limit:
            raise ProgramRefused(step.index, f"capacity end {step.end_capacity_ah} Ah is not below the capacity "
                                             f"limit {limit} Ah (the tester would end the test there)")


def layout(steps: Sequence[ProgramStep]) -> list[ProgramStep | str]:
    """The procedure's steps in order: an AdvCycle before every charge after the first step, then End."""
    out: list[ProgramStep | str] = []
    for k, step in enumerate(steps):
        if step.mode == "charge" and k > 0:
            out.append(ADV_CYCLE)
        out.append(step)
    out.append(END)
    return out


def _text(parent: ET.Element, tag: str, value: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = value
    return child


def _end(ends: ET.Element, end_type: str, oper: str, goto: int, value: str, *, safety: bool = False) -> None:
    entry = ET.SubElement(ends, "EndEntry")
    _text(entry, "EndType", end_type)
    _text(entry, "SpecialType", " ")
    _text(entry, "Oper", oper)
    _text(entry, "Step", f"{goto:03d}")
    _text(entry, "Value", value)
    if safety:
        _text(entry, "ChanSafetyEnd", "True")


def _test_step(parent: ET.Element, step: ProgramStep | str, next_step: int, end_step: int,
               capacity_max_ah: float | None) -> None:
    node = ET.SubElement(parent, "TestStep")
    if isinstance(step, str):
        _text(node, "StepType", step)
        _text(node, "StepMode", " " * 8)
        for tag in ("StepValue", "Limits", "Ends", "Reports", "Range", "Option1", "Option2", "Option3", "StepNote"):
            ET.SubElement(node, tag)
        return
    _text(node, "StepType", STEP_TYPES[step.mode])
    _text(node, "StepMode", " " * 8 if step.mode == "rest" else "Current ")
    _text(node, "StepValue", "" if step.mode == "rest" else f"{step.current_a:.9g}")
    ET.SubElement(node, "Limits")
    ends = ET.SubElement(node, "Ends")
    if step.end_time_s is not None:
        _end(ends, "StepTime", " = ", next_step, maccor_time(step.end_time_s))
    if step.end_capacity_ah is not None:
        _end(ends, CAPACITY_END, ">= ", next_step, f"{step.end_capacity_ah:.9g}")
    if step.end_voltage_v is not None:
        oper = "<= " if step.mode == "discharge" else ">= "
        _end(ends, "Voltage ", oper, next_step, f"{step.end_voltage_v:.9g}")
    if capacity_max_ah is not None and step.mode != "rest":  # the protocol's capacity limit, held by the tester
        _end(ends, CAPACITY_END, ">= ", end_step, f"{capacity_max_ah:.9g}", safety=True)
    reports = ET.SubElement(node, "Reports")
    report = ET.SubElement(reports, "ReportEntry")
    _text(report, "ReportType", "StepTime")
    _text(report, "Value", maccor_time(step.sample_interval_s))
    _text(node, "Range", "A")
    for tag in ("Option1", "Option2", "Option3"):
        _text(node, tag, "N")
    _text(node, "StepNote", f"{NOTE_PREFIX}{step.index}")


def procedure_xml(program: ChannelProgram) -> bytes:
    """The Maccor procedure file (UTF-8 XML) that runs `program`'s steps in order."""
    root = ET.Element("MaccorTestProcedure")
    header = ET.SubElement(root, "header")
    version = ET.SubElement(header, "FileFormatVersion")
    _text(version, "BTVersion", "11")
    desc = ET.SubElement(header, "ProcDesc")
    _text(desc, "desc", f"exsylab job {program.label}"[:80])
    proc_steps = ET.SubElement(root, "ProcSteps")
    steps = layout(program.steps)
    for number, step in enumerate(steps, start=1):
        _test_step(proc_steps, step, number + 1, len(steps), program.limits.capacity_max_ah)
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<?maccor-application progid="Maccor Procedure File"?>\n'
            + body + "\n").encode("utf-8")


def step_map_of(xml_bytes: bytes) -> StepMap:
    """The plan step of each procedure step, read from the StepNotes of a procedure exsylab wrote."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise ValueError(f"procedure is not XML: {exc}") from exc
    indices: list[int | None] = []
    for node in root.iter("TestStep"):
        match = _NOTE_RE.search(node.findtext("StepNote") or "")
        indices.append(int(match.group(1)) if match else None)
    if not any(i is not None for i in indices):
        raise ValueError("procedure holds no exsylab step notes (not written by exsylab)")
    return StepMap(tuple(indices))


def names_for(label: str) -> str:
    """The Maccor test (and procedure) name for a job label: letters, digits, '-', '_' and '.' only."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.")
    if not name:
        raise ValueError(f"job label {label!r} gives an empty Maccor test name")
    if len(name) > NAME_MAX:
        raise ValueError(f"job label {label!r} is longer than Maccor's {NAME_MAX}-character test name")
    return name
