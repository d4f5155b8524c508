"""Security pass: loopback-only listeners, no escape from the data folder, safe YAML,
notifications only from the station file, and the webhook token kept out of every file a run writes."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from acquisition import api
from drivers.clock import VirtualClock
from drivers.topspin import InvalidDataset, TopSpinDriver
from hardware_sim.smu_sim import SimulatedKeithley2450
from hardware_sim.topspin_sim import SimulatedTopSpin
from hardware_sim.vt_sim import SimulatedLakeShore336
from protocols import InputError, load_plan
from protocols.loader import load_protocol
from test_fault_matrix import CYCLING, EXSY, run_with_fault

LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc/net/tcp* write them


def own_listeners() -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the TCP sockets this process is listening on."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.islink(f"/proc/self/fd/{fd}") else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                found.append(local)
    return found


def test_running_the_simulated_station_listens_on_loopback_only(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    out = run_with_fault(tmp_path, [EXSY, CYCLING], lambda rt, runner: seen.append(own_listeners()),
                         at=lambda s: s.kind == "acquire_2d")
    assert out.result.status == "done"
    assert seen and seen[0], "the cycler simulator should be listening during the run"
    assert all(address.split(":")[0] in LOOPBACK for address in seen[0]), seen[0]


def test_simulators_bind_loopback_only() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="loopback"):
        SimulatedKeithley2450(clock, host="0.0.0.0")
    with SimulatedLakeShore336(clock, tcp_port=0) as vt, SimulatedKeithley2450(clock) as smu:
        assert vt.tcp_url.startswith("socket://127.0.0.1:")
        listening = own_listeners()
        ports = {int(a.split(":")[1], 16) for a in listening}
        assert smu.port in ports and int(vt.tcp_url.rsplit(":", 1)[1]) in ports
        assert all(a.split(":")[0] in LOOPBACK for a in listening)


def test_topspin_kernel_binds_loopback_only(tmp_path: Path) -> None:
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", VirtualClock())
    port = sim.serve_kernel()
    try:
        with pytest.raises(OSError):
            socket.create_connection((_non_loopback_address(), port), timeout=0.5).close()
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    finally:
        sim.stop()


def _non_loopback_address() -> str:
    """An address of this host that is not loopback (the one used to reach the outside), else skip."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        address = probe.getsockname()[0]
    except OSError:
        address = ""
    finally:
        probe.close()
    if not address or address.startswith("127."):
        pytest.fail("this host has no non-loopback address to test the kernel's binding with")
    return address


@pytest.mark.parametrize("name", ["../escape", "/etc", "a/b", "..", "~root"])
def test_protocol_dataset_names_cannot_escape(tmp_path: Path, name: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(EXSY.replace("dataset: fm_exsy", f"dataset: {json.dumps(name)}"))
    with pytest.raises(InputError, match="dataset"):
        load_plan([path], None)


def test_symlinked_dataset_pointing_outside_is_refused(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (data / "evil").symlink_to(outside)
    (data / "ok").mkdir()
    (data / "ok" / "7").symlink_to(outside)
    clock = VirtualClock()
    driver = TopSpinDriver(tmp_path / "automation", data, clock)
    with pytest.raises(InvalidDataset, match="outside the data folder"):
        driver.expno_dir("evil", 1)
    with pytest.raises(InvalidDataset, match="outside the data folder"):
        driver.create_dataset("ok", 7)
    with SimulatedTopSpin(tmp_path / "automation", data, clock) as sim:
        with pytest.raises(Exception, match="outside the data directory"):
            sim.open_dataset(data / "evil" / "1")
    assert list(outside.iterdir()) == []


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "p.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(InputError):
        load_protocol(path)
    assert not marker.exists()


@pytest.mark.parametrize("extra", ["notifications: {command: [sh, -c, 'echo x']}",
                                   "webhook_url: https://evil.example/hook", "command: [sh]"])
@pytest.mark.parametrize("text", [EXSY, CYCLING])
def test_protocols_cannot_carry_notifications(tmp_path: Path, text: str, extra: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text + extra + "\n")
    with pytest.raises(InputError):
        load_protocol(path)


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers.get("Authorization", ""), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_webhook_token_never_written_and_restored_on_resume(tmp_path: Path) -> None:
    token = "s3cr3t-T0KEN-9f8e7d"
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    try:
        station = tmp_path / "station.yaml"
        text = (Path(__file__).resolve().parents[1] / "examples" / "station-sim.yaml").read_text()
        station.write_text(text + f"notifications:\n  webhook_url: http://127.0.0.1:{server.server_port}/hook\n"
                                  f"  webhook_token: {token}\n")
        protocol = tmp_path / "p.yaml"
        protocol.write_text(EXSY)
        run_dir = tmp_path / "run"
        folder, result = api.start_run([protocol], station, run_dir, show_progress=False)
        assert result.status == "done"
        assert _Hook.received and all(auth == f"Bearer {token}" for auth, _ in _Hook.received)
        leaked = [p for p in run_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        assert leaked == []
        # resume (nothing left to do) still knows the token: it comes from the original station file
        _Hook.received.clear()
        _, again = api.resume_run(run_dir, show_progress=False)
        assert again.status == "done"
        assert _Hook.received and _Hook.received[-1][0] == f"Bearer {token}"
        assert [p for p in run_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()] == []
    finally:
        server.shutdown()
        server.server_close()
