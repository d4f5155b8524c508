"""Plans are data: an ordered list of plain, serialisable steps, each with its time estimate.

A step kind is a subclass of `Step` with its own `kind` literal and payload; a plan holds any of
them (a new kind needs no list here), and each lane declares the kinds it executes.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from common.sites import SITE_MATCH_PPM


class Step(BaseModel):
    """What every step has: where it sits in the plan, which lane runs it, and its time estimate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    index: int = Field(description="position in the plan, 0-based; the journal's key")
    lane: str = Field(description="the instrument line this step runs on: 'nmr' or 'cycler:<channel>'")
    protocol: str = Field(description="name of the protocol the step comes from")
    label: str
    estimate_s: float = Field(ge=0)

    def record_params(self) -> dict[str, Any]:
        """The kind-specific parameters a dataset record carries (the journal's params column)."""
        return {}

    def estimate_after(self, index: int, outcome: dict[str, Any]) -> float | None:
        """This step's revised estimate now that step `index` finished with `outcome`; None: unchanged."""
        return None


class MoveTemperature(Step):
    kind: Literal["move_temperature"] = "move_temperature"
    temperature_k: float = Field(description="sample temperature to move to")
    from_k: float
    ramp_k_per_min: float
    temperature_is_setpoint: bool = Field(False, description="a calibration run: temperatures are VT set points, "
                                                             "no calibration applied")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stability(_Part):
    """When the sample counts as at its temperature: within tolerance for hold_s, given up after timeout_s."""

    tolerance_k: float
    hold_s: float
    timeout_s: float


class Template(_Part):
    """The TopSpin dataset a point copies its parameters from (set up by hand), and the experiment it is set up for."""

    name: str
    expno: int
    experiment: Literal["exsy", "1d", "satrect", "t1ir"] = "exsy"


class NmrAcquisition(_Part):
    """What TopSpin is told for one 2D: pulse program, scans, sizes, delays, spectral window, MAS rate."""

    pulprog: str
    ns: int
    ds: int
    td1: int
    td2: int
    d1_s: float
    in0_s: float
    sw_ppm: float
    sfo1_mhz: float
    fn_mode: int
    mas_rate_hz: float



class D1Rule(_Part):
    """D1 = factor x max(T1 of the chosen sites), clamped to [min_s, max_s]; max_s when no usable T1."""

    factor: float = Field(gt=0)
    min_s: float = Field(gt=0)
    max_s: float = Field(gt=0)
    sites_ppm: tuple[float, ...] | None = Field(None, description="sites whose T1 count; None: every fitted site")
    t1_step: int = Field(description="plan index of the T1 step at the same temperature whose fit sets D1")

    def choose(self, fitted: list[tuple[float, float | None, bool]]) -> "D1Choice":
        """The D1 for the fitted sites (shift_ppm, t1_s, fit ok): the rule's value clamped, or max_s and why."""
        if self.sites_ppm is None:
            wanted = [(shift, t1, ok) for shift, t1, ok in fitted]
        else:
            wanted = []
            for site in self.sites_ppm:
                near = [f for f in fitted if abs(f[0] - site) <= SITE_MATCH_PPM]
                if not near:
                    return D1Choice(self.max_s, f"no T1 fitted at the site {site:g} ppm", None)
                wanted.append(min(near, key=lambda f: abs(f[0] - site)))
        bad = [shift for shift, t1, ok in wanted if not ok or t1 is None or t1 <= 0]
        if bad or not wanted:
            reason = ("the T1 fit failed at " + ", ".join(f"{s:g} ppm" for s in bad)) if bad else "no site fitted"
            return D1Choice(self.max_s, reason, None)
        wanted_s = self.factor * max(t1 for _, t1, _ in wanted if t1 is not None)
        return D1Choice(min(max(wanted_s, self.min_s), self.max_s), "", wanted_s)


class D1Choice(NamedTuple):
    """A recycle delay chosen by a D1Rule: the value used, why it fell back (or ""), the unclamped factor x T1."""

    d1_s: float
    fallback: str
    wanted_s: float | None

    @property
    def clamped(self) -> bool:
        """The rule's factor x T1 lay outside [min_s, max_s] and was clamped to it."""
        return self.wanted_s is not None and self.wanted_s != self.d1_s


class PointPolicy(_Part):
    """What to do when the expno holds data, the temperature strays, or the user stops mid-acquisition."""

    on_collision: Literal["error", "next-free"]
    on_vt_excursion: Literal["flag", "reacquire", "stop"]
    excursion_tolerance_k: float
    on_stop: Literal["halt", "finish"] = "halt"


