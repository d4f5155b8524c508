"""The plan's form of an adaptive VT-EXSY run: one long step whose estimate is the budget, and the points it makes.

The runner executes static plans, so the whole closed loop is one step (`adaptive_exsy`); each point
it acquires is an `AdaptivePoint`, an ordinary EXSY 2D (kind acquire_2d, so the journal, datasets.json
and `exsylab analyze series` treat it like a grid point) carrying its place in the run.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .plan import Acquire2D, NmrAcquisition, PointPolicy, Stability, Step, Template
from .timing import exsy_acquisition_s


class AdaptivePoint(Acquire2D):
    """Point `point` of an adaptive run (0-based, seeds first), built by the lane when the design chose it."""

    point: int = Field(ge=0)

    def record_params(self) -> dict[str, Any]:
        return {**super().record_params(), "point": self.point}


class AdaptiveExsy(Step):
    """Seeds at every temperature, then design-chosen points until the target is met or the budget spent."""

    kind: Literal["adaptive_exsy"] = "adaptive_exsy"
    dataset: str
    template: Template
    acquisition: NmrAcquisition
    stability: Stability
    policy: PointPolicy
    temperatures_k: tuple[float, ...] = Field(min_length=2)
    candidate_mixing_times_s: tuple[float, ...] = Field(min_length=2)
    seed_mixing_times_s: tuple[float, ...] = Field(min_length=3)
    site_names: tuple[str, ...] = Field(min_length=2)
    sites_ppm: tuple[float, ...] = Field(min_length=2)
    target_kind: Literal["ea_stderr_ev", "rate_relative_stderr"]
    target_value: float = Field(gt=0)
    budget_s: float = Field(gt=0)
    max_points: int = Field(ge=1)
    expno_start: int
    start_k: float = Field(description="where the sample is when the run starts (the VT at ambient)")
    ramp_k_per_min: float = Field(gt=0)
    settle_estimate_s: float = Field(ge=0, description="the station's settling time after a ramp (planning)")
    overhead_s: float = Field(ge=0, description="the spectrometer's per-acquisition overhead (planning)")

    def acquisition_s(self, mixing_time_s: float) -> float:
        """Planned duration of one 2D at this mixing time."""
        a = self.acquisition
        return exsy_acquisition_s(ns=a.ns, ds=a.ds, td1=a.td1, td2=a.td2, d1_s=a.d1_s, mixing_time_s=mixing_time_s,
                                  in0_s=a.in0_s, sw_ppm=a.sw_ppm, sfo1_mhz=a.sfo1_mhz, fn_mode=a.fn_mode,
                                  overhead_s=self.overhead_s)

    def move_s(self, from_k: float, to_k: float) -> float:
        """Planned VT cost of going from one sample temperature to another: ramp, settling and hold (0 if there)."""
        if abs(to_k - from_k) <= self.stability.tolerance_k:
            return 0.0
        return abs(to_k - from_k) / self.ramp_k_per_min * 60.0 + self.settle_estimate_s + self.stability.hold_s

    def seed_points(self) -> list[tuple[float, float]]:
        """The seed (temperature, mixing time) pairs in acquisition order: ascending temperature, ascending time."""
        return [(t, m) for t in sorted(self.temperatures_k) for m in sorted(set(self.seed_mixing_times_s))]

    def point_step(self, point: int, temperature_k: float, mixing_time_s: float) -> AdaptivePoint:
        """The 2D acquisition of point `point` (expno start + point), as the lane's acquisition machinery takes it."""
        expno = self.expno_start + point
        return AdaptivePoint(
            index=self.index, lane=self.lane, protocol=self.protocol, point=point,
            label=f"adaptive point {point}: EXSY {temperature_k:.1f} K, tmix {mixing_time_s:g} s -> expno {expno}",
            estimate_s=self.acquisition_s(mixing_time_s), dataset=self.dataset, expno=expno,
            title=f"{self.protocol}: T = {temperature_k:.1f} K, tmix = {mixing_time_s:g} s (adaptive point {point})",
            temperature_k=temperature_k, mixing_time_s=mixing_time_s, template=self.template,
            acquisition=self.acquisition, stability=self.stability, policy=self.policy)
