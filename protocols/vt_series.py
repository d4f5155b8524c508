"""The VT series protocol: at every temperature an ordered block of experiments (1D, T1, EXSY grid).

The EXSY points may take their recycle delay from the T1 measured just before them at the same
temperature (`recycle_delay: {from: t1, factor: 3, min: 1 s, max: 5 s}`, the seed's "three times
T1 ... up to 5 s"); the plan estimates them with the maximum until the T1 is measured.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, PositiveInt, Tag, model_validator

from .base import FileModel, Hertz, Kelvin, Seconds
from .exsy import DatasetName, Equilibration, ExpnoScheme, ExsyAcquisition, MixingTime, TemplateExperiment

MAX_T1_DELAYS = 256
SiteRef = Union[float, str]  # a shift in ppm, or a name from the protocol's `sites`


class Acquisition1DSpec(FileModel):
    """The parameters of a 1D or T1 acquisition that exsylab sets (the rest comes from the template)."""

    ns: PositiveInt = Field(16, le=65536)
    ds: int = Field(0, ge=0, le=1024)
    td: PositiveInt = Field(2048, ge=64, le=262144, description="TD (real points)")
    d1_s: Seconds = Field(5.0, alias="d1", gt=0, le=3600)
    sw_ppm: float = Field(100.0, alias="sw", gt=0, le=10000)
    sfo1_mhz: float = Field(73.578, alias="sfo1", gt=1, le=1500)
    mas_rate_hz: Hertz = Field(10_000.0, alias="mas_rate", ge=0, le=150_000)
    o1p_ppm: float | None = Field(None, alias="o1p", ge=-100_000, le=100_000,
                                  description="carrier in ppm (TopSpin's O1P, written as O1 in Hz); None: the template's O1")


class Spectrum1DSpec(Acquisition1DSpec):
    """A one-pulse spectrum."""

    template: TemplateExperiment
    pulprog: str = Field("zg", pattern=r"^[A-Za-z0-9_.+-]{1,64}$")


class T1Spec(Acquisition1DSpec):
    """A saturation- or inversion-recovery pseudo-2D over a delay list (TopSpin's vdlist)."""

    template: TemplateExperiment
    method: Literal["saturation", "inversion"] = "saturation"
    delays_s: list[Annotated[Seconds, Field(gt=0, le=3600)]] = Field(alias="delays", min_length=2,
                                                                    max_length=MAX_T1_DELAYS)
    ns: PositiveInt = Field(4, le=65536)
    pulprog: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+-]{1,64}$",
                                description="default: satrect (saturation) or t1ir (inversion)")

    @property
    def pulse_program(self) -> str:
        return self.pulprog or ("satrect" if self.method == "saturation" else "t1ir")


class ExsySpec(FileModel):
    """The EXSY mixing-time grid at this temperature."""

    template: TemplateExperiment
    mixing_times_s: list[MixingTime] = Field(alias="mixing_times", min_length=1)
    acquisition: ExsyAcquisition = Field(default_factory=ExsyAcquisition)


class Spectrum1DEntry(FileModel):
    spectrum_1d: Spectrum1DSpec


class T1Entry(FileModel):
    t1: T1Spec


class ExsyEntry(FileModel):
    exsy: ExsySpec


def _experiment_kind(value: object) -> str | None:
    """Which experiment an entry is: its one key (spectrum_1d, t1, exsy), so errors name the right fields."""
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    return next((k for k in EXPERIMENT_KINDS if getattr(value, k, None) is not None), None)


EXPERIMENT_KINDS = ("spectrum_1d", "t1", "exsy")
Experiment = Annotated[
    Union[Annotated[Spectrum1DEntry, Tag("spectrum_1d")], Annotated[T1Entry, Tag("t1")],
          Annotated[ExsyEntry, Tag("exsy")]],
    Discriminator(_experiment_kind, custom_error_type="experiment_kind",
                  custom_error_message="each experiment is one of spectrum_1d:, t1:, exsy: with its settings"),
]


