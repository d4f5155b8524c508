"""The table of exchange fit models: the CLI choices, the API's validation and the Arrhenius quantity come from it.

A new model is its fit function plus one entry in FIT_MODELS. The function is called as
fit(times_s, volumes, **fields of its options dataclass) and returns an ExchangeFit.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.exchange_models import ExchangeFit, fit_diffusion, fit_matrix, fit_two_site


@dataclass(frozen=True)
class MatrixOptions:
    """The N-site matrix model takes no options."""


@dataclass(frozen=True)
class TwoSiteOptions:
    """The two-site model takes no options."""


@dataclass(frozen=True)
class DiffusionOptions:
    """Options of the Fickian sphere diffusion model."""

    radius_m: float = field(default=2.5e-6, metadata={"help": "radius of the particles the ions leave (m)"})

    def __post_init__(self) -> None:
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise AnalysisInputError(f"model option 'radius_m': {self.radius_m!r} is not a positive length in m")


@dataclass(frozen=True)
class FitModel:
    """One table entry: name, fit function, options dataclass, description, and whether it yields D."""

    name: str
    fit: Callable[..., ExchangeFit]
    options: type[Any]
    description: str
    yields_d: bool = False  # per-pair D (m^2/s) in ExchangeFit.d_m2_per_s; Arrhenius on D instead of k

    @property
    def arrhenius_quantity(self) -> str:
        """The JSON key fitted by Arrhenius: D_m2_per_s for diffusion-type models, else k_per_s."""
        return "D_m2_per_s" if self.yields_d else "k_per_s"

    @property
    def arrhenius_axis_label(self) -> str:
        """The y-axis label of the Arrhenius plot."""
        return "ln(D / m^2 s^-1)" if self.yields_d else "ln(k / s^-1)"

    def run(self, times_s: np.ndarray, volumes: np.ndarray, options: Any) -> ExchangeFit:
        """Fit volumes[t, a, b] at one temperature with options (an instance of self.options)."""
        return self.fit(times_s, volumes, **dataclasses.asdict(options))


FIT_MODELS: dict[str, FitModel] = {entry.name: entry for entry in (
    FitModel("two-site", fit_two_site, TwoSiteOptions, "Perrin & Dwyer two-site model, pair by pair"),
    FitModel("matrix", fit_matrix, MatrixOptions, "N-site relaxation-exchange matrix model (default)"),
    FitModel("diffusion", fit_diffusion, DiffusionOptions, "Fickian diffusion out of spheres, D per pair",
             yields_d=True),
)}


def get_fit_model(name: str) -> FitModel:
    """The table entry called name, or AnalysisInputError listing the valid choices."""
    if name not in FIT_MODELS:
        raise AnalysisInputError(f"model: {name!r} unknown (choices: {', '.join(FIT_MODELS)})")
    return FIT_MODELS[name]


def _convert(key: str, value: object, kind: type) -> object:
    """A mapping value (a number, or a command-line string) as the option field's type."""
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise AnalysisInputError(f"model option {key!r}: {value!r} is not a {kind.__name__}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise AnalysisInputError(f"model option {key!r}: {value!r} is not a {kind.__name__}")
    return value


def validated_options(model: FitModel, given: object | Mapping[str, object] | None = None) -> Any:
    """given (None, an options instance or a mapping of field names) as model's validated options dataclass."""
    if given is None:
        return model.options()
    if isinstance(given, model.options):
        return given
    if not isinstance(given, Mapping):
        raise AnalysisInputError(f"model options: {type(given).__name__} given, the {model.name} model takes "
                                 f"{model.options.__name__} or a mapping")
    hints = typing.get_type_hints(model.options)
    names = [f.name for f in dataclasses.fields(model.options)]
    values = {}
    for key, value in given.items():
        if key not in names:
            raise AnalysisInputError(f"model option {key!r}: not an option of the {model.name} model "
                                     f"(its options: {', '.join(names) or 'none'})")
        values[key] = _convert(key, value, hints[key])
    return model.options(**values)
