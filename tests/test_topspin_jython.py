"""End to end under real Jython 2.7: the TopSpin-side script, the automation folder, the driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import nmrglue as ng
import pytest

from drivers.clock import VirtualClock
from drivers.topspin import JobFailed, TopSpinDriver
from drivers.topspin_side import exsylab_automation as script
from hardware_sim.nmr_dataset import acquisition_duration_s
from hardware_sim.topspin_sim import TEMPLATE_NAME, SimulatedTopSpin

JVM_START_LIMIT_S = 60.0
PARAMS = {"NS": 2, "DS": 0, "TD": 512, "TD1": 8, "D1": 0.5, "D8": 0.2, "TE": 323.0, "IN0": 0.0004}


def test_script_under_jython_drives_the_simulated_topspin(tmp_path: Path):
    jython = shutil.which("jython")
    assert jython, "jython not on PATH: .ci/run installs Debian's jython package"
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock, seed=5)
    port = sim.serve_kernel()
    proc = subprocess.Popen(sim.jython_argv(port, jython), env=sim.jython_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        driver = TopSpinDriver(tmp_path / "automation", tmp_path / "data", clock, job_timeout_s=30.0)
        started = time.monotonic()
        while not driver.is_alive():
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
            assert time.monotonic() - started < JVM_START_LIMIT_S, "Jython script did not start serving"
            time.sleep(0.05)
        path = driver.create_dataset("exsy", 1, (TEMPLATE_NAME, 1))
        driver.set_params("exsy", 1, PARAMS)
        assert driver.get_param("exsy", 1, "D8") == "0.2"
        with pytest.raises(JobFailed, match="unknown parameter"):
            driver.get_param("exsy", 1, "NOSUCHPAR")      # TopSpin's error crosses Jython intact
        driver.start_acquisition("exsy", 1)
        assert driver.acquisition_status("exsy", 1).state == "running"
        expected_s = acquisition_duration_s(PARAMS)
        status = driver.wait_acquisition("exsy", 1, expected_s, poll_s=expected_s / 4)
        assert status.state == "done" and status.path == str(path)
        dic, data = ng.bruker.read(str(path))
        assert dic["acqus"]["D"][8] == 0.2 and dic["acqus"]["DTYPA"] == 2
        assert dic["acqus"]["TE"] == pytest.approx(sim.sample_temperature_k(), abs=0.01)  # measured, not 323
        assert float(driver.get_status_param("exsy", 1, "TE")) == pytest.approx(dic["acqus"]["TE"])
        assert driver.get_param("exsy", 1, "TE") == "323.0"   # acqu keeps the requested value
        assert data.shape == (PARAMS["TD1"], PARAMS["TD"] // 2)
        (tmp_path / "automation" / "stop").write_text("")
        assert proc.wait(timeout=30) == 0
        assert not driver.is_alive()      # the last beat says "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.stop()


KILL_PROBE = """
import sys
sys.path.insert(0, %(folder)r)
import exsylab_automation as s
from java.lang import RuntimeException, ThreadDeath
class Api(object):
    def topspin_version(self): return "4.1.4"
    def CURDATA(self): return ["t", "1", "1", %(data)r]
    def now(self): return 0.0
auto = s.Automation(Api(), %(automation)r, %(data)r, heartbeat_s=10.0)
def java_error(args): raise RuntimeException("java says no")
def kill(args): raise ThreadDeath()
auto.op_java_error = java_error
auto.op_kill = kill
result = auto.execute({"id": "1", "op": "java_error"})
assert result["ok"] is False and "java says no" in result["error"], result
try:
    auto.execute({"id": "2", "op": "kill"})
    sys.stdout.write("SWALLOWED\\n")
except ThreadDeath:
    sys.stdout.write("KILL PROPAGATED %%d.%%d\\n" %% sys.version_info[:2])
"""


def test_under_jython_java_errors_become_results_and_a_kill_propagates(tmp_path: Path):
    jython = shutil.which("jython")
    assert jython, "jython not on PATH: .ci/run installs Debian's jython package"
    folder = str(Path(script.__file__).resolve().parent)
    code = KILL_PROBE % {"folder": folder, "automation": str(tmp_path / "a"), "data": str(tmp_path / "d")}
    env = {**os.environ, "JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
    done = subprocess.run([jython, "-B", "-c", code], capture_output=True, text=True, timeout=JVM_START_LIMIT_S * 2,
                          env=env)
    assert "KILL PROPAGATED 2.7" in done.stdout, done.stdout + done.stderr
