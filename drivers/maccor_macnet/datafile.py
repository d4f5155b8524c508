"""The channel's data file as exsylab reads it over MacNet (1, 7), parsed into ProgramRecords.

ASSUMPTION (docs/dialects/maccor-macnet.md): MacTest32's own data files are in a binary format
Maccor does not publish; exsylab reads the tab-separated layout of a Maccor text export (the
columns the public Maccor readers use: Rec#, Cyc#, Step, Test Time, Step Time, Amp-hr, Watt-hr,
Amps, Volts, State, ES, DPt Time), with times in seconds, Amp-hr the step's own capacity (reset
at each step start, as Maccor counts it), Amps signed (+ charge) and State C, D or R. On a real
tester this is the file that Maccor's automatic text export writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

COLUMNS = ("Rec#", "Cyc#", "Step", "Test Time", "Step Time", "Amp-hr", "Watt-hr", "Amps", "Volts", "State", "ES",
           "DPt Time")
STATES = ("C", "D", "R")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


@dataclass(frozen=True)
class DataRow:
    """One data record as the tester wrote it (vendor counters, the step's own capacity)."""

    record: int
    cycle: int
    step: int
    test_time_s: float
    step_time_s: float
    step_capacity_ah: float
    step_energy_wh: float
    current_a: float
    voltage_v: float
    state: str
    end_status: int
    unix_time_s: float


def format_row(row: DataRow) -> str:
    """One line of the data file (tab-separated, no newline)."""
    stamp = datetime.fromtimestamp(row.unix_time_s, tz=timezone.utc).strftime(TIME_FORMAT)[:-3]
    return "\t".join([str(row.record), str(row.cycle), str(row.step), f"{row.test_time_s:.3f}",
                      f"{row.step_time_s:.3f}", f"{row.step_capacity_ah:.9e}", f"{row.step_energy_wh:.9e}",
                      f"{row.current_a:.9e}", f"{row.voltage_v:.7f}", row.state, str(row.end_status), stamp])


def header_line() -> str:
    """The column line that opens the data file."""
    return "\t".join(COLUMNS)


def parse_rows(text: str, *, first_line: int = 1) -> list[DataRow]:
    """The records of a data file, in file order; ValueError naming the line for anything malformed.

    `first_line` 1: `text` is the whole file (it must open with the column line); larger: `text`
    continues a file whose earlier lines were parsed before.
    """
    lines = text.splitlines()
    if first_line == 1:
        if not lines or tuple(lines[0].split("\t")) != COLUMNS:
            raise ValueError(f"data file does not start with the column line {header_line()!r}")
        lines, first_line = lines[1:], 2
    rows = []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise ValueError(f"data file line {number}: {len(fields)} fields, expected {len(COLUMNS)}")
        try:
            stamp = datetime.strptime(fields[11], TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()
            row = DataRow(int(fields[0]), int(fields[1]), int(fields[2]), float(fields[3]), float(fields[4]),
                          float(fields[5]), float(fields[6]), float(fields[7]), float(fields[8]), fields[9],
                          int(fields[10]), stamp)
        except ValueError as exc:
            raise ValueError(f"data file line {number}: {exc}") from None
        numbers = (row.test_time_s, row.step_time_s, row.step_capacity_ah, row.current_a, row.voltage_v)
        if row.state not in STATES or not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"data file line {number}: bad state or non-finite value in {line!r}")
        rows.append(row)
    return rows
