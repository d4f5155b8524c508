"""Neware BTS 8 over its TCP/XML API: one cell channel as a program cycler (see docs/dialects/neware-bts.md).

Messages are `<?xml ...?><bts version="1.0"><cmd>NAME</cmd>...</bts>` followed by `\\n\\n#\\r\\n`,
as aurora-neware sends them. Every channel of one BTS server shares one connection (a
`BtsSession`), and one `inquire` / `inquiredf` answers for all of them: when many lanes poll at
once, the first asks the server and the others read its answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from xml.sax.saxutils import quoteattr

from .program_cycler import ChannelProgram, ChannelState, ChannelStateName, ProgramRecord, ProgramStep
from .neware_step_file import counter_map, program_refusal, refusal, step_file_xml
from .source_meter import CyclerCommunicationError, CyclerConfigurationError, CyclerError

log = logging.getLogger(__name__)

DEFAULT_PORT = 502
TERMINATOR = b"\n\n#\r\n"
HEADER = '<?xml version="1.0" encoding="UTF-8" ?><bts version="1.0">'
FOOTER = "</bts>"
DOWNLOAD_CHUNK = 1000
"""Records per `download` (aurora-neware asks for 1000 at a time)."""
COALESCE_S = 0.5
"""A status answer this young (clock seconds) is shared by every channel of the session."""
STARTABLE = ("finish", "stop", "protect")
"""Work states in which the BTS accepts a start (aurora-neware's allowed_states)."""
WORK_STATES: dict[str, ChannelStateName] = {"working": "running", "finish": "finished", "stop": "stopped",
                                            "protect": "protection", "pause": "paused"}
ATIME_FORMAT = "%Y-%m-%d %H:%M:%S"

Key = tuple[int, int, int]
"""(device id, sub-device id, channel id)."""


def command_xml(body: str) -> bytes:
    """One request on the wire."""
    return (HEADER + body + FOOTER).encode("utf-8") + TERMINATOR


def records_of(reply: ET.Element, tag: str = "list") -> list[dict[str, str]]:
    """The attributes (and text, under the element's own tag) of each element inside `tag`."""
    holder = reply.find(tag)
    if holder is None:
        return []
    out = []
    for element in holder:
        item = dict(element.attrib)
        if element.text and element.text.strip():
            item[element.tag] = element.text.strip()
        out.append(item)
    return out


class BtsSession:
    """One TCP connection to a BTS server, shared by its channels; every exchange under one lock."""

    def __init__(self, host: str, port: int, clock: Any, timeout_s: float) -> None:
        self.host, self.port, self.clock, self.timeout_s = host, port, clock, timeout_s
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self.devices: dict[Key, dict[str, str]] = {}
        self.watched: set[Key] = set()
        self._inquire: dict[Key, dict[str, str]] = {}
        self._inquire_at = float("-inf")
        self._counts: dict[Key, dict[str, str]] = {}
        self._counts_at = float("-inf")
        self._bodies: dict[tuple[str, frozenset[Key]], tuple[list[Key], str]] = {}
        self.users = 0

    @property
    def where(self) -> str:
        return f"Neware BTS {self.host}:{self.port}"

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise CyclerCommunicationError(f"{self.where}: cannot connect: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        reply = self._exchange("<cmd>connect</cmd><username>admin</username><password>neware</password><type>bfgs</type>")
        if (reply.findtext("result") or "").strip() != "ok":
            raise CyclerCommunicationError(f"{self.where}: connect refused: {ET.tostring(reply, 'unicode')[:200]}")
        devinfo = self._exchange("<cmd>getdevinfo</cmd>")
        self.devices = {(int(d["devid"]), int(d["subdevid"]), int(d["Channelid"])): d
                        for d in records_of(devinfo, "middle")}

    def _exchange(self, body: str) -> ET.Element:
        assert self._sock is not None
        try:
            self._sock.sendall(command_xml(body))
            data = b""
            while not data.endswith(TERMINATOR):
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise CyclerCommunicationError(f"{self.where}: connection closed by the server")
                data += chunk
        except OSError as exc:
            self._drop()
            raise CyclerCommunicationError(f"{self.where}: {exc}") from exc
        except CyclerCommunicationError:
            self._drop()
            raise
        try:
            return ET.fromstring(data[: -len(TERMINATOR)].decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError) as exc:
            self._drop()
            raise CyclerCommunicationError(f"{self.where}: unreadable reply: {exc}") from exc

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    def command(self, body: str) -> ET.Element:
        """Send one command and return the parsed reply; reconnects once if the connection was lost."""
        with self._lock:
            if self._sock is None:
                self._connect()
            try:
                return self._exchange(body)
            except CyclerCommunicationError:
                self._connect()
                return self._exchange(body)

    def refresh_devices(self) -> None:
        """Ask `getdevinfo` again (channels appear when the BTS client adds a device)."""
        devinfo = self.command("<cmd>getdevinfo</cmd>")
        with self._lock:
            self.devices = {(int(d["devid"]), int(d["subdevid"]), int(d["Channelid"])): d
                            for d in records_of(devinfo, "middle")}

    def open(self) -> None:
        with self._lock:
            if self._sock is None:
                self._connect()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _attrs(self, key: Key) -> str:
        d = self.devices.get(key)
        if d is None:
            raise CyclerConfigurationError(f"{self.where}: no channel {key[0]}-{key[1]}-{key[2]} "
                                           f"(has: {', '.join('-'.join(map(str, k)) for k in sorted(self.devices))})")
        return (f'ip="{d.get("ip", self.host)}" devtype="{d.get("devtype", "")}" devid="{key[0]}" '
                f'subdevid="{key[1]}" chlid="{key[2]}"')

    def _body(self, cmd: str, key: Key, item: Callable[[Key], str]) -> tuple[list[Key], str]:
        """The request for every watched channel (and `key`), built once per set of channels."""
        wanted = frozenset(self.watched | {key})
        cached = self._bodies.get((cmd, wanted))
        if cached is None:
            keys = sorted(wanted)
            cached = keys, f'<cmd>{cmd}</cmd><list count = "{len(keys)}">{"".join(item(k) for k in keys)}</list>'
            self._bodies = {k: v for k, v in self._bodies.items() if k[0] != cmd}
            self._bodies[(cmd, wanted)] = cached
        return cached

    def inquire(self, key: Key) -> dict[str, str]:
        """The channel's `inquire` answer, one command for every watched channel of the session."""
        with self._lock:
            if key not in self._inquire or self.clock.now() - self._inquire_at > COALESCE_S:
                keys, body = self._body("inquire", key,
                                        lambda k: f'<inquire {self._attrs(k)} aux="0" barcode="1">true</inquire>')
                reply = self.command(body)
                self._inquire = dict(zip(keys, records_of(reply), strict=False))
                self._inquire_at = self.clock.now()
            if key not in self._inquire:
                raise CyclerCommunicationError(f"{self.where}: inquire answered without channel {key}")
            return self._inquire[key]

    def count(self, key: Key) -> tuple[int, int]:
        """(test id, records logged) of the channel's latest test, one `inquiredf` for every watched channel."""
        with self._lock:
            if key not in self._counts or self.clock.now() - self._counts_at > COALESCE_S:
                keys, body = self._body("inquiredf", key, lambda k: (
                    f'<chl devtype="{self.devices[k].get("devtype", "")}" devid="{k[0]}" subdevid="{k[1]}" '
                    f'chlid="{k[2]}" testid="0" />'))
                reply = self.command(body)
                self._counts = dict(zip(keys, records_of(reply), strict=False))
                self._counts_at = self.clock.now()
            item = self._counts.get(key, {})
            return int(item.get("testid", 0)), int(item.get("count", 0))

    def forget_status(self) -> None:
        """After a start or stop the cached answers are stale."""
        with self._lock:
            self._inquire_at = self._counts_at = float("-inf")


_sessions: dict[tuple[str, int], BtsSession] = {}
_sessions_lock = threading.Lock()


def session_for(host: str, port: int, clock: Any, timeout_s: float) -> BtsSession:
    """The shared session of a BTS server (one per host and port in this process)."""
    with _sessions_lock:
        session = _sessions.get((host, port))
        if session is None or session.clock is not clock:
            session = _sessions[(host, port)] = BtsSession(host, port, clock, timeout_s)
        session.users += 1
        return session


def release_session(session: BtsSession) -> None:
    with _sessions_lock:
        session.users -= 1
        if session.users <= 0:
            session.close()
            if _sessions.get((session.host, session.port)) is session:
                del _sessions[(session.host, session.port)]


class NewareChannel:
    """One cell channel (device, sub-device, channel) of a BTS server, as the program-cycler lane uses it."""

    records_poll_every = 1  # `download` returns only the records after a sequence number: cheap every poll

    def __init__(self, channel: str, session: BtsSession, key: Key, step_dir: Path, step_dir_on_server: str) -> None:
        self.channel = channel
        self.session = session
        self.key = key
        self.step_dir = step_dir
        self.step_dir_on_server = step_dir_on_server
        self.closed = False
        self._label: str | None = None
        self._counters: dict[tuple[int, int], int] = {}
        self._t0_unix_s: float | None = None

    @property
    def pipeline(self) -> str:
        return "-".join(map(str, self.key))

    def _where(self) -> str:
        return f"{self.session.where} channel {self.pipeline} ({self.channel})"

    def preflight(self) -> str:
        self.session.open()
        if self.key not in self.session.devices:
            self.session.refresh_devices()
        self.session._attrs(self.key)  # raises naming the channels the server has
        self.session.watched.add(self.key)
        status = self.session.inquire(self.key)
        return (f"{self._where()}, devtype {self.session.devices[self.key].get('devtype', '?')}: "
                f"{status.get('workstatus', '?')}, {status.get('voltage', '?')} V")

    def check(self, steps: Sequence[ProgramStep]) -> None:
        problem = refusal(steps)
        if problem is not None:
            raise problem

    def attach(self, program: ChannelProgram) -> None:
        """Watch this program's job (already on the channel, or about to be): its counters map to plan steps."""
        self._label = program.label
        self._counters = counter_map(program)
        self.session.watched.add(self.key)

    def start(self, program: ChannelProgram) -> None:
        problem = program_refusal(program)
        if problem is not None:
            raise problem
        status = self.session.inquire(self.key)
        if status.get("workstatus") not in STARTABLE:
            raise CyclerError(f"{self._where()} is {status.get('workstatus')!r} (job {status.get('barcode', '')!r}); "
                              f"a job starts only in {', '.join(STARTABLE)}")
        self.attach(program)
        self.step_dir.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in program.label) + ".xml"
        (self.step_dir / name).write_text(step_file_xml(program), encoding="utf-8")
        server_path = self.step_dir_on_server.rstrip("/\\") + ("\\" if "\\" in self.step_dir_on_server else "/") + name
        body = (f'<cmd>start</cmd><list count = "1"><start {self.session._attrs(self.key)} '
                f"barcode={quoteattr(program.label)}>{server_path}</start>"
                f'<backup backupdir="{self.step_dir_on_server}" remotedir="" filenametype="0" customfilename="" '
                'addtimewhenrepeat="0" createdirbydate="0" filetype="0" backupontime="1" backupontimeinterval="720" '
                'backupfree="1" /></list>')
        reply = self.session.command(body)
        self.session.forget_status()
        answers = records_of(reply)
        if not answers or answers[0].get("start") != "ok":
            raise CyclerError(f"{self._where()}: the BTS refused to start {server_path}: {answers}")
        self._t0_unix_s = None
        log.info("%s: started job %s (%s)", self._where(), program.label, server_path)

    def state(self) -> ChannelState:
        s = self.session.inquire(self.key)
        work = s.get("workstatus", "")
        label = s.get("barcode") or None
        name: ChannelStateName = WORK_STATES.get(work, "alarm")
        ours = label is not None and label == self._label
        step_index = None
        if ours and "step_id" in s and s.get("step_id") not in ("", "--"):
            step_index = self._counters.get((int(s["step_id"]), int(s.get("cycle_id", 1))))
        if name == "finished" and ours:
            step_index = None
        reason = ""
        if name in ("protection", "alarm", "stopped"):
            reason = f"BTS workstatus {work!r}, log_code {s.get('log_code', '?')}"
        return ChannelState(state=name, label=label, step_index=step_index,
                            cycle=int(s["cycle_id"]) if s.get("cycle_id", "--") != "--" else None,
                            voltage_v=_float(s.get("voltage")), current_a=_float(s.get("current")), reason=reason)

    def records_after(self, record_id: int | None) -> list[ProgramRecord]:
        after = record_id or 0
        _test_id, count = self.session.count(self.key)
        out: list[ProgramRecord] = []
        devtype = self.session.devices[self.key].get("devtype", "")
        while after + len(out) < count:
            start = after + len(out) + 1
            reply = self.session.command(
                f'<cmd>download</cmd><download devtype="{devtype}" devid="{self.key[0]}" subdevid="{self.key[1]}" '
                f'chlid="{self.key[2]}" auxid="0" testid="0" startpos="{start}" count="{DOWNLOAD_CHUNK}"/>')
            rows = records_of(reply)
            if not rows:
                break
            out.extend(self._record(row) for row in rows if int(row["seqid"]) >= start)
        return out

    def _record(self, row: Mapping[str, str]) -> ProgramRecord:
        test_time_s = float(row["testtime"]) / 1000.0
        if self._t0_unix_s is None:  # the BTS logs wall time to the second: the test's start from its first record
            self._t0_unix_s = dt.datetime.strptime(row["atime"], ATIME_FORMAT).timestamp() - test_time_s
        step_id, cycle = int(row["stepid"]), int(row["cycleid"])
        current_a = float(row["curr"])
        capacity_ah = float(row["cap"])
        return ProgramRecord(record_id=int(row["seqid"]), test_time_s=test_time_s,
                             unix_time_s=self._t0_unix_s + test_time_s, voltage_v=float(row["volt"]),
                             current_a=current_a, charge_capacity_ah=capacity_ah if current_a > 0 else 0.0,
                             discharge_capacity_ah=capacity_ah if current_a < 0 else 0.0, cycle=cycle,
                             vendor_step=step_id, step_index=self._counters.get((step_id, cycle), -1))

    def stop(self) -> None:
        reply = self.session.command(f'<cmd>stop</cmd><list count = "1"><stop {self.session._attrs(self.key)}>'
                                     "true</stop></list>")
        self.session.forget_status()
        answers = records_of(reply)
        if not answers or answers[0].get("stop") != "ok":
            raise CyclerError(f"{self._where()}: the BTS did not confirm the stop: {answers}")

    def safe_off(self) -> bool:
        """Stop our job if it still runs (a run that ends on an error); True when nothing of ours runs."""
        try:
            status = self.session.inquire(self.key)
            if status.get("workstatus") == "working" and self._label is not None and status.get("barcode") == self._label:
                self.stop()
            return True
        except CyclerError as exc:
            log.error("%s: could not stop the job: %s", self._where(), exc)
            return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.session.watched.discard(self.key)
            release_session(self.session)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "--") else None
    except ValueError:
        return None


