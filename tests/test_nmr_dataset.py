"""Simulated TopSpin EXSY datasets: what nmrglue reads from them and what processing shows."""

from __future__ import annotations

from pathlib import Path

import nmrglue as ng
import numpy as np
import pytest

from drivers.bruker_params import dataset_complete, expected_ser_bytes, expno_has_data, read_params
from hardware_sim.nmr_dataset import (
    acquisition_duration_s,
    padded_points,
    write_acquired_dataset,
    write_partial_dataset,
)
from hardware_sim.nmr_physics import paper_sample

SHIFTS_PPM = {"Li2S": 2.31, "LPSC": 1.29, "LiI": -4.56}
# 64 complex t1 points over 625 Hz: fine enough in F1 to separate Li2S from LPSC.
# D1 >> T1 (20 s at most): every scan starts fully relaxed, so the exchange truth is seen undistorted.
FINE = {"TD1": 128, "IN0": 1.6e-3, "O1": -83.0, "NS": 16, "D1": 200.0}


def process(expno: Path) -> tuple[np.ndarray, ng.fileiobase.unit_conversion, ng.fileiobase.unit_conversion]:
    """Real 2D spectrum (F1 x F2) and the two ppm converters, the way TopSpin data is processed
    with nmrglue: digital filter, FT in F2, States-TPPI in F1, FT (fft then rev in both)."""
    dic, data = ng.bruker.read(str(expno))
    data = ng.bruker.remove_digital_filter(dic, data, truncate=False)
    data[:, 0] *= 0.5  # first-point correction in t2 (and in t1 below): no baseline ridges
    data = ng.proc_base.rev(ng.proc_base.fft(ng.proc_base.zf_size(data, 2048)))
    states = data.real[0::2] + 1j * data.real[1::2]
    states *= np.where(np.arange(states.shape[0]) % 2 == 0, 1.0, -1.0)[:, None]  # undo TPPI
    states[0] *= 0.5
    spectrum = ng.proc_base.rev(ng.proc_base.fft(states.T)).T.real
    acq1, acq2 = dic["acqu2s"], dic["acqus"]
    uc1 = ng.fileiobase.unit_conversion(spectrum.shape[0], True, acq1["SW_h"], acq1["SFO1"], acq1["O1"])
    uc2 = ng.fileiobase.unit_conversion(spectrum.shape[1], True, acq2["SW_h"], acq2["SFO1"], acq2["O1"])
    return spectrum, uc1, uc2


def box(spectrum: np.ndarray, uc1, uc2, f1_ppm: float, f2_ppm: float, half_ppm: float = 0.35) -> float:
    """Volume of the spectrum in a square of +-half_ppm around (F1, F2)."""
    i0, i1 = sorted((uc1(f1_ppm + half_ppm, "ppm"), uc1(f1_ppm - half_ppm, "ppm")))
    j0, j1 = sorted((uc2(f2_ppm + half_ppm, "ppm"), uc2(f2_ppm - half_ppm, "ppm")))
    return float(spectrum[i0:i1 + 1, j0:j1 + 1].sum())


def acquire(tmp_path: Path, name: str, temperature_k: float, sample=None, **params: object) -> Path:
    """Write one simulated dataset into tmp_path/name/1 and return the expno folder."""
    expno = tmp_path / name / "1"
    write_acquired_dataset(expno, {**FINE, "TE": temperature_k, **params}, temperature_k, sample=sample)
    return expno


