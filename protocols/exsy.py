"""The VT-EXSY series protocol: a grid of mixing times x temperatures of 2D 6Li-6Li EXSY."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt, field_validator, model_validator

from common.topspin_names import MAX_EXPNO, dataset_name_problem

from .base import FileModel, Hertz, Kelvin, Seconds


MIN_F1_SPECTRAL_WIDTH_HZ = 10.0  # below this the t1 increment is absurd (the paper's "8000 ms")
MAX_MIXING_TIME_S = 600.0

MixingTime = Annotated[Seconds, Field(gt=0, le=MAX_MIXING_TIME_S)]


def check_dataset_name(name: str) -> str:
    """A TopSpin dataset name that cannot escape the data folder."""
    problem = dataset_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


DatasetName = Annotated[str, AfterValidator(check_dataset_name)]


class TemplateExperiment(FileModel):
    """The experiment whose parameters (pulse program, power levels, SW...) each point copies."""

    name: DatasetName = Field(description="TopSpin dataset NAME of the template")
    expno: PositiveInt = Field(le=MAX_EXPNO)


class ExsyAcquisition(FileModel):
    """Acquisition parameters shared by every point of the series."""

    ns: PositiveInt = Field(16, le=65536, description="scans per t1 increment")
    ds: int = Field(4, ge=0, le=1024, description="dummy scans")
    td1: PositiveInt = Field(32, ge=2, le=4096, description="TD in F1 (t1 points)")
    td2: PositiveInt = Field(2048, ge=64, le=262144, description="TD in F2 (real points)")
    d1_s: Seconds = Field(5.0, alias="d1", gt=0, le=3600, description="recycle delay")
    t1_increment_s: Seconds = Field(1e-3, alias="t1_increment", gt=0, description="IN0")
    sw_ppm: float = Field(100.0, alias="sw", gt=0, le=10000, description="F2 spectral width in ppm")
    sfo1_mhz: float = Field(73.578, alias="sfo1", gt=1, le=1500, description="6Li at 11.7 T")
    fn_mode: Literal[1, 2, 3, 4, 5, 6] = Field(5, alias="fnmode", description="F1 quadrature (5 = States-TPPI)")
    pulprog: str = Field("noesyph", pattern=r"^[A-Za-z0-9_.+-]{1,64}$")
    mas_rate_hz: Hertz = Field(10_000.0, alias="mas_rate", ge=0, le=150_000)
    sites_ppm: list[float] | None = Field(
        None, alias="sites", min_length=1, description="expected shifts (ppm): F1 must be wide enough not to fold them"
    )

    @property
    def aq_s(self) -> float:
        """Acquisition time in F2: TD / (2 SW_h)."""
        return self.td2 / (2.0 * self.sw_ppm * self.sfo1_mhz)

    @property
    def f1_spectral_width_hz(self) -> float:
        return 1.0 / self.t1_increment_s

    @model_validator(mode="after")
    def _sane_t1_increment(self) -> "ExsyAcquisition":
        sw1_hz = self.f1_spectral_width_hz
        if sw1_hz < MIN_F1_SPECTRAL_WIDTH_HZ:
            raise ValueError(
                f"t1_increment {self.t1_increment_s:g} s gives an F1 spectral width of {sw1_hz:.4g} Hz "
                f"({sw1_hz / self.sfo1_mhz:.3g} ppm): absurd, at least {MIN_F1_SPECTRAL_WIDTH_HZ:g} Hz is needed "
                "(did you mean ms?)"
            )
        if self.sites_ppm is not None:
            span_ppm = max(self.sites_ppm) - min(self.sites_ppm)
            sw1_ppm = sw1_hz / self.sfo1_mhz
            if span_ppm >= sw1_ppm:
                raise ValueError(
                    f"t1_increment {self.t1_increment_s * 1e3:g} ms gives an F1 width of {sw1_ppm:.3g} ppm, less than "
                    f"the {span_ppm:.3g} ppm between the sites {self.sites_ppm}: peaks would fold in F1 "
                    f"(at most {1e3 / (span_ppm * self.sfo1_mhz):.3g} ms)"
                )
        return self


class Equilibration(FileModel):
    """When a temperature counts as reached: within tolerance for hold, or fail after timeout."""

    tolerance_k: float = Field(0.5, alias="tolerance", gt=0, le=20, description="K (a difference)")
    hold_s: Seconds = Field(600.0, alias="hold", ge=0, le=24 * 3600)
    timeout_s: Seconds = Field(3600.0, alias="timeout", gt=0, le=48 * 3600)

    @field_validator("tolerance_k", mode="before")
    @classmethod
    def _kelvin_difference(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().endswith(("K", "degC")):
            return float(value.strip().removesuffix("degC").removesuffix("K"))
        return value

    @model_validator(mode="after")
    def _timeout_covers_hold(self) -> "Equilibration":
        if self.timeout_s <= self.hold_s:
            raise ValueError(f"timeout ({self.timeout_s:g} s) must be longer than hold ({self.hold_s:g} s)")
        return self


class ExpnoScheme(FileModel):
    """How experiment numbers are given: sequential from start, or one block per temperature."""

    start: PositiveInt = Field(100, le=MAX_EXPNO)
    per_temperature_block: int | None = Field(
        None, ge=1, le=10000, description="expno = start + block * i_temperature + i_mixing"
    )
    on_collision: Literal["error", "next-free"] = "error"


class TemperaturePoint(FileModel):
    """One temperature with its own mixing times."""

    temperature_k: Kelvin = Field(alias="temperature", gt=0)
    mixing_times_s: list[MixingTime] = Field(alias="mixing_times", min_length=1)


class VtExsyProtocol(FileModel):
    """A VT-EXSY series: which dataset, which grid, which order, and what to do when VT misbehaves."""

    kind: Literal["vt-exsy"]
    name: str = Field(min_length=1, max_length=120)
    dataset: DatasetName = Field(description="TopSpin dataset NAME the series is written into")
    template: TemplateExperiment
    temperatures_k: list[Annotated[Kelvin, Field(gt=0)]] | None = Field(None, alias="temperatures", min_length=1)
    mixing_times_s: list[MixingTime] | None = Field(None, alias="mixing_times", min_length=1)
    points: list[TemperaturePoint] | None = Field(None, min_length=1)
    acquisition: ExsyAcquisition = Field(default_factory=ExsyAcquisition)
    temperature_order: Literal["as-listed", "ascending", "descending", "shortest-ramp"] = "as-listed"
    equilibration: Equilibration = Field(default_factory=Equilibration)
    expno: ExpnoScheme = Field(default_factory=ExpnoScheme)
    title: str = Field("{name}: T = {temperature_k:.1f} K, tmix = {mixing_time_s:g} s", max_length=400)
    on_vt_excursion: Literal["flag", "reacquire", "stop"] = "reacquire"
    excursion_tolerance_k: float = Field(2.0, gt=0, le=50, description="K off the target during an acquisition")
    on_stop: Literal["halt", "finish"] = Field(
        "halt", description="a stop request during an acquisition: halt it (kept, marked partial) or let it finish"
    )

    @model_validator(mode="after")
    def _grid_given_once(self) -> "VtExsyProtocol":
        grid = self.temperatures_k is not None or self.mixing_times_s is not None
        if grid and self.points is not None:
            raise ValueError("give either temperatures + mixing_times (one grid) or points, not both")
        if not grid and self.points is None:
            raise ValueError("no grid: give temperatures and mixing_times, or points")
        if grid and (self.temperatures_k is None or self.mixing_times_s is None):
            raise ValueError("a grid needs both temperatures and mixing_times")
        temps = [t for t, _ in self.grid()]
        if len(set(temps)) != len(temps):
            raise ValueError("a temperature is listed twice")
        try:
            self.title.format(name=self.name, dataset=self.dataset, temperature_k=300.0, mixing_time_s=0.1, expno=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"title template {self.title!r} is not valid ({exc}); fields: name, dataset, temperature_k, mixing_time_s, expno"
            ) from None
        return self

    def grid(self) -> list[tuple[float, list[float]]]:
        """(temperature_k, mixing_times_s) in the order listed in the file."""
        if self.points is not None:
            return [(p.temperature_k, list(p.mixing_times_s)) for p in self.points]
        return [(t, list(self.mixing_times_s or [])) for t in self.temperatures_k or []]
