"""HIL: the bench of `hil_station` (real with --station, else `exsylab sim` in its own process).

Plain pyserial and pyvisa clients speaking the documented commands, the preflight selftest, and
a short VT-EXSY series through the real runner over the real wires.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import pyvisa
import serial

from acquisition import cli
from acquisition.selftest import selftest
from protocols.loader import load_station

pytestmark = pytest.mark.hardware

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_plain_pyserial_client_gets_lake_shore_answers(hil_station: Path) -> None:
    station = load_station(hil_station)
    with serial.serial_for_url(station.vt.port, baudrate=station.vt.baudrate, bytesize=serial.SEVENBITS,
                               parity=serial.PARITY_ODD, stopbits=serial.STOPBITS_ONE, timeout=2) as port:
        port.write(b"*IDN?\r\n")
        identity = port.read_until(b"\r\n").decode("ascii").strip()
        time.sleep(0.06)  # the manual's message flow control: 50 ms quiet after a reply
        port.write(f"KRDG? {station.vt.sensor_input}\r\n".encode())
        reading = float(port.read_until(b"\r\n").decode("ascii"))
    assert identity.startswith("LSCI,MODEL33")
    assert station.vt.limits.min_k <= reading <= station.vt.limits.max_k


def test_plain_pyvisa_client_gets_keithley_answers(hil_station: Path) -> None:
    station = load_station(hil_station)
    rm = pyvisa.ResourceManager("@py")
    for cycler in (c for c in station.cyclers.values() if c.driver == "keithley2450"):
        inst = rm.open_resource(cycler.resource, read_termination="\n", write_termination="\n", timeout=2000)
        try:
            assert "MODEL 2450" in inst.query("*IDN?")
            assert inst.query(":OUTP?").strip() == "0"
            voltage_v = float(inst.query(':READ? "defbuffer1", READ'))
            assert math.isfinite(voltage_v) and cycler.voltage_min_v <= voltage_v <= cycler.voltage_max_v
            assert inst.query(":SYST:ERR?").startswith("0,")
        finally:
            inst.close()
    rm.close()


def test_selftest_passes_and_changes_nothing(hil_station: Path, capsys: pytest.CaptureFixture[str]) -> None:
    station = load_station(hil_station)
    data_before = sorted(p.name for p in station.spectrometer.data_dir.iterdir())
    assert cli.main(["selftest", "--station", str(hil_station)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "scratch dataset" in out and "open-circuit voltage" in out
    assert sorted(p.name for p in station.spectrometer.data_dir.iterdir()) == data_before
    again = selftest(station)
    assert all(c.ok for c in again), [c for c in again if not c.ok]


@pytest.mark.hazardous
def test_short_series_runs_on_the_bench(hil_station: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = cli.main(["run", str(REPO_ROOT / "examples" / "vt-exsy-short.yaml"), "--station", str(hil_station),
                     "--run-dir", str(run_dir), "--quiet"])
    assert code == 0
    datasets = json.loads((run_dir / "datasets.json").read_text())
    assert len(datasets) == 4 and all(d["status"] == "done" for d in datasets)
    assert all((Path(d["path"]) / "ser").stat().st_size > 0 for d in datasets)