class RecycleDelay(FileModel):
    """D1 of the EXSY points = factor x max(T1 of the sites), clamped to [min, max]."""

    from_: Literal["t1"] = Field(alias="from")
    factor: float = Field(3.0, gt=0, le=20)
    min_s: Seconds = Field(1.0, alias="min", gt=0, le=3600)
    max_s: Seconds = Field(5.0, alias="max", gt=0, le=3600)
    sites: list[SiteRef] | None = Field(None, min_length=1, description="names or ppm; default every fitted site")

    @model_validator(mode="after")
    def _ordered(self) -> "RecycleDelay":
        if self.min_s > self.max_s:
            raise ValueError(f"min ({self.min_s:g} s) is above max ({self.max_s:g} s)")
        return self


class VtSeriesProtocol(FileModel):
    """A VT series: which dataset, which temperatures, and at each the same ordered block of experiments."""

    kind: Literal["vt-series"]
    name: str = Field(min_length=1, max_length=120)
    dataset: DatasetName = Field(description="TopSpin dataset NAME every experiment is written into")
    temperatures_k: list[Annotated[Kelvin, Field(gt=0)]] = Field(alias="temperatures", min_length=1)
    sites: dict[str, float] | None = Field(None, description="site name -> shift (ppm): fitted by the T1 analysis")
    experiments: list[Experiment] = Field(min_length=1)
    recycle_delay: RecycleDelay | None = None
    temperature_order: Literal["as-listed", "ascending", "descending", "shortest-ramp"] = "as-listed"
    equilibration: Equilibration = Field(default_factory=Equilibration)
    expno: ExpnoScheme = Field(default_factory=ExpnoScheme)
    on_vt_excursion: Literal["flag", "reacquire", "stop"] = "reacquire"
    excursion_tolerance_k: float = Field(2.0, gt=0, le=50, description="K off the target during an acquisition")
    on_stop: Literal["halt", "finish"] = "halt"

    @model_validator(mode="after")
    def _consistent(self) -> "VtSeriesProtocol":
        if len(set(self.temperatures_k)) != len(self.temperatures_k):
            raise ValueError("a temperature is listed twice")
        rates = {self.mas_rate_hz_of(e) for e in self.experiments}
        if len(rates) > 1:
            raise ValueError(f"every experiment must spin at the same MAS rate (got {sorted(rates)} Hz): "
                             "the station's calibration is per rate")
        if self.recycle_delay is not None:
            for i, entry in enumerate(self.experiments):
                if isinstance(entry, ExsyEntry) and not any(isinstance(e, T1Entry) for e in self.experiments[:i]):
                    raise ValueError(f"experiments[{i}]: recycle_delay from t1 needs a t1 experiment before the exsy")
            self.rule_sites_ppm()  # names must be known
        return self

    @staticmethod
    def mas_rate_hz_of(entry: Experiment) -> float:
        if isinstance(entry, Spectrum1DEntry):
            return entry.spectrum_1d.mas_rate_hz
        if isinstance(entry, T1Entry):
            return entry.t1.mas_rate_hz
        return entry.exsy.acquisition.mas_rate_hz

    def block_size(self) -> int:
        """Acquisitions per temperature: one per 1D and T1, one per EXSY mixing time."""
        return sum(len(e.exsy.mixing_times_s) if isinstance(e, ExsyEntry) else 1 for e in self.experiments)

    def site_ppm(self, ref: SiteRef) -> float:
        """A site reference (name or ppm) as ppm."""
        if isinstance(ref, str):
            if self.sites is None or ref not in self.sites:
                known = ", ".join(self.sites) if self.sites else "none: add a sites: mapping"
                raise ValueError(f"recycle_delay.sites: unknown site {ref!r} (known: {known})")
            return self.sites[ref]
        return float(ref)

    def rule_sites_ppm(self) -> tuple[float, ...] | None:
        """The shifts whose T1 set D1 (None: every fitted site)."""
        rule = self.recycle_delay
        if rule is None or rule.sites is None:
            return None
        return tuple(self.site_ppm(s) for s in rule.sites)
