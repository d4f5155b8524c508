"""End to end against the TopSpin dataset simulator (hardware_sim, branch nmr): the paper series.

5 temperatures (293-373 K) x 8 mixing times (0.01-10 s), NS 16, TD1 32, IN0 1 ms, States-TPPI,
int32 ser with the digital filter; every pair's Ea must come back within 0.005 eV of the truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.api import analyze_exsy
from hardware_sim.nmr_dataset import write_acquired_dataset
from hardware_sim.nmr_physics import paper_sample

TEMPERATURES_K = [293.0, 313.0, 333.0, 353.0, 373.0]
MIXING_S = np.geomspace(0.01, 10, 8)
TRUE_EA_EV = {"Li2S-LPSC": 0.107, "Li2S-LiI": 0.142, "LPSC-LiI": 0.117}


@pytest.fixture(scope="module")
def simulated_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("topspin") / "paper"
    sample = paper_sample()
    expno = 10
    for temperature_k in TEMPERATURES_K:
        for t in MIXING_S:
            # D1 >> T1 (20 s at most): fully relaxed scans, so the Ea truth must come back undistorted
            params = {"TE": temperature_k, "D8": float(t), "NS": 16, "TD1": 32, "IN0": 1e-3, "D1": 200.0}
            write_acquired_dataset(root / str(expno), params, temperature_k, sample=sample, seed=expno)
            expno += 1
    return root, sample


def test_paper_series_gives_every_ea_within_5_mev(simulated_series):
    root, sample = simulated_series
    result = analyze_exsy(root, "10-49", sites=[2.31, 1.29, -4.56], names=["Li2S", "LPSC", "LiI"], model="matrix")
    by_pair = {a["pair"]: a for a in result["arrhenius"]}
    assert set(by_pair) == set(TRUE_EA_EV)
    for pair, ea in TRUE_EA_EV.items():
        assert abs(by_pair[pair]["ea_ev"] - ea) < 0.005, by_pair[pair]
    names = ["Li2S", "LPSC", "LiI"]
    for fit in result["fits"]:
        truth = sample.rate_matrix(fit["temperature_k"])
        for rate in fit["rates"]:
            expected = truth[names.index(rate["from"]), names.index(rate["to"])]
            assert abs(rate["k_per_s"] - expected) < max(5 * rate["k_stderr_per_s"], 0.05 * expected), rate


def test_no_exchange_is_reported_not_fitted(tmp_path):
    sample = paper_sample(with_lii=False)
    expno = 10
    for temperature_k in (293.0, 373.0):
        for t in (0.01, 1.0, 5.0, 20.0):
            params = {"TE": temperature_k, "D8": t, "IN0": 1e-3}
            write_acquired_dataset(tmp_path / "nolii" / str(expno), params, temperature_k, sample=sample, seed=expno)
            expno += 1
    for model in ("matrix", "diffusion"):
        result = analyze_exsy(tmp_path / "nolii", "10-17", sites=[2.31, 1.29], names=["Li2S", "LPSC"], model=model)
        assert result["arrhenius"] == []
        assert any("K: Li2S-LPSC exchange not determined" in w for w in result["warnings"])
        assert any(w.startswith("Li2S-LPSC: no Arrhenius fit") for w in result["warnings"])
        assert all(r["k_per_s"] < 1e-3 for f in result["fits"] for r in f["rates"])
