"""One channel of a Maccor tester over MacNet: the ProgramCycler the cycler lane supervises.

The job is a Maccor test procedure (procedure.py) sent to the tester's procedure folder over the
binary port ((1, 6) send file; JSON cannot carry files), checked ((1, 3) procedure exists, (6, 11)
check test start), given the station's safety limits ((6, 10)) and started ((6, 2)) under the
job's name. Status is (4, 7) and (4, 6); the data come from the channel's data file over the
binary port ((1, 7) get file), fetched only when (4, 7) says records were added. Reads, the
upload and the reset are retried through drivers.retry on a fresh connection; the start is
sent once (a second start of the same name would be refused as not unique). Every call has a
timeout. Sources and assumptions: docs/dialects/maccor-macnet.md.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import xml.etree.ElementTree as ET
from typing import Any, Callable, Sequence, TypeVar

from drivers.program_cycler import ChannelProgram, ChannelState, ChannelStateName, ProgramRecord, ProgramStep
from drivers.retry import with_retries
from drivers.source_meter import CyclerCommunicationError, CyclerConfigurationError, CyclerError, CyclerUnreachable

from . import wire
from .datafile import DataRow, parse_rows
from .procedure import StepMap, check_limits, check_steps, names_for, procedure_xml, step_map_of

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_WORDS = {0: "Available", 1: "Selected", 2: "Active", 3: "Suspended", 4: "Completed", 5: "Problem",
                6: "Not/Avl", 7: "Reset", 8: "Start", 9: "PWR Fail", 10: "No Cntllr", 11: "ShutDown",
                12: "Starting", 13: "Blocked", 14: "Waiting", 15: "FRA", 16: "Rem Maint"}
"""Stat of (4, 1) / (4, 7), in the MacNet help's words."""
END_WORDS = {133: "Voltage", 136: "Amp Hour", 129: "Step time", 189: "Safety Capacity",
             190: "Safety Voltage <pk", 191: "Safety overcharge", 192: "S (operator suspended or Pause step)",
             193: "O (normal end)", 194: "P (timeout fault)", 195: "P (timeout fault)",
             196: "P (overcharge safety)", 197: "P (voltage safety <pk)", 198: "P (slave error)",
             199: "Operator forced step", 252: "P (Slave Current control error)", 253: "P (V safety absolute)",
             254: "P (lost current control)", 255: "P (Buffer full)"}
"""RF2 codes of (4, 1) that say why a step or test ended (a subset, in the help's words)."""
PROTECTION_CODES = frozenset({189, 190, 191, 194, 195, 196, 197, 198, 252, 253, 254, 255})
_STATE_OF_STAT: dict[int, ChannelStateName] = {0: "idle", 1: "idle", 2: "running", 3: "paused", 4: "finished",
                                               5: "alarm", 7: "stopped", 8: "running", 12: "running",
                                               14: "running"}
RF1_PAUSE = 5
HAS_TEST = frozenset({2, 3, 4, 5, 7, 8, 12, 14})
"""Stat values with a test (its names readable by (4, 6))."""
SAFETY_ECHO_TOL = 1e-5
"""The tester echoes safety limits as single-precision floats."""
_RANGE_KEYS = ("IR1Chg", "IR2Chg", "IR3Chg", "IR4Chg")


class MacNetRefused(CyclerConfigurationError):
    """The tester answered a request with an error or a refusal (its own words)."""


class _Transient(Exception):
    """A fault worth retrying on a fresh connection."""


