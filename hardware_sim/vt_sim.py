"""A simulated Lake Shore 336 that is a real serial device: it answers on a pty (and optionally TCP).

The pty is reached through a stable symlink (<tmpdir>/ttyVT0 -> /dev/pts/N), the way udev's
/dev/serial/by-id links behave, so "port vanishes and returns" can be simulated: the link is
removed and the pty closed, and later a new pty is opened and the link pointed at it.
Behind the wire is a ThermalModel; every command line received is recorded in `commands`.
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
import tty
from collections.abc import Callable

from drivers.clock import Clock
from hardware_sim.thermal import ThermalModel

log = logging.getLogger(__name__)

FAULTS = ("no_reply", "garbled", "stuck_heater", "sensor_dropout", "port_vanish", "raw")
_CONTROL_INPUT = "A"
_OUTPUT = "1"


class SimulatedLakeShore336:
    """Lake Shore 336 command set on a pty (and TCP when tcp_port is given), with injectable faults."""

    def __init__(
        self, clock: Clock, model: ThermalModel | None = None, *, seed: int = 0, tcp_port: int | None = None
    ) -> None:
        self._clock = clock
        self.model = model if model is not None else ThermalModel(clock, seed=seed)
        self.seed = seed
        self.commands: list[str] = []  # every line received, in order
        self._tcp_port_wanted = tcp_port
        self._tcp_url: str | None = None
        self._faults: dict[str, int | None] = {}
        self._garble_turn = 0
        self._raw_reply = b""
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
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
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._open_pty()
        if self._tcp_port_wanted is not None:
            self._listener = socket.create_server(("127.0.0.1", self._tcp_port_wanted))
            self._listener.setblocking(False)
            self._selector.register(self._listener, selectors.EVENT_READ, "listen")
            self._tcp_url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
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
            if key.data == "client":
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
        if self._master is None:
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
                    self._read_pty(key.fileobj)
                elif key.data == "client":
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
        buffer = self._buffers[source]
        buffer.extend(data)
        while b"\n" in buffer:
            raw, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            line = raw.rstrip(b"\r").decode("ascii", errors="replace").strip()
            if not line:
                continue
            self.commands.append(line)
            reply = self.handle(line)
            if reply is None:
                continue
            if self._take_fault("no_reply"):
                continue
            if self._take_fault("raw"):
                send(self._raw_reply)
                continue
            if self._take_fault("garbled"):
                reply = self._garble(reply)
            send(reply.encode("ascii", errors="replace") + b"\r\n")

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

    # --- command set ---------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        """Apply one command line; return the reply line for a query, None otherwise (or if malformed)."""
        head, _, args_text = line.partition(" ")
        head = head.upper()
        args = [a.strip() for a in args_text.split(",")] if args_text.strip() else []
        m = self.model
        try:
            if head == "*IDN?":
                return f"LSCI,MODEL336,SIM{self.seed:04d},2.9"
            if head == "KRDG?":
                if (args[0].upper() if args else _CONTROL_INPUT) != _CONTROL_INPUT:
                    return "+0.000"
                if self._take_fault("sensor_dropout"):
                    return "+0.000"
                return f"{m.sensor_k():+.3f}"
            if head == "SETP?" and args == [_OUTPUT]:
                return f"{m.setpoint_k:+.3f}"
            if head == "RAMP?" and args == [_OUTPUT]:
                return f"{int(m.ramp_enabled)},{m.ramp_rate_k_per_min:.1f}"
            if head == "RANGE?" and args == [_OUTPUT]:
                return str(m.heater_range)
            if head == "SETP" and len(args) == 2 and args[0] == _OUTPUT:
                m.setpoint_k = float(args[1])
            elif head == "RAMP" and len(args) == 3 and args[0] == _OUTPUT and args[1] in ("0", "1"):
                rate = float(args[2])
                if 0.0 <= rate <= 100.0:
                    m.ramp_rate_k_per_min = rate
                    m.ramp_enabled = args[1] == "1"
            elif head == "RANGE" and len(args) == 2 and args[0] == _OUTPUT and args[1] in ("0", "1", "2", "3"):
                m.heater_range = int(args[1])
        except ValueError:
            log.info("sim Lake Shore 336: malformed command %r ignored", line)
        return None


def simulate_for_station(entry: dict, clock: Clock, *, seed: int = 0, **_context: object) -> tuple[SimulatedLakeShore336, str]:
    """The registry's way in: start a simulated Lake Shore for a `sim://` VT entry; (simulator, its pty path)."""
    sim = SimulatedLakeShore336(clock, seed=seed)
    return sim, sim.start()
