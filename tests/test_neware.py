"""The neware-bts dialect: aurora-neware against the BTS simulator, the step file, the program-cycler lane.

Everything goes over real loopback TCP. In-process runs use `sim://` (virtual time); the kill -9
test runs `exsylab sim` in its own process so the simulated cycler outlives the killed runner.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from acquisition import cli
from acquisition.api import start_run
from acquisition.bdf import read_bdf
from acquisition.program_cycler_lane import job_label, program_of
from acquisition.selftest import selftest
from common.bdf_columns import CHARGE_AH, CURRENT, DISCHARGE_AH, STEP_INDEX, VOLTAGE
from drivers.clock import RealClock, VirtualClock
from drivers.neware_step_file import counter_map, step_file_xml
from hardware_sim.bts_sim import BtsServer, parse_step_file
from protocols import load_plan
from protocols.loader import parse_station
from protocols.plan import CyclerStep

aurora = pytest.importorskip("aurora_neware")

ROOT = Path(__file__).resolve().parents[1]
FIXED_CAPACITY = ROOT / "examples" / "cycling-fixed-capacity.yaml"
CAPACITY_REL = 1e-3
VOLTAGE_END_V = 5e-3


def _bdf(cycler_dir: Path, cell: str) -> Path:
    """The cell's one BDF file (named INSTITUTION__CELL__DATE_NNN.bdf.csv)."""
    (path,) = cycler_dir.glob(f"*__{cell}__*.bdf.csv")
    return path


def neware_station(path: Path, channels: dict[str, tuple[str, tuple[int, int, int]]], *, poll: str = "1 s",
                   extra: dict | None = None) -> Path:
    """A station file of neware-bts channels: name -> (resource, (device, sub-device, channel))."""
    station = {"kind": "station", "name": "neware test station", **(extra or {}), "cyclers": {
        name: {"driver": "neware-bts", "resource": resource, "device_id": key[0], "subdevice_id": key[1],
               "channel_id": key[2], "voltage_min": "0 V", "voltage_max": "5 V", "current_max": "10 mA",
               "poll_interval": poll}
        for name, (resource, key) in channels.items()}}
    path.write_text(yaml.safe_dump(station))
    return path


def short_protocol(path: Path, *, cell: str = "cellA", channel: str = "nw1", loops: int = 3, extra_limits: str = "") -> Path:
    path.write_text(f"""kind: cycling
name: short-{cell}
cell: {{name: {cell}, channel: {channel}, active_mass: 1.5 mg, area: 0.785 cm2, theoretical_capacity: 1166 mAh/g,
        active_material: Li2S}}
sample_interval: 60 s
steps:
  - fixed_capacity_schedule:
      capacities: [200 mAh/g, 300 mAh/g]
      charge: {{current_density: 0.132 mA/cm2}}
      discharge: {{current_density: 0.132 mA/cm2}}
      discharge_to: 0.8 V
      charge_cutoff: 2.3 V
  - loop:
      count: {loops}
      steps:
        - charge: {{current_density: 0.132 mA/cm2, until: {{specific_capacity: 300 mAh/g, voltage: 2.3 V}}}}
        - discharge: {{current_density: 0.132 mA/cm2, until: {{voltage: 0.8 V}}}}
limits: {{voltage_min: 0.5 V, voltage_max: 3.5 V, current_max: 1 mA, capacity_max: 1000 mAh/g{extra_limits}}}
""")
    return path


def _fixed_capacity_on(tmp_path: Path, channel: str = "ch1") -> tuple[list[CyclerStep], Path]:
    station = neware_station(tmp_path / "station.yaml", {channel: ("sim://bts", (21, 1, 1))}, poll="600 s")
    plan, _ = load_plan([FIXED_CAPACITY], station)
    return [s for s in plan.steps if isinstance(s, CyclerStep)], station


# --- the public client against the simulator ------------------------------------------------------