class _Refusal(Exception):
    """The tester answered a file transfer with an ERROR (an answer: not retried)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _float(result: dict[str, Any], key: str) -> float:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} is {value!r}, not a finite number")
    return float(value)


def _int(result: dict[str, Any], key: str) -> int:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} is {value!r}, not an integer")
    return value


class MaccorChannel:
    """Channel `channel` (1-based, as the tester's screen numbers it) of the Maccor tester at host:json_port."""

    records_poll_every = 10
    """MacNet cannot read part of a file: each fetch of new records downloads the whole data file, so records
    are fetched at every step change and otherwise every 10th status poll (the tester enforces the limits)."""

    def __init__(self, host: str, json_port: int, channel: int, *, clock: Any, binary_port: int | None = None,
                 timeout_s: float = 3.0, retries: int = 2, retry_wait_s: float = 0.2) -> None:
        if channel < 1:
            raise ValueError(f"Maccor channel numbers start at 1, got {channel}")
        self.host = host
        self.json_port = json_port
        self.binary_port = json_port - 10 if binary_port is None else binary_port
        self.number = channel
        self.channel = str(channel)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.retry_count = 0
        self.bytes_read = 0
        """Bytes of files read over (1, 7) (MacNet has no partial read: each data download is the whole file)."""
        self._clock = clock
        self._retry_wait_s = retry_wait_s
        self._lock = threading.RLock()
        self._json: socket.socket | None = None
        self._json_buf = b""
        self._binary: socket.socket | None = None
        self._binary_buf = b""
        self.current_range_max_a: float | None = None
        """Largest charge current of the channel ((3, 1) IR4Chg); None when the tester does not say."""
        self._job: tuple[str, str] | None = None  # (test name, procedure name) of the job on the channel
        self._procedures: dict[str, tuple[str, StepMap]] = {}  # procedure name -> (job label, step map)
        self._data: _JobRecords | None = None  # the job's data file as read so far
        self._closed = False

    @property
    def where(self) -> str:
        return f"Maccor {self.host}:{self.json_port} channel {self.number}"

    # --- transport ------------------------------------------------------------------------------

    def _connect(self, port: int) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, port), timeout=self.timeout_s)
        except OSError as exc:
            raise _Transient(f"cannot connect to {self.host}:{port}: {_one_line(exc)}") from exc
        sock.settimeout(self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _drop(self) -> None:
        for sock in (self._json, self._binary):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self._json = self._binary = None
        self._json_buf = self._binary_buf = b""

    def _recv(self, sock: socket.socket) -> bytes:
        try:
            chunk = sock.recv(65536)
        except socket.timeout as exc:
            raise _Transient(f"no reply within {self.timeout_s} s") from exc
        except OSError as exc:
            raise _Transient(f"connection failed: {_one_line(exc)}") from exc
        if not chunk:
            raise _Transient("the tester closed the connection")
        return chunk

    def _json_once(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise CyclerCommunicationError(f"{self.where}: used after close()")
        if self._json is None:
            self._json = self._connect(self.json_port)
        sock = self._json
        try:
            sock.sendall(wire.encode_json(message))
        except OSError as exc:
            raise _Transient(f"send failed: {_one_line(exc)}") from exc
        while True:
            try:
                end = wire.object_end(self._json_buf)
            except ValueError as exc:
                raise _Transient(f"malformed reply: {exc}") from exc
            if end is not None:
                break
            self._json_buf += self._recv(sock)
        text, self._json_buf = self._json_buf[:end], self._json_buf[end:].lstrip()
        try:
            reply = json.loads(text)
        except ValueError as exc:
            raise _Transient(f"malformed reply: {exc}") from exc
        if not isinstance(reply, dict):
            raise _Transient(f"reply is not an object: {text[:80]!r}")
        return reply

    def _retrying(self, what: str, action: Callable[[], T], *, retry: bool = True) -> T:
        def once() -> T:
            try:
                return action()
            except _Transient:
                self._drop()  # a fresh connection holds no stale bytes
                raise

        def note(attempt: int, exc: BaseException) -> None:
            self.retry_count += 1
            log.warning("%s: %s attempt %d failed (%s); retrying", self.where, what, attempt, exc)

        attempts = self.retries + 1 if retry else 1
        with self._lock:
            try:
                return with_retries(once, attempts=attempts, wait_s=self._retry_wait_s, sleep=self._clock.sleep,
                                    retry_on=(_Transient,), on_retry=note)
            except _Transient as exc:
                how = (f"after {attempts} attempts" if attempts > 1 else "(no retries allowed)" if retry
                       else "(sent once: a start is never repeated)")
                raise CyclerCommunicationError(f"{self.where}: {what} failed {how}: {exc}") from exc

    def call(self, fclass: int, fnum: int, *, retry: bool = True, **params: Any) -> dict[str, Any]:
        """One MacNet JSON request; the reply's `result`, or MacNetRefused with the tester's error."""
        message = wire.request(fclass, fnum, **params)
        what = f"MacNet ({fclass}, {fnum})"

        def once() -> dict[str, Any]:
            reply = self._json_once(message)
            if "error" in reply or "err" in reply:
                return reply
            result = reply.get("result")
            if not isinstance(result, dict) or result.get("FClass") != fclass or result.get("FNum") != fnum:
                raise _Transient(f"reply does not answer {what}: {json.dumps(reply)[:120]}")
            return reply

        reply = self._retrying(what, once, retry=retry)
        if "result" not in reply:
            error = reply.get("error", reply)
            text = error.get("message", error) if isinstance(error, dict) else error
            raise MacNetRefused(f"{self.where}: the tester refused {what}: {_one_line(text)}")
        result: dict[str, Any] = reply["result"]
        return result

    def _binary_send(self, data: bytes) -> None:
        if self._binary is None:
            self._binary = self._connect(self.binary_port)
        try:
            self._binary.sendall(data)
        except OSError as exc:
            raise _Transient(f"send failed: {_one_line(exc)}") from exc

    def _binary_reply(self, fclass: int, fnum: int) -> tuple[int, int, bytes]:
        """The next (1, 6)/(1, 7) reply: (opcode, word, payload)."""
        assert self._binary is not None
        size = wire.HEADER.size
        while len(self._binary_buf) < size:
            self._binary_buf += self._recv(self._binary)
        got_class, got_num, _chan, length = wire.HEADER.unpack(self._binary_buf[:size])
        while len(self._binary_buf) < size + length:
            self._binary_buf += self._recv(self._binary)
        data, self._binary_buf = self._binary_buf[size:size + length], self._binary_buf[size + length:]
        if (got_class, got_num) != (fclass, fnum) or length < wire.FILE_HEADER.size:
            raise _Transient(f"binary reply ({got_class}, {got_num}) of {length} bytes does not answer "
                             f"({fclass}, {fnum})")
        _ftype, opcode, word = wire.FILE_HEADER.unpack(data[:wire.FILE_HEADER.size])
        return opcode, word, data[wire.FILE_HEADER.size:]

    @staticmethod
    def _error_text(payload: bytes) -> str:
        return payload.split(b"\0", 1)[0].decode("ascii", errors="replace")

    def send_file(self, file_type: int, name: str, content: bytes) -> None:
        """(1, 6): write `name` into the tester's folder of `file_type`, in acknowledged 500-byte blocks."""
        encoded = name.encode("ascii")

        def once() -> None:
            self._binary_send(wire.binary_message(1, 6, 0, wire.FILE_HEADER.pack(file_type, wire.OP_WRQ, len(encoded))
                                                  + encoded))
            self._expect_ack(0)
            blocks = [content[i:i + wire.BLOCK_BYTES] for i in range(0, len(content), wire.BLOCK_BYTES)]
            if not blocks or len(blocks[-1]) == wire.BLOCK_BYTES:
                blocks.append(b"")  # a block shorter than 500 bytes ends the transfer
            for number, block in enumerate(blocks, start=1):
                self._binary_send(wire.binary_message(
                    1, 6, 0, wire.FILE_HEADER.pack(file_type, wire.OP_DATA, number & 0xFFFF) + block))
                self._expect_ack(number & 0xFFFF)

        try:
            self._retrying(f"sending {name}", once)
        except _Refusal as exc:
            raise MacNetRefused(f"{self.where}: the tester refused {name}: {exc}") from None

    def _expect_ack(self, block: int) -> None:
        opcode, word, payload = self._binary_reply(1, 6)
        if opcode == wire.OP_ERROR:
            raise _Refusal(f"error {word}: {self._error_text(payload)}")
        if opcode != wire.OP_ACK or word != block:
            raise _Transient(f"expected ACK of block {block}, got opcode {opcode} word {word}")

    def get_file(self, file_type: int, name: str) -> bytes:
        """(1, 7): the content of `name` in the tester's folder of `file_type`; MacNetRefused if it has none."""
        encoded = name.encode("ascii")

        def once() -> bytes:
            self._binary_send(wire.binary_message(1, 7, 0, wire.FILE_HEADER.pack(file_type, wire.OP_RRQ, len(encoded))
                                                  + encoded))
            parts: list[bytes] = []
            expected = 1
            while True:
                opcode, word, payload = self._binary_reply(1, 7)
                if opcode == wire.OP_ERROR:
                    raise _Refusal(f"error {word}: {self._error_text(payload)}")
                if opcode != wire.OP_DATA or word != expected & 0xFFFF:
                    raise _Transient(f"expected DATA block {expected}, got opcode {opcode} word {word}")
                parts.append(payload)
                self._binary_send(wire.binary_message(1, 7, 0, wire.FILE_HEADER.pack(file_type, wire.OP_ACK, word)))
                if len(payload) < wire.BLOCK_BYTES:
                    content = b"".join(parts)
                    self.bytes_read += len(content)
                    return content
                expected += 1

        try:
            return self._retrying(f"reading {name}", once)
        except _Refusal as exc:
            raise MacNetRefused(f"{self.where}: the tester refused to send {name}: {exc}") from None

    # --- identity -------------------------------------------------------------------------------

    def preflight(self) -> str:
        """Version (1, 1), system (1, 2), this channel's status (4, 7) and specification (3, 1); one line."""
        try:
            version = self.call(1, 1)
        except CyclerCommunicationError as exc:
            raise CyclerUnreachable(str(exc)) from None
        system = self.call(1, 2)
        try:
            channels = _int(system, "TestChannels")
        except ValueError as exc:
            raise CyclerConfigurationError(f"{self.where}: general system information (1, 2): {exc}") from None
        if self.number > channels:
            raise CyclerConfigurationError(f"{self.where}: the tester {system.get('SystemID', '?')} has "
                                           f"{channels} channels; check the station's channel setting")
        state = self.state()
        spec = "channel specification (3, 1) not answered; current range not checked"
        try:
            ranges = [_float(self.call(3, 1, Chan=self.number - 1), key) for key in _RANGE_KEYS]
            self.current_range_max_a = max(ranges)
            spec = f"current up to {self.current_range_max_a:g} A"
        except MacNetRefused:
            pass
        except ValueError as exc:
            raise CyclerConfigurationError(f"{self.where}: channel specification (3, 1): {exc}") from None
        exe = ".".join(str(version.get(f"MacTest32EXEversion{k}", "?")) for k in ("Major", "Minor", "Build"))
        return (f"Maccor {system.get('SystemID', '?')} (MacTest32 {exe}, {channels} channels), channel "
                f"{self.number}: {state.state}{' ' + repr(state.label) if state.label else ''}; {spec}")

    # --- the job --------------------------------------------------------------------------------

    def check(self, steps: Sequence[ProgramStep]) -> None:
        """Raise ProgramRefused for the first step a Maccor procedure cannot express."""
        check_steps(steps, self.current_range_max_a if self.current_range_max_a is not None else math.inf)

    def _status(self) -> dict[str, Any]:
        return self.call(4, 7, Chan=self.number - 1)

    def start(self, program: ChannelProgram) -> None:
        """Write the program as a procedure, send it, set the safety limits, check and start the test.

        The start (6, 2) is sent once: after a CyclerCommunicationError from it, `state()` tells
        whether the tester started the job (its label is on the channel).
        """
        self.check(program.steps)
        check_limits(program)
        try:
            name = names_for(program.label)
        except ValueError as exc:
            raise CyclerConfigurationError(f"{self.where}: {exc}") from None
        stat = self._stat_of(self._status())
        if stat == 4:  # a completed test holds the channel until it is reset (pymacnet does the same)
            log.info("%s: resetting the completed test on the channel (its data file moves to the archive)",
                     self.where)
            self.stop()
        elif stat not in (0, 1):
            raise CyclerConfigurationError(f"{self.where}: channel is {STATUS_WORDS.get(stat, stat)}, not "
                                           "available; nothing started")
        xml = procedure_xml(program)
        self.send_file(wire.FILE_PROCEDURE, f"{name}.000", xml)
        if str(self.call(1, 3, ProcName=name).get("ProcedurExists")).upper() != "TRUE":
            raise MacNetRefused(f"{self.where}: procedure {name} not found on the tester after sending it")
        self._set_safety(program)
        check = self.call(6, 11, Chan=self.number - 1, TestName=name, ProcName=name, Comment="exsylab",
                          Crate=1, ChamberNum=0)
        if check.get("Result") != "OK":
            raise MacNetRefused(f"{self.where}: check test start (6, 11) refused {name}: {check.get('Result')}")
        started = self.call(6, 2, retry=False, Chan=self.number - 1, TestName=name, ProcName=name,
                            Comment="exsylab", Crate=1, ChamberNum=0, StartCycle=0, TotCycles=0, Mass=1, VGain=0,
                            AbsTRepAlign=0, ParallelR=0, VDivHiR=0, VDivLoR=0, CANpos=-1, CANprof="",
                            RegimeName="")
        if started.get("Result") != "OK":
            raise MacNetRefused(f"{self.where}: start test (6, 2) refused {name}: {started.get('Result')}")
        self._job = (name, name)
        self._procedures[name] = (program.label, step_map_of(xml))

    def _set_safety(self, program: ChannelProgram) -> None:
        limits = program.limits
        wanted: dict[str, Any] = {"VSafeMax": limits.voltage_max_v, "VSafeMin": limits.voltage_min_v,
                  "ISafeChg": limits.current_max_a, "ISafeDis": limits.current_max_a,
                  "PBatSafeChg": 0.0, "PBatSafeDis": 0.0}
        echo = self.call(6, 10, Chan=self.number - 1, **wanted)
        for key, value in wanted.items():
            try:
                got = _float(echo, key)
            except ValueError as exc:
                raise CyclerCommunicationError(f"{self.where}: set safety (6, 10) echo: {exc}") from None
            if not math.isclose(got, value, rel_tol=SAFETY_ECHO_TOL, abs_tol=1e-9):
                raise CyclerConfigurationError(f"{self.where}: set safety (6, 10) {key} reads back {got}, "
                                               f"expected {value}; nothing started")

    def _stat_of(self, status: dict[str, Any]) -> int:
        try:
            return _int(status, "Stat")
        except ValueError as exc:
            raise CyclerCommunicationError(f"{self.where}: channel status (4, 7): {exc}") from None

    def _job_names(self) -> tuple[str, str]:
        names = self.call(4, 6, Chan=self.number - 1)
        test, proc = names.get("TestName"), names.get("ProcName")
        if not isinstance(test, str) or not isinstance(proc, str):
            raise CyclerCommunicationError(f"{self.where}: file names (4, 6) without TestName/ProcName: {names}")
        self._job = (test.strip(), proc.strip())
        return self._job

    def _procedure(self, proc: str) -> tuple[str, StepMap]:
        """(job label, step map) of procedure `proc`, read from the tester once per procedure."""
        if proc not in self._procedures:
            xml = self.get_file(wire.FILE_PROCEDURE, f"{proc}.000")
            try:
                step_map = step_map_of(xml)
            except ValueError as exc:
                raise CyclerConfigurationError(f"{self.where}: procedure {proc} on the channel: {exc}") from None
            self._procedures[proc] = (_label_of(xml, proc), step_map)
        return self._procedures[proc]

    def state(self) -> ChannelState:
        """(4, 7) status mapped to ChannelState; the label and plan step come from the job's procedure."""
        status = self._status()
        stat = self._stat_of(status)
        try:
            rf1, rf2 = _int(status, "RF1"), _int(status, "RF2")
            voltage_v, current_a = _float(status, "Voltage"), _float(status, "Current")
            vendor_step, cycle = _int(status, "Step"), _int(status, "Cycle")
        except ValueError as exc:
            raise CyclerCommunicationError(f"{self.where}: channel status (4, 7): {exc}") from None
        name: ChannelStateName = _STATE_OF_STAT.get(stat, "alarm")
        reason = ""
        if name == "running" and rf1 == RF1_PAUSE:
            name = "paused"
        if stat in (3, 4, 5) and rf2 in END_WORDS:
            reason = END_WORDS[rf2]
        if rf2 in PROTECTION_CODES and stat in (3, 4, 5):
            name = "protection"
        if name == "alarm" and not reason:
            reason = STATUS_WORDS.get(stat, f"status {stat}")
        if stat not in HAS_TEST:
            return ChannelState(name, None, None, None, voltage_v, current_a, reason)
        _test, proc = self._job_names()
        label, step_map = self._procedure(proc)
        return ChannelState(name, label, step_map.index_of(vendor_step), cycle + 1, voltage_v, current_a, reason)

    def records_after(self, record_id: int | None) -> list[ProgramRecord]:
        """Every record of the job after `record_id` (None: all), from the channel's data file.

        While the channel holds the test, the file is read only when (4, 7) LastRecNum says records
        were added; after a reset, the last job this driver saw is read from the archive.
        """
        status = self._status()
        if self._stat_of(status) in HAS_TEST:
            last = status.get("LastRecNum")
            if not isinstance(last, int):
                raise CyclerCommunicationError(f"{self.where}: channel status (4, 7) without LastRecNum")
            if last == 0 or (record_id is not None and last <= record_id):
                return []
            test, proc = self._job_names()
            folders: tuple[int, ...] = (wire.FILE_ACTIVE, wire.FILE_ARCHIVE)
        elif self._job is not None:
            test, proc = self._job
            folders = (wire.FILE_ARCHIVE,)
        else:
            return []
        _label, step_map = self._procedure(proc)
        name = f"{test}.{self.number:03d}"
        if self._data is None or self._data.name != name:
            self._data = _JobRecords(name, step_map, self.where)
        if not self._data.records or record_id is None or self._data.records[-1].record_id <= record_id:
            self._data.update(self._data_file(name, folders))
        return self._data.after(record_id)

    def _data_file(self, name: str, folders: tuple[int, ...]) -> bytes:
        """The data file from the first folder that has it (a reset test's file has moved to the archive)."""
        for folder in folders[:-1]:
            try:
                return self.get_file(folder, name)
            except MacNetRefused:
                continue
        return self.get_file(folders[-1], name)

    def stop(self) -> None:
        """(6, 5) reset: the test ends, the channel's output is off."""
        result = self.call(6, 5, Chan=self.number - 1)
        if result.get("Result") != "OK":
            raise MacNetRefused(f"{self.where}: reset (6, 5) refused: {result.get('Result')}")

    def attach(self, program: ChannelProgram) -> None:
        """Watch the job already on the channel (resume): its procedure, read back, must be this program's."""
        status = self._status()
        if self._stat_of(status) not in HAS_TEST:
            return  # nothing on the channel yet (or the test was reset): records_after reads the archive
        _test, proc = self._job_names()
        label, _step_map = self._procedure(proc)
        if label != program.label:
            raise CyclerError(f"{self.where} runs {label!r}, not this run's job {program.label!r}; nothing attached")

    def safe_off(self) -> bool:
        """Reset our test if it still runs (a run that ends on an error); True when nothing of ours runs."""
        try:
            status = self._status()
            if self._stat_of(status) in HAS_TEST and self._job is not None:
                self.stop()
            return True
        except CyclerError as exc:
            log.error("%s: could not reset the test: %s", self.where, exc)
            return False

    def close(self) -> None:
        """Close the connections; the test on the channel keeps running."""
        with self._lock:
            self._drop()
            self._closed = True


def _label_of(xml: bytes, proc: str) -> str:
    desc = ET.fromstring(xml).findtext("header/ProcDesc/desc") or ""
    return desc[len("exsylab job "):] if desc.startswith("exsylab job ") else proc


class _JobRecords:
    """The records of one data file, parsed once: a new download parses only the lines after the known prefix."""

    def __init__(self, name: str, step_map: StepMap, where: str) -> None:
        self.name = name
        self._step_map = step_map
        self._where = where
        self._prefix = b""
        self._lines = 0
        self.records: list[ProgramRecord] = []
        self._previous: DataRow | None = None

    def update(self, content: bytes) -> None:
        """Take in a fresh download of the file (the tester only ever appends to it)."""
        if not content.startswith(self._prefix):
            raise CyclerCommunicationError(f"{self._where}: data file {self.name} changed below records already read")
        complete = content[:content.rfind(b"\n") + 1]
        tail = complete[len(self._prefix):]
        try:
            rows = parse_rows(tail.decode("utf-8"), first_line=self._lines + 1)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CyclerCommunicationError(f"{self._where}: data file {self.name}: {exc}") from None
        for row in rows:
            self._add(row)
        self._prefix = complete
        self._lines += tail.count(b"\n")

    def _add(self, row: DataRow) -> None:
        """Append one row as a ProgramRecord with the step's own capacity (Maccor counts each step from 0)."""
        if row.record != len(self.records) + 1:
            raise CyclerCommunicationError(f"{self._where}: data record {row.record} follows {len(self.records)}")
        self._previous = row
        index = self._step_map.index_of(row.step)
        if index is None:
            raise CyclerCommunicationError(f"{self._where}: data record {row.record} is on procedure step {row.step}, "
                                           "which runs no plan step")
        charge = row.step_capacity_ah if row.state == "C" else 0.0
        discharge = row.step_capacity_ah if row.state == "D" else 0.0
        self.records.append(ProgramRecord(row.record, row.test_time_s, row.unix_time_s, row.voltage_v, row.current_a,
                                          charge, discharge, row.cycle + 1, row.step, index))

    def after(self, record_id: int | None) -> list[ProgramRecord]:
        """The records after `record_id` (ids are 1, 2, ... in file order)."""
        return self.records[max(record_id or 0, 0):]