def parse_resource(resource: str) -> tuple[str, int]:
    """`host[:port]` (port 502 by default) -> (host, port)."""
    host, _, port = resource.strip().rpartition(":") if resource.count(":") == 1 else (resource.strip(), "", "")
    if not host:
        host, port = resource.strip(), ""
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise CyclerConfigurationError(f"neware-bts resource {resource!r}: write host or host:port") from None


SETTINGS = ("device_id", "subdevice_id", "channel_id", "step_dir", "step_dir_on_server")


def check_program(program: ChannelProgram) -> None:
    """The registry's plan-time check: ProgramRefused for what a Neware step file cannot hold (no wire)."""
    problem = program_refusal(program)
    if problem is not None:
        raise problem


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, *, timeout_s: float | None = None,
                      workdir: Path | None = None, cell: Mapping[str, Any] | None = None,
                      **_context: Any) -> NewareChannel:
    """The registry's way in: channel `device_id`-`subdevice_id`-`channel_id` of the BTS server at `address`.

    `step_dir`: where step files are written (default: `neware-steps` in the run folder);
    `step_dir_on_server`: the same folder as the BTS computer names it (default: step_dir).
    """
    settings = dict(entry.get("settings") or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise CyclerConfigurationError(f"neware-bts {address}: unknown setting(s) {', '.join(unknown)} "
                                       f"(known: {', '.join(SETTINGS)})")
    try:
        key = (int(settings["device_id"]), int(settings["subdevice_id"]), int(settings["channel_id"]))
    except KeyError as exc:
        raise CyclerConfigurationError(f"neware-bts {address}: setting {exc.args[0]} missing "
                                       "(device_id, subdevice_id and channel_id name the channel)") from None
    except (TypeError, ValueError):
        raise CyclerConfigurationError(f"neware-bts {address}: device_id, subdevice_id and channel_id are "
                                       "whole numbers") from None
    host, port = parse_resource(address)
    default_dir = (workdir or Path.cwd()) / "neware-steps"
    step_dir = Path(settings.get("step_dir") or default_dir).resolve()
    session = session_for(host, port, clock, timeout_s or 10.0)
    name = str((cell or {}).get("channel") or "-".join(map(str, key)))
    return NewareChannel(name, session, key, step_dir,
                         str(settings.get("step_dir_on_server") or step_dir))
