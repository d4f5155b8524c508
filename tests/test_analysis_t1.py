"""T1 from saturation- and inversion-recovery pseudo-2D datasets (ser + vdlist): API, plausibility, CLI, real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.errors import AnalysisInputError
from analysis.synthetic import write_synthetic_1d, write_synthetic_t1
from analysis.t1 import fit_t1, parse_vdlist

REPO = Path(__file__).resolve().parents[1]
REAL_SATREC = REPO.parent / "shared" / "reference-data" / "bruker" / "relax" / "100"
SHIFTS = [2.31, 1.29, -4.56]
M0 = [1.0, 0.6, 0.3]
T1_S = [0.8, 2.0, 0.4]
DELAYS_S = [0.01, 0.05, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0, 8.0, 15.0]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acquisition.analyze_cmd", "analyze", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})


@pytest.mark.parametrize("method, d1_s, factors", [("saturation", 2.0, [1, 1, 1]),
                                                   ("inversion", 30.0, [2, 2, 2]),
                                                   ("inversion", 1.0, None)])  # short D1: incomplete inversion
def test_t1_recovered_within_errors_with_noise(tmp_path, method, d1_s, factors):
    expno = write_synthetic_t1(tmp_path / "5", SHIFTS, M0, T1_S, DELAYS_S, method=method, d1_s=d1_s,
                               noise=0.02, seed=11)
    fit = fit_t1(expno, SHIFTS)
    assert fit.method == method and fit.d1_s == d1_s and fit.delays_s == tuple(DELAYS_S)
    for site, truth in zip(fit.sites, T1_S):
        assert site.ok, site.reason
        assert 0 < site.t1_err_s < 0.1 * truth
        assert abs(site.t1_s - truth) < 3 * site.t1_err_s, (site, truth)
    if factors:
        assert [round(s.factor, 1) for s in fit.sites] == pytest.approx(factors, abs=0.1)
    else:  # start magnetisation M0 (1 - exp(-(D1 + AQ)/T1)): the longer T1, the shallower the inversion
        assert fit.sites[1].factor < fit.sites[0].factor < fit.sites[2].factor < 2


def test_sites_found_when_not_given(tmp_path):
    expno = write_synthetic_t1(tmp_path / "6", SHIFTS, M0, T1_S, DELAYS_S, noise=0.005, seed=2)
    fit = fit_t1(expno)
    assert [round(s.shift_ppm, 1) for s in fit.sites] == [2.3, 1.3, -4.6]
    assert all(s.ok for s in fit.sites)


def test_implausible_fits_flagged_not_raised(tmp_path):
    short = [0.001, 0.002, 0.005, 0.01, 0.02]  # T1 of 50 s never recovers within 20 ms
    expno = write_synthetic_t1(tmp_path / "7", [2.31, -4.56], [1.0, 1.0], [50.0, 0.4], short, noise=0.002, seed=3)
    slow, _ = fit_t1(expno, [2.31, -4.56]).sites
    assert not slow.ok and "longest delay" in slow.reason
    empty = fit_t1(write_synthetic_t1(tmp_path / "8", [2.31], [1.0], [0.8], DELAYS_S, noise=0.01, seed=4),
                   [2.31, -10.0]).sites[1]  # no line at -10 ppm: noise only
    assert not empty.ok and empty.reason


def test_vdlist_as_topspin_writes_it(tmp_path):
    written = write_synthetic_t1(tmp_path / "9", [2.31], [1.0], [0.8], [0.01, 0.5, 2.0, 8.0])
    assert (written / "vdlist").read_text() == "0.01s\n0.5s\n2s\n8s\n"
    lst = tmp_path / "list"
    lst.write_text("10m\n5u\n0.25 s\n2\n\n")
    assert parse_vdlist(lst) == pytest.approx([0.01, 5e-6, 0.25, 2.0])
    lst.write_text("1\nten\n")
    with pytest.raises(AnalysisInputError, match="line 2"):
        parse_vdlist(lst)


def test_unreadable_datasets_refused_in_one_line(tmp_path):
    with pytest.raises(AnalysisInputError, match="not found"):
        fit_t1(tmp_path / "missing")
    expno = write_synthetic_t1(tmp_path / "10", [2.31], [1.0], [0.8], DELAYS_S)
    (expno / "vdlist").unlink()
    with pytest.raises(AnalysisInputError, match="no vdlist"):
        fit_t1(expno)
    expno = write_synthetic_t1(tmp_path / "11", [2.31], [1.0], [0.8], DELAYS_S)
    ser = (expno / "ser").read_bytes()
    (expno / "ser").write_bytes(ser[: len(ser) // 2])
    with pytest.raises(AnalysisInputError, match="incomplete") as info:
        fit_t1(expno)
    assert "\n" not in str(info.value)
    expno = write_synthetic_t1(tmp_path / "12", [2.31], [1.0], [0.8], DELAYS_S[:3])
    with pytest.raises(AnalysisInputError, match="needs 4"):
        fit_t1(expno)


@pytest.mark.skipif(not REAL_SATREC.is_dir(), reason="reference data not present")
def test_real_topspin_saturation_recovery():
    """29Si CP saturation recovery (TopSpin 3.6, vdlist without units): T1 near TopSpin's own 2.3 s."""
    fit = fit_t1(REAL_SATREC)
    assert fit.method == "saturation" and fit.nucleus == "29Si" and fit.temperature_k == pytest.approx(90.3)
    assert fit.delays_s == (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 50.0)
    assert len(fit.sites) == 2 and all(-110 < s.shift_ppm < -90 for s in fit.sites)
    for site in fit.sites:
        assert site.ok and 2.0 < site.t1_s < 2.9 and site.t1_err_s < 0.15


