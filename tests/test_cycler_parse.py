"""SCPI reply parsing (hypothesis fuzz) and the simulator's header parsing: pure functions, no wire."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.keithley2450 import parse_bool, parse_numbers
from hardware_sim.smu_sim import _GARBAGE, parse_header

STRICT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30)


@given(st.text(max_size=60))
@settings(max_examples=400, deadline=None)
def test_arbitrary_text_is_never_taken_as_a_reading_unless_strictly_numeric(text: str) -> None:
    try:
        values = parse_numbers(text, 3)
    except ValueError:
        return
    fields = text.strip().split(",")
    assert len(values) == 3 and all(math.isfinite(v) for v in values)
    assert all(STRICT.match(f) for f in fields)


@given(st.lists(finite, min_size=3, max_size=3), st.sampled_from(["{:+.7E}", "{:.6g}", "{!r}", "{:+.3f}"]))
@settings(deadline=None)
def test_well_formed_replies_round_trip(values: list[float], fmt: str) -> None:
    reply = ",".join(fmt.format(v) for v in values)
    parsed = parse_numbers(reply, 3)
    for got, want in zip(parsed, values):
        assert got == float(fmt.format(want))


@given(st.lists(finite, min_size=1, max_size=6).filter(lambda v: len(v) != 3))
@settings(deadline=None)
def test_wrong_field_count_is_refused(values: list[float]) -> None:
    with pytest.raises(ValueError):
        parse_numbers(",".join(repr(v) for v in values), 3)


@pytest.mark.parametrize("reply", _GARBAGE + ["", "9.91E+37,1,1", "1,2,inf", "1,2,", "0x1,2,3", "1e5000,1,1"])
def test_simulator_garbage_and_overflow_are_refused(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_numbers(reply, 3)


def test_parse_bool() -> None:
    assert parse_bool("1\n") is True and parse_bool(" 0") is False and parse_bool("ON") is True
    for bad in ("", "2", "yes", "1,0"):
        with pytest.raises(ValueError):
            parse_bool(bad)


def test_header_long_short_and_optional_nodes() -> None:
    assert parse_header(":SOURce1:CURRent:VLIMit:LEVel:TRIPped?") == (("SOUR", "CURR", "VLIM", "TRIP"), True)
    assert parse_header(":SOUR:CURR") == (("SOUR", "CURR"), False)
    assert parse_header("OUTPut:STATe") == (("OUTP", "STAT"), False)
    assert parse_header("*IDN?") == (("*IDN",), True)
    assert parse_header(":SOURCEX:CURR") is None