def test_nmrglue_reads_requested_parameters_and_shape(tmp_path: Path) -> None:
    expno = tmp_path / "exsy" / "3"
    params = {"D8": 0.25, "TE": 313.0, "NS": 8, "DS": 2, "TD": 1536, "TD1": 24, "D1": 3.0,
              "MASR": 10000, "DATE": 1_790_000_000.0}
    (expno / "pdata" / "1").mkdir(parents=True)
    (expno / "pdata" / "1" / "title").write_text("EXSY 40 C 250 ms\n")   # as setti left it before zg
    write_acquired_dataset(expno, params, temperature_k=312.4)
    dic, data = ng.bruker.read(str(expno))
    assert dic["acqus"]["D"][8] == pytest.approx(0.25)
    assert dic["acqus"]["D"][1] == pytest.approx(3.0)
    assert dic["acqus"]["TE"] == pytest.approx(312.4)                              # status: measured
    assert ng.bruker.read_jcamp(str(expno / "acqu"))["TE"] == pytest.approx(313.0)  # current: requested
    assert (dic["acqus"]["NS"], dic["acqus"]["DS"], dic["acqus"]["TD"]) == (8, 2, 1536)
    assert dic["acqu2s"]["TD"] == 24 and dic["acqu2s"]["FnMODE"] == 5
    assert dic["acqus"]["SFO1"] == pytest.approx(73.578) and dic["acqus"]["MASR"] == 10000
    assert dic["acqus"]["NUC1"] == "6Li" and dic["acqus"]["PULPROG"] == "noesyph"
    assert (dic["acqus"]["DIGMOD"], dic["acqus"]["BYTORDA"], dic["acqus"]["DTYPA"]) == (1, 0, 2)
    assert dic["acqus"]["FnMODE"] == 0   # F2 is DQD; F1's mode lives in acqu2s
    assert data.shape == (24, 768)
    assert (expno / "pdata" / "1" / "title").read_text().startswith("EXSY 40 C 250 ms")
    assert "noesyph" in (expno / "pulseprogram").read_text()
    audit = (expno / "audita.txt").read_text()
    assert "created by zg" in audit and "<2026-09-21 " in audit  # completion time from DATE
    assert dic["acqus"]["DATE"] == 1_790_000_000
    def body(name: str) -> list[str]:
        return [line for line in (expno / name).read_text().splitlines() if not line.startswith("$$")]

    assert [line for line in body("acqu") if not line.startswith("##$TE=")] == \
        [line for line in body("acqus") if not line.startswith("##$TE=")]
    assert body("acqu2") == body("acqu2s")
    # TD=1536 float64 is 12288 bytes, a multiple of 1024: no padding here, and the size agrees
    assert (expno / "ser").stat().st_size == 24 * 1536 * 8 == expected_ser_bytes(expno)
    assert dataset_complete(expno) and expno_has_data(expno)
    assert read_params(expno)["acqus"]["D"][8] == pytest.approx(0.25)


def test_ser_is_padded_per_fid_when_td_is_not_a_multiple_of_256(tmp_path: Path) -> None:
    expno = tmp_path / "pad" / "1"
    write_acquired_dataset(expno, {"TD": 1000, "TD1": 4, "DTYPA": 0}, 293.0)
    assert (expno / "ser").stat().st_size == 4 * padded_points(1000) * 4 == 4 * 1024 * 4
    assert dataset_complete(expno)
    dic, data = ng.bruker.read(str(expno))
    assert data.shape == (4, 512)  # nmrglue keeps the padding: 500 complex points + 12 zeros
    assert not data[:, 500:].any() and data[:, :500].any()
    raw = np.fromfile(expno / "ser", dtype="<i4").reshape(4, 1024)
    assert not raw[:, 1000:].any() and raw[:, :1000].any()


def test_digital_filter_delay_is_removed_by_nmrglue(tmp_path: Path) -> None:
    expno = tmp_path / "dsp" / "1"
    write_acquired_dataset(expno, {"TD1": 2, "D8": 0.001, "D1": 200.0}, 293.0)
    dic, data = ng.bruker.read(str(expno))
    fid = data[0]
    grpdly = dic["acqus"]["GRPDLY"]
    assert 60 < grpdly < 75
    # before removal the first points are the filter's pre-response: the echo top sits at GRPDLY
    assert abs(np.argmax(np.abs(fid[:200])) - grpdly) <= 1
    restored = ng.bruker.remove_digital_filter(dic, data, truncate=False)[0]
    assert np.argmax(np.abs(restored)) <= 1
    assert abs(restored[0]) > 20 * abs(fid[0])