def test_cli_t1_json_plot_and_refusals(tmp_path):
    expno = write_synthetic_t1(tmp_path / "20", SHIFTS, M0, T1_S, DELAYS_S, method="inversion", noise=0.01, seed=5)
    plot = tmp_path / "t1.png"
    done = run_cli("t1", str(expno), "--sites", "2.31,1.29,-4.56", "--json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["method"] == "inversion" and len(result["sites"]) == 3 and result["plot"] == str(plot)
    assert {"shift_ppm", "t1_s", "t1_err_s", "amplitude", "ok", "reason"} <= set(result["sites"][0])
    assert plot.stat().st_size > 10000
    table = run_cli("t1", str(expno), "--sites", "-4.56")
    assert table.returncode == 0 and "inversion" in table.stdout and "{" not in table.stdout
    refusals = [(["t1", str(tmp_path / "nope")], "not found"),
                (["t1", str(expno), "--sites", "2.31,abc"], "--sites"),
                (["t1", str(expno), "--sites", "80"], "outside the spectral window"),
                (["t1", str(write_synthetic_1d(tmp_path / "21", [2.31], [1.0], temperature_k=300))], "missing ser")]
    for args, field in refusals:
        done = run_cli(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and field in lines[0], done.stderr


def test_cli_spectra_overlay(tmp_path):
    paths = [str(write_synthetic_1d(tmp_path / str(10 + i), SHIFTS, [1.0, 0.6 + 0.1 * i, 0.3], temperature_k=t,
                                    noise=0.001, seed=i, linewidth_hz=15 + 10 * i)) for i, t in enumerate((273.0, 373.0))]
    plot = tmp_path / "overlay.png"
    done = run_cli("spectra", *paths, "--json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [s["temperature_k"] for s in result["spectra"]] == [273.0, 373.0]
    assert np.allclose(result["spectra"][0]["peaks_ppm"], SHIFTS, atol=0.05) and result["spectra"][0]["d1_s"] == 5.0
    assert plot.stat().st_size > 10000
    for args, field in ((["spectra", paths[0], "--ppm-range", "5"], "--ppm-range"),
                        (["spectra", paths[0], str(tmp_path)], "no fid")):
        done = run_cli(*args)
        assert done.returncode == 2 and field in done.stderr and len(done.stderr.strip().splitlines()) == 1