def test_aurora_neware_client_drives_the_simulator_unchanged(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_790_000_000.0)
    server = BtsServer(clock)
    server.add_devices({21: {1: 8, 2: 8}})
    port = int(server.start().rsplit(":", 1)[1])
    steps, _ = _fixed_capacity_on(tmp_path)
    step_file = tmp_path / "job.xml"
    step_file.write_text(step_file_xml(program_of(steps, "aurora-job")))
    try:
        with aurora.NewareAPI(port=port) as nw:
            assert len(nw.channel_map) == 16 and nw.channel_map["21-2-8"]["devtype"] == 27
            assert {v["workstatus"] for v in nw.inquire().values()} == {"finish"}
            assert nw.start("21-1-1", "aurora-job", str(step_file), str(tmp_path)) == [
                {"ip": "127.0.0.1", "devtype": 27, "devid": 21, "subdevid": 1, "chlid": 1, "start": "ok"}]
            clock.advance(2 * 3600.0)
            status = nw.inquire("21-1-1")["21-1-1"]
            assert status["workstatus"] == "working" and status["step_type"] == "cc" and status["step_id"] == 1
            assert status["barcode"] == "aurora-job" and status["current"] > 0
            assert nw.getchlstatus("21-1-1")["21-1-1"]["status"] == "working"
            with pytest.raises(ValueError, match="Can only start jobs"):  # the client's own check, on our answer
                nw.start("21-1-1", "again", str(step_file), str(tmp_path))
            count = nw.inquiredf("21-1-1")["21-1-1"]["count"]
            data = nw.download("21-1-1", 0)
            assert data["seqid"] == list(range(1, count + 1)) and count == 2 * 60 + 1
            assert set(data["stepid"]) == {1} and all(c > 0 for c in data["curr"])
            assert data["testtime"][1] - data["testtime"][0] == pytest.approx(60_000.0)  # ms, as the real BTS
            assert nw.stop("21-1-1")[0]["stop"] == "ok"
            assert nw.inquire("21-1-1")["21-1-1"]["workstatus"] == "stop"
            assert nw.stop("21-1-1")[0]["stop"] == "false"  # nothing left to stop, as on a real BTS
    finally:
        server.stop()


# --- the step file ------------------------------------------------------------------------------


def test_fixed_capacity_protocol_compiles_to_a_short_step_file_with_a_loop(tmp_path: Path) -> None:
    steps, _ = _fixed_capacity_on(tmp_path)
    program = program_of(steps, "job")
    loaded = parse_step_file(step_file_xml(program))
    loops = [s for s in loaded.steps if s.step_type == 5]
    assert len(loaded.steps) < 20 and loops and max(s.loop_count for s in loops) >= 50
    first = loaded.steps[0]
    mass_g = 1.5e-3
    assert first.step_type == 1 and first.end_capacity_ah == pytest.approx(200 * mass_g * 1e-3)  # 200 mAh/g as mAs
    assert first.current_a == pytest.approx(0.132e-3 * 0.785)  # 0.132 mA/cm2 on 0.785 cm2
    assert loaded.voltage_upper_v == pytest.approx(3.5) and loaded.capacity_upper_ah == pytest.approx(1000 * mass_g * 1e-3)
    mapping = counter_map(program)
    assert sorted(mapping.values()) == [s.index for s in steps]  # every plan step has its own vendor counters


