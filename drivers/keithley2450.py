"""Keithley 2450 SourceMeter over pyvisa (pyvisa-py backend): the SCPI subset a battery cycler needs.

Every command goes through `_transact`, which retries transient faults (timeouts, dropped
connections, malformed replies) a bounded number of times, reopening the resource between
attempts so no stale bytes survive, and logs each retry.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from typing import Any, Callable, Mapping

import pyvisa
from pyvisa.errors import VisaIOError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_none

from drivers.errors import InstrumentError

log = logging.getLogger(__name__)

READ_QUERY = ':READ? "defbuffer1", SOUR, READ, REL'
"""One measurement; reply is `source readback (A), reading (V), relative time (s)`."""

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"^\s*{_NUMBER}\s*$")
_OVERFLOW_V = 9.9e37  # SCPI "overflow" / NaN marker (9.91E37) is not a reading


class CyclerError(InstrumentError):
    """Base class of every cycler failure."""


class CyclerCommunicationError(CyclerError):
    """The instrument could not be reached or answered nonsense, after retries."""


class CyclerSafetyTrip(CyclerError):
    """A safety limit stopped the channel; `result` holds the step's StepResult when known."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class _Transient(Exception):
    """A fault worth retrying on a fresh connection."""


@functools.lru_cache(maxsize=8)
def _reply_pattern(count: int) -> re.Pattern[str]:
    return re.compile(r"^\s*" + r"\s*,\s*".join([f"({_NUMBER})"] * count) + r"\s*$")


def parse_numbers(reply: str, count: int) -> tuple[float, ...]:
    """Parse exactly `count` comma-separated finite SCPI numbers, else raise ValueError.

    Overflow markers (|x| >= 9.9e37), NaN, inf, empty fields and extra fields are refused, so
    a malformed reply is never taken as a reading.
    """
    whole = _reply_pattern(count).match(reply)
    if whole is not None:  # fast path: one regex for the whole reply
        values = tuple(float(g) for g in whole.groups())
        if all(abs(v) < _OVERFLOW_V for v in values):
            return values
    fields = reply.strip().split(",")
    if len(fields) != count:
        raise ValueError(f"expected {count} numbers, got {len(fields)} fields in {reply!r}")
    values = []
    for field in fields:
        if not _NUMBER_RE.match(field):
            raise ValueError(f"not a number: {field!r} in {reply!r}")
        value = float(field)
        if not math.isfinite(value) or abs(value) >= _OVERFLOW_V:
            raise ValueError(f"overflow or non-finite value {field!r} in {reply!r}")
        values.append(value)
    return tuple(values)


def _parse_reading(reply: str) -> tuple[float, ...]:
    return parse_numbers(reply, 3)


def parse_bool(reply: str) -> bool:
    """Parse a SCPI boolean reply ('0' or '1', optionally ON/OFF), else raise ValueError."""
    text = reply.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise ValueError(f"not a boolean: {reply!r}")


