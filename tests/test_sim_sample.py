"""The simulated sample (station file), 1D and T1 datasets through the real automation folder, incomplete
relaxation over D1, and MAS frictional heating."""

from __future__ import annotations

import math
from pathlib import Path

import nmrglue as ng
import numpy as np
import pytest

from drivers.clock import VirtualClock
from drivers.topspin import TopSpinDriver
from hardware_sim.nmr_dataset import acquisition_duration_s, parse_vdlist, site_amplitudes, write_acquired_dataset
from hardware_sim.nmr_physics import paper_sample, sample_from_station
from hardware_sim.thermal import ThermalModel
from hardware_sim.topspin_sim import SimulatedTopSpin
from protocols.station import SpectrometerSpec

REFERENCE = Path("/work/shared/reference-data/bruker/relax/100")
DELAYS_S = [0.01, 0.1, 1.0, 5.0, 20.0, 60.0]
SHORT_T1_SAMPLE = {
    "sites": [{"name": "A", "shift": 2.0, "population": 0.6, "linewidth": "20 Hz", "t1": "0.5 s"},
              {"name": "B", "shift": -3.0, "population": 0.4, "linewidth": "20 Hz", "t1": "2 s", "t1_ea": 0.1,
               "reference_temperature": "293 K"}],
    "exchange": [{"sites": ["A", "B"], "k0": 50.0, "ea": 0.1}],
}


@pytest.fixture
def bench(tmp_path: Path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock, seed=5)
    for name, kind in (("one_pulse", "1d"), ("satrec", "satrect"), ("invrec", "t1ir")):
        sim.provide_template(tmp_path / "data" / name / "1", kind)
    sim.start()
    driver = TopSpinDriver(tmp_path / "automation", tmp_path / "data", clock, heartbeat_timeout_s=30.0,
                           job_timeout_s=10.0)
    yield sim, driver
    sim.stop()


def acquire(driver: TopSpinDriver, template: str, expno: int, params: dict, delays_s=None) -> Path:
    path = driver.create_dataset("s", expno, (template, 1))
    driver.set_params("s", expno, params)
    if delays_s is not None:
        driver.write_list("s", expno, "vdlist", delays_s)
    driver.start_acquisition("s", expno)
    status = driver.wait_acquisition("s", expno, 1e5, poll_s=50.0)
    assert status.state == "done", status
    return path


def test_station_sample_validates_units_and_builds_the_simulated_sample() -> None:
    spec = SpectrometerSpec.model_validate({"automation_dir": "sim://a", "data_dir": "d", "sample": SHORT_T1_SAMPLE})
    sample = sample_from_station(spec.model_dump()["sample"])
    assert [s.name for s in sample.sites] == ["A", "B"]
    assert sample.sites[0].t1_s == 0.5 and sample.sites[1].t1_ea_ev == 0.1
    assert sample.sites[1].t1_at(373.0) < 2.0  # a positive Ea of 1/T1 shortens T1 on heating
    assert sample.rate_matrix(293.0)[0, 1] == pytest.approx(50.0 * math.exp(-0.1 / (8.617333262e-5 * 293.0)))
    assert sample_from_station(None) == paper_sample()
    with pytest.raises(ValueError, match="two distinct sites"):
        SpectrometerSpec.model_validate({"automation_dir": "sim://a", "data_dir": "d",
                                         "sample": {**SHORT_T1_SAMPLE, "exchange": [{"sites": ["A", "C"], "k0": 1,
                                                                                     "ea": 0.1}]}})
    with pytest.raises(ValueError, match="greater than 0"):
        SpectrometerSpec.model_validate({"automation_dir": "sim://a", "data_dir": "d",
                                         "sample": {"sites": [{**SHORT_T1_SAMPLE["sites"][0], "t1": "0 s"}]}})


def test_one_pulse_dataset_through_the_automation_folder_opens_with_nmrglue(bench) -> None:
    _, driver = bench
    path = acquire(driver, "one_pulse", 1, {"NS": 4, "DS": 0, "D1": 2.0, "TD": 1024})
    dic, data = ng.bruker.read(str(path))
    assert data.ndim == 1 and data.shape == (512,)
    assert (path / "fid").is_file() and not (path / "ser").exists() and not (path / "acqu2s").exists()
    assert dic["acqus"]["PULPROG"] == "zg" and dic["acqus"]["PARMODE"] == 0 and dic["acqus"]["D"][1] == 2.0


@pytest.mark.parametrize("template, pulprog", [("satrec", "satrect"), ("invrec", "t1ir")])
def test_t1_dataset_has_vdlist_as_topspin_writes_it(bench, template: str, pulprog: str) -> None:
    _, driver = bench
    path = acquire(driver, template, 2, {"NS": 2, "DS": 0, "D1": 1.0, "TD": 512}, DELAYS_S)
    dic, data = ng.bruker.read(str(path))
    assert data.shape == (len(DELAYS_S), 256)
    assert dic["acqus"]["PULPROG"] == pulprog and dic["acqus"]["VDLIST"] == "vdlist"
    assert dic["acqu2s"]["TD"] == len(DELAYS_S)
    text = (path / "vdlist").read_text()
    assert text == "0.01s\n0.1s\n1s\n5s\n20s\n60s\n"
    assert parse_vdlist(text) == DELAYS_S
    # the reference dataset's vdlist (plain numbers, seconds) and VDLIST (a name) read by the same rules
    if REFERENCE.is_dir():
        assert parse_vdlist((REFERENCE / "vdlist").read_text()) == [1, 2, 3, 5, 7, 10, 15, 20, 50]  # TD1 9 there too
        reference_vdlist = ng.bruker.read_jcamp(str(REFERENCE / "acqus"))["VDLIST"]
        assert isinstance(reference_vdlist, str) and isinstance(dic["acqus"]["VDLIST"], str)
    # Li2S (T1 20 s) recovers: the first delay row is far below the last
    spectra = np.abs(ng.proc_base.fft(ng.bruker.remove_digital_filter(dic, data)))
    assert spectra[0].max() < 0.3 * spectra[-1].max()


