"""TopSpinDriver against SimulatedTopSpin through a real automation folder (virtual time)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import nmrglue as ng
import numpy as np
import pytest

from drivers.clock import VirtualClock
from drivers.topspin import (AcquisitionOverdue, ExpnoCollision, InvalidDataset, InvalidParameter, JobFailed,
                             SpectrometerError, SpinningFailure, TopSpinDriver, TopSpinNotRunning)
from hardware_sim.nmr_dataset import acquisition_duration_s, padded_points
from hardware_sim.topspin_params import DEFAULT_EXSY_PARAMS
from hardware_sim.topspin_sim import TEMPLATE_NAME, SimulatedTopSpin

TEMPLATE = (TEMPLATE_NAME, 1)
PARAMS: dict[str, Any] = {"NS": 2, "DS": 0, "TD": 512, "TD1": 8, "D1": 0.5, "D8": 0.05, "TE": 313.0, "IN0": 0.0004,
          "TITLE": "driver test"}
DURATION_S = acquisition_duration_s(PARAMS)
COMPLETE_SER_BYTES = PARAMS["TD1"] * padded_points(PARAMS["TD"], 8) * 8   # float64 (DTYPA 2) by default


@pytest.fixture
def bench(tmp_path: Path):
    """A simulated TopSpin serving tmp_path/automation, and a driver on the same folders."""
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock, seed=3)
    sim.start()
    driver = TopSpinDriver(tmp_path / "automation", tmp_path / "data", clock, heartbeat_timeout_s=30.0,
                           job_timeout_s=10.0)
    yield sim, driver, clock
    sim.stop()


def prepare(driver: TopSpinDriver, expno: int = 1, **overrides: object) -> Path:
    path = driver.create_dataset("exsy", expno, TEMPLATE)
    driver.set_params("exsy", expno, {**PARAMS, **overrides})
    return path


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_create_set_acquire_and_read_back_with_nmrglue(bench):
    sim, driver, clock = bench
    path = prepare(driver, D8=0.25, TE=333.0, NS=4)
    assert driver.get_param("exsy", 1, "D8") == "0.25"
    assert float(driver.get_param("exsy", 1, "TE")) == 333.0
    expected_s = acquisition_duration_s({**PARAMS, "D8": 0.25, "NS": 4})
    driver.start_acquisition("exsy", 1)
    status = driver.wait_acquisition("exsy", 1, expected_s, poll_s=expected_s / 4)
    assert status.state == "done" and status.path == str(path)
    dic, data = ng.bruker.read(str(path))
    assert dic["acqus"]["D"][8] == pytest.approx(0.25)
    assert dic["acqus"]["TE"] == pytest.approx(293.0, abs=0.5)   # status TE: measured (BVT at rest), not 333
    assert ng.bruker.read_jcamp(str(path / "acqu"))["TE"] == pytest.approx(333.0)              # current TE: what was requested
    assert (path / "pdata" / "1" / "title").read_text() == "driver test\n"
    assert dic["acqus"]["DTYPA"] == 2 and data.dtype == np.complex128
    assert dic["acqus"]["NS"] == 4
    assert dic["acqus"]["TD"] == PARAMS["TD"] and dic["acqu2s"]["TD"] == PARAMS["TD1"]
    assert data.shape == (PARAMS["TD1"], PARAMS["TD"] // 2)
    assert (path / "ser").stat().st_size == COMPLETE_SER_BYTES


def test_acquisition_takes_its_pulse_sequence_time_on_the_clock(bench):
    sim, driver, clock = bench
    path = prepare(driver)
    driver.start_acquisition("exsy", 1)
    clock.advance(DURATION_S - 1.0)
    assert driver.acquisition_status("exsy", 1).state == "running"
    assert (path / "ser").stat().st_size == 0   # created at zg start, filled at the end
    clock.advance(1.5)
    assert driver.acquisition_status("exsy", 1).state == "done"


def test_sample_temperature_comes_from_the_temperature_source(tmp_path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock, temperature_source=lambda: 351.5)
    sim.start()
    try:
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock)
        path = prepare(driver)
        driver.start_acquisition("exsy", 1)
        driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=DURATION_S)
        dic, _ = ng.bruker.read(str(path))
        assert dic["acqus"]["TEG"] == pytest.approx(351.5)   # measured sample temperature
        assert dic["acqus"]["TE"] == pytest.approx(351.5)    # status TE: measured, not the 313 K requested
        assert ng.bruker.read_jcamp(str(path / "acqu"))["TE"] == pytest.approx(313.0)     # acqu: the TE that was PUTPAR (the target)
        assert driver.get_status_param("exsy", 1, "TE") == "351.5"
    finally:
        sim.stop()


def test_teset_teget_follow_the_bvt_model(bench):
    sim, driver, clock = bench
    driver.teset(330.0)
    clock.advance(5.0)
    early = driver.teget()
    clock.advance(3600.0)
    assert 293.0 < early < 330.0
    assert driver.teget() == pytest.approx(330.0, abs=0.01)
    with pytest.raises(JobFailed, match="outside the BVT range"):
        driver.teset(900.0)


def test_collision_is_refused_before_anything_is_written(bench):
    sim, driver, clock = bench
    path = prepare(driver)
    driver.start_acquisition("exsy", 1)
    driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=DURATION_S)
    before = digest(path)
    jobs_before = sorted((driver.automation_dir / "jobs").iterdir())
    with pytest.raises(ExpnoCollision, match="already holds data"):
        driver.create_dataset("exsy", 1, TEMPLATE)
    with pytest.raises(ExpnoCollision):
        driver.set_params("exsy", 1, {"D8": 1.0})
    with pytest.raises(ExpnoCollision):
        driver.start_acquisition("exsy", 1)
    assert digest(path) == before
    assert sorted((driver.automation_dir / "jobs").iterdir()) == jobs_before == []
    assert driver.next_free_expno("exsy") == 2


def test_topspin_side_also_refuses_to_overwrite(bench):
    sim, driver, clock = bench
    prepare(driver)
    driver.start_acquisition("exsy", 1)
    with pytest.raises(JobFailed, match="already running"):
        driver._job("start", name="exsy", expno=1)  # bypassing the host check on purpose
    driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=DURATION_S)
    with pytest.raises(JobFailed, match="already holds data"):
        driver._job("start", name="exsy", expno=1)


def test_next_free_expno_skips_every_existing_folder(bench):
    sim, driver, clock = bench
    prepare(driver, expno=1)
    prepare(driver, expno=2)          # parameters only, no data: still never handed out
    assert driver.next_free_expno("exsy") == 3
    assert driver.next_free_expno("exsy", start=7) == 7
    assert driver.next_free_expno("new_name") == 1


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", "a\\b", "..", "", "~root", " padded"])
def test_unsafe_dataset_names_are_refused_without_a_job(bench, name):
    sim, driver, clock = bench
    with pytest.raises(InvalidDataset):
        driver.create_dataset(name, 1, TEMPLATE)
    with pytest.raises(InvalidDataset):
        driver.expno_dir(name, 1)
    assert list((driver.automation_dir / "jobs").iterdir()) == []


@pytest.mark.parametrize("expno", [0, -1, 100_000, True, 1.5])
def test_out_of_range_expnos_are_refused(bench, expno):
    sim, driver, clock = bench
    with pytest.raises(InvalidDataset):
        driver.expno_dir("exsy", expno)


def test_dead_topspin_side_is_noticed_within_the_heartbeat_timeout(tmp_path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock)
    sim.start()
    try:
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock, heartbeat_timeout_s=0.5, job_timeout_s=5.0)
        assert driver.is_alive()
        sim.inject("dead")
        clock.advance(3600.0)             # virtual time does not count: the heartbeat is judged on real time
        assert driver.is_alive()          # it changed less than 0.5 s ago
        time.sleep(0.7)                   # real time (I/O): no change for longer than the timeout
        assert not driver.is_alive()
        with pytest.raises(TopSpinNotRunning, match="heartbeat"):
            driver.get_param(TEMPLATE_NAME, 1, "NS")
        assert list((driver.automation_dir / "jobs").iterdir()) == []
        sim.clear_faults()
        assert driver.get_param(TEMPLATE_NAME, 1, "NS") == str(DEFAULT_EXSY_PARAMS["NS"])
    finally:
        sim.stop()


def test_silent_topspin_side_is_noticed_in_real_time_and_the_job_withdrawn(tmp_path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock)
    sim.start()
    try:
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock, heartbeat_timeout_s=0.4, job_timeout_s=5.0)
        assert driver.is_alive()
        sim.inject("dead")
        time.sleep(0.05)              # let the script leave its loop (real time, I/O)
        with pytest.raises(TopSpinNotRunning, match="withdrawn"):
            driver.get_param(TEMPLATE_NAME, 1, "NS")
        assert list((tmp_path / "a" / "jobs").iterdir()) == []
    finally:
        sim.stop()


def test_dead_side_during_an_acquisition_stops_the_wait(tmp_path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock)
    sim.start()
    try:
        driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock, heartbeat_timeout_s=0.5, job_timeout_s=5.0)
        prepare(driver, D1=20.0)
        expected_s = acquisition_duration_s({**PARAMS, "D1": 20.0})
        driver.start_acquisition("exsy", 1)
        with pytest.raises(TopSpinNotRunning, match="heartbeat"):
            driver.wait_acquisition("exsy", 1, expected_s, poll_s=expected_s, on_poll=lambda: sim.inject("dead"))
    finally:
        sim.stop()


def test_acquisition_error_raises_job_failed_with_topspins_message(bench):
    sim, driver, clock = bench
    path = prepare(driver)
    driver.start_acquisition("exsy", 1)
    clock.advance(DURATION_S / 2)
    sim.inject("acq_error")
    with pytest.raises(JobFailed, match="receiver overflow"):
        driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=1.0)
    assert 0 < (path / "ser").stat().st_size < COMPLETE_SER_BYTES   # partial rows kept
    status = driver.acquisition_status("exsy", 1)
    assert status.state == "failed" and "receiver overflow" in status.message


def test_spinning_failure_raises_spinning_failure(bench):
    sim, driver, clock = bench
    assert driver.read_mas_rate_hz() == pytest.approx(10_000.0)
    prepare(driver)
    driver.start_acquisition("exsy", 1)
    clock.advance(DURATION_S / 3)
    sim.inject("spinning_failure")
    with pytest.raises(SpinningFailure, match="MAS rate"):
        driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=1.0)
    assert driver.read_mas_rate_hz() == 0.0
    prepare(driver, expno=2)
    driver.start_acquisition("exsy", 2)   # zg refuses at once: TopSpin reports it in zg's result, not as an error
    with pytest.raises(SpinningFailure, match="spinning failure"):
        driver.wait_acquisition("exsy", 2, DURATION_S, poll_s=1.0)


def test_disk_full_gives_a_clear_error_and_writes_nothing(bench):
    sim, driver, clock = bench
    prepare(driver)   # (the script copies the parameter files itself: a full disk there is an OSError job failure)
    sim.inject("disk_full")
    with pytest.raises(JobFailed, match="disk full"):
        driver.set_params("exsy", 1, {"NS": 8})
    assert driver.get_param("exsy", 1, "NS") == "2"


def test_overdue_acquisition_is_detected(bench):
    sim, driver, clock = bench
    prepare(driver)
    driver.start_acquisition("exsy", 1)
    start = clock.now()
    too_short_s = DURATION_S / 4
    with pytest.raises(AcquisitionOverdue, match="still running"):
        driver.wait_acquisition("exsy", 1, too_short_s, overdue_factor=1.5, poll_s=1.0)
    assert 1.5 * too_short_s < clock.now() - start < 1.5 * too_short_s + 2.0


def test_on_poll_is_called_between_polls(bench):
    sim, driver, clock = bench
    prepare(driver)
    driver.start_acquisition("exsy", 1)
    times: list[float] = []
    driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=DURATION_S / 10, on_poll=lambda: times.append(clock.now()))
    assert len(times) >= 9
    assert all(b > a for a, b in zip(times, times[1:]))


def test_on_poll_exception_propagates(bench):
    sim, driver, clock = bench
    prepare(driver)
    driver.start_acquisition("exsy", 1)

    def excursion() -> None:
        raise RuntimeError("VT excursion")

    with pytest.raises(RuntimeError, match="VT excursion"):
        driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=1.0, on_poll=excursion)


def test_stop_acquisition_keeps_a_partial_dataset(bench):
    sim, driver, clock = bench
    path = prepare(driver)
    driver.start_acquisition("exsy", 1)
    clock.advance(DURATION_S / 2)
    driver.stop_acquisition()
    status = driver.acquisition_status("exsy", 1)
    assert status.state == "failed" and "halted" in status.message
    assert 0 < (path / "ser").stat().st_size < COMPLETE_SER_BYTES


def test_unknown_parameter_is_topspins_error(bench):
    sim, driver, clock = bench
    prepare(driver)
    with pytest.raises(JobFailed, match="unknown parameter"):
        driver.get_param("exsy", 1, "NOSUCHPAR")
    with pytest.raises(InvalidParameter, match="refused parameter name"):
        driver.set_params("exsy", 1, {"D8; rm": 1})
    with pytest.raises(InvalidParameter):
        driver.get_param("exsy", 1, "../NS")


def test_delete_dataset_only_removes_what_the_driver_created(bench):
    sim, driver, clock = bench
    path = prepare(driver)
    with pytest.raises(SpectrometerError, match="not created by this driver"):
        driver.delete_dataset(TEMPLATE_NAME, 1)
    driver.delete_dataset("exsy", 1)
    assert not path.exists()
    assert (driver.data_dir / TEMPLATE_NAME / "1" / "acqus").exists()


def test_channel_leaves_no_files_behind(bench):
    sim, driver, clock = bench
    assert driver.ping() == clock.now()
    prepare(driver)
    for _ in range(5):
        driver.get_param("exsy", 1, "NS")
    leftovers = list((driver.automation_dir / "jobs").iterdir()) + list((driver.automation_dir / "results").iterdir())
    assert leftovers == []


def test_zg_stays_on_its_dataset_when_the_next_job_opens_another(bench):
    sim, driver, clock = bench
    first = prepare(driver, expno=1)
    driver.start_acquisition("exsy", 1)
    second = prepare(driver, expno=2)       # RE on another dataset while zg runs
    driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=DURATION_S)
    assert (first / "ser").stat().st_size == COMPLETE_SER_BYTES
    assert not (second / "ser").exists()


def test_create_without_template_copies_the_dataset_open_when_the_script_started(bench):
    sim, driver, clock = bench
    prepare(driver, expno=1, D8=0.75)           # jobs opened exsy/1 since; the default stays the start dataset
    driver.create_dataset("exsy", 2)
    assert driver.get_param("exsy", 2, "D8") == driver.get_param(*TEMPLATE, "D8") != "0.75"
    assert not (driver.expno_dir("exsy", 2) / "ser").exists()


def test_teget_reports_the_temperature_source(tmp_path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock, temperature_source=lambda: 342.25)
    sim.start()
    try:
        assert TopSpinDriver(tmp_path / "a", tmp_path / "d", clock).teget() == 342.25
    finally:
        sim.stop()


def test_status_cadence_can_be_set(bench):
    sim, driver, clock = bench
    prepare(driver)
    driver.start_acquisition("exsy", 1)
    sent: list[str] = []
    real_job = driver._job

    def counting_job(op: str, **args: object) -> object:
        sent.append(op)
        return real_job(op, **args)

    driver._job = counting_job
    driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=1.0, status_every_s=DURATION_S / 2)
    assert sent.count("status") == 3          # at 0, 1/2 and the expected end


def test_late_results_of_abandoned_jobs_are_discarded(bench):
    sim, driver, clock = bench
    late = driver.results_dir / "late-job.json"
    late.write_text('{"id": "late-job", "ok": true, "value": null}')
    driver._abandoned.add("late-job")
    assert driver.get_param(TEMPLATE_NAME, 1, "NS") == str(DEFAULT_EXSY_PARAMS["NS"])
    assert not late.exists() and driver._abandoned == set()


def test_restarted_topspin_reports_earlier_datasets_and_still_refuses_them(tmp_path):
    clock = VirtualClock()
    first = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock)
    first.start()
    driver = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock)
    prepare(driver, expno=1)
    driver.start_acquisition("exsy", 1)
    driver.wait_acquisition("exsy", 1, DURATION_S, poll_s=DURATION_S)
    prepare(driver, expno=2)
    driver.start_acquisition("exsy", 2)
    clock.advance(DURATION_S / 2)
    driver.stop_acquisition()
    first.stop()
    assert not driver.is_alive()                       # the last beat says stopped

    second = SimulatedTopSpin(tmp_path / "a", tmp_path / "d", clock)
    second.start()
    try:
        again = TopSpinDriver(tmp_path / "a", tmp_path / "d", clock)
        assert again.acquisition_status("exsy", 1).state == "done"
        status = again.acquisition_status("exsy", 2)
        assert status.state == "failed" and "halted" in status.message   # zg's own result, kept in the folder
        assert again.get_param("exsy", 1, "D8") == "0.05"
        with pytest.raises(ExpnoCollision):
            again.create_dataset("exsy", 2, TEMPLATE)
        assert again.next_free_expno("exsy") == 3
    finally:
        second.stop()