def test_diagonal_peaks_at_the_three_shifts(tmp_path: Path) -> None:
    spectrum, uc1, uc2 = process(acquire(tmp_path, "diag", 293.0, D8=0.01))
    for name, ppm in SHIFTS_PPM.items():
        i, j = uc1(ppm, "ppm"), uc2(ppm, "ppm")
        window = spectrum[i - 4:i + 5, j - 6:j + 7]
        di, dj = np.unravel_index(np.argmax(window), window.shape)
        assert abs(di - 4) <= 1 and abs(dj - 6) <= 1, f"{name} diagonal peak off: {(di - 4, dj - 6)}"
        assert window.max() > 0


def cross_over_diagonal(tmp_path: Path, name: str, temperature_k: float, mixing_s: float,
                        f1: str, f2: str, sample=None) -> float:
    """Cross-peak volume (F1 site f1 -> F2 site f2) over the F1 site's diagonal volume."""
    expno = acquire(tmp_path, name, temperature_k, sample=sample, D8=mixing_s)
    spectrum, uc1, uc2 = process(expno)
    return box(spectrum, uc1, uc2, SHIFTS_PPM[f1], SHIFTS_PPM[f2]) / box(
        spectrum, uc1, uc2, SHIFTS_PPM[f1], SHIFTS_PPM[f1])


def test_cross_peaks_grow_with_mixing_time(tmp_path: Path) -> None:
    ratios = [cross_over_diagonal(tmp_path, f"t{i}", 293.0, t, "LiI", "LPSC") for i, t in
              enumerate((0.01, 1.0, 10.0))]
    assert ratios[0] < 0.05  # barely visible at 10 ms
    assert ratios[0] < ratios[1] < ratios[2]
    assert ratios[2] > 1.0


def test_cross_peaks_grow_with_temperature(tmp_path: Path) -> None:
    cold = cross_over_diagonal(tmp_path, "cold", 293.0, 1.0, "LiI", "Li2S")
    hot = cross_over_diagonal(tmp_path, "hot", 373.0, 1.0, "LiI", "Li2S")
    assert hot > 1.5 * cold > 0


def test_no_cross_peaks_without_lii(tmp_path: Path) -> None:
    # The Li2S/LPSC box holds some overlap of the two diagonal lines at any mixing time; only
    # exchange makes it grow.
    def growth(sample) -> float:
        start = cross_over_diagonal(tmp_path, f"s{id(sample)}", 293.0, 0.01, "Li2S", "LPSC", sample)
        end = cross_over_diagonal(tmp_path, f"e{id(sample)}", 373.0, 10.0, "Li2S", "LPSC", sample)
        return end - start

    assert growth(paper_sample(with_lii=False)) < 0.02
    assert growth(paper_sample(with_lii=True)) > 0.3


def test_noise_falls_with_number_of_scans(tmp_path: Path) -> None:
    def snr(ns: int) -> float:
        spectrum, uc1, uc2 = process(acquire(tmp_path, f"ns{ns}", 293.0, NS=ns, D8=0.01))
        peak = spectrum[uc1(1.29, "ppm"), uc2(1.29, "ppm")]
        empty = spectrum[:, uc2(-20.0, "ppm"):uc2(-40.0, "ppm")]
        return float(peak / empty.std())

    ratio = snr(64) / snr(4)
    assert 3.0 < ratio < 5.3  # sqrt(64 / 4) = 4


