"""TopSpin behaviours as documented (docs/dialects/topspin.md), each pinned against the simulator or the script."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import nmrglue as ng
import pytest

from drivers import topspin
from drivers.clock import VirtualClock
from drivers.errors import InstrumentConfigurationError, InstrumentUnreachable
from drivers.topspin import (JobFailed, RealTimeIO, SpectrometerConfigurationError, TopSpinDriver,
                             TopSpinNotRunning)
from drivers.topspin_side import exsylab_automation as script
from hardware_sim.nmr_dataset import acquisition_duration_s
from hardware_sim.topspin_sim import TEMPLATE_NAME, SimulatedTopSpin

TEMPLATE = (TEMPLATE_NAME, 1)
PARAMS = {"NS": 1, "DS": 0, "TD": 256, "TD1": 4, "D1": 0.2, "D8": 0.01, "IN0": 0.0004}
DURATION_S = acquisition_duration_s(PARAMS)


@pytest.fixture
def bench(tmp_path: Path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock, seed=1)
    sim.start()
    yield sim, TopSpinDriver(tmp_path / "a", tmp_path / "d", clock, job_timeout_s=10.0), clock
    sim.stop()


def acquire(driver: TopSpinDriver, expno: int = 1, **extra: object) -> Path:
    path = driver.create_dataset("exsy", expno, TEMPLATE)
    driver.set_params("exsy", expno, {**PARAMS, **extra})
    driver.start_acquisition("exsy", expno)
    driver.wait_acquisition("exsy", expno, DURATION_S, poll_s=DURATION_S)
    return path


class ManualRealTime(RealTimeIO):
    """Host real time that moves only when slept through (deterministic liveness tests)."""

    def __init__(self, on_sleep=None) -> None:
        self.now = 1000.0
        self.on_sleep = on_sleep

    def now_s(self) -> float:
        return self.now

    def sleep_s(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


# ---- GETPAR (acqu) vs GETPARSTAT (acqus): teget and masg measure ---------------------------------
def test_teget_reads_the_status_te_not_the_te_that_was_putpar(bench):
    sim, driver, clock = bench
    driver.create_dataset("exsy", 1, TEMPLATE)
    driver.set_params("exsy", 1, {"TE": 333.0, "MASR": 12500})
    assert driver.get_param("exsy", 1, "TE") == "333.0"            # GETPAR: what was written
    assert driver.teget() == pytest.approx(sim.sample_temperature_k(), abs=0.01) != 333.0
    assert driver.read_mas_rate_hz() == pytest.approx(10_000.0)     # masg: measured, not the 12500 set
    path = acquire(driver, expno=2, TE=333.0)
    assert float(driver.get_status_param("exsy", 2, "TE")) == pytest.approx(sim.sample_temperature_k(), abs=0.01)
    assert driver.get_param("exsy", 2, "TE") == "333.0"
    assert ng.bruker.read_jcamp(str(path / "acqus"))["TE"] != 333.0
    assert not (driver.data_dir / "exsy" / "1" / "ser").exists()    # teget never wrote into a user dataset


# ---- datasets: parameters only, title file, F1 FnMODE --------------------------------------------
def test_template_holds_a_test_acquisition_and_a_new_dataset_gets_parameters_only(bench):
    sim, driver, clock = bench
    template = driver.expno_dir(*TEMPLATE)
    assert (template / "ser").stat().st_size > 0                     # as a template set up by hand
    path = driver.create_dataset("exsy", 1, TEMPLATE)
    assert (path / "acqu").is_file() and (path / "acqus").is_file()
    assert not any((path / name).exists() for name in ("ser", "fid", "audita.txt", "pulseprogram"))
    assert driver.get_param("exsy", 1, "TD") == driver.get_param(*TEMPLATE, "TD")


def test_wrpa_copies_raw_data_too_and_asks_before_overwriting(bench):
    sim, driver, clock = bench
    sim.api.RE([TEMPLATE_NAME, "1", "1", str(driver.data_dir)])
    sim.api.XCMD(f"wrpa copy 5 1 {driver.data_dir}", 1)
    assert (driver.data_dir / "copy" / "5" / "ser").stat().st_size > 0   # why exsylab does not use it
    with pytest.raises(Exception, match="asks before overwriting"):
        sim.api.XCMD(f"wrpa copy 5 1 {driver.data_dir}", 1)


def test_title_lives_in_pdata_title_not_in_a_parameter(bench):
    sim, driver, clock = bench
    path = acquire(driver, TITLE="EXSY 313 K\ntmix 10 ms")
    assert (path / "pdata" / "1" / "title").read_text() == "EXSY 313 K\ntmix 10 ms\n"
    with pytest.raises(JobFailed, match="unknown parameter"):
        driver.get_param("exsy", 1, "TITLE")


def test_f1_quadrature_mode_goes_to_acqu2_and_f2_fnmode_stays_0(bench):
    sim, driver, clock = bench
    path = acquire(driver, **{"1 FnMODE": 5})
    assert ng.bruker.read_jcamp(str(path / "acqu2s"))["FnMODE"] == 5
    assert ng.bruker.read_jcamp(str(path / "acqus"))["FnMODE"] == 0
    assert driver.get_param("exsy", 1, "1 FnMODE") == "5" and driver.get_param("exsy", 1, "FnMODE") == "0"


def test_topspin_spelled_names_reach_topspin(bench):
    sim, driver, clock = bench
    driver.create_dataset("exsy", 1, TEMPLATE)
    driver.set_params("exsy", 1, {"D 8": 0.125, "1 TD": 6, "PLdB 1": -3.5})
    assert driver.get_param("exsy", 1, "D8") == "0.125"
    assert driver.get_param("exsy", 1, "TD1") == "6"
    with pytest.raises(topspin.InvalidParameter):
        driver.set_params("exsy", 1, {"D 8; rm": 1})


# ---- data types: completion from zg's result, whatever the type ----------------------------------
@pytest.mark.parametrize("dtypa", [2, 0])
def test_float64_by_default_int32_on_request_and_both_complete(tmp_path, dtypa):
    clock = VirtualClock()
    with SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock, dtypa=dtypa) as sim:
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock)
        path = acquire(driver)
        dic, data = ng.bruker.read(str(path))
        assert dic["acqus"]["DTYPA"] == dtypa and data.shape == (4, 128)
        assert sim.topspin_version == ("4.1.4" if dtypa == 2 else "3.6.2")


# ---- XCMD result: a failed zg is reported there ---------------------------------------------------
@pytest.mark.parametrize("mode", ["result", "exception"])
def test_failed_zg_is_a_failed_acquisition_with_topspins_message(tmp_path, mode):
    clock = VirtualClock()
    with SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock, zg_failure=mode) as sim:
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock)
        driver.create_dataset("exsy", 1, TEMPLATE)
        driver.set_params("exsy", 1, PARAMS)
        driver.start_acquisition("exsy", 1)
        clock.advance(DURATION_S / 2)
        sim.inject("acq_error")
        with pytest.raises(JobFailed, match="receiver overflow"):
            driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=1.0)


def test_negative_xcmd_result_without_exception_counts_as_failed(tmp_path):
    automation = tmp_path / "a"
    auto = script.Automation(_StubApi(), str(automation), str(tmp_path / "d"), heartbeat_s=10.0)
    dataset = ["exsy", "1", "1", str(tmp_path / "d")]
    result_path, _ = auto.acq_paths(dataset)
    Path(result_path).write_text("-3\nlock failed: no lock signal")
    state = auto.op_status({"name": "exsy", "expno": 1})
    assert state["state"] == "failed" and "lock failed" in state["message"] and "-3" in state["message"]
    Path(result_path).write_text("None\n")
    assert auto.op_status({"name": "exsy", "expno": 1})["state"] == "done"


class _StubApi:
    """The smallest TopSpin API for driving Automation directly."""

    def RE(self, dataset):
        pass

    def CURDATA(self):
        return ["exsylab_template", "1", "1", "/nonexistent"]

    def topspin_version(self):
        return "4.1.4"

    def now(self):
        return 0.0

    def should_stop(self):
        return True


# ---- kill: ThreadDeath is never swallowed ----------------------------------------------------------
def test_a_kill_propagates_out_of_a_job(tmp_path, monkeypatch):
    class ThreadDeath(Exception):
        """Stands in for java.lang.ThreadDeath under CPython (the Jython test uses the real one)."""

    monkeypatch.setattr(script, "KILL_ERRORS", (ThreadDeath,))
    auto = script.Automation(_StubApi(), str(tmp_path / "a"), str(tmp_path / "d"), heartbeat_s=10.0)

    def killed(args):
        raise ThreadDeath()

    auto.op_killed = killed
    with pytest.raises(ThreadDeath):
        auto.execute({"id": "1", "op": "killed"})
    auto.op_broken = lambda args: 1 / 0
    assert auto.execute({"id": "2", "op": "broken"})["ok"] is False   # ordinary errors become results


# ---- versions: refuse an old Jython, report TopSpin's and Jython's --------------------------------
def test_too_old_jython_is_refused_in_the_heartbeat_and_by_preflight(tmp_path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock)
    script.main(["--automation", str(tmp_path / "a"), "--data", str(tmp_path / "d"), "--announce", "no"],
                api=sim.api, version_info=(2, 5, 2, "final", 0))
    beat = json.loads((tmp_path / "a" / "heartbeat.json").read_text())
    assert "2.5.2" in beat["refused"] and "TopSpin >= 3.5" in beat["refused"]
    driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock, heartbeat_timeout_s=0.3)
    with pytest.raises(SpectrometerConfigurationError) as refused:
        driver.preflight()
    message = str(refused.value)
    assert isinstance(refused.value, InstrumentConfigurationError) and "\n" not in message
    assert str(tmp_path / "a") in message and "2.5.2" in message


def test_preflight_reports_versions_and_checks_templates(bench):
    sim, driver, clock = bench
    summary = driver.preflight([(*TEMPLATE, "exsy")])
    assert "TopSpin 4.1.4" in summary and "Jython 3." in summary and f"{TEMPLATE_NAME}/1" in summary
    with pytest.raises(SpectrometerConfigurationError, match="no acqu file") as missing:
        driver.preflight([("noesy_template", 7, "exsy")])
    assert "\n" not in str(missing.value) and str(driver.automation_dir) in str(missing.value)


def test_preflight_without_a_topspin_side_is_unreachable_in_one_line(tmp_path):
    driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", VirtualClock(), heartbeat_timeout_s=0.2)
    with pytest.raises(TopSpinNotRunning) as absent:
        driver.preflight()
    assert isinstance(absent.value, InstrumentUnreachable)
    assert "\n" not in str(absent.value) and str(tmp_path / "a") in str(absent.value)


# ---- liveness: heartbeat changes on the host's own time, never compared clocks ---------------------
def test_skewed_spectrometer_clock_does_not_matter(tmp_path):
    host_clock = VirtualClock(start=1_790_000_000.0)
    spectrometer_clock = VirtualClock(start=1_790_000_000.0 - 7 * 3600.0)   # 7 h behind the host
    with SimulatedTopSpin(tmp_path / "a", tmp_path / "d", spectrometer_clock):
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", host_clock, heartbeat_timeout_s=1.0)
        assert driver.is_alive()
        assert driver.ping() == pytest.approx(host_clock.now() - 7 * 3600.0)
        host_clock.advance(12 * 3600.0)                                        # and the host's jumps ahead
        assert driver.is_alive() and driver.get_param(*TEMPLATE, "NS")


def test_liveness_follows_heartbeat_changes_not_its_timestamps(tmp_path):
    automation = tmp_path / "a"
    automation.mkdir()
    beat = automation / "heartbeat.json"
    seq = [0]

    def write(stamp: float) -> None:
        seq[0] += 1
        beat.write_text(json.dumps({"seq": seq[0], "time": stamp, "stopped": False,
                                    "topspin_version": "4.1.4", "python_version": "2.7.3"}))

    write(0.0)                                 # a timestamp from 1970: irrelevant
    real = ManualRealTime(on_sleep=lambda: write(-1e9))   # the side beats while the host waits
    driver = TopSpinDriver(automation, tmp_path / "d", VirtualClock(), heartbeat_timeout_s=5.0,
                           real_time=real)
    assert driver.is_alive()
    real.on_sleep = None                       # the side freezes; its last timestamp stays "fresh" forever
    write(time.time() + 1e6)
    assert driver.is_alive()                   # its last beat, with a timestamp far in the future
    real.sleep_s(4.0)
    assert driver.is_alive()                   # changed 4 s ago (< 5 s)
    real.sleep_s(2.0)
    assert not driver.is_alive()               # no change for 6 s of the host's time


def test_heartbeat_keeps_beating_while_a_job_runs(tmp_path):
    clock = VirtualClock()

    def slow_sensor() -> float:
        time.sleep(1.0)                        # a teget that takes 1 s of real time
        return 301.5

    with SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock, temperature_source=slow_sensor):
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock, heartbeat_timeout_s=0.4)
        assert driver.is_alive()
        before = driver.heartbeat_seq()
        assert driver.teget() == pytest.approx(301.5)   # no TopSpinNotRunning: beats continued
        assert driver.heartbeat_seq() > before + 5


def test_folder_polling_goes_through_the_injected_real_time_at_about_50_ms(bench):
    sim, driver, clock = bench
    naps: list[float] = []

    class Counting(RealTimeIO):
        def sleep_s(self, seconds: float) -> None:
            naps.append(seconds)
            super().sleep_s(seconds)

    counted = TopSpinDriver(driver.automation_dir, driver.data_dir, clock, real_time=Counting())
    assert counted.poll_interval_real_s == 0.05
    counted.ping()
    assert naps and max(naps) <= 0.05
    tree = ast.parse(Path(topspin.__file__).read_text())
    direct = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name) and node.value.id == "time"
              and node.attr in ("sleep", "time", "monotonic")]
    real_time_lines = range(*_class_span(tree, "RealTimeIO"))
    assert direct and all(line in real_time_lines for line in direct)


def _class_span(tree: ast.Module, name: str) -> tuple[int, int]:
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return node.lineno, node.end_lineno + 1  # type: ignore[operator]


def test_a_zg_left_by_an_earlier_script_run_without_a_result_is_failed_not_running(tmp_path):
    first = script.Automation(_StubApi(), str(tmp_path / "a"), str(tmp_path / "d"), heartbeat_s=10.0)
    dataset = ["exsy", "1", "1", str(tmp_path / "d")]
    _, taken = first.acq_paths(dataset)
    Path(taken).write_text(first.session)
    assert first.op_status({"name": "exsy", "expno": 1})["state"] == "running"
    again = script.Automation(_StubApi(), str(tmp_path / "a"), str(tmp_path / "d"), heartbeat_s=10.0)
    state = again.op_status({"name": "exsy", "expno": 1})
    assert state["state"] == "failed" and "earlier run" in state["message"]
