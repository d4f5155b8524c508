"""The adaptive VT-EXSY protocol: seed points, then each next (temperature, mixing time) chosen from the data.

The file gives the temperatures, the range (or grid) of allowed mixing times, a few seed mixing
times per temperature for a first fit, the EXSY acquisition, a target precision and a budget of
spectrometer hours; the run stops when the target is met or the budget is spent (docs/adaptive.md).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from common.topspin_names import MAX_EXPNO

from .base import FileModel, Kelvin, Seconds
from .exsy import DatasetName, Equilibration, ExsyAcquisition, MixingTime, TemplateExperiment

MAX_CANDIDATES = 64
MAX_POINTS = 2000


class MixingTimeRange(FileModel):
    """The mixing times the design may choose: `candidates` log-spaced values in [min, max], or an explicit grid."""

    min_s: MixingTime = Field(alias="min")
    max_s: MixingTime = Field(alias="max")
    candidates: int = Field(12, ge=2, le=MAX_CANDIDATES, description="log-spaced values from min to max")
    grid_s: list[MixingTime] | None = Field(None, alias="grid", min_length=2, max_length=MAX_CANDIDATES,
                                            description="explicit candidates instead of the log-spaced ones")

    @model_validator(mode="after")
    def _ordered(self) -> "MixingTimeRange":
        if self.min_s >= self.max_s:
            raise ValueError(f"min ({self.min_s:g} s) must be below max ({self.max_s:g} s)")
        if self.grid_s is not None:
            outside = [t for t in self.grid_s if not self.min_s <= t <= self.max_s]
            if outside:
                raise ValueError(f"grid values {outside} lie outside min..max")
            if len(set(self.grid_s)) != len(self.grid_s):
                raise ValueError("grid: a mixing time is listed twice")
        return self

    def values_s(self) -> tuple[float, ...]:
        """The candidate mixing times, ascending (log-spaced ones rounded to 3 significant digits)."""
        if self.grid_s is not None:
            return tuple(sorted(self.grid_s))
        ratio = math.log(self.max_s / self.min_s)
        values = (self.min_s * math.exp(ratio * i / (self.candidates - 1)) for i in range(self.candidates))
        return tuple(sorted({float(f"{v:.3g}") for v in values}))


class Target(FileModel):
    """When the run has learnt enough: the standard error of every pair's Ea, or of every rate relative to it."""

    ea_stderr_ev: float | None = Field(None, alias="ea_stderr", gt=0, le=1, description="eV, on each pair's Ea")
    rate_relative_stderr: float | None = Field(None, gt=0, le=10,
                                               description="stderr/k of every forward rate at every temperature")

    @model_validator(mode="after")
    def _one(self) -> "Target":
        if (self.ea_stderr_ev is None) == (self.rate_relative_stderr is None):
            raise ValueError("give exactly one of ea_stderr (eV) or rate_relative_stderr")
        return self

    @property
    def kind(self) -> Literal["ea_stderr_ev", "rate_relative_stderr"]:
        return "ea_stderr_ev" if self.ea_stderr_ev is not None else "rate_relative_stderr"

    @property
    def value(self) -> float:
        return float(self.ea_stderr_ev if self.ea_stderr_ev is not None else self.rate_relative_stderr or 0.0)


class AdaptiveExpno(FileModel):
    """Point n of the run (seeds first) goes to expno start + n."""

    start: PositiveInt = Field(100, le=MAX_EXPNO)
    on_collision: Literal["error", "next-free"] = "error"


class AdaptiveExsyProtocol(FileModel):
    """Closed-loop VT-EXSY: seeds at every temperature, then the most informative point per hour until target or budget."""

    kind: Literal["adaptive-exsy"]
    name: str = Field(min_length=1, max_length=120)
    dataset: DatasetName = Field(description="TopSpin dataset NAME every point is written into")
    template: TemplateExperiment
    sites: dict[str, float] = Field(min_length=2, description="site name -> shift (ppm): the exchange model's sites")
    temperatures_k: list[Annotated[Kelvin, Field(gt=0)]] = Field(alias="temperatures", min_length=2)
    mixing_times: MixingTimeRange
    seed_mixing_times_s: list[MixingTime] = Field(alias="seed_mixing_times", min_length=3,
                                                  description="acquired at every temperature before the design starts")
    acquisition: ExsyAcquisition = Field(default_factory=ExsyAcquisition)
    target: Target
    budget_s: Seconds = Field(alias="budget", gt=0, le=90 * 86400, description="spectrometer time, VT moves included")
    max_points: int = Field(200, ge=1, le=MAX_POINTS)
    equilibration: Equilibration = Field(default_factory=Equilibration)
    expno: AdaptiveExpno = Field(default_factory=AdaptiveExpno)
    on_vt_excursion: Literal["flag", "reacquire", "stop"] = "reacquire"
    excursion_tolerance_k: float = Field(2.0, gt=0, le=50, description="K off the target during an acquisition")
    on_stop: Literal["halt", "finish"] = "halt"

    @model_validator(mode="after")
    def _consistent(self) -> "AdaptiveExsyProtocol":
        if len(set(self.temperatures_k)) != len(self.temperatures_k):
            raise ValueError("a temperature is listed twice")
        if len(set(self.seed_mixing_times_s)) < 3:
            raise ValueError("seed_mixing_times: at least three different values (the exchange fit needs them)")
        outside = [t for t in self.seed_mixing_times_s
                   if not self.mixing_times.min_s <= t <= self.mixing_times.max_s]
        if outside:
            raise ValueError(f"seed_mixing_times {outside} lie outside mixing_times min..max")
        if len(set(self.sites.values())) != len(self.sites) or any("-" in n or not n for n in self.sites):
            raise ValueError("sites: shifts must be distinct and names non-empty without '-'")
        n_seeds = len(self.temperatures_k) * len(self.seed_mixing_times_s)
        if n_seeds > self.max_points:
            raise ValueError(f"max_points {self.max_points} is below the {n_seeds} seed points")
        if self.expno.start + self.max_points - 1 > MAX_EXPNO:
            raise ValueError(f"expno.start {self.expno.start} + max_points {self.max_points} passes {MAX_EXPNO}")
        return self
