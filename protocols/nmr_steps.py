"""NMR step kinds beside the 2D EXSY: a one-pulse 1D spectrum and a T1 (pseudo-2D with a delay list).

Each is a `protocols.plan.Step` subclass with its own payload; the NMR lane executes them, the
journal and the report record them by `kind` and `record_params()`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .plan import D1Rule, PointPolicy, Stability, Step, Template, _Part


class Acquisition1D(_Part):
    """What TopSpin is told for a 1D or a T1 row: pulse program, scans, size, D1, window, MAS rate."""

    pulprog: str
    ns: int
    ds: int
    td: int
    d1_s: float
    sw_ppm: float
    sfo1_mhz: float
    mas_rate_hz: float
    o1p_ppm: float | None = None
    """The carrier in ppm (TopSpin O1P); None: the template's O1."""

    @property
    def aq_s(self) -> float:
        """Acquisition time: TD / (2 SW_h)."""
        return self.td / (2.0 * self.sw_ppm * self.sfo1_mhz)


class _NmrDatasetStep(Step):
    """What every acquisition into a TopSpin expno has (the lane's acquisition machinery uses these)."""

    dataset: str
    expno: int
    title: str
    temperature_k: float
    template: Template
    stability: Stability
    policy: PointPolicy


class Spectrum1D(_NmrDatasetStep):
    kind: Literal["spectrum_1d"] = "spectrum_1d"
    acquisition: Acquisition1D

    def record_params(self) -> dict[str, Any]:
        return {"ns": self.acquisition.ns, "d1_s": self.acquisition.d1_s}


class T1Measurement(_NmrDatasetStep):
    kind: Literal["t1"] = "t1"
    method: Literal["saturation", "inversion"]
    delays_s: tuple[float, ...] = Field(min_length=2, description="the vdlist, row k of the pseudo-2D after delay k")
    sites_ppm: tuple[float, ...] | None = Field(None, description="sites to fit (ppm); None: the fit finds them")
    site_names: tuple[str, ...] | None = Field(None, description="names of sites_ppm, in the same order")
    d1_rule: D1Rule | None = Field(None, description="the rule the fit feeds (its D1 goes in the outcome)")
    acquisition: Acquisition1D

    def record_params(self) -> dict[str, Any]:
        return {"method": self.method, "delays": len(self.delays_s), "d1_s": self.acquisition.d1_s}


class FitCalibration(Step):
    """After the thermometer spectra: sample temperature from each line's shift, fitted against the set point."""

    kind: Literal["fit_calibration"] = "fit_calibration"
    thermometer: dict[str, Any] = Field(description="analysis.calibration.Thermometer's fields")
    mas_rate_hz: float
    spectrum_steps: tuple[int, ...] = Field(min_length=2, description="plan indices of the thermometer spectra")
    station_out: str = Field(description="file name, in the run folder, of the calibrated station file")