def test_partial_dataset_holds_the_first_rows_only(tmp_path: Path) -> None:
    full, part = tmp_path / "full" / "1", tmp_path / "part" / "1"
    params = {"TD1": 32, "TD": 2048, "D8": 0.1}
    write_acquired_dataset(full, params, 300.0, seed=3)
    write_partial_dataset(part, params, 300.0, fraction=0.5, seed=3)
    assert (part / "ser").stat().st_size == 16 * 2048 * 8
    assert expno_has_data(part) and not dataset_complete(part) and dataset_complete(full)
    assert (part / "ser").read_bytes() == (full / "ser").read_bytes()[: 16 * 2048 * 8]
    write_partial_dataset(tmp_path / "none" / "1", params, 300.0, fraction=0.0)
    assert not expno_has_data(tmp_path / "none" / "1")
    with pytest.raises(ValueError, match="fraction"):
        write_partial_dataset(tmp_path / "bad" / "1", params, 300.0, fraction=1.5)


def test_existing_data_is_never_overwritten(tmp_path: Path) -> None:
    expno = tmp_path / "exsy" / "1"
    write_partial_dataset(expno, {"TD1": 8}, 300.0, fraction=0.5)
    before = (expno / "ser").read_bytes()
    with pytest.raises(FileExistsError, match="already holds data"):
        write_acquired_dataset(expno, {"TD1": 8}, 300.0)
    assert (expno / "ser").read_bytes() == before


def test_acquisition_duration_formula() -> None:
    params = {"NS": 2, "DS": 1, "TD": 1024, "TD1": 4, "D1": 1.0, "D8": 0.5, "IN0": 0.01,
              "SW": 10.0, "SFO1": 51.2, "FnMODE": 5}
    aq = 1024 / (2 * 512.0)  # 1 s
    t1 = [0.0, 0.0, 0.01, 0.01]
    expected = 2.0 + 1 * (1.0 + 0.5 + aq) + 2 * sum(1.0 + t + 0.5 + aq for t in t1)
    assert acquisition_duration_s(params) == pytest.approx(expected, rel=1e-12)
    tppi = {**params, "FnMODE": 2}  # one FID per t1 value
    expected_tppi = 2.0 + 2.5 + 2 * sum(2.5 + r * 0.01 for r in range(4))
    assert acquisition_duration_s(tppi) == pytest.approx(expected_tppi, rel=1e-12)
    assert acquisition_duration_s({**params, "TD1": "4", "NS": "2"}) == pytest.approx(expected)


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TD"):
        write_acquired_dataset(tmp_path / "x" / "1", {"TD": 1023}, 293.0)
    with pytest.raises(ValueError, match="NS"):
        write_acquired_dataset(tmp_path / "y" / "1", {"NS": "many"}, 293.0)
    with pytest.raises(OverflowError, match="int32"):  # int32 (DTYPA 0) only: float64 has the range
        write_acquired_dataset(tmp_path / "z" / "1", {"NS": 4096, "RG": 2048, "TD1": 2, "DTYPA": 0}, 293.0)


def test_float64_fids_start_on_1024_byte_boundaries_and_analyse_like_int32(tmp_path: Path) -> None:
    """DTYPA 2: 128 float64 points per 1 KiB block (nmrglue's rule); the same signal as int32 otherwise."""
    f64, i32 = tmp_path / "f64" / "1", tmp_path / "i32" / "1"
    write_acquired_dataset(f64, {"TD": 1000, "TD1": 4, "DTYPA": 2}, 293.0, seed=1)
    write_acquired_dataset(i32, {"TD": 1000, "TD1": 4, "DTYPA": 0}, 293.0, seed=1)
    assert (f64 / "ser").stat().st_size == 4 * padded_points(1000, 8) * 8 == 4 * 1024 * 8 == expected_ser_bytes(f64)
    raw = np.fromfile(f64 / "ser", dtype="<f8").reshape(4, 1024)
    assert not raw[:, 1000:].any() and raw[:, :1000].any()
    (_, a), (_, b) = ng.bruker.read(str(f64)), ng.bruker.read(str(i32))
    assert a.dtype == np.complex128 and np.allclose(a, b, atol=0.6)   # int32 differs by its rounding only
