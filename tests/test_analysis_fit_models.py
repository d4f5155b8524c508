"""The fit model table: option validation, and a new model added by one entry plus its function."""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass

import numpy as np
import pytest

from analysis.api import analyze_exsy
from analysis.errors import AnalysisInputError
from analysis.exchange_models import ExchangeFit
from analysis.fit_models import FIT_MODELS, DiffusionOptions, FitModel, get_fit_model, validated_options
from analysis.synthetic import detailed_balance_rates, exchange_volumes, write_synthetic_exsy

SHIFTS = [2.31, 1.29]


@pytest.fixture(scope="module")
def two_site_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("models") / "exsy"
    p = np.array([0.6, 0.4])
    expno = 10
    for temperature_k, k_ab in ((300.0, 0.5), (340.0, 0.9)):
        k = detailed_balance_rates({(0, 1): k_ab}, p)
        for t in (0.01, 0.3, 1.0, 4.0):
            write_synthetic_exsy(root / str(expno), exchange_volumes(k, p, np.array([3.0, 2.0]), t), SHIFTS,
                                 mixing_time_s=t, temperature_k=temperature_k, noise=0.001, seed=expno)
            expno += 1
    return root


def test_every_option_field_is_a_keyword_of_its_fit_function():
    for model in FIT_MODELS.values():
        parameters = inspect.signature(model.fit).parameters
        assert {f.name for f in dataclasses.fields(model.options)} <= set(parameters), model.name
        model.options()  # the defaults are valid


def test_options_from_a_mapping_an_instance_or_nothing():
    diffusion = get_fit_model("diffusion")
    assert validated_options(diffusion) == DiffusionOptions(radius_m=2.5e-6)
    assert validated_options(diffusion, {"radius_m": "3e-6"}) == DiffusionOptions(radius_m=3e-6)
    assert validated_options(diffusion, {"radius_m": 3}) == DiffusionOptions(radius_m=3.0)
    given = DiffusionOptions(radius_m=1e-6)
    assert validated_options(diffusion, given) is given


@pytest.mark.parametrize("model, given, words", [
    ("diffusion", {"radius": 1e-6}, ["'radius'", "diffusion", "radius_m"]),
    ("matrix", {"radius_m": 1e-6}, ["'radius_m'", "matrix", "none"]),
    ("diffusion", {"radius_m": "big"}, ["radius_m", "'big'", "float"]),
    ("diffusion", {"radius_m": True}, ["radius_m", "float"]),
    ("diffusion", {"radius_m": -1.0}, ["radius_m", "positive"]),
    ("diffusion", {"radius_m": "nan"}, ["radius_m", "positive"]),
    ("diffusion", 2.5e-6, ["float", "DiffusionOptions", "mapping"]),
])
def test_bad_options_are_refused_in_one_line_naming_the_field(model, given, words):
    with pytest.raises(AnalysisInputError) as refused:
        validated_options(get_fit_model(model), given)
    message = str(refused.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_unknown_model_lists_the_choices(two_site_series):
    with pytest.raises(AnalysisInputError, match="'arrhenius' unknown .choices: two-site, matrix, diffusion.$"):
        analyze_exsy(two_site_series, "10-17", SHIFTS, model="arrhenius")


def test_diffusion_radius_reaches_the_fit(two_site_series):
    runs = {r: analyze_exsy(two_site_series, "10-17", SHIFTS, model="diffusion", model_options={"radius_m": r})
            for r in (2.5e-6, 5e-6)}
    small, large = ([rate for fit in runs[r]["fits"] for rate in fit["rates"]] for r in (2.5e-6, 5e-6))
    for a, b in zip(small, large):  # D t / r^2 is what the data fix: D scales as r^2, k does not change
        assert b["D_m2_per_s"] == pytest.approx(4 * a["D_m2_per_s"], rel=1e-6)
        assert b["k_per_s"] == pytest.approx(a["k_per_s"], rel=1e-6)


@dataclass(frozen=True)
class ConstantOptions:
    """Options of the toy model."""

    rate_per_s: float = 0.5


def fit_constant(times_s: np.ndarray, volumes: np.ndarray, rate_per_s: float) -> ExchangeFit:
    """Toy model: every rate is rate_per_s at every temperature, with a 10 % standard error."""
    n = volumes.shape[1]
    k = np.full((n, n), rate_per_s) * (1 - np.eye(n))
    diagonal = np.diag(volumes[np.argmin(times_s)])
    return ExchangeFit("constant", n, k, 0.1 * k, diagonal / diagonal.sum())


def test_a_new_model_is_one_entry_plus_its_function(two_site_series, tmp_path, capsys, monkeypatch):
    from acquisition.analyze_cmd import main

    monkeypatch.setitem(FIT_MODELS, "constant", FitModel("constant", fit_constant, ConstantOptions, "toy model"))
    result = analyze_exsy(two_site_series, "10-17", SHIFTS, model="constant", model_options={"rate_per_s": 0.7},
                          plot=tmp_path / "toy.png")
    assert [f["model"] for f in result["fits"]] == ["constant", "constant"]
    assert {r["k_per_s"] for f in result["fits"] for r in f["rates"]} == {0.7}
    (arrhenius,) = result["arrhenius"]
    assert arrhenius["quantity"] == "k_per_s" and arrhenius["ea_ev"] == pytest.approx(0.0, abs=1e-9)
    assert arrhenius["prefactor"] == pytest.approx(0.7)
    assert (tmp_path / "toy.png").stat().st_size > 10000
    assert main(["analyze", "exsy", str(two_site_series), "--expnos", "10-17", "--sites", "2.31,1.29",
                 "--model", "constant", "--rate-per-s", "0.25", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"][0]["rates"][0]["k_per_s"] == 0.25
    monkeypatch.undo()
    with pytest.raises(AnalysisInputError, match="'constant' unknown"):
        get_fit_model("constant")
