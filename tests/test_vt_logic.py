"""Pure logic of the VT driver: limits, calibration, reply parsing, and TopSpinVt on an in-memory teset/teget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.clock import VirtualClock
from drivers.lakeshore import (
    RealTimePacer,
    ReplyError,
    SensorInvalid,
    parse_flag,
    parse_identity,
    parse_int_fields,
    parse_kelvin_reading,
    parse_number,
    parse_ramp,
    parse_range,
    reading_flags,
)
from drivers.vt import (
    MasCalibration,
    TopSpinVt,
    UnsafeTemperatureRequest,
    VtCommunicationError,
    VtLimits,
    VtSensorError,
    VtStabilityTimeout,
)
from hardware_sim.vt_sim import SimulatedLakeShore336

LIMITS = VtLimits(min_k=250.0, max_k=400.0, max_ramp_k_per_min=5.0)
CAL = MasCalibration(10_000.0, ((373.0, 378.0), (293.0, 297.0), (333.0, 337.5)))


# --- calibration ---------------------------------------------------------------------------
def test_calibration_interpolates_and_extends_end_segments():
    assert CAL.points[0] == (293.0, 297.0)  # sorted on construction
    assert CAL.sample_k(313.0) == pytest.approx(317.25)
    assert CAL.setpoint_k(317.25) == pytest.approx(313.0)
    assert CAL.sample_k(393.0) == pytest.approx(378.0 + 20.0 * (0.5 / 40.0 + 1.0))
    assert MasCalibration(5000.0, ((300.0, 301.0),)).setpoint_k(350.0) == pytest.approx(349.0)


@given(st.floats(min_value=200.0, max_value=500.0))
def test_calibration_round_trips(sample_k):
    assert CAL.sample_k(CAL.setpoint_k(sample_k)) == pytest.approx(sample_k, abs=1e-9)


def test_calibration_must_be_invertible():
    with pytest.raises(ValueError, match="increase strictly"):
        MasCalibration(10_000.0, ((293.0, 300.0), (303.0, 299.0)))
    with pytest.raises(ValueError, match="at least one"):
        MasCalibration(10_000.0, ())


def test_limits_validate():
    with pytest.raises(ValueError):
        VtLimits(400.0, 250.0, 5.0)
    with pytest.raises(ValueError):
        VtLimits(250.0, 400.0, 0.0)
    assert LIMITS.clamp_k(500.0) == 400.0 and LIMITS.clamp_k(10.0) == 250.0


# --- reply parsing -------------------------------------------------------------------------
def test_parsers_accept_instrument_formats():
    assert parse_kelvin_reading("+293.150") == pytest.approx(293.15)
    assert parse_number(" -12.5") == -12.5
    assert parse_ramp("1,5.0") == (True, 5.0)
    assert parse_ramp("0, +0.5") == (False, 0.5)
    assert parse_range("3") == 3
    assert parse_identity("LSCI,MODEL336,LSA1234,2.9") == "LSCI,MODEL336,LSA1234,2.9"
    with pytest.raises(SensorInvalid):
        parse_kelvin_reading("+0.000")
    for bad in ("", "+2#3.150", "\x7f+293.150", "293.15?", "nan", "inf", "1e3", "+", ".", "-5.0", "5000.0"):
        with pytest.raises(ReplyError):
            parse_kelvin_reading(bad)
    for bad in ("4", "", "1#", "-1"):
        with pytest.raises(ReplyError):
            parse_range(bad)
    for bad in ("1", "2,5.0", "1,5.0,3", "1#5.0", "1,-5"):
        with pytest.raises(ReplyError):
            parse_ramp(bad)
    with pytest.raises(ReplyError):
        parse_identity("L#CI,MODEL336,SIM0000,2.9")
    assert parse_int_fields("2,1,0,1,1", 5, "INTYPE?") == (2, 1, 0, 1, 1)
    assert parse_int_fields("000", 1, "RDGST?") == (0,)
    for bad in ("2,1,0,1", "2,1,0,1,x", "", "-1,1,0,1,1"):
        with pytest.raises(ReplyError):
            parse_int_fields(bad, 5, "INTYPE?")
    assert parse_flag("1") is True and parse_flag(" 0 ") is False
    with pytest.raises(ReplyError):
        parse_flag("2")
    assert reading_flags(0) == [] and reading_flags(1 | 32) == ["invalid reading", "temperature over range"]
    assert reading_flags(16 | 64 | 128) == ["temperature under range", "sensor units zero", "sensor units over range"]


def test_real_time_pacer_keeps_the_gap_after_each_communication():
    import time

    pacer = RealTimePacer(0.05)
    pacer.wait()  # nothing sent yet: no wait
    pacer.ended()
    start = time.monotonic()
    pacer.wait()
    assert time.monotonic() - start >= 0.049
    assert RealTimePacer(-1.0).min_gap_s == 0.0


@given(st.text(max_size=20))
def test_fuzz_no_malformed_reply_is_a_reading(text):
    try:
        value = parse_kelvin_reading(text)
    except (ReplyError, SensorInvalid):
        return
    assert math.isfinite(value) and 0.0 < value < 2000.0
    stripped = text.strip()
    assert stripped and all(c in "+-.0123456789" for c in stripped)
    assert float(stripped) == value


@given(st.floats(min_value=1.0, max_value=1999.0), st.integers(min_value=0, max_value=7))
def test_fuzz_simulator_garbling_is_always_detected(kelvin, turn):
    sim = SimulatedLakeShore336(VirtualClock())
    sim._garble_turn = turn
    reply = f"{kelvin:+.3f}"
    assert parse_kelvin_reading(reply) == pytest.approx(kelvin, abs=1e-3)
    with pytest.raises(ReplyError):
        parse_kelvin_reading(sim._garble(reply))
    for good, parser in (("1,5.0", parse_ramp), ("3", parse_range), ("LSCI,MODEL336,SIM0000,2.9", parse_identity)):
        with pytest.raises(ReplyError):
            parser(sim._garble(good))


# --- TopSpinVt on an in-memory spectrometer --------------------------------------------------
class FakeSpectrometer:
    """teset/teget over a trivial first-order response evaluated on the clock (pure logic only)."""

    def __init__(self, clock: VirtualClock, start_k: float = 293.0, offset_k: float = 0.0) -> None:
        self.clock = clock
        self.history: list[tuple[float, float]] = []
        self.present_k = start_k
        self.offset_k = offset_k
        self.fail = False
        self._t = clock.now()

    def teset(self, temperature_k: float) -> None:
        if self.fail:
            raise TimeoutError("automation channel timed out")
        self._settle()
        self.history.append((self.clock.now(), temperature_k))

    def teget(self) -> float:
        if self.fail:
            raise TimeoutError("automation channel timed out")
        self._settle()
        return self.present_k

    def _settle(self) -> None:
        now = self.clock.now()
        if self.history:
            target = self.history[-1][1] - self.offset_k
            self.present_k = target + (self.present_k - target) * math.exp(-(now - self._t) / 60.0)
        self._t = now


def test_topspin_vt_ramps_in_steps_within_the_rate_limit_and_reaches_stability():
    clock = VirtualClock()
    spec = FakeSpectrometer(clock)
    vt = TopSpinVt(spec, clock, LIMITS, CAL)
    setpoint_k = vt.set_sample_temperature_k(337.5)
    assert setpoint_k == pytest.approx(333.0)
    values = [293.0] + [v for _, v in spec.history]
    times = [t for t, _ in spec.history]
    assert values[-1] == pytest.approx(333.0)
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(0 < s <= 5.0 * 30.0 / 60.0 + 1e-9 for s in steps)
    assert times[-1] - times[0] == pytest.approx(30.0 * (len(times) - 1))
    result = vt.wait_stable(337.5, tolerance_k=0.2, hold_s=120.0, timeout_s=3600.0, poll_s=10.0)
    assert abs(result.last_reading_k - 337.5) <= 0.2
    assert result.setpoint_k == pytest.approx(333.0)


def test_topspin_vt_unsafe_request_writes_nothing():
    clock = VirtualClock()
    spec = FakeSpectrometer(clock)
    vt = TopSpinVt(spec, clock, LIMITS)
    for bad in (401.0, 249.0, float("nan")):
        with pytest.raises(UnsafeTemperatureRequest):
            vt.set_sample_temperature_k(bad)
    with pytest.raises(UnsafeTemperatureRequest):
        vt.set_ramp_rate_k_per_min(6.0)
    assert spec.history == []


def test_topspin_vt_stability_timeout_and_comms_failure():
    clock = VirtualClock()
    spec = FakeSpectrometer(clock, offset_k=3.0)  # never gets within 3 K: a stuck heater
    vt = TopSpinVt(spec, clock, LIMITS)
    vt.set_sample_temperature_k(300.0)
    with pytest.raises(VtStabilityTimeout, match=r"300\.000.*waited 6\d\d s, last reading 29[67]\."):
        vt.wait_stable(300.0, tolerance_k=0.5, hold_s=60.0, timeout_s=600.0, poll_s=10.0)
    spec.fail = True
    with pytest.raises(VtCommunicationError, match="teget failed"):
        vt.read_sensor_k()
    vt.hold_safe()  # must not raise on a dead channel
    spec.fail = False
    spec.present_k = float("nan")
    with pytest.raises(VtSensorError):
        vt.read_sample_k()
