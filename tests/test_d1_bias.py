"""A too-short fixed recycle delay biases the activation energies; D1 = 3 x the T1 measured at each temperature does not.

Both series run on the simulated station, on a sample whose Li2S T1 shortens from 6 s at 293 K to
about 1 s at 373 K (so a fixed D1 saturates Li2S by a temperature-dependent amount), and both are
analysed without any T1 correction, so only the acquisition differs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from acquisition.api import start_run
from analysis.api import analyze_series
from hardware_sim.nmr_physics import BOLTZMANN_EV_PER_K

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRUE_EA_EV = {("Li2S", "LPSC"): 0.107, ("Li2S", "LiI"): 0.142, ("LPSC", "LiI"): 0.117}
K_293_PER_S = {("Li2S", "LPSC"): 0.3, ("Li2S", "LiI"): 0.5, ("LPSC", "LiI"): 0.4}  # fast enough for 2 s mixing
SITES_PPM = [2.31, 1.29, -4.56]


def _station(tmp_path: Path) -> Path:
    station = yaml.safe_load((EXAMPLES / "station-sim.yaml").read_text())
    station["spectrometer"]["sample"] = {
        "sites": [
            {"name": "Li2S", "shift": 2.31, "population": 0.5, "linewidth": "30 Hz", "t1": "6 s", "t1_ea": 0.2,
             "reference_temperature": "293.15 K"},
            {"name": "LPSC", "shift": 1.29, "population": 0.35, "linewidth": "30 Hz", "t1": "1.5 s"},
            {"name": "LiI", "shift": -4.56, "population": 0.15, "linewidth": "30 Hz", "t1": "3 s"},
        ],
        "exchange": [{"sites": list(pair), "k0": k * math.exp(TRUE_EA_EV[pair] / (BOLTZMANN_EV_PER_K * 293.15)),
                      "ea": TRUE_EA_EV[pair]} for pair, k in K_293_PER_S.items()],
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(station))
    return path


def _series(tmp_path: Path, d1_from_t1: bool) -> Path:
    """Three temperatures, five mixing times; EXSY D1 fixed at 1 s, or 3 x T1 (max 30 s) after a T1 block."""
    data = yaml.safe_load((EXAMPLES / "vt-series-paper.yaml").read_text())
    data["temperatures"] = ["20 degC", "60 degC", "100 degC"]
    data["equilibration"] = {"tolerance": "0.5 K", "hold": "1 min", "timeout": "60 min"}
    t1, exsy = data["experiments"][1]["t1"], data["experiments"][2]["exsy"]
    exsy["mixing_times"] = ["10 ms", "200 ms", "500 ms", "1 s", "2 s"]
    exsy["acquisition"].update(ns=16, ds=0, td1=8, td2=512)
    if d1_from_t1:
        data["recycle_delay"] = {"from": "t1", "factor": 3, "min": "1 s", "max": "30 s",
                                 "sites": ["Li2S", "LPSC", "LiI"]}
        t1.update(ns=1, td=512, delays=["30 ms", "100 ms", "300 ms", "1 s", "3 s", "10 s", "30 s"])
        data["experiments"] = [{"t1": t1}, {"exsy": exsy}]
    else:
        del data["recycle_delay"]
        exsy["acquisition"]["d1"] = "1 s"
        data["experiments"] = [{"exsy": exsy}]
    path = tmp_path / ("d1-from-t1.yaml" if d1_from_t1 else "d1-fixed.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def _activation_energies(tmp_path: Path, d1_from_t1: bool) -> dict[tuple[str, ...], tuple[float, float]]:
    name = "from-t1" if d1_from_t1 else "fixed"
    folder, result = start_run([_series(tmp_path, d1_from_t1)], _station(tmp_path), tmp_path / name,
                               show_progress=False)
    assert result.ok, result.lanes
    analysis = analyze_series(folder.root, sites=SITES_PPM, names=["Li2S", "LPSC", "LiI"], t1_from_run=False)
    return {tuple(a["pair"].split("-")): (a["ea_ev"], a["ea_stderr_ev"]) for a in analysis["arrhenius"]}


def test_fixed_short_d1_biases_ea_and_d1_from_t1_does_not(tmp_path: Path) -> None:
    fixed = _activation_energies(tmp_path, d1_from_t1=False)
    from_t1 = _activation_energies(tmp_path, d1_from_t1=True)
    ea_fixed, _ = fixed[("Li2S", "LPSC")]
    assert abs(ea_fixed - TRUE_EA_EV[("Li2S", "LPSC")]) > 0.04  # off by far more than the paper's precision
    for pair, truth in TRUE_EA_EV.items():
        ea, stderr = from_t1[pair]
        assert ea == pytest.approx(truth, abs=max(3 * stderr, 0.005)), (pair, ea, stderr)
        assert stderr < 0.03, (pair, stderr)
