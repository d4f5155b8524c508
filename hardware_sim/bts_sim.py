"""A Neware BTS 8 server on loopback TCP: many devices, sub-devices and channels, one Li2S cell each.

It answers the XML commands aurora-neware sends (connect, getdevinfo, getchlstatus, inquire,
inquiredf, start, stop, download) with the replies its tests record from a real BTS 8.0, and
runs the step files it is given the way the manual describes them: each step ends on its
capacity, voltage or time; the whole-program protection ends the job in `protect`; a Loop step
jumps back until its block has run Cycle_Count times. Time is the clock's (virtual or
accelerated); each channel is brought up to the clock's now whenever the server is asked.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from xml.sax.saxutils import quoteattr

from .cell import Li2SCell

log = logging.getLogger(__name__)

TERMINATOR = b"\n\n#\r\n"
DEVTYPE = 27
STEP_KINDS = {1: "cc", 2: "dc", 4: "rest"}
"""Step_Type -> the step_type word the BTS reports (charge, discharge, rest)."""
LOOP, END = 5, 6
MAX_CHUNK_MAH_G = 1.0
"""Integrate the cell in chunks of at most this much charge."""
CUTOFF_RESOLUTION_S = 1e-3
"""A voltage cut-off is located to within this much time (the BTS samples its end conditions fast)."""
EPS_S = 1e-6
"""Times closer than this are the same moment (clock values are Unix seconds, ~1e9)."""
LOG_WORKING = 102000
"""inquire's log_code while a job runs, as in aurora-neware's recorded replies."""

Key = tuple[int, int, int]


class StepFileError(ValueError):
    """A step file the simulated BTS cannot run."""


@dataclass(frozen=True)
class SimStep:
    """One step of a loaded step file, in SI units."""

    step_id: int
    step_type: int
    current_a: float = 0.0
    end_capacity_ah: float | None = None
    end_voltage_v: float | None = None
    end_time_s: float | None = None
    loop_to: int = 0
    loop_count: int = 0


@dataclass(frozen=True)
class StepFile:
    steps: tuple[SimStep, ...]
    record_interval_s: float
    voltage_upper_v: float | None
    voltage_lower_v: float | None
    current_upper_a: float | None
    capacity_upper_ah: float | None


def _value(element: ET.Element | None, path: str, scale: float) -> float | None:
    found = element.find(path) if element is not None else None
    return float(found.attrib["Value"]) * scale if found is not None else None


def parse_step_file(text: str) -> StepFile:
    """A Neware step file (Curr mA, Volt 0.1 mV, Time ms, Cap mAs), as the BTS reads it."""
    try:
        root = ET.fromstring(text.encode("utf-8") if text.lstrip().startswith("<?xml") else text)
    except ET.ParseError as exc:
        raise StepFileError(f"not a step file: {exc}") from exc
    config = root.find("config")
    info = config.find("Step_Info") if config is not None else None
    if info is None:
        raise StepFileError("no config/Step_Info")
    steps = []
    for element in info:
        kind = int(element.attrib["Step_Type"])
        main = element.find("Limit/Main")
        if kind == LOOP:
            other = element.find("Limit/Other")
            steps.append(SimStep(int(element.attrib["Step_ID"]), kind, loop_to=int(_value(other, "Start_Step", 1) or 1),
                                 loop_count=int(_value(other, "Cycle_Count", 1) or 1)))
            continue
        if kind != END and kind not in STEP_KINDS:
            raise StepFileError(f"step {element.attrib.get('Step_ID')}: Step_Type {kind} is not simulated")
        steps.append(SimStep(int(element.attrib["Step_ID"]), kind, current_a=(_value(main, "Curr", 1e-3) or 0.0),
                             end_capacity_ah=_value(main, "Cap", 1 / 3.6e6), end_voltage_v=_value(main, "Stop_Volt", 1e-4),
                             end_time_s=_value(main, "Time", 1e-3)))
    protect = config.find("Whole_Prt/Protect/Main") if config is not None else None
    record = config.find("Whole_Prt/Record/Main") if config is not None else None
    return StepFile(steps=tuple(steps), record_interval_s=_value(record, "Time", 1e-3) or 60.0,
                    voltage_upper_v=_value(protect, "Volt/Upper", 1e-4), voltage_lower_v=_value(protect, "Volt/Lower", 1e-4),
                    current_upper_a=_value(protect, "Curr/Upper", 1e-3),
                    capacity_upper_ah=_value(protect, "Cap/Upper", 1 / 3.6e6))


@dataclass
class SimChannel:
    """One channel: its cell, its job and every record the job logged."""

    key: Key
    cell: Li2SCell
    workstatus: str = "finish"
    barcode: str = ""
    test_id: int = 0
    program: StepFile | None = None
    records: list[tuple] = field(default_factory=list)
    starts: int = 0
    log_code: int = 0
    fault: str = ""
    # position in the job
    k: int = 0
    cycle: int = 1
    loop_runs: dict[int, int] = field(default_factory=dict)
    t: float = 0.0
    t0: float = 0.0
    step_t0: float = 0.0
    step_cap_ah: float = 0.0
    step_energy_wh: float = 0.0
    next_record_t: float = 0.0
    t_end: float | None = None

    @property
    def step(self) -> SimStep | None:
        return self.program.steps[self.k] if self.program is not None and self.k < len(self.program.steps) else None

    def current_a(self) -> float:
        step = self.step
        if self.workstatus != "working" or step is None:
            return 0.0
        return {1: step.current_a, 2: -step.current_a}.get(step.step_type, 0.0)

    # --- the job ---------------------------------------------------------------------------------

    def start(self, program: StepFile, barcode: str, now: float) -> None:
        self.advance_to(now)
        self.program, self.barcode, self.workstatus = program, barcode, "working"
        self.test_id += 1
        self.starts += 1
        self.records = []
        self.k, self.cycle, self.loop_runs = 0, 1, {}
        self.t = self.t0 = now
        self.log_code = LOG_WORKING
        self.t_end = None
        self._enter_step()

    def stop(self, now: float) -> bool:
        self.advance_to(now)
        if self.workstatus not in ("working", "pause"):
            return False
        self._record()
        self._end("stop", 0)
        return True

    def _end(self, workstatus: str, log_code: int) -> None:
        self.workstatus, self.log_code = workstatus, log_code
        self.t_end = self.t

    def _enter_step(self) -> None:
        """Run Loop steps (no time) until a step that passes charge, or the end."""
        assert self.program is not None
        while True:
            step = self.step
            if step is None or step.step_type == END:
                self._end("finish", 0)
                return
            if step.step_type != LOOP:
                break
            runs = self.loop_runs.get(self.k, 1)
            if runs < step.loop_count:
                self.loop_runs[self.k] = runs + 1
                self.cycle += 1
                self.k = step.loop_to - 1
            else:
                self.loop_runs.pop(self.k, None)
                self.k += 1
        self.step_t0 = self.t
        self.step_cap_ah = self.step_energy_wh = 0.0
        self.next_record_t = self.t
        self._record()
        self.next_record_t = self.t + self.program.record_interval_s

    def _record(self) -> None:
        step = self.step
        current = self.current_a()
        voltage, measured_i = self.cell.measured(current)
        atime = dt.datetime.fromtimestamp(self.t).strftime("%Y-%m-%d %H:%M:%S")
        self.records.append((len(self.records) + 1, step.step_id if step else 0, self.cycle,
                             STEP_KINDS.get(step.step_type, "rest") if step else "rest",
                             round((self.t - self.t0) * 1000.0, 1), atime, voltage, measured_i if current else 0.0,
                             self.step_cap_ah, self.step_energy_wh))

    def _protection(self, voltage_v: float, current_a: float) -> str:
        p = self.program
        assert p is not None
        if self.fault:
            return self.fault
        if p.voltage_upper_v is not None and voltage_v > p.voltage_upper_v:
            return "voltage upper"
        if p.voltage_lower_v is not None and voltage_v < p.voltage_lower_v:
            return "voltage lower"
        if p.current_upper_a is not None and abs(current_a) > p.current_upper_a * 1.001:
            return "current upper"
        if p.capacity_upper_ah is not None and self.step_cap_ah > p.capacity_upper_ah:
            return "capacity upper"
        return ""

    def advance_to(self, now: float) -> None:
        """Run the job up to `now`: integrate the cell, log records, end steps, loop, protect."""
        while self.workstatus == "working" and self.t < now:
            step, program = self.step, self.program
            assert step is not None and program is not None
            current = self.current_a()
            horizon = min(now, self.next_record_t)
            if step.end_time_s is not None:
                horizon = min(horizon, self.step_t0 + step.end_time_s)
            if step.end_capacity_ah is not None and current:
                horizon = min(horizon, self.t + max(step.end_capacity_ah - self.step_cap_ah, 0.0) / abs(current) * 3600.0)
            if current:
                horizon = min(horizon, self.t + MAX_CHUNK_MAH_G * self.cell.active_mass_g * 3.6 / abs(current))
            dt_s = max(horizon - self.t, EPS_S)
            before = self.cell.snapshot()
            self.cell.advance(dt_s, current)
            voltage = self.cell.terminal_voltage_v(current)
            crossed = step.end_voltage_v is not None and current and (
                (current > 0 and voltage >= step.end_voltage_v) or (current < 0 and voltage <= step.end_voltage_v))
            if crossed:
                dt_s = self._find_cutoff(before, dt_s, current, step.end_voltage_v)  # type: ignore[arg-type]
                voltage = self.cell.terminal_voltage_v(current)
            self.t += dt_s
            self.step_cap_ah += abs(current) * dt_s / 3600.0
            self.step_energy_wh += abs(current * voltage) * dt_s / 3600.0
            reason = self._protection(voltage, current)
            if reason:
                self._record()
                log.info("bts channel %s: protection (%s)", self.key, reason)
                self._end("protect", 103000)
                return
            ended = crossed or (step.end_time_s is not None and self.t - self.step_t0 >= step.end_time_s - EPS_S) or (
                step.end_capacity_ah is not None and current != 0
                and (step.end_capacity_ah - self.step_cap_ah) / abs(current) * 3600.0 < EPS_S)
            if ended:
                self._record()
                self.k += 1
                self._enter_step()
            elif self.t >= self.next_record_t - EPS_S:
                self._record()
                self.next_record_t += program.record_interval_s
        if self.workstatus != "working":
            self.cell.advance(max(now - self.t, 0.0), 0.0)
            self.t = max(self.t, now)

    def _find_cutoff(self, before: tuple[float, float, float, float], dt_s: float, current: float, cutoff_v: float) -> float:
        """Bisect the chunk for the moment the terminal voltage reaches the cut-off; leaves the cell there."""
        low, high = 0.0, dt_s
        while high - low > CUTOFF_RESOLUTION_S:
            mid = 0.5 * (low + high)
            self.cell.restore(before)
            self.cell.advance(mid, current)
            v = self.cell.terminal_voltage_v(current)
            if (current > 0 and v >= cutoff_v) or (current < 0 and v <= cutoff_v):
                high = mid
            else:
                low = mid
        self.cell.restore(before)
        self.cell.advance(high, current)
        return high


class BtsServer:
    """The simulated BTS server: TCP on 127.0.0.1, every channel of its devices behind one port."""

    def __init__(self, clock: Any, *, name: str = "bts", port: int = 0, seed: int = 0) -> None:
        self.clock = clock
        self.name = name
        self.port = port
        self.seed = seed
        self.channels: dict[Key, SimChannel] = {}
        self.commands: int = 0
        self._lock = threading.RLock()
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()

    def add_channel(self, key: Key, cell: Li2SCell | None = None) -> SimChannel:
        """A channel (device, sub-device, channel) with its own cell; the existing one if already there."""
        with self._lock:
            if key not in self.channels:
                channel = SimChannel(key, cell or Li2SCell(seed=self.seed + len(self.channels)))
                channel.t = self.clock.now()
                self.channels[key] = channel
            return self.channels[key]

    def add_devices(self, layout: dict[int, dict[int, int]]) -> None:
        """{device id: {sub-device id: number of channels}}."""
        for devid, subs in layout.items():
            for subdevid, n in subs.items():
                for chlid in range(1, n + 1):
                    self.add_channel((devid, subdevid, chlid))

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Listen on loopback; returns `127.0.0.1:PORT` (the neware-bts resource)."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept_loop, name=f"bts-sim-{self.port}", daemon=True).start()
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop listening and drop every connection (idempotent: several station entries share one server)."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._close(conn)

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
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while TERMINATOR in buf:
                    message, buf = buf.split(TERMINATOR, 1)
                    reply = self.handle(message.decode("utf-8", errors="replace"))
                    conn.sendall(reply.encode("utf-8") + TERMINATOR)
        except OSError:
            return
        finally:
            self._close(conn)

    # --- commands --------------------------------------------------------------------------------

    def handle(self, message: str) -> str:
        """One request (without its terminator) -> the reply document."""
        try:
            request = ET.fromstring(message.encode("utf-8"))
        except ET.ParseError:
            return _reply("error", '<result>false</result>')
        cmd = (request.findtext("cmd") or "").strip()
        with self._lock:
            self.commands += 1
            now = self.clock.now()
            handler = getattr(self, f"_cmd_{cmd}", None)
            if handler is None:
                return _reply(cmd, "<result>false</result>")
            return handler(request, now)  # type: ignore[no-any-return]

    def _channel(self, element: ET.Element, now: float) -> SimChannel | None:
        try:
            key = (int(element.attrib["devid"]), int(element.attrib["subdevid"]), int(element.attrib["chlid"]))
        except (KeyError, ValueError):
            return None
        channel = self.channels.get(key)
        if channel is not None:
            channel.advance_to(now)
        return channel

    def _cmd_connect(self, request: ET.Element, now: float) -> str:
        return _reply("connect", "<result>ok</result>")

    def _cmd_getdevinfo(self, request: ET.Element, now: float) -> str:
        rows = "".join(f'<channel ip="127.0.0.1" devtype="{DEVTYPE}" devid="{k[0]}" subdevid="{k[1]}" Channelid="{k[2]}">'
                       "true</channel>\r\n" for k in sorted(self.channels))
        return _reply("getdevinfo", f'<serverip count="1"><server ip="127.0.0.1" port="3306" /></serverip>\r\n'
                                    f'<middle count="{len(self.channels)}">\r\n{rows}</middle>')

    def _listed(self, request: ET.Element) -> Iterable[ET.Element]:
        holder = request.find("list")
        return list(holder) if holder is not None else []

    def _cmd_getchlstatus(self, request: ET.Element, now: float) -> str:
        rows = []
        for element in self._listed(request):
            channel = self._channel(element, now)
            rows.append(f'<status {_attrs(element)} reservepause="1">{channel.workstatus if channel else "false"}</status>')
        return _list_reply("getchlstatus", rows)

    def _cmd_inquire(self, request: ET.Element, now: float) -> str:
        rows = []
        for element in self._listed(request):
            c = self._channel(element, now)
            if c is None:
                rows.append(f"<inquire {_attrs(element)} workstatus=\"false\" />")
                continue
            current = c.current_a()
            voltage = c.cell.terminal_voltage_v(current)
            step = c.step
            working = c.workstatus in ("working", "pause") and step is not None
            step_part = (f'step_id="{step.step_id}" step_type="{STEP_KINDS.get(step.step_type, "rest")}"'
                         if working and step is not None else 'step_type="--"')
            rows.append(
                f'<inquire dev="{DEVTYPE}-{c.key[0]}-{c.key[1]}-{c.key[2]}-0" cycle_id="{c.cycle}" {step_part} '
                f'workstatus="{c.workstatus}" barcode={quoteattr(c.barcode)} current="{current:.6g}" '
                f'voltage="{voltage:.4f}" capacity="{c.step_cap_ah if working else 0:.6g}" '
                f'energy="{c.step_energy_wh if working else 0:.6g}" totaltime="{((c.t_end or c.t) - c.t0) if c.program else 0:.1f}" '
                f'relativetime="{(c.t - c.step_t0) if working else 0:.1f}" open_or_close="0" log_code="{c.log_code}" />')
        return _list_reply("inquire", rows)

    def _cmd_inquiredf(self, request: ET.Element, now: float) -> str:
        rows = []
        for element in self._listed(request):
            c = self._channel(element, now)
            rows.append(f'<chl devtype="{DEVTYPE}" devid="{element.attrib.get("devid")}" '
                        f'subdevid="{element.attrib.get("subdevid")}" chlid="{element.attrib.get("chlid")}" '
                        f'testid="{c.test_id if c else 0}" count="{len(c.records) if c else 0}">'
                        f'{"true" if c and c.workstatus != "working" else "false"}</chl>')
        return _list_reply("inquiredf", rows)

    def _cmd_start(self, request: ET.Element, now: float) -> str:
        rows = []
        for element in self._listed(request):
            if element.tag != "start":
                continue
            c = self._channel(element, now)
            ok = False
            if c is not None and c.workstatus in ("finish", "stop", "protect"):
                try:
                    program = parse_step_file(Path((element.text or "").strip()).read_text(encoding="utf-8"))
                except (OSError, StepFileError, KeyError, ValueError) as exc:
                    log.info("bts sim: start on %s refused: %s", element.attrib, exc)
                else:
                    c.start(program, element.attrib.get("barcode", ""), now)
                    ok = True
            rows.append(f'<start {_attrs(element)}>{"ok" if ok else "false"}</start>')
        return _list_reply("start", rows)

    def _cmd_stop(self, request: ET.Element, now: float) -> str:
        rows = []
        for element in self._listed(request):
            c = self._channel(element, now)
            rows.append(f'<stop {_attrs(element)}>{"ok" if c is not None and c.stop(now) else "false"}</stop>')
        return _list_reply("stop", rows)

    def _cmd_download(self, request: ET.Element, now: float) -> str:
        element = request.find("download")
        c = self._channel(element, now) if element is not None else None
        if element is None or c is None:
            return _reply("donwload", '<list count="0" />')
        start = int(element.attrib.get("startpos", "0"))
        count = int(element.attrib.get("count", "0"))
        chosen = c.records[max(start - 1, 0): max(start - 1, 0) + count] if start > 0 and count > 0 else []
        rows = "".join(f'<data seqid="{r[0]}" stepid="{r[1]}" cycleid="{r[2]}" steptype="{r[3]}" testtime="{r[4]:.1f}" '
                       f'atime="{r[5]}" volt="{r[6]!r}" curr="{r[7]!r}" cap="{r[8]!r}" eng="{r[9]!r}" />\r\n'
                       for r in chosen)
        head = (f'<download devtype="{DEVTYPE}" devid="{c.key[0]}" subdevid="{c.key[1]}" chlid="{c.key[2]}" '
                f'testid="{c.test_id}" startpos="{start}" count="{count}" auxid="0" />\r\n')
        return _reply("donwload", head + (f'<list count="{len(chosen)}">\r\n{rows}</list>' if chosen else '<list count="0" />'))

    # --- faults ----------------------------------------------------------------------------------

    def inject_protection(self, key: Key, reason: str = "injected fault") -> None:
        """The channel goes into protection at its next moment (a cell fault, a contact lost)."""
        with self._lock:
            self.channels[key].fault = reason


def _attrs(element: ET.Element) -> str:
    return " ".join(f"{k}={quoteattr(v)}" for k, v in element.attrib.items() if k in ("ip", "devtype", "devid", "subdevid", "chlid"))


def _reply(cmd: str, body: str) -> str:
    # the real server's spelling, typo included ("donwload_resp"), as aurora-neware's recorded replies show
    return f'<?xml version="1.0" encoding="UTF-8"?>\r\n<bts version="1.0">\r\n  <cmd>{cmd}_resp</cmd>\r\n{body}\r\n</bts>'


def _list_reply(cmd: str, rows: list[str]) -> str:
    return _reply(cmd, f'<list count="{len(rows)}">\r\n' + "\r\n".join(rows) + "\r\n</list>")


def simulate_for_station(entry: dict, clock: Any, *, seed: int = 0, cell: dict | None = None,
                         peers: dict[str, Any] | None = None, **_context: object) -> tuple[BtsServer, str]:
    """The registry's way in: the station's `sim://NAME` BTS server (one per NAME), with this entry's channel on it."""
    name = str(entry["resource"])[len("sim://"):]
    settings = entry.get("settings") or {}
    server = next((s for s in (peers or {}).values() if isinstance(s, BtsServer) and s.name == name), None)
    if server is None:
        server = BtsServer(clock, name=name, seed=seed)
        server.start()
    size = cell or {}
    try:
        key = (int(settings["device_id"]), int(settings["subdevice_id"]), int(settings["channel_id"]))
    except (KeyError, TypeError, ValueError):
        key = None  # the driver names what is missing
    if key is not None:
        server.add_channel(key, Li2SCell(active_mass_g=size.get("active_mass_g") or 1.5e-3,
                                         area_cm2=size.get("area_cm2") or 0.785, seed=seed + len(server.channels)))
    return server, f"127.0.0.1:{server.port}"
