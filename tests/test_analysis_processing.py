"""Processing and integration of TopSpin 2D datasets: synthetic truth and real Bruker files."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisInputError
from analysis.exsy_processing import ProcessingOptions, process_dataset
from analysis.integration import box_volumes, find_diagonal_sites, lineshape_volumes, volume_matrix
from analysis.synthetic import write_synthetic_exsy

SHIFTS = [2.31, 1.29, -4.56]
VOLUMES = np.array([[1.0, 0.2, 0.05], [0.2, 0.6, 0.08], [0.05, 0.08, 0.4]])


@pytest.mark.parametrize("fnmode", [1, 3, 4, 5, 6])
def test_every_f1_mode_puts_peaks_on_the_diagonal(tmp_path, fnmode):
    write_synthetic_exsy(tmp_path / "10", VOLUMES, SHIFTS, mixing_time_s=0.1, temperature_k=300.0, fnmode=fnmode,
                         td1=64, in0_s=0.5e-3 if fnmode == 3 else 1e-3)
    spectrum = process_dataset(tmp_path / "10")
    found = find_diagonal_sites(spectrum, max_sites=3)
    assert np.allclose(found, SHIFTS, atol=0.05)
    assert spectrum.ppm_f2[0] > spectrum.ppm_f2[-1]


def test_parameters_come_from_the_dataset(tmp_path):
    write_synthetic_exsy(tmp_path / "11", VOLUMES, SHIFTS, mixing_time_s=0.25, temperature_k=333.0, mixing_param="D9")
    spectrum = process_dataset(tmp_path / "11", mixing_param="D9")
    assert spectrum.temperature_k == pytest.approx(333.0)
    assert spectrum.mixing_time_s == pytest.approx(0.25)
    assert spectrum.expno == 11 and spectrum.fnmode == "States-TPPI" and spectrum.nucleus == "6Li"
    assert process_dataset(tmp_path / "11").mixing_time_s == 0.0  # D8 untouched
    write_synthetic_exsy(tmp_path / "12", VOLUMES, SHIFTS, mixing_time_s=0.5, temperature_k=333.0, mixing_param="VD")
    assert process_dataset(tmp_path / "12", mixing_param="VD").mixing_time_s == pytest.approx(0.5)


def test_lineshape_integration_recovers_overlapping_volumes(tmp_path):
    write_synthetic_exsy(tmp_path / "10", VOLUMES, SHIFTS, mixing_time_s=0.1, temperature_k=300.0, linewidth_hz=12.0)
    spectrum = process_dataset(tmp_path / "10")
    volumes, widths_hz = lineshape_volumes(spectrum, SHIFTS)
    assert widths_hz == pytest.approx([12.0] * 3, rel=0.02)
    assert np.allclose(volumes / volumes[0, 0], VOLUMES, atol=0.005)
    boxes = box_volumes(spectrum, SHIFTS)  # 32 increments: F1 boxes of 2.31 and 1.29 overlap badly
    assert abs(boxes[0, 1] / boxes[0, 0] / 0.2 - 1) > 0.2


def test_manual_phase_overrides_automatic(tmp_path):
    write_synthetic_exsy(tmp_path / "10", VOLUMES, SHIFTS, mixing_time_s=0.1, temperature_k=300.0)
    auto = process_dataset(tmp_path / "10")
    manual = process_dataset(tmp_path / "10", options=ProcessingOptions(phase_f2=(90.0, 0.0), phase_f1=(0.0, 0.0)))
    assert manual.phases_deg["f2"] == (90.0, 0.0)
    assert abs(auto.phases_deg["f2"][0]) < 1.0
    assert abs(manual.data.sum()) < 0.2 * auto.data.sum()  # 90 degrees off: dispersion integrates to ~0


def test_real_cosy_runs_without_hand_edits(reference_bruker):
    spectrum = process_dataset(reference_bruker / "exam2d_HH" / "1")
    assert spectrum.fnmode == "QF" and spectrum.magnitude and spectrum.nucleus == "1H"
    assert spectrum.temperature_k == pytest.approx(297.16)
    sites = find_diagonal_sites(spectrum)
    assert len(sites) >= 2 and all(-1.0 < s < 10.0 for s in sites)
    volumes = volume_matrix(spectrum, sites)
    assert volumes.shape == (len(sites), len(sites)) and np.all(np.isfinite(volumes))
    assert np.all(np.diag(volumes) > 0)


def test_refusals_name_the_file_and_reason(tmp_path, reference_bruker):
    with pytest.raises(AnalysisInputError, match="not found"):
        process_dataset(tmp_path / "nothing")
    with pytest.raises(AnalysisInputError, match="missing acqu2s"):
        process_dataset(reference_bruker / "CP" / "80")
    write_synthetic_exsy(tmp_path / "10", VOLUMES, SHIFTS, mixing_time_s=0.1, temperature_k=300.0)
    with pytest.raises(AnalysisInputError, match="XYZ not found"):
        process_dataset(tmp_path / "10", mixing_param="XYZ")
    (tmp_path / "10" / "ser").write_bytes(b"\0" * 10)
    with pytest.raises(AnalysisInputError, match="incomplete acquisition, 0 of 32 FIDs"):
        process_dataset(tmp_path / "10")
    spectrum_dir = tmp_path / "20"
    write_synthetic_exsy(spectrum_dir, VOLUMES, SHIFTS, mixing_time_s=0.1, temperature_k=300.0)
    with pytest.raises(AnalysisInputError, match="outside the spectral window"):
        volume_matrix(process_dataset(spectrum_dir), [2.31, 80.0])
