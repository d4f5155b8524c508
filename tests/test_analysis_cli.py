"""`analyze` CLI by subprocess: exit codes, one-line refusals, the --json object and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.synthetic import detailed_balance_rates, exchange_volumes, write_synthetic_exsy

REPO = Path(__file__).resolve().parents[1]
SHIFTS = [2.31, 1.29, -4.56]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acquisition.analyze_cmd", "analyze", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "exsy"
    p = np.array([0.5, 0.3, 0.2])
    expno = 10
    for temperature_k, scale in ((300.0, 1.0), (340.0, 1.6)):
        k = detailed_balance_rates({(0, 1): 0.3 * scale, (0, 2): 0.5 * scale, (1, 2): 0.4 * scale}, p)
        for t in (0.01, 0.1, 0.5, 2.0, 8.0):
            write_synthetic_exsy(root / str(expno), exchange_volumes(k, p, np.array([3.0, 2.0, 1.0]), t), SHIFTS,
                                 mixing_time_s=t, temperature_k=temperature_k, noise=0.001, seed=expno)
            expno += 1
    return root


def test_json_object_and_plot(small_series, tmp_path, capsys):
    plot = tmp_path / "exsy.png"
    done = run_cli("exsy", str(small_series), "--expnos", "10-19", "--sites", "2.31,1.29,-4.56",
                   "--names", "Li2S,LPSC,LiI", "--json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sites"][2] == {"name": "LiI", "shift_ppm": -4.56}
    assert len(result["points"]) == 10 and np.array(result["points"][0]["volumes"]).shape == (3, 3)
    assert {"expno", "temperature_k", "mixing_time_s"} <= set(result["points"][0])
    assert [f["temperature_k"] for f in result["fits"]] == [300.0, 340.0]
    rate = result["fits"][0]["rates"][0]
    assert set(rate) == {"from", "to", "k_per_s", "k_stderr_per_s"} and len(result["fits"][0]["rates"]) == 6
    assert {a["pair"] for a in result["arrhenius"]} == {"Li2S-LPSC", "Li2S-LiI", "LPSC-LiI"}
    assert set(result["arrhenius"][0]) >= {"pair", "quantity", "ea_ev", "ea_stderr_ev", "prefactor"}
    assert plot.stat().st_size > 10000
    from acquisition.analyze_cmd import main

    assert main(["analyze", "exsy", str(small_series), "--expnos", "10-14", "--names", "Li2S,LPSC,LiI",
                 "--sites", "2.31,1.29,-4.56"]) == 0
    table = capsys.readouterr().out
    assert "Li2S" in table and "{" not in table


REFUSALS = [
    (["exsy", "/nonexistent/dir", "--expnos", "10"], "/nonexistent/dir"),
    (["exsy", "{series}", "--expnos", "10-x"], "--expnos"),
    (["exsy", "{series}", "--expnos", "10-12", "--sites", "2.31,abc"], "--sites"),
    (["exsy", "{series}", "--expnos", "10,99"], "99"),
    (["exsy", "{series}", "--expnos", "10-12", "--sites", "2.31,1.29", "--names", "a,b,c"], "--names"),
    (["exsy", "{series}", "--expnos", "10-12", "--sites", "2.31,70"], "outside the spectral window"),
    (["series", "{series}"], "datasets.json"),
    (["exsy", "{series}", "--expnos", "10-12", "--model", "diffusion", "--radius-m", "-1"], "radius_m"),
    (["exsy", "{series}", "--expnos", "10-12", "--radius-m", "3e-6"], "radius_m"),
    (["cycling", "/nonexistent.csv"], "/nonexistent.csv"),
]


def test_refused_input_exits_2_with_one_line_by_subprocess(small_series):
    for args, field in (REFUSALS[0], REFUSALS[5]):
        done = run_cli(*[a.replace("{series}", str(small_series)) for a in args])
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, field", REFUSALS)
def test_refused_input_in_process(small_series, capsys, args, field):
    from acquisition.analyze_cmd import main

    assert main(["analyze", *[a.replace("{series}", str(small_series)) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_unfittable_series_exits_1(small_series, capsys):
    from acquisition.analyze_cmd import main

    assert main(["analyze", "exsy", str(small_series), "--expnos", "10,11", "--sites", "2.31,1.29,-4.56"]) == 1
    assert "analysis failed" in capsys.readouterr().err


def test_cycling_json(tmp_path, capsys):
    from acquisition.analyze_cmd import main
    from test_analysis_cycling import write_bdf

    bdf = write_bdf(tmp_path / "cell.csv", cycles=2, efficiency=(0.9, 0.95))
    assert main(["analyze", "cycling", str(bdf), "--active-mass-g", "0.001", "--json",
                 "--plot", str(tmp_path / "c.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [round(c["coulombic_efficiency_pct"], 1) for c in summary["cycles"]] == [90.0, 95.0]
    assert (tmp_path / "c.png").stat().st_size > 10000