class Keithley2450:
    """A Keithley 2450 addressed by a VISA resource string (TCPIP::host::5025::SOCKET, USB0::...::INSTR)."""

    def __init__(
        self,
        resource: str,
        *,
        resource_manager: pyvisa.ResourceManager | None = None,
        timeout_s: float = 2.0,
        retries: int = 3,
        clock: Any = None,
        retry_wait_s: float = 0.05,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.resource = resource
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.retry_count = 0
        self._clock = clock
        self._retry_wait_s = retry_wait_s
        self._rm = resource_manager or pyvisa.ResourceManager("@py")
        self._inst: Any = None
        self._lock = threading.RLock()
        self._closed = False
        with self._lock:
            try:
                self._open()
            except Exception as exc:  # noqa: BLE001 - reported with context below
                raise CyclerCommunicationError(f"Keithley2450 {resource}: cannot open: {exc}") from exc

    # --- transport -------------------------------------------------------------------------

    def _open(self) -> None:
        inst = self._rm.open_resource(self.resource, open_timeout=int(self.timeout_s * 1000))
        inst.timeout = int(self.timeout_s * 1000)
        inst.read_termination = "\n"
        inst.write_termination = "\n"
        self._inst = inst

    def _drop(self) -> None:
        inst, self._inst = self._inst, None
        if inst is not None:
            try:
                inst.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken session may fail
                log.debug("Keithley2450 %s: close after fault failed: %s", self.resource, exc)

    def _attempt(self, command: str) -> str:
        if self._closed:
            raise CyclerCommunicationError(f"Keithley2450 {self.resource}: {command!r} on a closed driver")
        if self._inst is None:
            try:
                self._open()
            except Exception as exc:  # noqa: BLE001 - pyvisa-py raises a bare Exception on refused connects
                raise _Transient(f"reconnect failed: {type(exc).__name__}: {exc}") from exc
        try:
            return self._inst.query(command)
        except (VisaIOError, OSError, ValueError) as exc:
            self._drop()
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def _log_retry(self, state: RetryCallState) -> None:
        self.retry_count += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "Keithley2450 %s: %r attempt %d failed (%s); retrying (retry #%d in total)",
            self.resource, state.args[0], state.attempt_number + 1, exc, self.retry_count,
        )

    def _sleep(self, seconds: float) -> None:
        if self._clock is not None:
            self._clock.sleep(seconds)

    def _transact(self, command: str, parse: Callable[[str], Any]) -> Any:
        """Send a query and parse its reply, retrying transient faults on a fresh connection."""

        def once(cmd: str) -> Any:
            reply = self._attempt(cmd)
            try:
                return parse(reply)
            except ValueError as exc:
                self._drop()  # resynchronise: a fresh connection holds no stale bytes
                raise _Transient(f"malformed reply: {exc}") from exc

        with self._lock:
            try:
                return once(command)  # fast path: no retry machinery when all goes well
            except _Transient as exc:
                first = exc
            if self.retries == 0:
                raise CyclerCommunicationError(
                    f"Keithley2450 {self.resource}: {command!r} failed (no retries allowed): {first}"
                ) from first
            self.retry_count += 1
            log.warning(
                "Keithley2450 %s: %r attempt 1 failed (%s); retrying (retry #%d in total)",
                self.resource, command, first, self.retry_count,
            )
            self._sleep(self._retry_wait_s)
            retrying = Retrying(
                stop=stop_after_attempt(self.retries),
                wait=wait_none(),
                retry=retry_if_exception_type(_Transient),
                before_sleep=self._log_retry,
                sleep=lambda _s: self._sleep(self._retry_wait_s),
                reraise=True,
            )
            try:
                return retrying(once, command)
            except _Transient as exc:
                raise CyclerCommunicationError(
                    f"Keithley2450 {self.resource}: {command!r} failed after {self.retries + 1} attempts: {exc}"
                ) from exc

    def write(self, command: str) -> None:
        """Send one SCPI command and confirm it was processed (`cmd;*OPC?` -> 1), retried on faults.

        One message with a reply, rather than a bare write: a command lost on a dropped
        connection is noticed at once, and no two small writes meet Nagle's delay (pyvisa-py
        cannot set TCP_NODELAY on SOCKET resources).
        """

        def confirmed(reply: str) -> None:
            if reply.strip() != "1":
                raise ValueError(f"*OPC? answered {reply!r}")

        self._transact(f"{command};*OPC?", confirmed)

    def query(self, command: str) -> str:
        """Send one SCPI query and return the raw reply (retried on transient faults)."""
        return self._transact(command, lambda reply: reply)

    # --- instrument functions --------------------------------------------------------------

    def identify(self) -> str:
        """The instrument's *IDN? string."""

        def nonempty(reply: str) -> str:
            if "," not in reply:
                raise ValueError(f"not an identification string: {reply!r}")
            return reply.strip()

        return self._transact("*IDN?", nonempty)

    def source_current(self, current_a: float, voltage_limit_v: float) -> None:
        """Source `current_a` (positive = charge) with a voltage compliance limit, measuring voltage."""
        if not (math.isfinite(current_a) and math.isfinite(voltage_limit_v)) or voltage_limit_v <= 0:
            raise ValueError(
                f"Keithley2450 {self.resource}: bad source setting {current_a} A / {voltage_limit_v} V limit"
            )
        self.write(":SOUR:FUNC CURR")
        self.write(":OUTP:CURR:SMOD HIMP")  # output off opens the relay: no load on the cell
        self.write(':SENS:FUNC "VOLT"')
        self.write(":SOUR:CURR:READ:BACK ON")
        self.write(f":SOUR:CURR:VLIM {voltage_limit_v:.6g}")
        self._verify(":SOUR:CURR:VLIM?", voltage_limit_v, "voltage limit")
        self.set_current(current_a)

    def _verify(self, query: str, expected: float, what: str) -> None:
        """Read a setting back: a write lost on a dropped connection must not pass silently."""
        (actual,) = self._transact(query, lambda r: parse_numbers(r, 1))
        if not math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-12):
            raise CyclerCommunicationError(
                f"Keithley2450 {self.resource}: {what} reads back {actual}, expected {expected} ({query})"
            )

    def set_current(self, current_a: float) -> None:
        """Change the sourced current, keeping function and voltage limit."""
        if not math.isfinite(current_a):
            raise ValueError(f"Keithley2450 {self.resource}: bad current {current_a}")
        self.write(f":SOUR:CURR {current_a:.9g}")
        self._verify(":SOUR:CURR?", current_a, "source current")

    def output(self, on: bool) -> None:
        """Switch the output on or off (read back to confirm)."""
        self.write(":OUTP ON" if on else ":OUTP OFF")
        if self.output_is_on() != on:
            raise CyclerCommunicationError(f"Keithley2450 {self.resource}: output did not switch {'on' if on else 'off'}")

    def read(self) -> tuple[float, float, float]:
        """(voltage_v, current_a, instrument_time_s) from one :READ? query."""
        current_a, voltage_v, time_s = self._transact(READ_QUERY, _parse_reading)
        return voltage_v, current_a, time_s

    def limit_tripped(self) -> bool:
        """True when the source is clamped at its voltage limit (compliance)."""
        return self._transact(":SOUR:CURR:VLIM:TRIP?", parse_bool)

    def output_is_on(self) -> bool:
        """The output state as the instrument reports it."""
        return self._transact(":OUTP?", parse_bool)

    def safe_off(self) -> bool:
        """Set 0 A, switch the output off and confirm it; never raises. True when confirmed off."""
        try:
            self.write(":SOUR:CURR 0")
            self.write(":OUTP OFF")
            if self.output_is_on():
                log.error("Keithley2450 %s: safe_off: output still reports ON", self.resource)
                return False
            return True
        except Exception as exc:  # noqa: BLE001 - safe_off must not raise
            log.error("Keithley2450 %s: safe_off failed, output state unknown: %s", self.resource, exc)
            return False

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def close(self) -> None:
        """Close the VISA session (the output state is left as it is)."""
        with self._lock:
            self._drop()
            self._closed = True


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, **_context: Any) -> Keithley2450:
    """The registry's way in: a Keithley 2450 channel from its station entry at the VISA resource `address`."""
    return Keithley2450(address, clock=clock)
