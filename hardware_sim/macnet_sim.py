"""A Maccor tester's MacNet server on loopback: the JSON port and the binary port, many channels.

Answers as Maccor's "Remote Control - MacNet" help documents (docs/dialects/maccor-macnet.md):
JSON-RPC 2.0 objects in, compact replies ending in CR LF out; channel numbers 0-based on the
wire; (1, 1) version, (1, 2) system, (1, 3) procedure exists, (3, 1) channel specification,
(4, 1) status of many channels, (4, 6) file names, (4, 7) status of one channel, (6, 2) start,
(6, 3) suspend, (6, 4) resume, (6, 5) reset, (6, 9) set variable, (6, 10) set safety, (6, 11)
check test start; Function Class 0 echoes. JSON-RPC errors use the help's words ("Parse error",
"Invalid FClass", "Illegal value", ...). The binary port carries (1, 6) send file (procedures
only) and (1, 7) get file (data files, archive, procedures) in 500-byte blocks. Each channel
runs its procedure on its own Li2S cell (hardware_sim/macnet_channel.py), advanced lazily to
clock.now() before each answer. Faults: `mute` (read, never answer) and `drop` (close the
connection on the next message).
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import struct
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from drivers.maccor_macnet import wire
from hardware_sim.cell import Li2SCell
from hardware_sim.macnet_channel import (STAT_ACTIVE, STAT_AVAILABLE, STAT_COMPLETED, ProcedureError, SimChannel,
                                         Test, parse_procedure)

log = logging.getLogger(__name__)

SYSTEM_ID = "exsylab-sim"
VERSION = {"APIVersion": 1, "MacTest32EXEversionMajor": 3, "MacTest32EXEversionMinor": 2,
           "MacTest32EXEversionBuild": 18, "MacTest32DLLversionMajor": 3, "MacTest32DLLversionMinor": 2,
           "MacTest32DLLversionBuild": 18, "MacTest32ExeDT": "2016-11-08T15:02:58",
           "MacTest32DLLDT": "2016-11-13T11:29:48"}
"""The (1, 1) reply of the help's example."""
RANGES_A = {"IR4Chg": 5.0, "IR3Chg": 0.15, "IR2Chg": 0.005, "IR1Chg": 0.00015}
"""Current ranges of the (3, 1) example in the help."""
FAULTS = ("mute", "drop")
MAX_STATUS_CHANNELS = 128
DEFAULT_CHANNELS = 64
_SINGLE = struct.Struct("<f")


def _single(value: float) -> float:
    """`value` as the tester stores it (IEEE single precision), as its echo shows."""
    return float(_SINGLE.unpack(_SINGLE.pack(value))[0])


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class _Invalid(Exception):
    """A request the JSON layer refuses; the message is the help's error text."""


