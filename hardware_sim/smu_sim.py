"""A Keithley 2450 SourceMeter on a loopback TCP port (SCPI over a raw socket), with a cell behind it.

Emulates the SCPI subset the driver uses (source current with a voltage limit, :READ? with
buffer elements, output, limit-trip query, error queue) and the 2450's compliance behaviour:
when the terminal voltage would exceed the limit the current is reduced to hold it and the
trip flag is set. Cell state advances lazily from clock.now() whenever a command arrives.
Faults can be injected: dropped connection, timeout (no reply), malformed reply.
"""

from __future__ import annotations

import collections
import functools
import logging
import socket
import threading
from typing import Any

from hardware_sim.cell import Li2SCell

log = logging.getLogger(__name__)

IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,SIM2450,1.7.12b"
FAULTS = ("drop_connection", "timeout", "malformed", "raw")

# (long form, short form) of every mnemonic the simulator understands
_MNEMONICS = [
    ("SOURCE", "SOUR"), ("FUNCTION", "FUNC"), ("CURRENT", "CURR"), ("VOLTAGE", "VOLT"),
    ("VLIMIT", "VLIM"), ("TRIPPED", "TRIP"), ("OUTPUT", "OUTP"), ("STATE", "STAT"),
    ("SENSE", "SENS"), ("READ", "READ"), ("BACK", "BACK"), ("SYSTEM", "SYST"),
    ("ERROR", "ERR"), ("NEXT", "NEXT"), ("TRACE", "TRAC"), ("CLEAR", "CLE"), ("SMODE", "SMOD"),
]
_OPTIONAL = {"LEV", "LEVEL", "MODE", "IMM", "IMMEDIATE", "AMPL", "AMPLITUDE"}
_ELEMENTS = {"READ": "READ", "READING": "READ", "SOUR": "SOUR", "SOURCE": "SOUR",
             "REL": "REL", "RELATIVE": "REL", "SEC": "SEC", "SECONDS": "SEC",
             "FRAC": "FRAC", "FRACTIONAL": "FRAC"}
_GARBAGE = ["+1.6932E+00,GARBAGE,+1.0E+00", "+1.69E+00,+1.0", "9.91E37,9.91E37,9.91E37",
            "\x00\x7f\x01", "nan,nan,nan", "+1.6932E+00,,+2.0E+00", "+1.6E+00;+1.0E-04;+2.0E+00"]


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


class SimulatedKeithley2450:
    """The 2450 subset over TCP on 127.0.0.1, sourcing current into a `Li2SCell`."""

    def __init__(self, clock: Any, cell: Li2SCell | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"simulator binds loopback only, not {host!r}")
        self.clock = clock
        self.cell = cell or Li2SCell()
        self.host = "127.0.0.1"
        self.port = port
        self.commands_received: list[str] = []
        self.output_on = False
        self.source_current_a = 0.0
        self.voltage_limit_v = 21.0
        self.tripped = False
        self._effective_current_a = 0.0
        self._last_t = clock.now()
        self._buffer_t0 = clock.now()
        self._errors: collections.deque[str] = collections.deque(maxlen=32)
        self._faults: dict[str, int | None] = {}
        self._garbage_i = 0
        self._raw_reply = b""
        self._lock = threading.RLock()
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()

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
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._close(conn)

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

    def _update(self) -> None:
        """Advance the cell to clock.now() and re-evaluate the compliance state."""
        now = self.clock.now()
        self.cell.advance(now - self._last_t, self._effective_current_a)
        self._last_t = now
        if not self.output_on:
            self._effective_current_a = 0.0
            self.tripped = False
            return
        current = self.source_current_a
        voltage = self.cell.terminal_voltage_v(current)
        if abs(voltage) > self.voltage_limit_v:
            limit = self.voltage_limit_v if voltage > 0 else -self.voltage_limit_v
            self._effective_current_a = self.cell.current_at_voltage_a(limit, current)
            self.tripped = True
        else:
            self._effective_current_a = current
            self.tripped = False

    def handle(self, message: str) -> str | None:
        """Execute one SCPI message (commands joined by ';'); returns the query replies joined by ';'."""
        with self._lock:
            if ";" not in message:
                return self._handle_one(message)
            replies = [r for r in (self._handle_one(c.strip()) for c in message.split(";") if c.strip()) if r is not None]
            return ";".join(replies) if replies else None

    def _handle_one(self, command: str) -> str | None:
        with self._lock:
            self.commands_received.append(command)
            header, _, args = command.partition(" ")
            parsed = parse_header(header)
            if parsed is None:
                self._errors.append('-113,"Undefined header"')
                return None
            path, query = parsed
            self._update()
            try:
                return self._dispatch(path, query, args.strip())
            except ValueError:
                self._errors.append('-224,"Illegal parameter value"')
                return None

    def _dispatch(self, path: tuple[str, ...], query: bool, args: str) -> str | None:
        if path == ("*IDN",) and query:
            return IDN
        if path == ("*OPC",) and query:
            return "1"
        if path in (("*RST",), ("*CLS",)):
            if path == ("*RST",):
                self.output_on, self.source_current_a, self.voltage_limit_v = False, 0.0, 21.0
                self._update()
            self._errors.clear()
            return None
        if path == ("SOUR", "FUNC"):
            return "CURR" if query else self._expect(args.upper() in ("CURR", "CURRENT"))
        if path == ("SENS", "FUNC"):
            return '"VOLT:DC"' if query else self._expect(args.strip('"\'').upper().startswith("VOLT"))
        if path == ("SOUR", "CURR", "READ", "BACK"):
            return "1" if query else None
        if path == ("SOUR", "CURR"):
            if query:
                return f"{self.source_current_a:+.6E}"
            current = float(args)
            if abs(current) > 1.05:
                raise ValueError(args)
            self.source_current_a = current
            self._update()
            return None
        if path == ("SOUR", "CURR", "VLIM"):
            if query:
                return f"{self.voltage_limit_v:+.6E}"
            limit = float(args)
            if not 0.02 <= limit <= 210.0:
                raise ValueError(args)
            self.voltage_limit_v = limit
            self._update()
            return None
        if path == ("SOUR", "CURR", "VLIM", "TRIP") and query:
            return "1" if self.tripped else "0"
        if path in (("OUTP",), ("OUTP", "STAT")):
            if query:
                return "1" if self.output_on else "0"
            word = args.upper()
            if word not in ("ON", "OFF", "1", "0"):
                raise ValueError(args)
            self.output_on = word in ("ON", "1")
            self._update()
            return None
        if path in (("OUTP", "SMOD"), ("OUTP", "CURR", "SMOD")):
            if query:
                return "HIMP"
            return self._expect(args.upper() in ("HIMP", "HIMPEDANCE"))
        if path == ("READ",) and query:
            return self._read(args)
        if path in (("SYST", "ERR"), ("SYST", "ERR", "NEXT")) and query:
            return self._errors.popleft() if self._errors else '0,"No error"'
        if path == ("TRAC", "CLE") and not query:
            self._buffer_t0 = self.clock.now()
            return None
        self._errors.append('-113,"Undefined header"')
        return None

    def _expect(self, ok: bool) -> None:
        if not ok:
            raise ValueError("unsupported setting")
        return None

    def _read(self, args: str) -> str:
        elements = read_elements(args)
        voltage_v, current_a = self.cell.measured(self._effective_current_a)
        now = self.clock.now()
        values = {"READ": voltage_v, "SOUR": current_a, "REL": now - self._buffer_t0,
                  "SEC": float(int(now)), "FRAC": now - int(now)}
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
