"""The MAS temperature-calibration protocol: a chemical-shift thermometer's 1D spectrum at each VT set point.

Under MAS the sample runs hotter than the VT sensor (frictional heating, growing with the
spinning rate). This protocol drives the VT to plain set points (no calibration applied), takes a
1D spectrum of a thermometer sample at each, reads the sample temperature from the line's shift,
fits sample temperature against set point, and writes a station file carrying that calibration
for the protocol's MAS rate. Lead nitrate 207Pb (about 0.75 ppm/K) is the usual thermometer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import FileModel, Kelvin
from .exsy import DatasetName, Equilibration, ExpnoScheme, TemplateExperiment
from .vt_series import Acquisition1DSpec


class ThermometerSpec(FileModel):
    """A line whose shift moves linearly with temperature: shift = reference + slope (T - T_ref)."""

    name: str = Field("Pb(NO3)2", min_length=1, max_length=80)
    nucleus: str = Field("207Pb", min_length=1, max_length=16)
    reference_shift_ppm: float = Field(ge=-100_000, le=100_000, description="the line's shift at the reference temperature")
    reference_temperature_k: Kelvin = Field(alias="reference_temperature", gt=0)
    slope_ppm_per_k: float = Field(description="d(shift)/dT; lead nitrate: +0.753 ppm/K (Bielecki & Burum 1995)")

    @field_validator("slope_ppm_per_k")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0 or abs(value) > 100:
            raise ValueError("the slope must be non-zero (ppm/K) and at most 100 ppm/K in size")
        return value


class ThermometerSpectrum(Acquisition1DSpec):
    """The thermometer's one-pulse spectrum; o1p puts the carrier on its line (207Pb lies thousands of ppm away)."""

    template: TemplateExperiment
    pulprog: str = Field("zg", pattern=r"^[A-Za-z0-9_.+-]{1,64}$")


class MasCalibrationProtocol(FileModel):
    """Set points, thermometer and spectrum; the result is a calibration for `spectrum.mas_rate`."""

    kind: Literal["mas-calibration"]
    name: str = Field(min_length=1, max_length=120)
    dataset: DatasetName = Field(description="TopSpin dataset NAME the thermometer spectra are written into")
    setpoints_k: list[Annotated[Kelvin, Field(gt=0)]] = Field(alias="setpoints", min_length=2)
    thermometer: ThermometerSpec
    spectrum: ThermometerSpectrum
    equilibration: Equilibration = Field(default_factory=Equilibration)
    expno: ExpnoScheme = Field(default_factory=ExpnoScheme)
    station_out: str = Field("station-calibrated.yaml", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,100}\.ya?ml$",
                             description="file name, in the run folder, of the station file with the new calibration")

    @model_validator(mode="after")
    def _distinct(self) -> "MasCalibrationProtocol":
        if len(set(self.setpoints_k)) != len(self.setpoints_k):
            raise ValueError("a set point is listed twice")
        return self
