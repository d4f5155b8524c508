"""A Keithley 2450 SourceMeter on a loopback TCP port (SCPI over a raw socket), with a cell behind it.

Models what the 2450 reference manual documents (sources in docs/dialects/keithley2450.md), not
what exsylab's driver sends: power-on / *RST defaults (source voltage, sense current, NORMAL
output-off state, 2-wire sense, front terminals), the NORMAL off-state as a 0 V source with a
current limit of 10 % of the present range that discharges a connected cell, HIMP opening the
relay, current and voltage sourcing with their limits (the 2450 crosses over into the limit and
reports it), `:READ?` elements following the configured source and sense functions, an event log
that records undefined headers (-113), illegal values (-224) and out-of-range values (-222), and
the command set (`*LANG`): in TSP or SCPI2400 mode only common commands are answered, anything
else is logged and gets no reply. Faults can be injected: dropped connection, timeout, malformed
or raw replies. The cell advances lazily from clock.now() whenever a command arrives.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import socket
import threading
from typing import Any

from hardware_sim.cell import Li2SCell

log = logging.getLogger(__name__)

IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,SIM2450,1.7.12b"
FAULTS = ("drop_connection", "timeout", "malformed", "raw")
LANGUAGES = ("SCPI", "TSP", "SCPI2400")
OFF_MODES = ("NORM", "HIMP", "ZERO", "GUAR")
COMMAND_LOG_SIZE = 2000
"""Commands kept in `commands_received` (the newest; a long run must not grow memory)."""
VLIM_RANGE_V = (0.02, 210.0)
ILIM_RANGE_A = (1e-9, 1.05)
CURRENT_MAX_A = 1.05
VOLTAGE_MAX_V = 210.0
DEFAULT_VLIM_V = 21.0
DEFAULT_ILIM_A = 105e-6
HOLD_CHARGE_AS_PER_G = 3.6
"""Charge per gram of active material the cell model integrates at most in one piece (1 mAh/g)."""
MIN_CHUNK_S, HOLD_CHUNK_S, MAX_CHUNK_S = 0.05, 2.0, 60.0
_CURRENT_RANGES_A = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

ERR_UNDEFINED_HEADER = '-113,"Undefined header"'
ERR_ILLEGAL_VALUE = '-224,"Illegal parameter value"'
ERR_OUT_OF_RANGE = '-222,"Parameter data out of range"'
ERR_TSP_SYNTAX = '-285,"TSP Syntax error at line 1: unexpected symbol near \'{}\'"'

# (long form, short form) of every mnemonic the simulator understands
_MNEMONICS = [
    ("SOURCE", "SOUR"), ("FUNCTION", "FUNC"), ("CURRENT", "CURR"), ("VOLTAGE", "VOLT"),
    ("VLIMIT", "VLIM"), ("ILIMIT", "ILIM"), ("TRIPPED", "TRIP"), ("OUTPUT", "OUTP"), ("STATE", "STAT"),
    ("SENSE", "SENS"), ("READ", "READ"), ("BACK", "BACK"), ("SYSTEM", "SYST"),
    ("ERROR", "ERR"), ("NEXT", "NEXT"), ("TRACE", "TRAC"), ("CLEAR", "CLE"), ("SMODE", "SMOD"),
    ("RSENSE", "RSEN"), ("ROUTE", "ROUT"), ("TERMINALS", "TERM"), ("COUNT", "COUN"),
]
_OPTIONAL = {"LEV", "LEVEL", "MODE", "IMM", "IMMEDIATE", "AMPL", "AMPLITUDE", "DC"}
_ELEMENTS = {"READ": "READ", "READING": "READ", "SOUR": "SOUR", "SOURCE": "SOUR",
             "REL": "REL", "RELATIVE": "REL", "SEC": "SEC", "SECONDS": "SEC",
             "FRAC": "FRAC", "FRACTIONAL": "FRAC"}
_GARBAGE = ["+1.6932E+00,GARBAGE,+1.0E+00", "+1.69E+00,+1.0", "9.91E37,9.91E37,9.91E37",
            "\x00\x7f\x01", "nan,nan,nan", "+1.6932E+00,,+2.0E+00", "+1.6E+00;+1.0E-04;+2.0E+00"]
_WORDS = {"CURR": "CURR", "CURRENT": "CURR", "VOLT": "VOLT", "VOLTAGE": "VOLT",
          "NORM": "NORM", "NORMAL": "NORM", "HIMP": "HIMP", "HIMPEDANCE": "HIMP", "ZERO": "ZERO",
          "GUAR": "GUAR", "GUARD": "GUAR", "FRON": "FRON", "FRONT": "FRON", "REAR": "REAR"}


class _OutOfRange(ValueError):
    """A numeric parameter outside the instrument's range (-222)."""


