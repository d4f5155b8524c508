"""Preflight before anything moves: a station that cannot be used is refused in one line, exit 2, no run folder.

Each refusal runs the real `exsylab run` in a subprocess against instruments on real wires (a
pty, a loopback socket, a folder), so the exit code, stderr and the file system are what a user
sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

CYCLING = """\
kind: cycling
name: one-charge
cell: {name: cellA, channel: ch1, active_mass: 1.5 mg, area: 0.785 cm2}
sample_interval: 60 s
steps:
  - charge: {current: 0.1 mA, until: {time: 10 min, voltage: 2.3 V}}
limits: {voltage_min: 0.5 V, voltage_max: 3.5 V, current_max: 1 mA}
"""


def _exsylab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acquisition.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _station(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def _cycling(tmp_path: Path) -> Path:
    path = tmp_path / "cycling.yaml"
    path.write_text(CYCLING)
    return path


def _assert_refused(result: subprocess.CompletedProcess[str], station: Path, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(station) in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_a_missing_vt_port_is_refused_and_no_run_folder_is_made(tmp_path: Path) -> None:
    station = _station(tmp_path, f"""\
        kind: station
        name: bench with a missing port
        spectrometer: {{automation_dir: "sim://automation", data_dir: data}}
        vt:
          port: {tmp_path}/ttyUSB-not-there
          limits: {{min: 173 K, max: 423 K, max_ramp: 5 K/min}}
        """)
    run_dir = tmp_path / "run"
    result = _exsylab("run", str(EXAMPLES / "vt-exsy-short.yaml"), "--station", str(station), "--run-dir", str(run_dir))
    _assert_refused(result, station, "vt.port", "ttyUSB-not-there")
    assert not run_dir.exists() and not list(tmp_path.glob(".run*"))


def test_a_topspin_side_that_is_not_running_is_refused(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()  # the folder exists, but no script beats in it
    station = _station(tmp_path, f"""\
        kind: station
        name: bench without TopSpin
        spectrometer: {{automation_dir: {tmp_path}/automation, data_dir: {tmp_path}/data, heartbeat_timeout: 2 s}}
        vt:
          port: sim://vt
          limits: {{min: 173 K, max: 423 K, max_ramp: 5 K/min}}
        """)
    run_dir = tmp_path / "run"
    result = _exsylab("run", str(EXAMPLES / "vt-exsy-short.yaml"), "--station", str(station), "--run-dir", str(run_dir))
    _assert_refused(result, station, "spectrometer.automation_dir")
    assert not run_dir.exists()


def test_a_simulated_station_with_a_real_address_is_refused(tmp_path: Path) -> None:
    station = _station(tmp_path, """\
        kind: station
        name: not really simulated
        simulated: true
        cyclers:
          ch1: {resource: "TCPIP::192.0.2.10::5025::SOCKET", voltage_min: 0 V, voltage_max: 5 V, current_max: 10 mA}
        """)
    result = _exsylab("plan", str(_cycling(tmp_path)), "--station", str(station))
    _assert_refused(result, station, "simulated", "TCPIP::192.0.2.10::5025::SOCKET", "sim://")


def test_an_unknown_driver_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    station = _station(tmp_path, """\
        kind: station
        name: unknown cycler
        cyclers:
          ch1: {driver: acme9000, resource: "sim://ch1", voltage_min: 0 V, voltage_max: 5 V, current_max: 10 mA}
        """)
    result = _exsylab("run", str(_cycling(tmp_path)), "--station", str(station), "--run-dir", str(tmp_path / "run"))
    _assert_refused(result, station, "cyclers.ch1.driver", "acme9000", "keithley2450")
    assert not (tmp_path / "run").exists()


def test_a_cycling_only_plan_does_not_open_the_vt(tmp_path: Path) -> None:
    station = _station(tmp_path, f"""\
        kind: station
        name: cycler bench whose VT is unplugged
        vt:
          port: {tmp_path}/ttyUSB-unplugged
          limits: {{min: 173 K, max: 423 K, max_ramp: 5 K/min}}
        cyclers:
          ch1: {{resource: "sim://ch1", voltage_min: 0 V, voltage_max: 5 V, current_max: 10 mA}}
        """)
    run_dir = tmp_path / "run"
    result = _exsylab("run", str(_cycling(tmp_path)), "--station", str(station), "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr
    from acquisition.bdf import find_cell_bdf

    assert find_cell_bdf(run_dir / "cycler", "cellA") is not None


def test_a_second_run_on_a_held_instrument_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """Another process holds the cycler's address; our run is refused before it opens anything."""
    from hardware_sim.cell import Li2SCell
    from hardware_sim.smu_sim import SimulatedKeithley2450
    from drivers.clock import RealClock

    lock_dir = tmp_path / "locks"
    with SimulatedKeithley2450(RealClock(), Li2SCell()) as sim:
        resource = f"TCPIP::127.0.0.1::{sim.port}::SOCKET"
        station = _station(tmp_path, f"""\
            kind: station
            name: shared cycler
            lock_dir: {lock_dir}
            cyclers:
              ch1: {{resource: "{resource}", voltage_min: 0 V, voltage_max: 5 V, current_max: 10 mA}}
            """)
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""\
                import sys
                from pathlib import Path
                from acquisition.instrument_locks import hold_instruments
                locks = hold_instruments([{resource!r}], "friday's series", lock_dir=Path({str(lock_dir)!r}))
                print("held", flush=True)
                sys.stdin.read()
                locks.release()
                """)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            result = _exsylab("run", str(_cycling(tmp_path)), "--station", str(station), "--run-dir",
                              str(tmp_path / "run"))
            _assert_refused(result, station, "cyclers.ch1.resource", "friday's series")
            assert not (tmp_path / "run").exists()
            selftest = _exsylab("selftest", "--station", str(station))
            assert selftest.returncode == 2 and "friday's series" in selftest.stderr
        finally:
            holder.communicate("", timeout=30)
        assert sim.commands_received == [] or all("OUTP ON" not in c for c in sim.commands_received)


@pytest.mark.parametrize("field", ["spectrometer", "vt"])
def test_a_built_in_station_runs_in_virtual_time_only_when_every_address_is_sim(field: str) -> None:
    from acquisition.station_runtime import make_clock, roles_of
    from drivers.clock import RealClock, VirtualClock
    from protocols.station import simulated_station

    station = simulated_station()
    roles = roles_of(station, ["nmr"])
    assert isinstance(make_clock(station, roles, virtual_start_s=0.0), VirtualClock)
    if field == "vt":
        station.vt.port = "/dev/ttyUSB0"  # type: ignore[union-attr]
    else:
        station.spectrometer.automation_dir = "/opt/topspin/automation"  # type: ignore[union-attr]
    assert isinstance(make_clock(station, roles_of(station, ["nmr"]), virtual_start_s=0.0), RealClock)


@pytest.mark.parametrize("misconfigured, words", [
    ({"units": "C"}, ("vt.port", "Celsius")),
    ({"output_mode": 0}, ("vt.port", "OUTMODE")),
])
def test_a_lake_shore_set_up_wrongly_is_refused_before_anything_moves(tmp_path: Path, misconfigured: dict,
                                                                     words: tuple[str, ...]) -> None:
    """A controller in Celsius would take SETP 1,313 as 313 degC; one with its output off would not heat."""
    from drivers.clock import RealClock
    from hardware_sim.vt_sim import SimulatedLakeShore336

    with SimulatedLakeShore336(RealClock(), **misconfigured) as sim:
        station = _station(tmp_path, f"""\
            kind: station
            name: bench with a Lake Shore set up by hand
            lock_dir: {tmp_path}/locks
            spectrometer: {{automation_dir: "sim://automation", data_dir: data}}
            vt:
              port: {sim.link_path}
              limits: {{min: 173 K, max: 423 K, max_ramp: 5 K/min}}
            """)
        run_dir = tmp_path / "run"
        result = _exsylab("run", str(EXAMPLES / "vt-exsy-short.yaml"), "--station", str(station),
                          "--run-dir", str(run_dir))
        _assert_refused(result, station, *words)
        assert not run_dir.exists()
        assert not any(c.startswith(("SETP ", "RANGE ")) for c in sim.commands), sim.commands


def test_a_keithley_in_tsp_mode_is_refused_saying_how_to_switch(tmp_path: Path) -> None:
    """In TSP mode every SCPI command times out: the refusal comes at preflight, in one line, before any current."""
    from drivers.clock import RealClock
    from hardware_sim.cell import Li2SCell
    from hardware_sim.smu_sim import SimulatedKeithley2450

    with SimulatedKeithley2450(RealClock(), Li2SCell(), language="TSP") as sim:
        station = _station(tmp_path, f"""\
            kind: station
            name: bench with a 2450 left in TSP
            lock_dir: {tmp_path}/locks
            cyclers:
              ch1: {{resource: "TCPIP::127.0.0.1::{sim.port}::SOCKET", voltage_min: 0 V, voltage_max: 5 V,
                    current_max: 10 mA}}
            """)
        run_dir = tmp_path / "run"
        result = _exsylab("run", str(_cycling(tmp_path)), "--station", str(station), "--run-dir", str(run_dir))
        _assert_refused(result, station, "cyclers.ch1.resource", "TSP", "SCPI")
        assert not run_dir.exists()
        assert not sim.output_on


def test_an_unknown_keithley_setting_is_refused(tmp_path: Path) -> None:
    station = _station(tmp_path, """\
        kind: station
        name: typo in a driver setting
        cyclers:
          ch1: {resource: "sim://ch1", voltage_min: 0 V, voltage_max: 5 V, current_max: 10 mA, snese: 2-wire}
        """)
    result = _exsylab("run", str(_cycling(tmp_path)), "--station", str(station), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "snese" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
