"""A simulated Lake Shore 336 that is a real serial device: it answers on a pty (and optionally TCP).

The pty is reached through a stable symlink (<tmpdir>/ttyVT0 -> /dev/pts/N), the way udev's
/dev/serial/by-id links behave, so "port vanishes and returns" can be simulated: the link is
removed and the pty closed, and later a new pty is opened and the link pointed at it.
Behind the wire is a ThermalModel; every command line received is recorded in `commands`.

By default it behaves as the Model 335/336 manuals describe (docs/dialects/lakeshore336.md):
`SETP?` is the present, ramping set point (`RAMPST?` says whether it still ramps), set points are
in the control input's preferred units (`INTYPE?`), the heater heats only in closed-loop mode on
its input (`OUTMODE?`), `RDGST?`/`HTRST?` report sensor and heater faults, `TLIMIT` switches the
outputs off above a limit, and a line that starts less than `min_command_gap_real_s` (real time,
50 ms) after the previous communication ended is dropped, as the manual's message flow rules warn.
Keyword options build a misconfigured or faulty controller: `units`, `output_mode`, `control_input`,
`heater_fault`, `reading_status`.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable

from drivers.clock import Clock
from hardware_sim.thermal import ThermalModel

log = logging.getLogger(__name__)

FAULTS = ("no_reply", "garbled", "stuck_heater", "sensor_dropout", "port_vanish", "raw")
_CONTROL_INPUT = "A"
_OUTPUT = "1"
_INPUTS = ("A", "B", "C", "D")  # OUTMODE's <input>: 1 = A ... 4 = D (0 = none)
_UNIT_CODES = {"K": 1, "C": 2, "S": 3}  # INTYPE's <units>: kelvin, Celsius, sensor units
_KELVIN_AT_0_C = 273.15
_FLOW_CONTROL_GAP_S = 0.05  # manual, message flow control: 50 ms after the last character
# An in-process simulator in virtual time (tests, demo) may waive the wire timing on both ends: its
# replies are instant and the run's time is not the wire's. Anything on a real wire keeps 50 ms.
IN_PROCESS_COMMAND_GAP_REAL_S = 0.0
_SCHEDULING_SLACK_S = 0.02  # this simulator's own wake-up latency, not held against the client
_SENSOR_TYPE_PLATINUM_RTD = 2


def _pt100_ohm(kelvin: float) -> float:
    """SRDG? of the simulated platinum RTD (linear IEC 60751 alpha; enough for a sensor-units reading)."""
    return 100.0 * (1.0 + 3.85e-3 * (kelvin - _KELVIN_AT_0_C))


class SimulatedLakeShore336:
    """Lake Shore 336 command set on a pty (and TCP when tcp_port is given), with injectable faults."""

    def __init__(
        self,
        clock: Clock,
        model: ThermalModel | None = None,
        *,
        seed: int = 0,
        tcp_port: int | None = None,
        units: str = "K",
        output_mode: int = 1,
        control_input: str = "A",
        heater_fault: int = 0,
        reading_status: int = 0,
        min_command_gap_real_s: float = _FLOW_CONTROL_GAP_S,
    ) -> None:
        if units not in _UNIT_CODES:
            raise ValueError(f"units must be one of {sorted(_UNIT_CODES)}, got {units!r}")
        if control_input not in _INPUTS:
            raise ValueError(f"control_input must be one of {_INPUTS}, got {control_input!r}")
        self._clock = clock
        self.model = model if model is not None else ThermalModel(clock, seed=seed)
        self.seed = seed
        self.units = units
        self.output_mode = int(output_mode)  # 0 off, 1 closed loop PID, 2 zone, 3 open loop
        self.control_input = control_input
        self.powerup_enable = 0
        self.heater_fault = int(heater_fault)  # HTRST?: 0 none, 1 open load, 2 short
        self.reading_status = int(reading_status)  # RDGST? bits: 1 invalid, 16/32 T under/over, 64/128 units zero/over
        self.min_command_gap_real_s = float(min_command_gap_real_s)
        self.commands: list[str] = []  # every line executed, in order
        self.dropped: list[str] = []  # lines dropped for breaking the message flow rules
        self._quiet_since: dict[object, float] = {}  # per interface: when its last communication ended (monotonic)
        self._line_start: dict[object, float] = {}  # per interface: when the first byte of the pending line came
        self._dropout_reading = False
        self._apply_output_state()
        self._tcp_port_wanted = tcp_port
        self._tcp_url: str | None = None
        self._faults: dict[str, int | None] = {}
        self._garble_turn = 0
        self._raw_reply = b""
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector = selectors.DefaultSelector()
        self._thread: threading.Thread | None = None
        self._running = False
        self._dir: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._buffers: dict[object, bytearray] = {}
        self._actions: list[tuple[Callable[[], None], threading.Event]] = []
        self._wake_r, self._wake_w = os.pipe()

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def link_path(self) -> str:
        """The stable device path (symlink) the driver opens."""
        if self._dir is None:
            raise RuntimeError("simulated Lake Shore 336 not started")
        return os.path.join(self._dir, "ttyVT0")

    @property
    def tcp_url(self) -> str | None:
        """'socket://127.0.0.1:PORT' when serving TCP, else None."""
        return self._tcp_url

    def start(self) -> str:
        """Open the pty (and TCP listener), serve in a daemon thread; return the stable device path."""
        self._dir = tempfile.mkdtemp(prefix="exsylab-vt-")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._open_pty()
        if self._tcp_port_wanted is not None:
            listener = socket.create_server(("127.0.0.1", self._tcp_port_wanted))
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, "listen")
            self._listener = listener
            self._tcp_url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="sim-lakeshore336", daemon=True)
        self._thread.start()
        return self.link_path

    def stop(self) -> None:
        """Stop serving and release the pty, sockets and the link directory."""
        if not self._running:
            return
        self._running = False
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_pty()
        for key in list(self._selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "SimulatedLakeShore336":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults --------------------------------------------------------------------------
    def inject(self, fault: str, count: int | None = None, *, duration_s: float = 5.0, reply: bytes = b"") -> None:
        """Inject a fault for the next `count` affected replies (None: until cleared).

        raw sends `reply` exactly as given (no terminator added) in place of each query's reply,
        for fuzzing what the driver makes of arbitrary bytes on the wire.

        port_vanish closes the pty and removes the link now and brings a new pty back at the
        same path after `duration_s` of clock time (with a VirtualClock the driver's thread
        should be a clock participant, so its reconnect backoff lets the port return).
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if fault == "port_vanish":
            self._vanish(duration_s)
            return
        with self._lock:
            self._faults[fault] = count
            if fault == "raw":
                self._raw_reply = bytes(reply)
        if fault == "stuck_heater":
            self.model.set_stuck_heater(True)
        log.info("sim Lake Shore 336: fault %s injected (count %s)", fault, count)

    def clear_faults(self) -> None:
        """Remove every injected fault (a vanished port still returns on schedule)."""
        with self._lock:
            self._faults.clear()
        self.model.set_stuck_heater(False)

    def _take_fault(self, fault: str) -> bool:
        """Whether `fault` applies to this reply, consuming one count."""
        with self._lock:
            if fault not in self._faults:
                return False
            remaining = self._faults[fault]
            if remaining is not None:
                if remaining <= 1:
                    del self._faults[fault]
                else:
                    self._faults[fault] = remaining - 1
            return True

    def _vanish(self, duration_s: float) -> None:
        self._run_in_server(self._vanish_now)
        joined = threading.Event()

        def come_back() -> None:
            with self._clock.participant():
                joined.set()
                self._clock.sleep(duration_s)
                if self._running:
                    self._run_in_server(self._open_pty)
                    log.info("sim Lake Shore 336: port back at %s", self.link_path)

        threading.Thread(target=come_back, name="sim-lakeshore336-return", daemon=True).start()
        joined.wait(timeout=5)

    def _vanish_now(self) -> None:
        self._close_pty()
        for key in list(self._selector.get_map().values()):
            if key.data == "client" and isinstance(key.fileobj, socket.socket):
                self._drop_client(key.fileobj)
        log.info("sim Lake Shore 336: port vanished")

    def _run_in_server(self, action: Callable[[], None]) -> None:
        done = threading.Event()
        with self._lock:
            self._actions.append((action, done))
        os.write(self._wake_w, b"x")
        if not done.wait(timeout=5):
            raise RuntimeError("simulated Lake Shore 336 server thread did not respond")

    # --- pty -----------------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line-ending translation; the client sets its own mode too
        self._master, self._slave = master, slave
        os.set_blocking(master, False)
        self._buffers[master] = bytearray()
        self._selector.register(master, selectors.EVENT_READ, "pty")
        tmp = self.link_path + ".new"
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link_path)

    def _close_pty(self) -> None:
        if self._master is None or self._slave is None:
            return
        try:
            os.unlink(self.link_path)
        except FileNotFoundError:
            pass
        self._selector.unregister(self._master)
        self._buffers.pop(self._master, None)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = None

    # --- server loop ---------------------------------------------------------------------
    def _serve(self) -> None:
        while self._running:
            for key, _ in self._selector.select(timeout=0.5):
                if key.data == "wake":
                    os.read(self._wake_r, 64)
                    self._run_actions()
                elif key.data == "listen":
                    self._accept()
                elif key.data == "pty":
                    self._read_pty(key.fd)
                elif key.data == "client" and isinstance(key.fileobj, socket.socket):
                    self._read_client(key.fileobj)

    def _run_actions(self) -> None:
        with self._lock:
            actions, self._actions = self._actions, []
        for action, done in actions:
            try:
                action()
            finally:
                done.set()

    def _accept(self) -> None:
        if self._listener is None:
            return
        conn, _ = self._listener.accept()
        conn.setblocking(False)
        self._buffers[conn] = bytearray()
        self._selector.register(conn, selectors.EVENT_READ, "client")

    def _drop_client(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        self._buffers.pop(conn, None)
        conn.close()

    def _read_pty(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        self._feed(fd, data, lambda reply: os.write(fd, reply))
        self._clear_pty_parity()

    def _clear_pty_parity(self) -> None:
        """Leave the pty's flags as a fresh client can set again.

        A pty takes no parity: asked for 7O1 it keeps CS8 without PARENB but keeps PARODD, and
        some kernels then refuse (EINVAL) the next client's identical 7O1 request. Clearing
        PARODD once a client talks makes the next open behave like a real serial adapter's.
        """
        if self._slave is None:
            return
        attrs = termios.tcgetattr(self._slave)
        if attrs[2] & termios.PARODD:
            attrs[2] &= ~termios.PARODD
            termios.tcsetattr(self._slave, termios.TCSANOW, attrs)

    def _read_client(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(conn)
            return
        self._feed(conn, data, conn.sendall)

    def _feed(self, source: object, data: bytes, send: Callable[[bytes], object]) -> None:
        now = time.monotonic()
        buffer = self._buffers[source]
        if not buffer:
            self._line_start[source] = now
        buffer.extend(data)
        while b"\n" in buffer:
            raw, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            started = self._line_start.get(source, now)
            self._line_start[source] = now  # a following line in the same read started no earlier than now
            line = raw.rstrip(b"\r").decode("ascii", errors="replace").strip()
            if not line:
                continue
            if self._too_soon(source, started):
                self.dropped.append(line)
                self._quiet_since[source] = now
                log.info("sim Lake Shore 336: %r dropped: sent within %.0f ms of the previous communication",
                         line, 1000 * self.min_command_gap_real_s)
                continue
            self.commands.append(line)
            self._quiet_since[source] = now  # a command's communication ended when its line arrived
            reply = self.handle(line)
            if reply is None:
                continue
            if self._take_fault("no_reply"):
                continue
            if self._take_fault("raw"):
                send(self._raw_reply)
                self._quiet_since[source] = time.monotonic()
                continue
            if self._take_fault("garbled"):
                reply = self._garble(reply)
            send(reply.encode("ascii", errors="replace") + b"\r\n")
            self._quiet_since[source] = time.monotonic()

    def _too_soon(self, source: object, started: float) -> bool:
        """Message flow control: no new communication within the gap after the last one ended (real time)."""
        quiet_since = self._quiet_since.get(source)
        if quiet_since is None or self.min_command_gap_real_s <= 0:
            return False
        slack_s = min(_SCHEDULING_SLACK_S, self.min_command_gap_real_s / 2)
        return started - quiet_since < self.min_command_gap_real_s - slack_s  # same read: started == now, gap ~0

    def _garble(self, reply: str) -> str:
        """A corrupted reply, never a well-formed one (line noise, a lost character, an empty line)."""
        self._garble_turn += 1
        variant = self._garble_turn % 4
        if variant == 0:
            return reply[:1] + "#" + reply[2:] if len(reply) >= 2 else "#"
        if variant == 1:
            return ""
        if variant == 2:
            return "\x7f" + reply
        return reply + "\x15"

    # --- configuration -------------------------------------------------------------------
    def set_heater_fault(self, code: int) -> None:
        """HTRST? code from now on: 0 none, 1 open load, 2 short (the output delivers nothing while set)."""
        self.heater_fault = int(code)
        self._apply_output_state()

    def _apply_output_state(self) -> None:
        """The heater heats only in closed-loop or zone mode on the control input, without a heater fault."""
        heats = self.output_mode in (1, 2) and self.control_input == _CONTROL_INPUT and self.heater_fault == 0
        self.model.set_output_active(heats)

    def _to_kelvin(self, value: float) -> float:
        """A set point in the control input's preferred units as kelvin (sensor units: taken as kelvin)."""
        return value + _KELVIN_AT_0_C if self.units == "C" else value

    def _from_kelvin(self, kelvin: float) -> float:
        return kelvin - _KELVIN_AT_0_C if self.units == "C" else kelvin

    def _reading_status(self) -> int:
        return self.reading_status | (1 if self._dropout_reading else 0)

    # --- command set ---------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        """Apply one command line; return the reply line for a query, None otherwise (or if malformed)."""
        head, _, args_text = line.partition(" ")
        head = head.upper()
        args = [a.strip().upper() for a in args_text.split(",")] if args_text.strip() else []
        try:
            if head.endswith("?"):
                return self._query(head, args)
            self._command(head, args)
        except (ValueError, IndexError):
            log.info("sim Lake Shore 336: malformed command %r ignored", line)
        return None

    def _query(self, head: str, args: list[str]) -> str | None:
        m = self.model
        on_input = bool(args) and args[0] == _CONTROL_INPUT
        on_output = args == [_OUTPUT]
        if head == "*IDN?":
            return f"LSCI,MODEL336,SIM{self.seed:04d},2.9"
        if head in ("KRDG?", "CRDG?", "SRDG?"):
            if (args[0] if args else _CONTROL_INPUT) != _CONTROL_INPUT:
                return "+0.000"
            self._dropout_reading = self._take_fault("sensor_dropout")
            if self._dropout_reading or self.reading_status & 1:
                return "+0.000"
            kelvin = m.sensor_k()
            if head == "CRDG?":
                return f"{kelvin - _KELVIN_AT_0_C:+.3f}"
            return f"{kelvin:+.3f}" if head == "KRDG?" else f"{_pt100_ohm(kelvin):+.3f}"
        if head == "RDGST?" and on_input:
            return f"{self._reading_status():03d}"
        if head == "INTYPE?" and on_input:
            return f"{_SENSOR_TYPE_PLATINUM_RTD},1,0,1,{_UNIT_CODES[self.units]}"
        if head == "TLIMIT?" and on_input:
            return f"{m.temperature_limit_k:+.1f}"
        if head == "OUTMODE?" and on_output:
            return f"{self.output_mode},{_INPUTS.index(self.control_input) + 1},{self.powerup_enable}"
        if head == "HTRST?" and on_output:
            return str(self.heater_fault)
        if head == "SETP?" and on_output:
            return f"{self._from_kelvin(m.effective_setpoint_k()):+.3f}"
        if head == "RAMPST?" and on_output:
            return str(int(m.ramping()))
        if head == "RAMP?" and on_output:
            return f"{int(m.ramp_enabled)},{m.ramp_rate_k_per_min:.1f}"
        if head == "RANGE?" and on_output:
            return str(m.heater_range)
        return None

    def _command(self, head: str, args: list[str]) -> None:
        m = self.model
        if not args:
            return
        if head == "SETP" and len(args) == 2 and args[0] == _OUTPUT:
            m.setpoint_k = self._to_kelvin(float(args[1]))
        elif head == "RAMP" and len(args) == 3 and args[0] == _OUTPUT and args[1] in ("0", "1"):
            rate = float(args[2])
            if 0.0 <= rate <= 100.0:
                m.ramp_rate_k_per_min = rate
                m.ramp_enabled = args[1] == "1"
        elif head == "RANGE" and len(args) == 2 and args[0] == _OUTPUT and args[1] in ("0", "1", "2", "3"):
            m.heater_range = int(args[1])
        elif head == "TLIMIT" and len(args) == 2 and args[0] == _CONTROL_INPUT:
            limit_k = float(args[1])
            if limit_k >= 0:
                m.set_temperature_limit_k(limit_k)
        elif head == "OUTMODE" and len(args) == 4 and args[0] == _OUTPUT:
            mode, control, powerup = int(args[1]), int(args[2]), int(args[3])
            if 0 <= mode <= 3 and 0 <= control <= len(_INPUTS) and powerup in (0, 1):
                self.output_mode, self.powerup_enable = mode, powerup
                self.control_input = _INPUTS[control - 1] if control else "none"
                self._apply_output_state()


def simulate_for_station(entry: dict, clock: Clock, *, seed: int = 0, **_context: object) -> tuple[SimulatedLakeShore336, str]:
    """The registry's way in: start a simulated Lake Shore for a `sim://` VT entry; (simulator, its pty path).

    In process, the wire's 50 ms pacing is waived (IN_PROCESS_COMMAND_GAP_REAL_S) so virtual-time runs stay fast.
    """
    sim = SimulatedLakeShore336(clock, seed=seed, min_command_gap_real_s=IN_PROCESS_COMMAND_GAP_REAL_S)
    return sim, sim.start()