class WaitStable(Step):
    kind: Literal["wait_stable"] = "wait_stable"
    temperature_k: float
    stability: Stability


class Acquire2D(Step):
    kind: Literal["acquire_2d"] = "acquire_2d"
    dataset: str
    expno: int
    title: str
    temperature_k: float
    mixing_time_s: float
    template: Template
    acquisition: NmrAcquisition
    stability: Stability
    policy: PointPolicy
    d1_rule: D1Rule | None = Field(None, description="D1 from the measured T1; acquisition.d1_s is then its max")

    def record_params(self) -> dict[str, Any]:
        return {"mixing_time_s": self.mixing_time_s, "d1_s": self.acquisition.d1_s}

    def estimate_after(self, index: int, outcome: dict[str, Any]) -> float | None:
        """Once the T1 step its D1 rule reads is done, the estimate with the D1 that T1 gives."""
        d1_s = (outcome.get("t1") or {}).get("d1_s") if self.d1_rule is not None and index == self.d1_rule.t1_step else None
        return None if d1_s is None else self.with_d1(float(d1_s)).estimate_s

    def with_d1(self, d1_s: float) -> "Acquire2D":
        """This point with another recycle delay, its estimate changed by the (DS + NS x TD1) scans it spans."""
        a = self.acquisition
        estimate_s = max(self.estimate_s + (d1_s - a.d1_s) * (a.ds + a.ns * a.td1), 0.0)
        return self.model_copy(update={"acquisition": a.model_copy(update={"d1_s": d1_s}), "estimate_s": estimate_s})


class LoopExit(_Part):
    """Skip plan steps first_index..last_index when, after this step, a loop's or pulse train's end condition holds."""

    first_index: int
    last_index: int
    on_voltage_end: bool = Field(False, description="this step ended on its voltage (a GITT pulse at its cut-off)")
    coulombic_efficiency_below_pct: float | None = Field(None, description="this step's cycle's CE below this")
    discharge_capacity_below_pct: float | None = Field(None, description="this cycle's discharge below this % of ...")
    reference_cycle: int | None = Field(None, description="... the discharge capacity of this cycle")


class CyclerStep(Step):
    kind: Literal["cycler_step"] = "cycler_step"
    channel: str
    cell: str
    cycle: int = Field(description="1-based; a cycle begins with a charge (a Li2S cathode starts discharged)")
    mode: Literal["charge", "discharge", "rest"]
    current_a: float = Field(ge=0, description="magnitude; the sign follows the mode")
    end_capacity_ah: float | None = None
    end_voltage_v: float | None = None
    end_time_s: float | None = None
    sample_interval_s: float
    voltage_min_v: float
    voltage_max_v: float
    current_max_a: float
    capacity_max_ah: float | None = None
    temperature_max_k: float | None = None
    on_resume: Literal["continue", "restart-step"] = "continue"
    control: Literal["current", "voltage"] = Field("current", description="voltage: hold hold_voltage_v, current_a "
                                                                           "the limit")
    hold_voltage_v: float | None = None
    end_current_a: float | None = Field(None, description="a voltage hold ends when |I| falls below this")
    end_dvdt_v_per_s: float | None = Field(None, description="a rest ends when |dV/dt| over dvdt_window_s is below this")
    dvdt_window_s: float | None = None
    loop_exit: LoopExit | None = None


class Plan(BaseModel):
    """The compiled plan of a run: every lane's steps and the run's time estimate."""

    model_config = ConfigDict(extra="forbid")

    protocols: list[str]
    station: str
    steps: list[SerializeAsAny[Step]]

    @property
    def lanes(self) -> dict[str, list[Step]]:
        out: dict[str, list[Step]] = {}
        for step in self.steps:
            out.setdefault(step.lane, []).append(step)
        return out

    def templates(self) -> tuple[tuple[str, int, str], ...]:
        """The TopSpin template datasets the plan's points copy their parameters from: (name, expno, experiment)."""
        found = {(t.name, t.expno, t.experiment) for s in self.steps if isinstance(t := getattr(s, "template", None), Template)}
        return tuple(sorted(found))

    def lane_estimates_s(self) -> dict[str, float]:
        return {lane: sum(s.estimate_s for s in steps) for lane, steps in self.lanes.items()}

    @property
    def total_estimate_s(self) -> float:
        """Lanes run concurrently, so the run takes as long as its longest lane."""
        return max(self.lane_estimates_s().values(), default=0.0)

    def to_json_dict(self) -> dict:
        return {
            "protocols": self.protocols,
            "station": self.station,
            "total_estimate_s": self.total_estimate_s,
            "lanes": self.lane_estimates_s(),
            "steps": [s.model_dump() for s in self.steps],
        }