def _canon(token: str) -> str | None:
    token = token.upper().rstrip("0123456789") or token.upper()  # SOUR1 -> SOUR
    for long, short in _MNEMONICS:
        if token == long or token == short:
            return short
    return None


@functools.lru_cache(maxsize=256)
def parse_header(header: str) -> tuple[tuple[str, ...], bool] | None:
    """Canonical mnemonic path and query flag of a SCPI header, or None if not understood."""
    query = header.endswith("?")
    header = header.rstrip("?")
    if header.startswith("*"):
        return (header.upper(),), query
    parts = []
    for token in header.lstrip(":").split(":"):
        if not token or token.upper() in _OPTIONAL:
            continue
        canon = _canon(token)
        if canon is None:
            return None
        parts.append(canon)
    return tuple(parts), query


def _word(args: str) -> str:
    word = _WORDS.get(args.strip().strip("\"'").upper().split(":")[0])
    if word is None:
        raise ValueError(args)
    return word


def _bool(args: str) -> bool:
    word = args.strip().upper()
    if word not in ("ON", "OFF", "1", "0"):
        raise ValueError(args)
    return word in ("ON", "1")


def _number(args: str, low: float, high: float) -> float:
    value = float(args)
    if not math.isfinite(value) or not low <= value <= high:
        raise _OutOfRange(args)
    return value


def _current_range_a(magnitude_a: float) -> float:
    """The smallest 2450 current range that holds `magnitude_a` (each range goes to 105 %)."""
    return next((r for r in _CURRENT_RANGES_A if magnitude_a <= 1.05 * r), _CURRENT_RANGES_A[-1])


