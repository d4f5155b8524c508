"""Lake Shore 335/336 temperature controller over a serial port (or a pyserial URL such as socket://).

Serial settings of the instrument: 57600 baud, 7 data bits, odd parity, 1 stop bit, lines
terminated by CR LF. Set commands get no reply, so every write is verified by reading it
back. Transient faults (timeout, empty or garbled reply) are retried with tenacity; a lost
port (USB adapter unplugged) is reopened at the same path with a bounded backoff.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from typing import Any, Mapping

import serial
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from drivers.clock import Clock
from drivers.vt import (
    MasCalibration,
    TemperatureController,
    VtCommunicationError,
    VtError,
    VtLimits,
    VtSensorError,
)

log = logging.getLogger(__name__)

try:  # a pty or tty whose other end is gone fails tcflush with termios.error, not OSError
    from termios import error as _TermiosError

    _PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, _TermiosError)
except ImportError:  # pragma: no cover - non-POSIX
    _PORT_ERRORS = (serial.SerialException, OSError)

TERMINATOR = b"\r\n"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_PLAUSIBLE_K = 2000.0


class ReplyError(ValueError):
    """A reply that is not what the command's reply format allows (garbled, empty, truncated)."""


class SensorInvalid(ValueError):
    """A well-formed KRDG? reply of 0 K: the controller flags an invalid sensor reading."""


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
    ) -> None:
        super().__init__(clock, limits, calibration)
        if heater_range not in (1, 2, 3):
            raise ValueError(f"heater_range must be 1, 2 or 3, got {heater_range}")
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
        self._io_lock = threading.RLock()  # one exchange at a time (runner and excursion watcher)
        self._serial: serial.SerialBase | None = self._open()

    # --- transport -----------------------------------------------------------------------
    def _open(self) -> serial.SerialBase:
        return serial.serial_for_url(
            self.port,
            baudrate=self._baudrate,
            bytesize=serial.SEVENBITS,
            parity=serial.PARITY_ODD,
            stopbits=serial.STOPBITS_ONE,
            timeout=self._timeout_s,
            write_timeout=self._timeout_s,
        )

    def _reconnect(self, cause: Exception) -> None:
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

    def _exchange_once(self, command: str, query: bool) -> str | None:
        """Write one line and, for a query, read one reply line; transport faults become _Transient."""
        try:
            if self._serial is None:
                raise serial.SerialException("port not open")
            if query:
                self._serial.reset_input_buffer()
            self.round_trips += 1
            self._serial.write(command.encode("ascii") + TERMINATOR)
            if not query:
                return None
            raw = self._serial.read_until(TERMINATOR)
        except _PORT_ERRORS as exc:
            self._reconnect(exc)
            raise _Transient(f"port lost and reopened ({exc})") from exc
        if not raw.endswith(TERMINATOR):
            raise _Transient(f"no complete reply within {self._timeout_s} s (got {raw!r})")
        try:
            return raw[: -len(TERMINATOR)].decode("ascii")
        except UnicodeDecodeError as exc:
            raise _Transient(f"non-ASCII reply {raw!r}") from exc

    def _with_retries(self, what: str, action):
        """Run `action` with bounded retries of transient faults, each retry logged and counted."""

        def log_retry(state: RetryCallState) -> None:
            self.retry_count += 1
            log.warning(
                "%s: %s failed (%s); retry %d of %d",
                self.name, what, state.outcome.exception(), state.attempt_number, self._retries - 1,
            )

        with self._io_lock:
            try:
                for attempt in Retrying(
                    stop=stop_after_attempt(self._retries),
                    wait=wait_fixed(self._retry_wait_s),
                    sleep=self._clock.sleep,
                    retry=retry_if_exception_type((_Transient, ReplyError, SensorInvalid)),
                    before_sleep=log_retry,
                    reraise=True,
                ):
                    with attempt:
                        return action()
            except SensorInvalid as exc:
                raise VtSensorError(f"{self.name}: {what}: {exc} after {self._retries} attempts") from exc
            except (_Transient, ReplyError) as exc:
                raise VtCommunicationError(f"{self.name}: {what}: {exc} after {self._retries} attempts") from exc

    def _query(self, command: str, parse):
        """Send a query and parse its reply, retrying transient faults."""
        return self._with_retries(command, lambda: parse(self._exchange_once(command, True)))

    def _write_verified(self, command: str, readback: str, parse, expected) -> None:
        """Send a set command, then read it back; a mismatch is retried like a transient fault."""

        def once() -> None:
            self._exchange_once(command, False)
            got = parse(self._exchange_once(readback, True))
            if not _same(got, expected):
                raise _Transient(f"read back {got!r} after {command!r}, expected {expected!r}")

        self._with_retries(command, once)

    # --- instrument commands -------------------------------------------------------------
    def identify(self) -> str:
        """The *IDN? string, e.g. 'LSCI,MODEL336,LSA1234,2.9'."""
        return self._query("*IDN?", parse_identity)

    def read_sensor_k(self) -> float:
        """KRDG? of the control sensor input, in kelvin."""
        return self._query(f"KRDG? {self.sensor_input}", parse_kelvin_reading)

    def read_setpoint_k(self) -> float:
        """SETP? of the control output, in kelvin."""
        return self._query(f"SETP? {self.output}", parse_number)

    def read_ramp(self) -> tuple[bool, float]:
        """RAMP? of the control output: (enabled, rate K/min)."""
        return self._query(f"RAMP? {self.output}", parse_ramp)

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
        """Make sure the ramp is on within the limit and the heater on, then write and verify SETP."""
        enabled, rate = self.read_ramp()
        limit = self.limits.max_ramp_k_per_min
        if not enabled or not (0 < rate <= limit):
            self._send_ramp_k_per_min(min(rate, limit) if rate > 0 else limit)
        if self.read_heater_range() == 0:
            self.set_heater_range(self.heater_range)
        value = round(setpoint_k, 3)
        self._write_verified(f"SETP {self.output},{value:.3f}", f"SETP? {self.output}", parse_number, value)

    def _hold_at_k(self, setpoint_k: float | None) -> float:
        """Write the hold set point (or re-write the present one, clamped), then switch the ramp off."""
        if setpoint_k is None:
            setpoint_k = self.limits.clamp_k(self.read_setpoint_k())
        value = round(setpoint_k, 3)
        self._write_verified(f"SETP {self.output},{value:.3f}", f"SETP? {self.output}", parse_number, value)
        _, rate = self.read_ramp()
        self._write_verified(f"RAMP {self.output},0,{rate:.1f}", f"RAMP? {self.output}", parse_ramp, (False, rate))
        return value

    def close(self) -> None:
        """Close the port (the controller keeps its present set point)."""
        self._drop_port()


def _same(got, expected) -> bool:
    """Read-back equality, numbers to the controller's printed precision."""
    if isinstance(expected, tuple):
        return len(got) == len(expected) and all(_same(g, e) for g, e in zip(got, expected))
    if isinstance(expected, bool) or isinstance(expected, int):
        return got == expected
    return abs(got - expected) < 1e-3



def open_from_station(entry: Mapping[str, Any], address: str, clock: Clock, **_context: Any) -> LakeShore336:
    """The registry's way in: a Lake Shore 335/336 from its station entry (SI field names) at `address`."""
    return LakeShore336(address, clock, VtLimits(**entry["limits"]), baudrate=entry["baudrate"],
                        output=entry["output"], sensor_input=entry["sensor_input"])
