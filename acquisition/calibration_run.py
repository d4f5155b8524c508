"""The last step of a MAS calibration run: thermometer shifts -> sample temperatures -> a calibrated station file.

The spectra are read back from the journal's dataset records (never lane memory, so a resumed run
fits the same data); the new calibration replaces the station's entry for the same MAS rate (or is
added) in a copy of the run's station file, written into the run folder and validated by loading it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from analysis.calibration import as_thermometer, fit_calibration
from analysis.errors import AnalysisFitError, AnalysisInputError
from analysis.spectrum_1d import thermometer_shift_ppm
from protocols import InputError
from protocols.loader import load_station
from protocols.nmr_steps import FitCalibration
from protocols.station import StationSpec

from .run_folder import write_atomic
from .runner import StepContext, StepFailed

log = logging.getLogger(__name__)

SEARCH_WINDOW_K = 60.0
"""The thermometer's line is looked for within this many kelvin (as shift) of where the set point puts it."""


def run_fit_calibration(step: FitCalibration, ctx: StepContext, run_dir: Path, station: StationSpec,
                        station_copy: Path | None) -> dict[str, Any]:
    """Fit the calibration from the run's thermometer spectra and write the calibrated station file."""
    meter = as_thermometer(step.thermometer)
    records = {d["idx"]: d for d in ctx.journal.datasets() if d["idx"] in step.spectrum_steps and d["status"] == "done"}
    missing = [i for i in step.spectrum_steps if i not in records]
    if len(records) < 2:
        raise StepFailed(f"calibration: only {len(records)} thermometer spectra were acquired (steps {missing} "
                         "have none); nothing fitted, no station file written")
    readings = []
    try:
        for index in sorted(records):
            record = records[index]
            setpoint_k = float(record["temperature_k"])
            expected_ppm = meter.reference_shift_ppm + meter.slope_ppm_per_k * (setpoint_k - meter.reference_temperature_k)
            shift_ppm = thermometer_shift_ppm(record["path"], near_ppm=expected_ppm,
                                              window_ppm=SEARCH_WINDOW_K * abs(meter.slope_ppm_per_k))
            readings.append({"setpoint_k": setpoint_k, "shift_ppm": shift_ppm, "sample_k": meter.temperature_k(shift_ppm),
                             "path": record["path"]})
        points, residual_k = fit_calibration([r["setpoint_k"] for r in readings], [r["shift_ppm"] for r in readings],
                                             meter)
    except (AnalysisInputError, AnalysisFitError) as exc:
        raise StepFailed(f"calibration: {exc}; no station file written") from exc
    out = run_dir / step.station_out
    _write_station(out, station, station_copy, step.mas_rate_hz, points, meter.nucleus, step.thermometer)
    for r in readings:
        log.info("calibration: set point %.2f K -> %s line %.3f ppm -> sample %.2f K (%+.2f K)", r["setpoint_k"],
                 meter.nucleus, r["shift_ppm"], r["sample_k"], r["sample_k"] - r["setpoint_k"])
    if missing:
        ctx.note("calibration_partial", missing_steps=missing)
    return {"points": points, "residual_k": residual_k, "readings": readings, "station_file": str(out),
            "mas_rate_hz": step.mas_rate_hz, "missing_steps": missing}


def _write_station(out: Path, station: StationSpec, station_copy: Path | None, mas_rate_hz: float,
                   points: list[tuple[float, float]], nucleus: str, thermometer: dict[str, Any]) -> None:
    """The run's station file with this MAS rate's calibration replaced or added; checked by loading it back."""
    if station_copy is not None and station_copy.is_file():
        data = yaml.safe_load(station_copy.read_text())
    else:  # the built-in simulated station: its model, written out
        data = station.model_dump(mode="json", by_alias=True, exclude_none=True)
    vt = data.get("vt")
    if not isinstance(vt, dict) or station.vt is None:
        raise StepFailed("calibration: the station file has no vt section to hold a calibration")
    entry = {"mas_rate": f"{mas_rate_hz:g} Hz", "thermometer": f"{thermometer.get('name', '')} ({nucleus})",
             "points": [[round(x, 3), round(y, 3)] for x, y in points]}
    calibrations = list(vt.get("calibration") or [])
    same = [i for i, c in enumerate(station.vt.calibration)
            if abs(c.mas_rate_hz - mas_rate_hz) <= 0.01 * max(mas_rate_hz, 1.0)]
    if same:
        calibrations[same[0]] = entry
    else:
        calibrations.append(entry)
    vt["calibration"] = calibrations
    text = ("# written by exsylab's mas-calibration run: the station file of the run with the calibration at "
            f"{mas_rate_hz:g} Hz MAS\n" + yaml.safe_dump(data, sort_keys=False))
    write_atomic(out, text)
    try:
        load_station(out)
    except InputError as exc:
        raise StepFailed(f"calibration: the calibrated station file {out} does not load: {exc}") from exc
