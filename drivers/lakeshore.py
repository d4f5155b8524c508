"""Lake Shore 335/336 temperature controller over a serial port (or a pyserial URL such as socket://).

What the driver relies on is what the Model 335/336 manuals say (docs/dialects/lakeshore336.md):
57600 baud, 7 data bits, odd parity, 1 stop bit, replies end in CR LF; set commands get no reply;
the user program paces the line (no new communication within 50 ms of the last one ending, at
most 20 messages per second), done here in real time by `RealTimePacer`; with ramping on `SETP?`
is the present, ramping set point and `RAMPST?` says when the ramp is over; set points are in the
control input's preferred units (`INTYPE?`), so the driver refuses a controller not in kelvin;
the heater heats only with the output in closed loop on the control input (`OUTMODE?`); `RDGST?`
and `HTRST?` report sensor and heater faults; `TLIMIT` makes the instrument cut every output above
the probe's maximum if the host dies. Transient faults are retried with drivers.retry; a lost port
is reopened at the same path with a bounded backoff through the clock.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any, Callable, Mapping, TypeVar

import serial

from drivers.clock import Clock
from drivers.retry import with_retries
from drivers.vt import (
    MasCalibration,
    TemperatureController,
    VtCommunicationError,
    VtConfigurationError,
    VtError,
    VtHeaterError,
    VtLimits,
    VtSensorError,
    VtUnreachable,
)

log = logging.getLogger(__name__)

try:  # a pty or tty whose other end is gone fails tcflush with termios.error, not OSError
    from termios import error as _TermiosError

    _PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, _TermiosError)
except ImportError:  # pragma: no cover - non-POSIX
    _PORT_ERRORS = (serial.SerialException, OSError)

T = TypeVar("T")
TERMINATOR = b"\r\n"
MIN_COMMAND_GAP_S = 0.05  # manual, message flow control: 50 ms after the last character / after the reply
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_PLAUSIBLE_K = 2000.0
_SETPOINT_TOLERANCE_K = 1e-3  # SETP? prints three decimals
_TLIMIT_TOLERANCE_K = 0.5  # TLIMIT? prints fewer digits than we send (manual format +nnnn)
_INPUTS = ("A", "B", "C", "D")  # OUTMODE <input>: 1 = A ... 4 = D, 0 = none
_UNITS = {1: "kelvin", 2: "Celsius", 3: "sensor units"}  # INTYPE <units>
_OUTPUT_MODES = {0: "off", 1: "closed loop PID", 2: "zone", 3: "open loop", 4: "monitor out", 5: "warmup supply"}
_READING_FLAGS = ((1, "invalid reading"), (16, "temperature under range"), (32, "temperature over range"),
                  (64, "sensor units zero"), (128, "sensor units over range"))
_HEATER_FAULTS = {1: "open load", 2: "short"}


class ReplyError(ValueError):
    """A reply that is not what the command's reply format allows (garbled, empty, truncated)."""


class SensorInvalid(ValueError):
    """The controller flags its reading invalid (RDGST? bits, or a KRDG? of 0 K)."""


