"""Keithley 2450 SourceMeter over pyvisa (pyvisa-py backend): the SCPI subset a battery cycler needs.

Behaviours and their sources are in docs/dialects/keithley2450.md. In short: the SCPI command
set must be selected (`*LANG?`); every configuration is followed by a read of the event log
(`:SYST:ERR?`) because `*OPC?` only says the commands finished; the output-off state is
re-asserted as high impedance after every connect (power-on and `*RST` restore NORMAL, a 0 V
source on the cell); a charge is a current source whose voltage limit is the upper limit, and a
discharge is a voltage source at the lower limit with the discharge current as its current
limit, so the instrument itself never takes the cell below its lower limit if the host dies.
Transient faults are retried through `drivers.retry.with_retries` on a fresh connection.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from typing import Any, Callable, Literal, Mapping

import pyvisa
from pyvisa.errors import VisaIOError

from drivers.retry import with_retries
from drivers.source_meter import (
    CyclerCommunicationError,
    CyclerConfigurationError,
    CyclerError,
    CyclerSafetyTrip,
    CyclerUnreachable,
)

__all__ = [
    "CyclerCommunicationError", "CyclerConfigurationError", "CyclerError", "CyclerSafetyTrip", "CyclerUnreachable",
    "Keithley2450", "parse_bool", "parse_error", "parse_numbers",
]

log = logging.getLogger(__name__)

READ_QUERY = ':READ? "defbuffer1", SOUR, READ, REL'
"""One measurement: source read-back (the source function's quantity), reading (the sense function's), relative time."""
ERROR_QUERY = ":SYST:ERR?"
MAX_ERRORS_READ = 32
"""Event-log entries read at most in one go (the log is finite; a stuck instrument must not loop us forever)."""
OCV_CURRENT_MAX_A = 1e-6
"""An open-circuit reading at a 0 A source must show less current than this."""
TERMINALS = {"front": "FRON", "rear": "REAR"}

Function = Literal["CURR", "VOLT"]
_SENSE_OF: dict[str, str] = {"CURR": "VOLT", "VOLT": "CURR"}
"""Sense function paired with each source function: the quantity the source does not fix."""

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"^\s*{_NUMBER}\s*$")
_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"(.*)"\s*$')
_OVERFLOW_V = 9.9e37  # SCPI "overflow" / NaN marker (9.91E37) is not a reading


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
    parsed = []
    for field in fields:
        if not _NUMBER_RE.match(field):
            raise ValueError(f"not a number: {field!r} in {reply!r}")
        value = float(field)
        if not math.isfinite(value) or abs(value) >= _OVERFLOW_V:
            raise ValueError(f"overflow or non-finite value {field!r} in {reply!r}")
        parsed.append(value)
    return tuple(parsed)


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


def parse_error(reply: str) -> tuple[int, str]:
    """Parse one event-log entry `code,"text"` (code 0 = no error), else raise ValueError."""
    match = _ERROR_RE.match(reply)
    if match is None:
        raise ValueError(f"not an error-queue entry: {reply!r}")
    return int(match.group(1)), match.group(2)


def _word(reply: str) -> str:
    text = reply.strip().strip('"').upper()
    if not text or not text.replace(":", "").isalnum():
        raise ValueError(f"not a SCPI word: {reply!r}")
    return text


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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
        four_wire: bool = True,
        terminals: str = "front",
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if terminals not in TERMINALS:
            raise ValueError(f"terminals must be one of {', '.join(TERMINALS)}, got {terminals!r}")
        self.resource = resource
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.retry_count = 0
        self.four_wire = bool(four_wire)
        self.terminals = terminals
        self.exclusive_lock = False
        """True while the VISA session holds an exclusive lock (pyvisa-py: not for SOCKET resources)."""
        self._clock = clock
        self._retry_wait_s = retry_wait_s
        self._rm = resource_manager or pyvisa.ResourceManager("@py")
        self._inst: Any = None
        self._lock = threading.RLock()
        self._closed = False
        self._prepared = False  # off-state, sense and terminals asserted on this connection
        self._function: Function | None = None  # what the driver configured; None: nothing yet
        self._output_on = False
        with self._lock:
            try:
                self._open()
                self._raw("*IDN?")  # pyvisa-py connects a SOCKET lazily: make a refused connection show here
            except CyclerError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyvisa-py raises bare Exceptions on refused connects
                self._drop()
                raise CyclerUnreachable(f"Keithley2450 {resource}: cannot open: {_one_line(exc)}") from exc

    # --- transport -------------------------------------------------------------------------

    def _open(self) -> None:
        inst: Any = self._rm.open_resource(self.resource, open_timeout=int(self.timeout_s * 1000))
        inst.timeout = int(self.timeout_s * 1000)
        inst.read_termination = "\n"
        inst.write_termination = "\n"
        self._inst = inst
        self._take_lock(inst)

    def _take_lock(self, inst: Any) -> None:
        """Lock the session exclusively where the backend can; pyvisa-py cannot for SOCKET resources (logged)."""
        try:
            inst.lock_excl(timeout=int(self.timeout_s * 1000))
            self.exclusive_lock = True
        except VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_nonsupported_operation:
                log.debug("Keithley2450 %s: no VISA lock on this resource type (%s)", self.resource, exc.abbreviation)
                self.exclusive_lock = False
                return
            inst.close()
            self._inst = None
            raise CyclerUnreachable(
                f"Keithley2450 {self.resource}: held by another VISA session ({exc.abbreviation}); "
                "close the other program or run first") from exc

    def _drop(self) -> None:
        inst, self._inst = self._inst, None
        self._prepared = False
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
            except CyclerError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyvisa-py raises a bare Exception on refused connects
                raise _Transient(f"reconnect failed: {type(exc).__name__}: {_one_line(exc)}") from exc
            self._after_reconnect()
        try:
            return str(self._inst.query(command))
        except (VisaIOError, OSError, ValueError) as exc:
            self._drop()
            raise _Transient(f"{type(exc).__name__}: {_one_line(exc)}") from exc

    def _raw(self, command: str) -> str:
        try:
            return str(self._inst.query(command))
        except (VisaIOError, OSError, ValueError) as exc:
            self._drop()
            raise _Transient(f"{type(exc).__name__}: {_one_line(exc)}") from exc

    def _after_reconnect(self) -> None:
        """A new connection may follow a power cycle: re-assert HIMP first, then check the instrument kept our setup."""
        try:
            if self._raw(":OUTP:CURR:SMOD HIMP;:OUTP:VOLT:SMOD HIMP;*OPC?").strip() != "1":
                raise ValueError("*OPC? after re-asserting HIMP did not answer 1")
            if self._function is None:
                return
            source = _word(self._raw(":SOUR:FUNC?"))
            output_on = parse_bool(self._raw(":OUTP?"))
        except ValueError as exc:
            self._drop()
            raise _Transient(f"malformed reply after reconnect: {exc}") from exc
        if not source.startswith(self._function) or output_on != self._output_on:
            self._function = None
            raise CyclerCommunicationError(
                f"Keithley2450 {self.resource}: the instrument lost its configuration across a reconnect "
                f"(source {source}, output {'on' if output_on else 'off'}; power cycle or *RST?); output-off state "
                "set to high impedance again")

    def _sleep(self, seconds: float) -> None:
        if self._clock is not None:
            self._clock.sleep(seconds)

    def _on_retry(self, command: str) -> Callable[[int, BaseException], None]:
        def note(attempt: int, exc: BaseException) -> None:
            self.retry_count += 1
            log.warning("Keithley2450 %s: %r attempt %d failed (%s); retrying (retry #%d in total)",
                        self.resource, command, attempt, exc, self.retry_count)
        return note

    def _transact(self, command: str, parse: Callable[[str], Any]) -> Any:
        """Send a query and parse its reply, retrying transient faults on a fresh connection."""

        def once() -> Any:
            reply = self._attempt(command)
            try:
                return parse(reply)
            except ValueError as exc:
                self._drop()  # resynchronise: a fresh connection holds no stale bytes
                raise _Transient(f"malformed reply: {exc}") from exc

        with self._lock:
            try:
                return with_retries(once, attempts=self.retries + 1, wait_s=self._retry_wait_s, sleep=self._sleep,
                                    retry_on=(_Transient,), on_retry=self._on_retry(command))
            except _Transient as exc:
                how = "(no retries allowed)" if self.retries == 0 else f"after {self.retries + 1} attempts"
                raise CyclerCommunicationError(f"Keithley2450 {self.resource}: {command!r} failed {how}: {exc}") from exc

    def write(self, command: str) -> None:
        """Send one SCPI command and confirm it was processed (`cmd;*OPC?` -> 1), retried on faults.

        `*OPC?` says the command finished, not that it was accepted: configuration methods read
        the event log afterwards (`check_errors`). One message with a reply, rather than a bare
        write, notices a command lost on a dropped connection at once and avoids Nagle's delay.
        """

        def confirmed(reply: str) -> None:
            if reply.strip() != "1":
                raise ValueError(f"*OPC? answered {reply!r}")

        self._transact(f"{command};*OPC?", confirmed)

    def query(self, command: str) -> str:
        """Send one SCPI query and return the raw reply (retried on transient faults)."""
        return str(self._transact(command, lambda reply: reply))

    # --- identity and configuration -----------------------------------------------------------

    def identify(self) -> str:
        """The instrument's *IDN? string."""

        def nonempty(reply: str) -> str:
            if "," not in reply:
                raise ValueError(f"not an identification string: {reply!r}")
            return reply.strip()

        return str(self._transact("*IDN?", nonempty))

    def read_errors(self) -> list[str]:
        """Empty the event log (`:SYST:ERR?` until `0,...`); the entries as the instrument wrote them."""
        entries: list[str] = []
        for _ in range(MAX_ERRORS_READ):
            code, text = self._transact(ERROR_QUERY, parse_error)
            if code == 0:
                return entries
            entries.append(f'{code},"{text}"')
        entries.append(f"(more than {MAX_ERRORS_READ} entries; stopped reading)")
        return entries

    def check_errors(self, what: str) -> None:
        """Refuse (CyclerConfigurationError with the instrument's own text) if the event log holds any error."""
        errors = self.read_errors()
        if errors:
            raise CyclerConfigurationError(
                f"Keithley2450 {self.resource}: the instrument refused the {what}: {'; '.join(errors)}")

    def _check_language(self) -> str:
        language = str(self._transact("*LANG?", _word))
        if language != "SCPI":
            raise CyclerConfigurationError(
                f"Keithley2450 {self.resource}: command set is {language}, exsylab needs SCPI; on the instrument "
                "press MENU > System > Settings > Command Set > SCPI (or send *LANG SCPI), then power it off and on")
        return language

    def _prepare(self) -> None:
        """High-impedance output-off for both source functions, sense and terminals from the station; verified."""
        if self._prepared:
            return
        self.write(":OUTP:CURR:SMOD HIMP")
        self.write(":OUTP:VOLT:SMOD HIMP")
        rsense = "ON" if self.four_wire else "OFF"
        self.write(f":SENS:VOLT:RSEN {rsense}")
        self.write(f":SENS:CURR:RSEN {rsense}")
        self.write(f":ROUT:TERM {TERMINALS[self.terminals]}")
        self.check_errors("output-off, sense and terminal settings")
        checks = {":OUTP:CURR:SMOD?": "HIMP", ":OUTP:VOLT:SMOD?": "HIMP",
                  ":SENS:VOLT:RSEN?": "1" if self.four_wire else "0", ":SENS:CURR:RSEN?": "1" if self.four_wire else "0",
                  ":ROUT:TERM?": TERMINALS[self.terminals]}
        for query, expected in checks.items():
            actual = str(self._transact(query, _word))
            if not actual.startswith(expected):
                raise CyclerConfigurationError(
                    f"Keithley2450 {self.resource}: {query} reads {actual}, expected {expected} after setting it")
        self._prepared = True

    def preflight(self) -> str:
        """Identify the instrument and check its configuration; return a one-line summary.

        Checks the command set, empties the event log (old entries are logged), asserts the
        high-impedance output-off state, 4-wire/2-wire sense and the terminals, and requires the
        event log to be empty afterwards.
        """
        identity = self.identify()
        if "2450" not in identity:
            raise CyclerConfigurationError(f"Keithley2450 {self.resource}: not a Keithley 2450: {identity}")
        self._check_language()
        old = self.read_errors()
        for entry in old:
            log.warning("Keithley2450 %s: event log held %s before exsylab connected", self.resource, entry)
        self._prepared = False
        self._prepare()
        output_on = self.output_is_on()
        lock = "VISA exclusive lock held" if self.exclusive_lock else "no VISA lock (not supported for this resource)"
        return (f"{identity}; SCPI; output-off HIMP; {'4-wire' if self.four_wire else '2-wire'} sense; "
                f"{self.terminals} terminals; output {'ON' if output_on else 'off'}; "
                f"{len(old)} old event(s) cleared; {lock}")

    # --- sourcing -----------------------------------------------------------------------------

    def source_current(self, current_a: float, *, voltage_max_v: float, voltage_min_v: float) -> None:
        """Source `current_a` (+ = charge) with the instrument holding the cell's voltage window.

        Charge and rest: current source, voltage limit `voltage_max_v` (it clamps |V| from above).
        Discharge: voltage source at `voltage_min_v` with current limit |current_a|: the 2450 sinks
        |current_a| while the cell is above `voltage_min_v` and never pulls it below. Changing
        between the two switches the output off first (HIMP: relay open, nothing flows).
        """
        values = (current_a, voltage_max_v, voltage_min_v)
        if not all(math.isfinite(v) for v in values) or voltage_max_v <= 0 or voltage_min_v >= voltage_max_v:
            raise ValueError(f"Keithley2450 {self.resource}: bad source setting {current_a} A within "
                             f"{voltage_min_v}..{voltage_max_v} V")
        if current_a >= 0:
            self._configure("CURR", level=current_a, limit=voltage_max_v)
        else:
            self._configure("VOLT", level=voltage_min_v, limit=-current_a)

    def source_voltage(self, voltage_v: float, *, current_limit_a: float) -> None:
        """Voltage source at `voltage_v` with current limit `current_limit_a`: the 2450 sources or sinks what holds it."""
        if not (math.isfinite(voltage_v) and math.isfinite(current_limit_a)) or voltage_v <= 0 or current_limit_a <= 0:
            raise ValueError(f"Keithley2450 {self.resource}: bad voltage hold {voltage_v} V, limit {current_limit_a} A")
        self._configure("VOLT", level=voltage_v, limit=current_limit_a)

    def _configure(self, function: Function, *, level: float, limit: float) -> None:
        with self._lock:
            self._prepare()
            if self._function != function:
                if self.output_is_on():
                    self.output(False)
                self._function = None
                sense = _SENSE_OF[function]
                self.write(f":SOUR:FUNC {function}")
                self.write(f':SENS:FUNC "{sense}"')
                self.write(f":SENS:{sense}:RSEN {'ON' if self.four_wire else 'OFF'}")
                self.write(f":SOUR:{function}:READ:BACK ON")
            limit_cmd = ":SOUR:CURR:VLIM" if function == "CURR" else ":SOUR:VOLT:ILIM"
            self.write(f"{limit_cmd} {limit:.6g}")
            self.write(f":SOUR:{function} {level:.9g}")
            self.check_errors(f"source setting ({function} {level:.6g}, limit {limit:.6g})")
            if self._function != function:
                self._verify_functions(function)
            self._verify(f"{limit_cmd}?", limit, "source limit")
            self._verify(f":SOUR:{function}?", level, "source level")
            self._function = function

    def _verify_functions(self, function: Function) -> None:
        source = str(self._transact(":SOUR:FUNC?", _word))
        sense = str(self._transact(":SENS:FUNC?", _word))
        if not source.startswith(function) or not sense.startswith(_SENSE_OF[function]):
            raise CyclerConfigurationError(
                f"Keithley2450 {self.resource}: source/sense functions read back {source}/{sense}, "
                f"expected {function}/{_SENSE_OF[function]}")

    def _verify(self, query: str, expected: float, what: str) -> None:
        """Read a setting back: a write lost on a dropped connection must not pass silently."""
        (actual,) = self._transact(query, lambda r: parse_numbers(r, 1))
        if not math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-12):
            raise CyclerCommunicationError(
                f"Keithley2450 {self.resource}: {what} reads back {actual}, expected {expected} ({query})")

    def output(self, on: bool) -> None:
        """Switch the output on or off (read back to confirm); on only once a source is configured."""
        if on and self._function is None:
            raise CyclerError(f"Keithley2450 {self.resource}: output on refused before a source was configured")
        self.write(":OUTP ON" if on else ":OUTP OFF")
        self._output_on = on
        if self.output_is_on() != on:
            raise CyclerCommunicationError(f"Keithley2450 {self.resource}: output did not switch {'on' if on else 'off'}")

    def read(self) -> tuple[float, float, float]:
        """(voltage_v, current_a, instrument_time_s) from one :READ?, mapped by the configured functions."""
        function = self._function
        if function is None:
            raise CyclerError(f"Keithley2450 {self.resource}: read before a source was configured "
                              "(use measure_open_circuit_v for an open-circuit reading)")
        source, reading, time_s = self._transact(READ_QUERY, _parse_reading)
        if function == "CURR":
            return reading, source, time_s
        return source, reading, time_s

    def limit_reached(self) -> bool:
        """True when the instrument holds the protecting voltage limit instead of the set current."""
        if self._function == "VOLT":  # discharge: in current limit is normal; out of it = held at the lower limit
            return not self._transact(":SOUR:VOLT:ILIM:TRIP?", parse_bool)
        return bool(self._transact(":SOUR:CURR:VLIM:TRIP?", parse_bool))

    def output_is_on(self) -> bool:
        """The output state as the instrument reports it."""
        return bool(self._transact(":OUTP?", parse_bool))

    def measure_open_circuit_v(self, voltage_max_v: float) -> float:
        """The cell's open-circuit voltage: 0 A current source, voltage limit `voltage_max_v`, one reading, output off.

        Refuses (CyclerConfigurationError) when the output is already on (someone is using the
        channel). Never leaves the cell on the NORMAL 0 V off-state: HIMP is asserted first.
        """
        if self.output_is_on():
            raise CyclerConfigurationError(
                f"Keithley2450 {self.resource}: output is ON (channel in use?); open-circuit reading not taken")
        if not (math.isfinite(voltage_max_v) and voltage_max_v > 0):
            raise ValueError(f"Keithley2450 {self.resource}: bad voltage limit {voltage_max_v}")
        self._configure("CURR", level=0.0, limit=voltage_max_v)
        try:
            self.output(True)
            voltage_v, current_a, _ = self.read()
        finally:
            self.safe_off()
        if abs(current_a) > OCV_CURRENT_MAX_A:
            raise CyclerConfigurationError(
                f"Keithley2450 {self.resource}: {current_a:.3e} A flowed at a 0 A source; not an open circuit")
        return voltage_v

    def safe_off(self) -> bool:
        """No current, output off and confirmed; never raises. True when confirmed off."""
        try:
            if self._function != "VOLT":
                self.write(":SOUR:CURR 0")
            self.write(":OUTP OFF")
            self._output_on = False
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



SENSE = {"4-wire": True, "2-wire": False}


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, *, timeout_s: float | None = None,
                      **_context: Any) -> Keithley2450:
    """The registry's way in: a Keithley 2450 channel at the VISA resource `address`.

    Its station settings: `sense` (4-wire, the default, or 2-wire) and `terminals` (front or rear).
    """
    settings = dict(entry.get("settings") or {})
    sense = settings.pop("sense", "4-wire")
    terminals = settings.pop("terminals", "front")
    if settings:
        raise CyclerConfigurationError(f"Keithley2450 {address}: unknown setting(s) {', '.join(sorted(settings))} "
                                       "(known: sense, terminals)")
    if sense not in SENSE:
        raise CyclerConfigurationError(f"Keithley2450 {address}: sense {sense!r} must be one of {', '.join(SENSE)}")
    if terminals not in TERMINALS:
        raise CyclerConfigurationError(f"Keithley2450 {address}: terminals {terminals!r} must be one of "
                                       f"{', '.join(TERMINALS)}")
    options: dict[str, Any] = {"timeout_s": timeout_s, "retries": 1} if timeout_s is not None else {}
    return Keithley2450(address, clock=clock, four_wire=SENSE[sense], terminals=terminals, **options)