class SimulatedKeithley2450:
    """The 2450 subset over TCP on 127.0.0.1, sourcing into a `Li2SCell`.

    `language` is the command set selected at power-on (`*LANG`, stored in nonvolatile memory);
    `command_log_size` bounds `commands_received`.
    """

    def __init__(self, clock: Any, cell: Li2SCell | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 language: str = "SCPI", command_log_size: int = COMMAND_LOG_SIZE) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"simulator binds loopback only, not {host!r}")
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
        self.clock = clock
        self.cell = cell or Li2SCell()
        self.host = "127.0.0.1"
        self.port = port
        self.language = language
        self.pending_language = language
        self.commands_received: collections.deque[str] = collections.deque(maxlen=command_log_size)
        self.errors: collections.deque[str] = collections.deque(maxlen=100)
        self._faults: dict[str, int | None] = {}
        self._garbage_i = 0
        self._raw_reply = b""
        self._lock = threading.RLock()
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._last_t = clock.now()
        self._effective_current_a = 0.0
        self.tripped = False
        self._defaults()

    def _defaults(self) -> None:
        """The power-on / *RST state (reference manual: default values of each command)."""
        self.output_on = False
        self.source_function = "VOLT"
        self.sense_function = "CURR"
        self.source_current_a = 0.0
        self.source_voltage_v = 0.0
        self.voltage_limit_v = DEFAULT_VLIM_V
        self.current_limit_a = DEFAULT_ILIM_A
        self.off_mode = {"CURR": "NORM", "VOLT": "NORM"}
        self.remote_sense = {"CURR": False, "VOLT": False}
        self.readback = {"CURR": True, "VOLT": True}
        self.terminals = "FRON"
        self._buffer_t0 = self.clock.now()
        self._effective_current_a = 0.0
        self.tripped = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Listen on the loopback port; returns the VISA resource string."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(8)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept_loop, name=f"sim2450-{self.port}", daemon=True).start()
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    def stop(self) -> None:
        """Stop listening and close every connection."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        self._close_all()

    def power_cycle(self) -> None:
        """Switch the instrument off and on: connections drop, power-on defaults, the pending *LANG applies."""
        with self._lock:
            self._update()
            self._close_all()
            self.language = self.pending_language
            self.errors.clear()
            self._defaults()
            self._update()

    def __enter__(self) -> "SimulatedKeithley2450":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------

    def inject(self, fault: str, count: int | None = None, *, reply: bytes = b"") -> None:
        """Make the next `count` commands (None: all until cleared) fail with `fault`.

        raw sends `reply` exactly as given (no terminator added) in place of each query's reply.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._faults[fault] = count
            if fault == "raw":
                self._raw_reply = bytes(reply)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, fault: str) -> bool:
        if not self._faults:  # fast path, no lock: nothing injected
            return False
        with self._lock:
            if fault not in self._faults:
                return False
            left = self._faults[fault]
            if left is not None:
                if left <= 1:
                    del self._faults[fault]
                else:
                    self._faults[fault] = left - 1
            return True

    # --- connections -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        server = self._server
        while server is not None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _close_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    command = line.decode("ascii", errors="replace").strip()
                    if not command:
                        continue
                    if self._take_fault("drop_connection"):
                        log.info("sim2450:%d dropping connection on %r", self.port, command)
                        return
                    reply = self.handle(command)
                    if reply is None:
                        continue
                    if self._take_fault("timeout"):
                        continue
                    if self._take_fault("raw"):
                        conn.sendall(self._raw_reply)
                        continue
                    if self._take_fault("malformed"):
                        reply = _GARBAGE[self._garbage_i % len(_GARBAGE)]
                        self._garbage_i += 1
                    conn.sendall(reply.encode("latin-1") + b"\n")
        except OSError:
            return
        finally:
            self._close(conn)

    # --- instrument --------------------------------------------------------------------------

    def _hold_voltage(self, voltage_v: float, limit_a: float) -> float:
        """Current a voltage source at `voltage_v` with limit `limit_a` drives into the cell (+ = into it)."""
        towards = limit_a if voltage_v > self.cell.terminal_voltage_v(0.0) else -limit_a
        return self.cell.current_at_voltage_a(voltage_v, towards)

    def _output_current(self) -> tuple[float, bool]:
        """(current into the cell, in-limit flag) of the output as it is configured now."""
        if not self.output_on:
            mode = self.off_mode[self.source_function]
            if mode in ("NORM", "ZERO"):  # a 0 V source stays connected: the cell discharges into it
                range_a = _current_range_a(self.current_limit_a if self.source_function == "VOLT"
                                           else abs(self.source_current_a))
                limit_a = 0.1 * range_a if mode == "NORM" else self.current_limit_a
                return self._hold_voltage(0.0, limit_a), False
            return 0.0, False  # HIMP: relay open; GUARD: 0 A source
        if self.source_function == "CURR":
            current = self.source_current_a
            voltage = self.cell.terminal_voltage_v(current)
            if abs(voltage) > self.voltage_limit_v:
                limit = self.voltage_limit_v if voltage > 0 else -self.voltage_limit_v
                return self.cell.current_at_voltage_a(limit, current), True
            return current, False
        current = self._hold_voltage(self.source_voltage_v, self.current_limit_a)
        return current, abs(current) >= self.current_limit_a * (1 - 1e-9)

    def _advance(self, dt_s: float) -> None:
        """Integrate the cell over `dt_s`, re-evaluating the output often enough that no limit is overshot."""
        while dt_s > 0:
            current = self._effective_current_a
            if current == 0.0:
                chunk = dt_s
            else:  # at most ~1 mAh/g per chunk, and short chunks while a voltage is being held
                chunk = HOLD_CHARGE_AS_PER_G * self.cell.active_mass_g / abs(current)
                chunk = max(MIN_CHUNK_S, min(chunk, HOLD_CHUNK_S if self._holding_voltage() else MAX_CHUNK_S))
            chunk = min(chunk, dt_s)
            self.cell.advance(chunk, current)
            dt_s -= chunk
            self._effective_current_a, self.tripped = self._output_current()

    def _holding_voltage(self) -> bool:
        """True while the output holds a voltage (the current follows the cell), not a current."""
        if not self.output_on:
            return self.off_mode[self.source_function] in ("NORM", "ZERO")
        return self.source_function == "VOLT" and not self.tripped or self.source_function == "CURR" and self.tripped

    def _update(self) -> None:
        """Advance the cell to clock.now() and re-evaluate what the output does to it."""
        now = self.clock.now()
        self._advance(now - self._last_t)
        self._last_t = now
        self._effective_current_a, self.tripped = self._output_current()

    @property
    def relay_open(self) -> bool:
        """True while the output relay disconnects the cell (output off in HIMP)."""
        return not self.output_on and self.off_mode[self.source_function] == "HIMP"

    def handle(self, message: str) -> str | None:
        """Execute one message (commands joined by ';'); returns the query replies joined by ';'."""
        with self._lock:
            commands = [c.strip() for c in message.split(";") if c.strip()]
            for command in commands:
                self.commands_received.append(command)
            if self.language != "SCPI" and not all(c.startswith("*") for c in commands):
                bad = next(c for c in commands if not c.startswith("*"))
                self.errors.append(ERR_TSP_SYNTAX.format(bad[:20]) if self.language == "TSP" else ERR_UNDEFINED_HEADER)
                return None  # the whole message is refused: nothing answers, not even *OPC?
            replies = [r for r in (self._handle_one(c) for c in commands) if r is not None]
            return ";".join(replies) if replies else None

    def _handle_one(self, command: str) -> str | None:
        header, _, args = command.partition(" ")
        parsed = parse_header(header)
        if parsed is None:
            self.errors.append(ERR_UNDEFINED_HEADER)
            return None
        path, query = parsed
        self._update()
        try:
            reply = self._dispatch(path, query, args.strip())
        except _OutOfRange:
            self.errors.append(ERR_OUT_OF_RANGE)
            return None
        except ValueError:
            self.errors.append(ERR_ILLEGAL_VALUE)
            return None
        self._update()
        return reply

    def _dispatch(self, path: tuple[str, ...], query: bool, args: str) -> str | None:
        common = self._common(path, query, args)
        if common is not None or path[0].startswith("*"):
            return common if common != "" else None
        if path == ("SOUR", "FUNC"):
            if query:
                return self.source_function
            function = _word(args)
            if function not in ("CURR", "VOLT"):
                raise ValueError(args)
            self.source_function = function
            return None
        if path == ("SENS", "FUNC"):
            if query:
                return f'"{self.sense_function}:DC"'
            function = _word(args)
            if function not in ("CURR", "VOLT"):
                raise ValueError(args)
            self.sense_function = function
            return None
        if len(path) == 3 and path[0] == "SENS" and path[2] == "RSEN" and path[1] in ("CURR", "VOLT"):
            if query:
                return "1" if self.remote_sense[path[1]] else "0"
            self.remote_sense[path[1]] = _bool(args)
            return None
        if len(path) == 4 and path[0] == "SOUR" and path[2:] == ("READ", "BACK") and path[1] in ("CURR", "VOLT"):
            if query:
                return "1" if self.readback[path[1]] else "0"
            self.readback[path[1]] = _bool(args)
            return None
        if path == ("SOUR", "CURR"):
            if query:
                return f"{self.source_current_a:+.6E}"
            self.source_current_a = _number(args, -CURRENT_MAX_A, CURRENT_MAX_A)
            return None
        if path == ("SOUR", "VOLT"):
            if query:
                return f"{self.source_voltage_v:+.6E}"
            self.source_voltage_v = _number(args, -VOLTAGE_MAX_V, VOLTAGE_MAX_V)
            return None
        if path == ("SOUR", "CURR", "VLIM"):
            if query:
                return f"{self.voltage_limit_v:+.6E}"
            self.voltage_limit_v = _number(args, *VLIM_RANGE_V)
            return None
        if path == ("SOUR", "VOLT", "ILIM"):
            if query:
                return f"{self.current_limit_a:+.6E}"
            self.current_limit_a = _number(args, *ILIM_RANGE_A)
            return None
        if path in (("SOUR", "CURR", "VLIM", "TRIP"), ("SOUR", "VOLT", "ILIM", "TRIP")) and query:
            in_limit = self.tripped and self.output_on and self.source_function == path[1]
            return "1" if in_limit else "0"
        if path in (("OUTP",), ("OUTP", "STAT")):
            if query:
                return "1" if self.output_on else "0"
            self.output_on = _bool(args)
            return None
        if path[0] == "OUTP" and path[-1] == "SMOD" and len(path) in (2, 3):
            functions = [path[1]] if len(path) == 3 else ["CURR", "VOLT"]
            if any(f not in ("CURR", "VOLT") for f in functions):
                raise ValueError(path)
            if query:
                return self.off_mode[functions[0]] if len(functions) == 1 else self.off_mode[self.source_function]
            mode = _word(args)
            if mode not in OFF_MODES:
                raise ValueError(args)
            for function in functions:
                self.off_mode[function] = mode
            return None
        if path == ("ROUT", "TERM"):
            if query:
                return self.terminals
            terminals = _word(args)
            if terminals not in ("FRON", "REAR"):
                raise ValueError(args)
            if terminals != self.terminals:
                self.output_on = False  # manual: changing terminals with the output on turns it off
            self.terminals = terminals
            return None
        if path == ("READ",) and query:
            return self._read(args)
        if path in (("SYST", "ERR"), ("SYST", "ERR", "NEXT")) and query:
            return self.errors.popleft() if self.errors else '0,"No error"'
        if path == ("SYST", "ERR", "COUN") and query:
            return str(len(self.errors))
        if path == ("SYST", "CLE") and not query:
            self.errors.clear()
            return None
        if path == ("TRAC", "CLE") and not query:
            self._buffer_t0 = self.clock.now()
            return None
        self.errors.append(ERR_UNDEFINED_HEADER)
        return None

    def _common(self, path: tuple[str, ...], query: bool, args: str) -> str | None:
        """IEEE 488.2 common commands and *LANG; '' for a command without reply, None when not common."""
        if path == ("*IDN",) and query:
            return IDN
        if path == ("*OPC",) and query:
            return "1"
        if path == ("*LANG",):
            if query:
                return self.language
            language = args.strip().upper()
            if language not in LANGUAGES:
                raise ValueError(args)
            self.pending_language = language  # takes effect at the next power-on
            return ""
        if path == ("*RST",) and not query:
            self._defaults()
            return ""
        if path == ("*CLS",) and not query:
            self.errors.clear()
            return ""
        if path[0].startswith("*"):
            self.errors.append(ERR_UNDEFINED_HEADER)
            return ""
        return None

    def _read(self, args: str) -> str:
        elements = read_elements(args)
        if self.relay_open:
            voltage_v, current_a = 0.0, 0.0
        else:
            voltage_v, current_a = self.cell.measured(self._effective_current_a)
        measured = {"VOLT": voltage_v, "CURR": current_a}
        programmed = {"VOLT": self.source_voltage_v, "CURR": self.source_current_a}
        source = self.source_function
        now = self.clock.now()
        values = {"READ": measured[self.sense_function],
                  "SOUR": measured[source] if self.readback[source] else programmed[source],
                  "REL": now - self._buffer_t0, "SEC": float(int(now)), "FRAC": now - int(now)}
        return ",".join([f"{values[e]:+.7E}" for e in elements])


@functools.lru_cache(maxsize=64)
def read_elements(args: str) -> tuple[str, ...]:
    """Canonical buffer elements of a :READ? argument list ('"defbuffer1", SOUR, READ, REL')."""
    fields = [f.strip() for f in args.split(",")] if args else []
    if fields and fields[0].strip("\"'") not in ("defbuffer1", "defbuffer2"):
        raise ValueError(f"unknown buffer {fields[0]!r}")
    elements = tuple(_ELEMENTS.get(f.upper(), "") for f in fields[1:]) or ("READ",)
    if "" in elements:
        raise ValueError(args)
    return elements


def simulate_for_station(entry: dict, clock: Any, *, seed: int = 0, cell: dict | None = None,
                         **_context: object) -> tuple[SimulatedKeithley2450, str]:
    """The registry's way in: a simulated 2450 with a Li2S cell sized as the protocol's cell; (simulator, resource)."""
    size = cell or {}
    sim = SimulatedKeithley2450(clock, Li2SCell(active_mass_g=size.get("active_mass_g") or 1.5e-3,
                                                area_cm2=size.get("area_cm2") or 0.785, seed=seed))
    return sim, sim.start()
