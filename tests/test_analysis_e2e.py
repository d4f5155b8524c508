"""End to end: a synthetic paper-like VT-EXSY series (5 temperatures x 8 mixing times) to Ea per pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.api import analyze_exsy, analyze_series
from analysis.arrhenius import BOLTZMANN_EV_PER_K
from analysis.synthetic import detailed_balance_rates, exchange_volumes, write_synthetic_exsy

SHIFTS = [2.31, 1.29, -4.56]
NAMES = ["Li2S", "LPSC", "LiI"]
EA_EV = {(0, 1): 0.107, (0, 2): 0.142, (1, 2): 0.117}
K300_PER_S = {(0, 1): 0.3, (0, 2): 0.5, (1, 2): 0.4}
POPULATIONS = np.array([0.45, 0.35, 0.20])
TEMPERATURES_K = [293.0, 313.0, 333.0, 353.0, 373.0]
MIXING_S = np.geomspace(0.01, 10, 8)


def true_rates(temperature_k: float) -> np.ndarray:
    forward = {pair: K300_PER_S[pair] * np.exp(-EA_EV[pair] / BOLTZMANN_EV_PER_K * (1 / temperature_k - 1 / 300))
               for pair in EA_EV}
    return detailed_balance_rates(forward, POPULATIONS)


@pytest.fixture(scope="module")
def paper_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("exsy") / "paper"
    entries, expno = [], 10
    for temperature_k in TEMPERATURES_K:
        k = true_rates(temperature_k)
        for t in MIXING_S:
            volumes = exchange_volumes(k, POPULATIONS, np.array([4.0, 2.0, 1.0]), t)
            write_synthetic_exsy(root / str(expno), volumes, SHIFTS, mixing_time_s=t, temperature_k=temperature_k,
                                 noise=0.002, seed=expno)
            entries.append({"dataset_dir": str(root.parent), "name": "paper", "expno": expno,
                            "temperature_k": temperature_k, "mixing_time_s": float(t), "status": "done"})
            expno += 1
    (root.parent / "datasets.json").write_text(json.dumps(entries))
    return root


def test_matrix_model_gives_every_ea_within_5_mev(paper_series):
    result = analyze_exsy(paper_series, "10-49", sites=SHIFTS, names=NAMES, model="matrix")
    assert [f["temperature_k"] for f in result["fits"]] == TEMPERATURES_K
    by_pair = {a["pair"]: a for a in result["arrhenius"]}
    for (i, j), ea in EA_EV.items():
        entry = by_pair[f"{NAMES[i]}-{NAMES[j]}"]
        assert entry["quantity"] == "k_per_s"
        assert abs(entry["ea_ev"] - ea) < 0.005, entry
        assert 0 < entry["ea_stderr_ev"] < 0.005
    rates = {(r["from"], r["to"]): r for r in result["fits"][0]["rates"]}
    assert len(rates) == 6
    k = true_rates(293.0)
    for (a, b), r in rates.items():
        truth = k[NAMES.index(a), NAMES.index(b)]
        assert abs(r["k_per_s"] - truth) < 5 * r["k_stderr_per_s"], (a, b, r, truth)


def test_run_folder_auto_sites_and_diffusion_model(paper_series):
    result = analyze_series(paper_series.parent, sites="auto", model="diffusion")
    assert np.allclose([s["shift_ppm"] for s in result["sites"]], SHIFTS, atol=0.02)
    assert len(result["points"]) == 40 and len(result["arrhenius"]) == 3
    assert all(np.isfinite(p["volumes"]).all() for p in result["points"])
    assert all("D_m2_per_s" in r and r["D_stderr_m2_per_s"] > 0 for f in result["fits"] for r in f["rates"])
    assert {a["quantity"] for a in result["arrhenius"]} == {"D_m2_per_s"}
    assert all(0.05 < a["ea_ev"] < 0.2 for a in result["arrhenius"])