def test_zg_refuses_a_vdlist_that_does_not_match_td1(bench) -> None:
    _, driver = bench
    driver.create_dataset("s", 3, ("satrec", 1))
    driver.write_list("s", 3, "vdlist", DELAYS_S)
    driver.set_params("s", 3, {"TD1": 4})
    with pytest.raises(Exception, match="TD1 = 4 but the vd list vdlist holds 6"):
        driver.start_acquisition("s", 3)
        driver.wait_acquisition("s", 3, 1e5, poll_s=50.0)


def test_short_d1_lowers_the_1d_intensity_by_the_relaxed_fraction() -> None:
    sample = paper_sample()
    params = {"PARMODE": 0, "PULPROG": "zg", "D1": 1.0, "TD": 2048}
    short = site_amplitudes(params, 293.0, sample)[0]
    full = site_amplitudes({**params, "D1": 1e4}, 293.0, sample)[0]
    aq_s = 2048 / (2 * 100.0 * 73.578)
    expected = 1 - np.exp(-(1.0 + aq_s) / np.array([20.0, 10.0, 15.0]))
    np.testing.assert_allclose(short / full, expected, rtol=1e-9)


def test_short_d1_is_visible_in_the_written_1d_spectrum(tmp_path: Path) -> None:
    def peak(d1_s: float) -> float:
        expno = tmp_path / f"d1_{d1_s:g}" / "1"
        write_acquired_dataset(expno, {"PARMODE": 0, "PULPROG": "zg", "D1": d1_s, "NS": 16}, 293.0, seed=1)
        dic, data = ng.bruker.read(str(expno))
        return float(np.abs(ng.proc_base.fft(ng.bruker.remove_digital_filter(dic, data))).max())

    aq_s = 2048 / (2 * 100.0 * 73.578)
    ratio = peak(2.0) / peak(1000.0)
    assert ratio == pytest.approx(1 - math.exp(-(2.0 + aq_s) / 10.0), rel=0.05)  # the narrow LPSC line is the tallest


def test_a_station_sample_with_other_t1_changes_the_data() -> None:
    params = {"PULPROG": "satrect", "_VDLIST_S": [0.5, 2.0], "TD1": 2, "D1": 1.0}
    default = site_amplitudes(params, 293.0, paper_sample())
    short = site_amplitudes(params, 293.0, sample_from_station(
        SpectrometerSpec.model_validate({"automation_dir": "sim://a", "data_dir": "d",
                                         "sample": SHORT_T1_SAMPLE}).model_dump()["sample"]))
    assert short[0, 0] / 0.6 == pytest.approx(1 - math.exp(-0.5 / 0.5))
    assert default[0, 0] / 0.5 == pytest.approx(1 - math.exp(-0.5 / 20.0))
    inversion = site_amplitudes({**params, "PULPROG": "t1ir", "D1": 1e4}, 293.0, paper_sample())
    assert inversion[0, 0] / 0.5 == pytest.approx(1 - 2 * math.exp(-0.5 / 20.0))


def test_t1_duration_counts_every_delay() -> None:
    params = {"PULPROG": "satrect", "_VDLIST_S": [0.5, 2.0], "TD1": 2, "D1": 1.0, "NS": 2, "DS": 0, "TD": 2048}
    aq_s = 2048 / (2 * 100.0 * 73.578)
    assert acquisition_duration_s(params) == pytest.approx(2.0 + 2 * ((1.0 + aq_s) * 2 + 2.5))


@pytest.mark.parametrize("rate_hz, heating_k", [(5_000.0, 1.0), (10_000.0, 4.0), (15_000.0, 9.0)])
def test_frictional_heating_grows_with_the_square_of_the_spinning_rate(rate_hz: float, heating_k: float) -> None:
    clock = VirtualClock()
    model = ThermalModel(clock, mas_rate_hz=rate_hz, noise_k=0.0)
    clock.advance(3600.0)
    assert model.mas_heating_k() == pytest.approx(heating_k)
    assert model.sample_k() - model.true_sensor_k() == pytest.approx(heating_k, abs=0.01)


def test_changing_the_spinning_rate_moves_the_sample_temperature() -> None:
    clock = VirtualClock()
    model = ThermalModel(clock, mas_rate_hz=10_000.0, noise_k=0.0)
    clock.advance(3600.0)
    model.set_mas_rate_hz(15_000.0)
    assert model.sample_k() - model.true_sensor_k() == pytest.approx(4.0, abs=0.01)  # not at once: it lags
    clock.advance(3600.0)
    assert model.sample_k() - model.true_sensor_k() == pytest.approx(9.0, abs=0.01)