class SimulatedMaccor:
    """A MacTest32 with `channels` test channels, its MacNet JSON port and binary port on 127.0.0.1."""

    def __init__(self, clock: Any, *, channels: int = DEFAULT_CHANNELS, cell_factory: Callable[[int], Li2SCell]
                 | None = None, name: str = "") -> None:
        if channels < 1:
            raise ValueError("a tester has at least one channel")
        self.clock = clock
        self.name = name
        make = cell_factory or (lambda index: Li2SCell(seed=index))
        now = clock.now()
        self.channels = [SimChannel(i, make(i), now) for i in range(channels)]
        self.procedures: dict[str, bytes] = {}
        """Procedure folder: name without `.000` -> file content."""
        self.archive: dict[str, bytes] = {}
        """Archive folder: data file name -> content."""
        self.requests: list[tuple[int, int]] = []
        """(FClass, FNum) of every JSON request, in order."""
        self._faults: dict[str, int | None] = {}
        self._lock = threading.RLock()
        self._servers: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._random = itertools.count(1)
        self.json_port = 0
        self.binary_port = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Listen on a JSON port and the binary port 10 below it (Maccor's 57570/57560); returns host:port."""
        for _ in range(50):
            binary = self._listen(0)
            try:
                json_server = self._listen(binary.getsockname()[1] + 10)
            except OSError:
                binary.close()
                continue
            self.binary_port, self.json_port = binary.getsockname()[1], json_server.getsockname()[1]
            self._servers = [json_server, binary]
            threading.Thread(target=self._accept, args=(json_server, self._serve_json), daemon=True,
                             name=f"macnet-json-{self.json_port}").start()
            threading.Thread(target=self._accept, args=(binary, self._serve_binary), daemon=True,
                             name=f"macnet-bin-{self.binary_port}").start()
            return f"127.0.0.1:{self.json_port}"
        raise OSError("no free pair of loopback ports (p, p + 10) for the MacNet simulator")

    @staticmethod
    def _listen(port: int) -> socket.socket:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            server.bind(("127.0.0.1", port))
        except OSError:
            server.close()
            raise
        server.listen(16)
        return server

    def stop(self) -> None:
        """Stop listening and close every connection (idempotent: channels of one tester share it)."""
        servers, self._servers = self._servers, []
        for server in servers:
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._close(conn)

    def __enter__(self) -> "SimulatedMaccor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults -------------------------------------------------------------------------------

    def inject(self, fault: str, count: int | None = None) -> None:
        """The next `count` messages (None: all until cleared) meet `fault` (mute: no answer; drop: connection closed)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._faults[fault] = count

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, fault: str) -> bool:
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

    # --- connections --------------------------------------------------------------------------

    def _accept(self, server: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._guarded, args=(serve, conn), daemon=True).start()

    def _guarded(self, serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()

    def _faulted(self) -> bool | None:
        """None: answer; True: stay silent; False: drop the connection."""
        if not self._faults:
            return None
        if self._take_fault("drop"):
            return False
        if self._take_fault("mute"):
            return True
        return None

    def _serve_json(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                try:
                    end = wire.object_end(buf)
                except ValueError:
                    conn.sendall(self._error_reply(None, -32700, "Parse error"))
                    buf = b""
                    break
                if end is None:
                    break
                text, buf = buf[:end], buf[end:].lstrip()
                fault = self._faulted()
                if fault is False:
                    return
                reply = self.handle_json(text)
                if fault is None:
                    conn.sendall(reply)

    @staticmethod
    def _error_reply(ident: Any, code: int, message: str) -> bytes:
        return wire.encode_json({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": ident}) \
            + wire.TERMINATOR

    # --- JSON ---------------------------------------------------------------------------------

    def handle_json(self, text: bytes) -> bytes:
        """The reply bytes to one JSON message."""
        try:
            message = json.loads(text)
        except ValueError:
            return self._error_reply(None, -32700, "Parse error")
        ident = message.get("id") if isinstance(message, dict) else None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.get("method") != "MacNet" \
                or "id" not in message:
            return self._error_reply(ident, -32600, "Method MacNet, jsonrpc 2.0 or id not found")
        params = message.get("params")
        if not isinstance(params, dict):
            return self._error_reply(ident, -32602, "Invalid params")
        fclass, fnum = params.get("FClass"), params.get("FNum")
        if not isinstance(fclass, int) or isinstance(fclass, bool):
            return self._error_reply(ident, -32602, '"FClass" key does not exist or value syntax error')
        if not isinstance(fnum, int) or isinstance(fnum, bool):
            return self._error_reply(ident, -32602, '"FNum" key does not exist or value syntax error')
        if fclass == 0:  # echo: "the received message will be replied as is"
            return wire.encode_json(message) + wire.TERMINATOR
        with self._lock:
            self.requests.append((fclass, fnum))
            handler = self._HANDLERS.get((fclass, fnum))
            if handler is None:
                known = {c for c, _ in self._HANDLERS}
                return self._error_reply(ident, -32601, "Invalid FNum" if fclass in known else "Invalid FClass")
            self._advance()
            try:
                result = handler(self, params)
            except _Invalid as exc:
                return self._error_reply(ident, -32602, str(exc))
        return wire.encode_json({"jsonrpc": "2.0", "result": {"FClass": fclass, "FNum": fnum, **result},
                                 "id": ident}) + wire.TERMINATOR

    def _advance(self) -> None:
        now = self.clock.now()
        for channel in self.channels:
            channel.advance_to(now)

    def _channel(self, params: dict[str, Any]) -> SimChannel:
        chan = params.get("Chan")
        if isinstance(chan, bool) or not isinstance(chan, int) or not 0 <= chan < len(self.channels):
            raise _Invalid("Illegal value")
        return self.channels[chan]

    @staticmethod
    def _text(params: dict[str, Any], key: str) -> str:
        value = params.get(key)
        if not isinstance(value, str):
            raise _Invalid("Missing object")
        return value.strip()

    def _version(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(VERSION)

    def _general(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"SystemID": SYSTEM_ID, "SystemType": 0, "ControllerBoards": (len(self.channels) + 7) // 8,
                "TestChannels": len(self.channels), "AuxBoards": 0, "AuxChannels": 0, "SMB1Pos": 0, "SMB3Pos": 0}

    def _procedure_exists(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ProcedurExists": "TRUE" if self._text(params, "ProcName") in self.procedures else "FALSE"}

    def _spec(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        s = channel.safety
        return {"Chan": channel.index, "TickSpeed": _single(0.005), "Vmax": 10, "Vmin": 0, "VSafeMax": s.v_max,
                "VSafeMin": s.v_min, **{k: _single(v) for k, v in RANGES_A.items()},
                **{k.replace("Chg", "Dis"): _single(v) for k, v in RANGES_A.items()},
                "ISafeChg": s.i_charge, "ISafeDis": s.i_discharge, "PBatSafeChg": s.p_charge,
                "PBatSafeDis": s.p_discharge, "PChanSafeChg": 0, "PChanSafeDis": 0, "PSVChg": 0, "PSVDis": 0}

    def _statuses(self, params: dict[str, Any]) -> dict[str, Any]:
        first = self._channel(params).index
        count = params.get("Len")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_STATUS_CHANNELS:
            raise _Invalid("Illegal value")
        chosen = self.channels[first:first + count]
        return {"Chan": first, "Len": len(chosen),
                "Status": [{"RF1": c.rf1, "RF2": c.rf2, "Stat": c.stat} for c in chosen]}

    def _names(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        test = channel.test
        return {"Chan": channel.index, "TestName": test.name if test else "", "Comment": test.comment if test else "",
                "ProcName": test.procedure if test else "", "ProcDesc": ""}

    def _status(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        test = channel.test
        return {"Chan": channel.index, "RF1": channel.rf1, "RF2": channel.rf2, "Stat": channel.stat,
                "LastRecNum": len(test.rows) if test else 0, "Cycle": test.cycle if test else 0,
                "Step": test.step_no if test else 0, "TestTime": _single(test.test_time_s) if test else 0,
                "StepTime": _single(test.step_time_s) if test else 0,
                "Capacity": _single(test.step_ah) if test else 0, "Energy": _single(test.step_wh) if test else 0,
                "Current": _single(channel.current_a()), "Voltage": _single(channel.voltage_v()),
                "TesterTime": _iso(self.clock.now())}

    def _name_taken(self, name: str, channel: SimChannel) -> bool:
        data_name = f"{name}.{channel.number:03d}"
        return data_name in self.archive or any(c.test is not None and c.test.name == name for c in self.channels)

    def _start_problem(self, params: dict[str, Any], channel: SimChannel) -> tuple[str, list | None]:
        """(problem text or "", compiled steps): the checks (6, 11) and (6, 2) make."""
        name, proc = self._text(params, "TestName"), self._text(params, "ProcName")
        if channel.stat not in (STAT_AVAILABLE, 1):
            return "Channel not available or selected", None
        if proc not in self.procedures:
            return "Procedure does not exist", None
        if name != "Random" and self._name_taken(name, channel):
            return "File name exists in Archive", None
        try:
            return "", parse_procedure(self.procedures[proc])
        except ProcedureError as exc:
            return f"Compile error: {exc}", None

    def _check_start(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        problem, _ = self._start_problem(params, channel)
        return {"Chan": channel.index, "Result": problem or "OK"}

    def _start(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        problem, steps = self._start_problem(params, channel)
        words = {"Channel not available or selected": "Channel in use",
                 "Procedure does not exist": "No test procedure was selected, please select a test procedure",
                 "File name exists in Archive": "Name is not a unique filename."}
        if problem or steps is None:
            return {"Chan": channel.index, "Result": words.get(problem, "Invalid entry.")}
        name = self._text(params, "TestName")
        if name == "Random":
            name = f"Random-{next(self._random):06d}"
        comment = params.get("Comment") if isinstance(params.get("Comment"), str) else ""
        channel.start(Test(name, self._text(params, "ProcName"), str(comment), steps, self.clock.now()))
        return {"Chan": channel.index, "Result": "OK"}

    def _suspend(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        return {"Chan": channel.index, "Result": "OK" if channel.suspend() else "Channel not Active"}

    def _resume(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        return {"Chan": channel.index, "Result": "OK" if channel.resume() else "Channel not Suspended"}

    def _reset(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        test = channel.reset()
        if test is not None:
            self.archive[f"{test.name}.{channel.number:03d}"] = test.data_file()
        return {"Chan": channel.index, "Result": "OK"}

    def _set_variable(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        number, value = params.get("VarNum"), params.get("Value")
        if not isinstance(number, int) or not 1 <= number <= 15 or not isinstance(value, (int, float)):
            raise _Invalid("Illegal value")
        channel.variables[number - 1] = _single(value)
        return {"Chan": channel.index, "Result": "OK"}

    def _set_safety(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        keys = ("VSafeMax", "VSafeMin", "ISafeChg", "ISafeDis", "PBatSafeChg", "PBatSafeDis")
        values = [params.get(k) for k in keys]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise _Invalid("Illegal value")
        s = channel.safety
        s.v_max, s.v_min, s.i_charge, s.i_discharge, s.p_charge, s.p_discharge = (_single(v) for v in values)  # type: ignore[arg-type]
        return {"Chan": channel.index, **dict(zip(keys, (s.v_max, s.v_min, s.i_charge, s.i_discharge, s.p_charge,
                                                          s.p_discharge)))}

    _HANDLERS: dict[tuple[int, int], Callable[["SimulatedMaccor", dict[str, Any]], dict[str, Any]]] = {
        (1, 1): _version, (1, 2): _general, (1, 3): _procedure_exists, (3, 1): _spec, (4, 1): _statuses,
        (4, 6): _names, (4, 7): _status, (6, 2): _start, (6, 3): _suspend, (6, 4): _resume, (6, 5): _reset,
        (6, 9): _set_variable, (6, 10): _set_safety, (6, 11): _check_start,
    }

    # --- binary -------------------------------------------------------------------------------

    def _serve_binary(self, conn: socket.socket) -> None:
        buf = b""
        upload: dict[str, Any] | None = None
        download: dict[str, Any] | None = None
        size = wire.HEADER.size
        while True:
            while len(buf) < size or len(buf) < size + wire.HEADER.unpack(buf[:size])[3]:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            fclass, fnum, chan, length = wire.HEADER.unpack(buf[:size])
            data, buf = buf[size:size + length], buf[size + length:]
            fault = self._faulted()
            if fault is False:
                return
            reply: bytes | None
            if (fclass, fnum) == (1, 6):
                reply, upload = self._receive_file(data, upload)
            elif (fclass, fnum) == (1, 7):
                reply, download = self._send_file(data, download)
            elif (fclass, fnum) == (6, 8):  # binary set direct output: direct mode is not simulated
                reply = wire.binary_message(6, 8, chan, struct.pack("<H", 4))  # 4: Direct mode is not active
            else:
                log.info("macnet-sim: binary (%d, %d) not simulated; no answer", fclass, fnum)
                reply = None
            if reply is not None and fault is None:
                conn.sendall(reply)

    @staticmethod
    def _file_reply(fnum: int, file_type: int, opcode: int, word: int, payload: bytes = b"") -> bytes:
        return wire.binary_message(1, fnum, 0, wire.FILE_HEADER.pack(file_type, opcode, word) + payload)

    def _file_error(self, fnum: int, file_type: int, code: int, text: str) -> bytes:
        return self._file_reply(fnum, file_type, wire.OP_ERROR, code, text.encode("ascii") + b"\0")

    def _receive_file(self, data: bytes, upload: dict[str, Any] | None) -> tuple[bytes, dict[str, Any] | None]:
        """(1, 6) send file to tester: WRQ, then DATA blocks, each acknowledged; a short block ends it."""
        if len(data) < wire.FILE_HEADER.size:
            return self._file_error(6, 0, 4, "Illegal operation"), None
        file_type, opcode, word = wire.FILE_HEADER.unpack(data[:wire.FILE_HEADER.size])
        payload = data[wire.FILE_HEADER.size:]
        if opcode == wire.OP_WRQ:
            name = payload[:word].decode("ascii", errors="replace")
            if file_type != wire.FILE_PROCEDURE or not name.upper().endswith(".000"):
                return self._file_error(6, file_type, 2, f"Cannot create {name}: only procedures are simulated"), None
            return self._file_reply(6, file_type, wire.OP_ACK, 0), {"name": name[:-4], "parts": [], "next": 1}
        if opcode == wire.OP_DATA and upload is not None and word == upload["next"]:
            upload["parts"].append(payload)
            upload["next"] = (word + 1) & 0xFFFF
            reply = self._file_reply(6, file_type, wire.OP_ACK, word)
            if len(payload) < wire.BLOCK_BYTES:
                with self._lock:
                    self.procedures[upload["name"]] = b"".join(upload["parts"])
                return reply, None
            return reply, upload
        return self._file_error(6, file_type, 4, "Illegal operation"), None

    def _file_content(self, file_type: int, name: str) -> bytes | None:
        with self._lock:
            self._advance()
            if file_type == wire.FILE_PROCEDURE:
                return self.procedures.get(name[:-4]) if name.upper().endswith(".000") else None
            if file_type == wire.FILE_ARCHIVE:
                return self.archive.get(name)
            if file_type == wire.FILE_ACTIVE:
                for channel in self.channels:
                    test = channel.test
                    if test is not None and f"{test.name}.{channel.number:03d}" == name:
                        return test.data_file()
        return None

    def _send_file(self, data: bytes, download: dict[str, Any] | None) -> tuple[bytes | None, dict[str, Any] | None]:
        """(1, 7) get file from tester: RRQ answered by block 1; each ACK brings the next block."""
        if len(data) < wire.FILE_HEADER.size:
            return self._file_error(7, 0, 4, "Illegal operation"), None
        file_type, opcode, word = wire.FILE_HEADER.unpack(data[:wire.FILE_HEADER.size])
        if opcode == wire.OP_RRQ:
            name = data[wire.FILE_HEADER.size:wire.FILE_HEADER.size + word].decode("ascii", errors="replace")
            content = self._file_content(file_type, name)
            if content is None:
                return self._file_error(7, file_type, 1, f"File not found: {name}"), None
            download = {"content": content, "type": file_type, "block": 1}
            return self._file_reply(7, file_type, wire.OP_DATA, 1, content[:wire.BLOCK_BYTES]), download
        if opcode == wire.OP_ACK and download is not None and word == download["block"] & 0xFFFF:
            start = download["block"] * wire.BLOCK_BYTES
            if start > len(download["content"]):
                return None, None  # the ACK of the last (short) block: the transfer is complete
            download["block"] += 1
            block = download["content"][start:start + wire.BLOCK_BYTES]
            return self._file_reply(7, download["type"], wire.OP_DATA, download["block"] & 0xFFFF, block), download
        return self._file_error(7, file_type, 4, "Illegal operation"), None


def _cell_for(cell: dict | None, seed: int) -> Li2SCell:
    size = cell or {}
    return Li2SCell(active_mass_g=size.get("active_mass_g") or 1.5e-3, area_cm2=size.get("area_cm2") or 0.785,
                    seed=seed)


def simulate_for_station(entry: dict, clock: Any, *, seed: int = 0, cell: dict | None = None,
                         peers: dict | None = None, **_context: object) -> tuple[SimulatedMaccor, str]:
    """The registry's way in: the simulated tester of `entry`'s sim:// resource (shared by its channels).

    Every station entry with the same sim:// resource is a channel of one simulated tester; the
    entry's channel gets a Li2S cell sized as its protocol's cell.
    """
    settings = entry.get("settings") or {}
    channel = settings.get("channel")
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 1:
        raise ValueError(f"setting channel must be the tester's channel number (1, 2, ...), got {channel!r}")
    resource = str(entry.get("resource", "sim://maccor"))
    sim = next((p for p in (peers or {}).values() if isinstance(p, SimulatedMaccor) and p.name == resource), None)
    if sim is None:
        sim = SimulatedMaccor(clock, channels=max(DEFAULT_CHANNELS, channel), name=resource)
        sim.start()
    if channel > len(sim.channels):
        raise ValueError(f"channel {channel} exceeds the simulated tester's {len(sim.channels)} channels")
    sim.channels[channel - 1].cell = _cell_for(cell, seed + channel)
    return sim, f"127.0.0.1:{sim.json_port}"