def test_plan_refuses_what_a_neware_step_file_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    station = neware_station(tmp_path / "station.yaml", {"nw1": ("sim://bts", (21, 1, 1))})
    protocol = short_protocol(tmp_path / "p.yaml", extra_limits=", temperature_max: 330 K")
    assert cli.main(["plan", str(protocol), "--station", str(station)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neware-bts" in err and "temperature" in err and "Traceback" not in err


# --- runs on simulated channels ---------------------------------------------------------------------


def test_fixed_capacity_protocol_on_a_simulated_neware_channel_ends_every_step_on_capacity_or_voltage(
        tmp_path: Path) -> None:
    steps, station = _fixed_capacity_on(tmp_path)
    folder, result = start_run([FIXED_CAPACITY], station, tmp_path / "run", show_progress=False)
    assert result.status == "done", result.lanes
    db = sqlite3.connect(folder.journal)
    outcomes = {idx: json.loads(o) for idx, o in db.execute("SELECT idx, outcome FROM steps")}
    for step in steps:
        outcome = outcomes[step.index]
        assert outcome["ended_by"] in ("capacity", "voltage"), (step.label, outcome)
        if outcome["ended_by"] == "capacity":
            assert abs(outcome["capacity_ah"] - step.end_capacity_ah) <= CAPACITY_REL * step.end_capacity_ah
        else:
            assert abs(outcome["final_voltage_v"] - step.end_voltage_v) <= VOLTAGE_END_V
    transitions = db.execute("SELECT COUNT(*) FROM events WHERE status = 'vendor_step'").fetchone()[0]
    assert transitions == len(steps)  # the first record, then one per step change
    columns = read_bdf(_bdf(folder.cycler, "Li2S-LiI-LPSC-cell1"))
    assert sum(o["samples"] for o in outcomes.values()) == len(columns[VOLTAGE])
    assert all(columns[CHARGE_AH][1:] >= columns[CHARGE_AH][:-1]) and all(columns[DISCHARGE_AH][1:] >= columns[DISCHARGE_AH][:-1])


def test_selftest_reports_each_channel_and_starts_nothing(tmp_path: Path) -> None:
    station = parse_station(yaml.safe_load(neware_station(tmp_path / "s.yaml", {
        "nw1": ("sim://bts", (21, 1, 1)), "nw2": ("sim://bts", (21, 2, 3))}).read_text()), tmp_path / "s.yaml")
    rows = selftest(station, clock=VirtualClock(), workdir=tmp_path)
    states = {r.instrument: r.detail for r in rows if r.check == "channel state"}
    assert set(states) == {"cycler nw1", "cycler nw2"} and all(r.ok for r in rows)
    assert all(d.startswith("state finished, last voltage ") and "job" not in d for d in states.values())
    preflight = {r.instrument: r.detail for r in rows if r.check == "open and preflight"}
    assert "channel 21-2-3" in preflight["cycler nw2"]


def _accelerated(server_speed: float) -> tuple[RealClock, dict]:
    clock = RealClock(speed=server_speed, epoch_unix_s=time.time())
    return clock, {"clock_speed": server_speed, "clock_epoch_unix_s": clock.epoch_unix_s}


def test_a_channel_in_protection_fails_that_lane_only(tmp_path: Path) -> None:
    clock, shared = _accelerated(20_000.0)
    server = BtsServer(clock)
    server.add_devices({21: {1: 2}})
    resource = server.start()
    station = neware_station(tmp_path / "station.yaml", {"nw1": (resource, (21, 1, 1)), "nw2": (resource, (21, 1, 2))},
                             poll="30 s", extra={**shared, "lock_dir": str(tmp_path / "locks")})
    protocols = [short_protocol(tmp_path / "a.yaml", cell="cellA", channel="nw1"),
                 short_protocol(tmp_path / "b.yaml", cell="cellB", channel="nw2")]
    fault = __import__("threading").Timer(0.5, server.inject_protection, args=((21, 1, 2), "cell contact lost"))
    fault.start()
    try:
        folder, result = start_run(protocols, station, tmp_path / "run", show_progress=False)
    finally:
        fault.cancel()
        server.stop()
    lanes = {name: lane.status for name, lane in result.lanes.items()}
    assert lanes == {"cycler:nw1": "done", "cycler:nw2": "failed"}, result.lanes
    assert "protection" in result.lanes["cycler:nw2"].message
    assert server.channels[(21, 1, 1)].workstatus == "finish" and server.channels[(21, 1, 2)].workstatus == "protect"
    assert len(read_bdf(_bdf(folder.cycler, "cellB"))[VOLTAGE]) == len(server.channels[(21, 1, 2)].records)


# --- kill -9, then resume ---------------------------------------------------------------------------------


def _start_sim(tmp_path: Path, speed: float) -> tuple[subprocess.Popen, Path]:
    station = tmp_path / "bench.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "sim", "--station-out", str(station),
                             "--speed", f"{speed:g}", "--workdir", str(tmp_path / "bench")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not station.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "exsylab sim did not start"
        time.sleep(0.05)
    return proc, station


def _run_and_kill(tmp_path: Path, bench_station: Path, loops: int) -> tuple[dict, Path]:
    """Run a short protocol on the bench's nw1 and kill -9 the runner after its 4th journal transaction."""
    station = yaml.safe_load(bench_station.read_text())
    station["cyclers"]["nw1"]["poll_interval"] = "20 s"
    station["lock_dir"] = str(tmp_path / "locks")
    station_file = tmp_path / "station.yaml"
    station_file.write_text(yaml.safe_dump(station))
    protocol = short_protocol(tmp_path / "p.yaml", loops=loops)
    run_dir = tmp_path / "run"
    env = {**os.environ, "EXSYLAB_TEST_HOOK": json.dumps({"after_transitions": 4})}
    killed = subprocess.run([sys.executable, str(ROOT / "tests" / "hooked_exsylab.py"), "run", str(protocol),
                             "--station", str(station_file), "--run-dir", str(run_dir)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return station, run_dir


def test_kill_9_during_a_neware_job_then_resume_reattaches_and_writes_every_record_once(tmp_path: Path) -> None:
    sim, bench_station = _start_sim(tmp_path, speed=20_000.0)
    try:
        station, run_dir = _run_and_kill(tmp_path, bench_station, loops=4)
        rows_at_kill = len(read_bdf(_bdf(run_dir / "cycler", "cellA"))[VOLTAGE])
        time.sleep(1.0)  # the cell cycles on for ~5 simulated hours while nobody watches
        resumed = subprocess.run([sys.executable, "-m", "acquisition.cli", "resume", str(run_dir)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        columns = read_bdf(_bdf(run_dir / "cycler", "cellA"))
        nw = aurora.NewareAPI(port=int(station["cyclers"]["nw1"]["resource"].rsplit(":", 1)[1]))
        with nw:
            counts = nw.inquiredf("21-1-1")["21-1-1"]
            status = nw.inquire("21-1-1")["21-1-1"]
            data = nw.download("21-1-1", 0)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
    assert counts["testid"] == 1  # one job ever started on the channel: resume did not restart the program
    assert status["workstatus"] == "finish" and status["barcode"] == job_label(run_dir, "cellA")
    assert len(columns[VOLTAGE]) == counts["count"] > rows_at_kill  # every record of the job, each once
    assert list(columns[VOLTAGE]) == data["volt"] and list(columns[CURRENT]) == data["curr"]
    db = sqlite3.connect(run_dir / "journal.sqlite")
    events = [row[0] for row in db.execute("SELECT status FROM events")]
    assert events.count("program_started") == 1 and events.count("reattached") == 1
    assert [s for (s,) in db.execute("SELECT DISTINCT status FROM steps")] == ["done"]
    assert sorted(set(columns[STEP_INDEX])) == list(range(12))


def test_exsylab_stop_stops_the_vendor_job(tmp_path: Path) -> None:
    clock, shared = _accelerated(20_000.0)
    server = BtsServer(clock)
    server.add_devices({21: {1: 1}})
    resource = server.start()
    station = neware_station(tmp_path / "station.yaml", {"nw1": (resource, (21, 1, 1))}, poll="30 s",
                             extra={**shared, "lock_dir": str(tmp_path / "locks")})
    run_dir = tmp_path / "run"
    channel = server.channels[(21, 1, 1)]

    def stop_once_cycling() -> None:  # waits for the job itself, not for a guessed real time
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (channel.starts and len(channel.records) > 20):
            time.sleep(0.01)
        cli.main(["stop", str(run_dir)])

    stopper = __import__("threading").Thread(target=stop_once_cycling, daemon=True)
    stopper.start()
    try:
        _, result = start_run([short_protocol(tmp_path / "p.yaml")], station, run_dir, show_progress=False)
    finally:
        server.stop()
    assert result.status == "stopped"
    assert channel.workstatus == "stop" and channel.barcode == job_label(run_dir, "cellA") and channel.starts == 1
    assert len(read_bdf(_bdf(run_dir / "cycler", "cellA"))[VOLTAGE]) == len(channel.records)  # the stop's record too


def test_exsylab_stop_after_kill_9_stops_the_job_the_dead_runner_left(tmp_path: Path) -> None:
    sim, bench_station = _start_sim(tmp_path, speed=2_000.0)
    try:
        station, run_dir = _run_and_kill(tmp_path, bench_station, loops=20)
        stop = [sys.executable, "-m", "acquisition.cli", "stop", str(run_dir)]
        first = subprocess.run(stop, cwd=ROOT, capture_output=True, text=True, timeout=120)
        again = subprocess.run(stop, cwd=ROOT, capture_output=True, text=True, timeout=120)
        with aurora.NewareAPI(port=int(station["cyclers"]["nw1"]["resource"].rsplit(":", 1)[1])) as nw:
            status = nw.inquire("21-1-1")["21-1-1"]
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
    assert first.returncode == 0 and f"nw1: stopped job {job_label(run_dir, 'cellA')}" in first.stdout, first.stderr
    assert again.returncode == 0 and "nothing stopped" in again.stdout
    assert status["workstatus"] == "stop" and status["barcode"] == job_label(run_dir, "cellA")