def parse_number(reply: str) -> float:
    """A plain decimal number as the controller prints it (sign optional, no exponent)."""
    text = reply.strip()
    if not _NUMBER.fullmatch(text):
        raise ReplyError(f"not a number: {reply!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ReplyError(f"not a finite number: {reply!r}")
    return value


def parse_kelvin_reading(reply: str) -> float:
    """A KRDG? reply: kelvin > 0 and plausible; 0 means the controller has no valid reading."""
    value = parse_number(reply)
    if value == 0.0:
        raise SensorInvalid("controller reports an invalid sensor reading (0 K)")
    if not (0.0 < value < _MAX_PLAUSIBLE_K):
        raise ReplyError(f"implausible temperature {value} K in reply {reply!r}")
    return value


def parse_int_fields(reply: str, count: int, what: str) -> tuple[int, ...]:
    """A reply of `count` comma-separated unsigned integers (INTYPE?, OUTMODE?, RDGST?, ...)."""
    parts = [p.strip() for p in reply.strip().split(",")]
    if len(parts) != count or not all(p.isdigit() for p in parts):
        raise ReplyError(f"not a {what} reply: {reply!r}")
    return tuple(int(p) for p in parts)


def parse_flag(reply: str) -> bool:
    """A 0/1 reply (RAMPST?)."""
    text = reply.strip()
    if text not in ("0", "1"):
        raise ReplyError(f"not a 0/1 reply: {reply!r}")
    return text == "1"


def parse_ramp(reply: str) -> tuple[bool, float]:
    """A RAMP? reply '<off/on>,<rate K/min>' -> (enabled, rate)."""
    parts = reply.strip().split(",")
    if len(parts) != 2 or parts[0].strip() not in ("0", "1"):
        raise ReplyError(f"not a RAMP? reply: {reply!r}")
    rate = parse_number(parts[1])
    if rate < 0:
        raise ReplyError(f"negative ramp rate in {reply!r}")
    return parts[0].strip() == "1", rate


def parse_range(reply: str) -> int:
    """A RANGE? reply: heater range 0 (off) to 3 (high)."""
    text = reply.strip()
    if text not in ("0", "1", "2", "3"):
        raise ReplyError(f"not a RANGE? reply: {reply!r}")
    return int(text)


def parse_identity(reply: str) -> str:
    """An *IDN? reply 'LSCI,MODEL33x,<serial>,<firmware>'."""
    text = reply.strip()
    parts = text.split(",")
    if len(parts) != 4 or parts[0] != "LSCI" or not parts[1].startswith("MODEL") or not text.isprintable():
        raise ReplyError(f"not a Lake Shore *IDN? reply: {reply!r}")
    return text


def reading_flags(status: int) -> list[str]:
    """The RDGST? bits that are set, by their manual names."""
    return [name for bit, name in _READING_FLAGS if status & bit]


class RealTimePacer:
    """The manual's message flow control, in real time: a quiet gap after each communication ends.

    This is a wire constraint of the instrument, not an instrument wait, so it uses the monotonic
    wall clock even when the run's clock is virtual.
    """

    def __init__(self, min_gap_s: float) -> None:
        self.min_gap_s = max(0.0, float(min_gap_s))
        self._quiet_since: float | None = None

    def wait(self) -> None:
        """Block until the gap since the last communication ended has passed."""
        if self._quiet_since is not None:
            remaining_s = self._quiet_since + self.min_gap_s - time.monotonic()
            if remaining_s > 0:
                time.sleep(remaining_s)

    def ended(self) -> None:
        """Mark the end of a communication (last character written, or the reply received)."""
        self._quiet_since = time.monotonic()


class _Transient(Exception):
    """A fault worth retrying: timeout, garbled/empty reply, write not taken, port reopened."""


class LakeShore336(TemperatureController):
    """Lake Shore 335/336 on a serial device path or pyserial URL; control loop `output`, sensor `sensor_input`."""

    def __init__(
        self,
        port: str,
        clock: Clock,
        limits: VtLimits,
        calibration: MasCalibration | None = None,
        *,
        baudrate: int = 57600,
        output: int = 1,
        sensor_input: str = "A",
        timeout_s: float = 1.0,
        retries: int = 3,
        heater_range: int = 3,
        retry_wait_s: float = 0.5,
        reconnect_attempts: int = 6,
        reconnect_backoff_s: float = 1.0,
        min_command_gap_real_s: float = MIN_COMMAND_GAP_S,
    ) -> None:
        super().__init__(clock, limits, calibration)
        if heater_range not in (1, 2, 3):
            raise ValueError(f"heater_range must be 1, 2 or 3, got {heater_range}")
        if sensor_input not in _INPUTS:
            raise ValueError(f"sensor_input must be one of {_INPUTS}, got {sensor_input!r}")
        self.port = port
        self.name = f"Lake Shore 336 at {port}"
        self.output = output
        self.sensor_input = sensor_input
        self.heater_range = heater_range
        self.round_trips = 0  # lines written, for benchmarks
        self.retry_count = 0
        self.reconnect_count = 0
        self._baudrate = baudrate
        self._timeout_s = timeout_s
        self._retries = max(1, retries)
        self._retry_wait_s = retry_wait_s
        self._reconnect_attempts = reconnect_attempts
        self._reconnect_backoff_s = reconnect_backoff_s
        self._pacer = RealTimePacer(min_command_gap_real_s)
        self._io_lock = threading.RLock()  # one exchange at a time (runner and excursion watcher)
        self._configured = False  # units, output mode and TLIMIT checked on this connection
        try:
            self._serial: serial.SerialBase | None = self._open()
        except _PORT_ERRORS as exc:
            raise VtUnreachable(f"{self.name}: cannot open the port: {_port_reason(exc)}") from exc

    # --- transport -----------------------------------------------------------------------
    def _open(self) -> serial.SerialBase:
        """Open the port exclusively (a second process, or a second driver, is refused)."""
        return serial.serial_for_url(
            self.port,
            baudrate=self._baudrate,
            bytesize=serial.SEVENBITS,
            parity=serial.PARITY_ODD,
            stopbits=serial.STOPBITS_ONE,
            timeout=self._timeout_s,
            write_timeout=self._timeout_s,
            exclusive=True,
        )

    def _reconnect(self, cause: BaseException) -> None:
        """Reopen the port at the same path with bounded backoff through the clock."""
        self._drop_port()
        delay_s = self._reconnect_backoff_s
        for attempt in range(1, self._reconnect_attempts + 1):
            log.warning(
                "%s: port lost (%s); reconnect attempt %d/%d in %.1f s",
                self.name, cause, attempt, self._reconnect_attempts, delay_s,
            )
            self._clock.sleep(delay_s)
            try:
                self._serial = self._open()
            except _PORT_ERRORS as exc:
                cause = exc
                delay_s = min(delay_s * 2, 60.0)
                continue
            self.reconnect_count += 1
            self._configured = False  # check units, output mode and TLIMIT again on the new connection
            log.warning("%s: reconnected on attempt %d", self.name, attempt)
            return
        raise VtCommunicationError(
            f"{self.name}: port gone and not back after {self._reconnect_attempts} reconnect attempts "
            f"(last error: {cause})"
        )

    def _drop_port(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except _PORT_ERRORS:
                pass
            self._serial = None

    def _exchange_once(self, command: str, query: bool) -> str:
        """Write one line (paced) and, for a query, read one reply line; transport faults become _Transient."""
        try:
            if self._serial is None:
                raise serial.SerialException("port not open")
            self._pacer.wait()
            if query:
                self._serial.reset_input_buffer()
            self.round_trips += 1
            try:
                self._serial.write(command.encode("ascii") + TERMINATOR)
                self._serial.flush()
                raw = self._serial.read_until(TERMINATOR) if query else b""
            finally:
                self._pacer.ended()
        except _PORT_ERRORS as exc:
            self._reconnect(exc)
            raise _Transient(f"port lost and reopened ({exc})") from exc
        if not query:
            return ""
        if not raw.endswith(TERMINATOR):
            raise _Transient(f"no complete reply within {self._timeout_s} s (got {raw!r})")
        try:
            return raw[: -len(TERMINATOR)].decode("ascii")
        except UnicodeDecodeError as exc:
            raise _Transient(f"non-ASCII reply {raw!r}") from exc

    def _with_retries(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` with bounded retries of transient faults, each retry logged and counted."""

        def on_retry(attempt: int, exc: BaseException) -> None:
            self.retry_count += 1
            log.warning("%s: %s failed (%s); retry %d of %d", self.name, what, exc, attempt, self._retries - 1)

        with self._io_lock:
            try:
                return with_retries(
                    action,
                    attempts=self._retries,
                    wait_s=self._retry_wait_s,
                    sleep=self._clock.sleep,
                    retry_on=(_Transient, ReplyError, SensorInvalid),
                    on_retry=on_retry,
                )
            except SensorInvalid as exc:
                raise VtSensorError(f"{self.name}: {what}: {exc} after {self._retries} attempts") from exc
            except (_Transient, ReplyError) as exc:
                raise VtCommunicationError(f"{self.name}: {what}: {exc} after {self._retries} attempts") from exc

    def _query(self, command: str, parse: Callable[[str], T]) -> T:
        """Send a query and parse its reply, retrying transient faults."""
        return self._with_retries(command, lambda: parse(self._exchange_once(command, True)))

    def _write_verified(
        self, command: str, readback: str, parse: Callable[[str], T], expected: T, tolerance: float = 1e-3
    ) -> None:
        """Send a set command, then read it back; a mismatch is retried like a transient fault."""

        def once() -> None:
            self._exchange_once(command, False)
            got = parse(self._exchange_once(readback, True))
            if not _same(got, expected, tolerance):
                raise _Transient(f"read back {got!r} after {command!r}, expected {expected!r}")

        self._with_retries(command, once)

    # --- configuration (preflight) -------------------------------------------------------
    def preflight(self) -> str:
        """Identify the instrument and check its configuration; return a one-line summary.

        Refuses (VtConfigurationError, one line saying how to fix it) a control input whose
        preferred units are not kelvin, an output not in closed loop on the control input, an
        invalid sensor reading or a heater fault; sets TLIMIT to the probe's maximum and verifies it.
        """
        identity = self.identify()
        self._ensure_configured()
        status = self._query(f"RDGST? {self.sensor_input}", _parse_status)
        if status:
            raise VtConfigurationError(
                f"{self.name}: input {self.sensor_input} reports {', '.join(reading_flags(status)) or status} "
                f"(RDGST? {self.sensor_input} -> {status}); check the sensor wiring, type and curve on the instrument"
            )
        self._check_heater(VtConfigurationError)
        return (f"{identity}; input {self.sensor_input} in kelvin; output {self.output} closed loop on "
                f"{self.sensor_input}; TLIMIT {self.sensor_input} {self._tlimit_k():.1f} K; sensor and heater ok")

    def _ensure_configured(self) -> None:
        """Once per connection: units must be kelvin, output in closed loop on the input; set TLIMIT."""
        if self._configured:
            return
        fields = self._query(f"INTYPE? {self.sensor_input}", lambda r: parse_int_fields(r, 5, "INTYPE?"))
        units = fields[4]
        if units != 1:
            raise VtConfigurationError(
                f"{self.name}: input {self.sensor_input} uses {_UNITS.get(units, f'units code {units}')} as its "
                f"preferred units (INTYPE? {self.sensor_input} -> units {units}), so set points would not be kelvin; "
                f"set the input's units to kelvin on the instrument (Input Setup > Preferred Units) and retry"
            )
        mode, control, _powerup = self._query(f"OUTMODE? {self.output}", lambda r: parse_int_fields(r, 3, "OUTMODE?"))
        wanted = _INPUTS.index(self.sensor_input) + 1
        if mode != 1 or control != wanted:
            on = _INPUTS[control - 1] if 1 <= control <= len(_INPUTS) else "no input"
            raise VtConfigurationError(
                f"{self.name}: output {self.output} is in {_OUTPUT_MODES.get(mode, f'mode {mode}')} mode on {on} "
                f"(OUTMODE? {self.output} -> {mode},{control}), so it would not heat to the set point; set output "
                f"{self.output} to Closed Loop PID with control input {self.sensor_input} on the instrument "
                f"(Output Setup, or OUTMODE {self.output},1,{wanted},0) and retry"
            )
        limit_k = self._tlimit_k()
        self._write_verified(f"TLIMIT {self.sensor_input},{limit_k:.1f}", f"TLIMIT? {self.sensor_input}",
                             parse_number, limit_k, _TLIMIT_TOLERANCE_K)
        self._configured = True

    def _tlimit_k(self) -> float:
        """The instrument's temperature limit: the probe's maximum, rounded down to 0.1 K."""
        return math.floor(self.limits.max_k * 10 + 1e-9) / 10

    def _check_heater(self, error: type[VtError]) -> None:
        """HTRST?: a heater fault raises `error` naming it (Lake Shore's driver: the query clears the latch)."""
        code = self._query(f"HTRST? {self.output}", lambda r: parse_int_fields(r, 1, "HTRST?")[0])
        if code:
            raise error(
                f"{self.name}: heater output {self.output} reports {_HEATER_FAULTS.get(code, f'fault {code}')} "
                f"(HTRST? {self.output} -> {code}); check the heater wiring and load, then clear it on the instrument"
            )

    # --- instrument commands -------------------------------------------------------------
    def identify(self) -> str:
        """The *IDN? string, e.g. 'LSCI,MODEL336,LSA1234,2.9'."""
        return self._query("*IDN?", parse_identity)

    def read_sensor_k(self) -> float:
        """KRDG? of the control sensor input (always kelvin), accepted only if RDGST? reports it valid."""

        def once() -> float:
            value_k = parse_number(self._exchange_once(f"KRDG? {self.sensor_input}", True))
            status = _parse_status(self._exchange_once(f"RDGST? {self.sensor_input}", True))
            if status:
                raise SensorInvalid(f"controller flags an invalid sensor reading (RDGST? {self.sensor_input} -> "
                                    f"{status:03d}: {', '.join(reading_flags(status)) or 'unknown bits'})")
            return parse_kelvin_reading(f"{value_k}")

        return self._with_retries(f"KRDG? {self.sensor_input}", once)

    def read_setpoint_k(self) -> float:
        """SETP? of the control output: the present (ramping) set point, in kelvin (units checked)."""
        self._ensure_configured()
        return self._query(f"SETP? {self.output}", parse_number)

    def read_ramp(self) -> tuple[bool, float]:
        """RAMP? of the control output: (enabled, rate K/min)."""
        return self._query(f"RAMP? {self.output}", parse_ramp)

    def ramping(self) -> bool:
        """RAMPST? of the control output: whether the set point is still ramping."""
        return self._query(f"RAMPST? {self.output}", parse_flag)

    def read_heater_range(self) -> int:
        """RANGE? of the control output: 0 off, 1 low, 2 medium, 3 high."""
        return self._query(f"RANGE? {self.output}", parse_range)

    def set_heater_range(self, heater_range: int) -> None:
        """RANGE: 0 off, 1 low, 2 medium, 3 high."""
        if heater_range not in (0, 1, 2, 3):
            raise ValueError(f"{self.name}: heater range must be 0..3, got {heater_range}")
        self._write_verified(
            f"RANGE {self.output},{heater_range}", f"RANGE? {self.output}", parse_range, heater_range
        )

    def _send_ramp_k_per_min(self, rate_k_per_min: float) -> None:
        rate = math.floor(rate_k_per_min * 10 + 1e-9) / 10  # the controller takes 0.1 K/min steps
        if rate <= 0:
            raise VtError(f"{self.name}: ramp rate {rate_k_per_min} K/min is below the controller's 0.1 K/min step")
        self._write_verified(f"RAMP {self.output},1,{rate:.1f}", f"RAMP? {self.output}", parse_ramp, (True, rate))

    def _send_setpoint_k(self, setpoint_k: float) -> None:
        """Check the configuration, make sure the ramp is on within the limit and the heater on, then write SETP.

        With ramping on, SETP? is the ramping set point, so the write is verified by the ramp:
        RAMPST? 0 and SETP? equal to the target, or RAMPST? 1 and SETP? between where the set point
        was and the target. `_setpoint_reached` checks SETP? against the target once the ramp ends.
        """
        self._ensure_configured()
        enabled, rate = self.read_ramp()
        limit = self.limits.max_ramp_k_per_min
        if not enabled or not (0 < rate <= limit):
            self._send_ramp_k_per_min(min(rate, limit) if rate > 0 else limit)
        if self.read_heater_range() == 0:
            self.set_heater_range(self.heater_range)
        value = round(setpoint_k, 3)
        self._write_ramped_setpoint(value)
        self._check_heater(VtHeaterError)

    def _write_ramped_setpoint(self, value: float) -> None:
        def once() -> None:
            before = parse_number(self._exchange_once(f"SETP? {self.output}", True))
            self._exchange_once(f"SETP {self.output},{value:.3f}", False)
            ramping = parse_flag(self._exchange_once(f"RAMPST? {self.output}", True))
            present = parse_number(self._exchange_once(f"SETP? {self.output}", True))
            low, high = min(before, value) - _SETPOINT_TOLERANCE_K, max(before, value) + _SETPOINT_TOLERANCE_K
            if (not ramping and abs(present - value) >= _SETPOINT_TOLERANCE_K) or not (low <= present <= high):
                raise _Transient(
                    f"set point reads {present:.3f} K (RAMPST? {int(ramping)}) after SETP {value:.3f}, "
                    f"which is not on the way from {before:.3f} K"
                )

        self._with_retries(f"SETP {self.output},{value:.3f}", once)

    def _setpoint_reached(self, setpoint_k: float) -> bool:
        """RAMPST? 0, then SETP? must equal the commanded target (someone else may have changed it)."""
        if self.ramping():
            return False
        value = round(setpoint_k, 3)
        present = self._query(f"SETP? {self.output}", parse_number)
        if abs(present - value) >= _SETPOINT_TOLERANCE_K:
            raise VtCommunicationError(
                f"{self.name}: the ramp ended at set point {present:.3f} K, not the commanded {value:.3f} K "
                f"(changed at the front panel or by another program?)"
            )
        return True

    def _hold_at_k(self, setpoint_k: float | None) -> float:
        """Switch the ramp off, then write the hold set point (or the present one, clamped) and verify it.

        Ramp off first: the set point then jumps to the written value, so SETP? must equal it.
        """
        self._ensure_configured()
        _, rate = self.read_ramp()
        self._write_verified(f"RAMP {self.output},0,{rate:.1f}", f"RAMP? {self.output}", parse_ramp, (False, rate))
        if setpoint_k is None:
            setpoint_k = self.limits.clamp_k(self.read_setpoint_k())
        value = round(setpoint_k, 3)
        self._write_verified(f"SETP {self.output},{value:.3f}", f"SETP? {self.output}", parse_number, value)
        return value

    def close(self) -> None:
        """Close the port (the controller keeps its present set point)."""
        self._drop_port()


def _parse_status(reply: str) -> int:
    """An RDGST? reply: the sum of the set status bits (0 = valid reading)."""
    return parse_int_fields(reply, 1, "RDGST?")[0]


def _port_reason(exc: BaseException) -> str:
    """A one-line reason for a port that would not open (missing device, held by another process)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "exclusive" in text.lower() or "lock" in text.lower():
        return f"{text} (another process holds it: is another exsylab run or selftest using this station?)"
    return text


def _same(got: object, expected: object, tolerance: float) -> bool:
    """Read-back equality, numbers within `tolerance` (the controller's printed precision)."""
    if isinstance(expected, tuple) and isinstance(got, tuple):
        return len(got) == len(expected) and all(_same(g, e, tolerance) for g, e in zip(got, expected))
    if isinstance(expected, (bool, int)) or isinstance(got, (bool, int)):
        return got == expected
    if isinstance(expected, float) and isinstance(got, float):
        return abs(got - expected) < tolerance
    return False


def open_from_station(entry: Mapping[str, Any], address: str, clock: Clock, *, simulator: Any = None,
                      timeout_s: float | None = None, **_context: Any) -> LakeShore336:
    """The registry's way in: a Lake Shore 335/336 from its station entry (SI field names) at `address`.

    Behind an in-process simulator the driver paces as that simulator does (its `min_command_gap_real_s`).
    """
    options: dict[str, Any] = {}
    if simulator is not None:
        options["min_command_gap_real_s"] = simulator.min_command_gap_real_s
    if timeout_s is not None:
        options.update(timeout_s=timeout_s, reconnect_attempts=1)
    return LakeShore336(address, clock, VtLimits(**entry["limits"]), baudrate=entry["baudrate"],
                        output=entry["output"], sensor_input=entry["sensor_input"], **options)
