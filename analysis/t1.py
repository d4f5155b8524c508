"""T1 per site from a TopSpin saturation- or inversion-recovery pseudo-2D (ser + vdlist).

Row k of ser is the spectrum after delay vdlist[k]. Each site's region is integrated on every
row (projected on the site's own phase, taken from the longest delay), and
I(vd) = A (1 - f exp(-vd / T1)) is fitted per site (f ~ 1 saturation, f ~ 2 inversion, less
when D1 is short). Implausible fits are returned with ok=False and a reason, never raised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.optimize import curve_fit, least_squares

from analysis.errors import AnalysisInputError
from analysis.exsy_processing import parameter_value
from analysis.spectrum_1d import RowAxis, find_peaks_ppm, read_fids, region_half_widths_ppm, transform_rows

_UNIT_S = {"": 1.0, "s": 1.0, "m": 1e-3, "ms": 1e-3, "u": 1e-6, "us": 1e-6}
MIN_DELAYS = 4  # three parameters per site need at least one degree of freedom


@dataclass(frozen=True)
class SiteT1:
    """One site's fit: T1 and its standard error (s), amplitude (region integral), ok or why not."""

    shift_ppm: float
    t1_s: float
    t1_err_s: float
    amplitude: float
    ok: bool
    reason: str
    factor: float = float("nan")                        # f in A (1 - f exp(-vd/T1))
    intensities: tuple[float, ...] = ()                 # region integral per delay, vdlist order


@dataclass(frozen=True)
class T1Fit:
    """All sites of one T1 dataset, with the facts the fit came from."""

    method: Literal["saturation", "inversion"]
    sites: list[SiteT1]
    delays_s: tuple[float, ...] = ()
    path: str = ""
    temperature_k: float = float("nan")
    d1_s: float = float("nan")
    nucleus: str = "?"
    pulprog: str = ""
    warnings: list[str] = field(default_factory=list)


def recovery(delays_s: np.ndarray, amplitude: float, factor: float, t1_s: float) -> np.ndarray:
    """I(vd) = A (1 - f exp(-vd / T1))."""
    return amplitude * (1.0 - factor * np.exp(-np.asarray(delays_s, float) / t1_s))


def parse_vdlist(path: Path) -> list[float]:
    """Delays in s from a TopSpin list file: one value a line, optional unit s, m (ms) or u (us); default s."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisInputError(f"{path}: unreadable delay list ({exc})") from exc
    delays = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith(("#", ";")):
            continue
        match = re.fullmatch(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z]*)", text)
        if not match or match.group(2).lower() not in _UNIT_S:
            raise AnalysisInputError(f"{path}: line {number} {text!r} is not a delay (number with s, m or u)")
        value = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
        if value < 0:
            raise AnalysisInputError(f"{path}: line {number}: negative delay {text!r}")
        delays.append(value)
    if not delays:
        raise AnalysisInputError(f"{path}: empty delay list")
    return delays


def _list_file(expno_dir: Path, acqus: dict) -> Path:
    name = str(acqus.get("VDLIST", "") or "").strip()
    for candidate in ("vdlist", name):
        if candidate and (expno_dir / candidate).is_file():
            return expno_dir / candidate
    raise AnalysisInputError(f"{expno_dir}: no vdlist file (acqus VDLIST {name!r})")


def _method(pulprog: str, intensities: np.ndarray) -> Literal["saturation", "inversion"]:
    """From the pulse program name (satrec..., t1ir..., ...ir...), else from a negative start of the recovery."""
    name = pulprog.lower()
    if "satrec" in name:
        return "saturation"
    if "t1ir" in name or "invrec" in name or re.search(r"(^|[^a-z])ir", name):
        return "inversion"
    return "inversion" if intensities.min() < -0.2 * abs(intensities).max() else "saturation"


def _judge(t1: float, err: float, amplitude: float, delays: np.ndarray) -> str:
    """Why a converged fit is implausible, or '' when it is fine."""
    if not (np.isfinite(t1) and np.isfinite(err)):
        return "fit covariance not finite (T1 not determined by these delays)"
    if t1 <= 0:
        return f"T1 {t1:.3g} s is not positive"
    if amplitude <= 0:
        return "no recovering signal (amplitude <= 0)"
    if t1 > 3 * delays.max():
        return f"T1 {t1:.3g} s beyond 3 x the longest delay {delays.max():.3g} s: the recovery is not sampled"
    positive = delays[delays > 0]
    if positive.size and t1 < positive.min() / 3:
        return f"T1 {t1:.3g} s below a third of the shortest delay {positive.min():.3g} s: the recovery is not sampled"
    if err > t1:
        return f"T1 {t1:.3g} s has a standard error {err:.3g} s larger than itself"
    return ""


def fit_recovery(delays_s: Sequence[float], intensities: Sequence[float], shift_ppm: float) -> SiteT1:
    """Fit I(vd) = A (1 - f exp(-vd/T1)) to one site's intensities; ok=False with a reason when implausible."""
    vd = np.asarray(delays_s, float)
    y = np.asarray(intensities, float)
    grid = np.geomspace(max(vd[vd > 0].min() if (vd > 0).any() else 1e-3, 1e-6) / 10, vd.max() * 10, 200)
    best = (np.inf, 1.0, 1.0, 1.0)
    for t1 in grid:  # A and A*f are linear for a given T1: start from the best of a grid
        basis = np.stack([np.ones_like(vd), -np.exp(-vd / t1)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
        cost = float(np.sum((basis @ coef - y) ** 2))
        if cost < best[0] and coef[0] != 0:
            best = (cost, float(coef[0]), float(coef[1] / coef[0]), float(t1))
    nan = float("nan")
    try:
        params, cov = curve_fit(recovery, vd, y, p0=best[1:], maxfev=5000)
    except (RuntimeError, ValueError) as exc:
        return SiteT1(shift_ppm, nan, nan, nan, False, f"fit did not converge ({exc})", nan, tuple(map(float, y)))
    amplitude, factor, t1 = map(float, params)
    err = float(np.sqrt(cov[2, 2])) if np.all(np.isfinite(cov)) else nan
    reason = _judge(t1, err, amplitude, vd)
    return SiteT1(shift_ppm, t1, err, amplitude, not reason, reason, factor, tuple(map(float, y)))


def _lineshape_amplitudes(spectra: np.ndarray, axis: RowAxis, shifts_ppm: list[float],
                          ref: int) -> tuple[np.ndarray, list[float]]:
    """Complex amplitude [site, row] of Lorentzian lines fitted to every row.

    Shifts and widths are fitted once, on the reference row (variable projection: the complex
    amplitudes are linear), then every row is solved linearly with them: neighbouring lines'
    tails do not leak into a site's intensity as they do into a region integral.
    """
    ppm = axis.ppm
    step_ppm = abs(float(ppm[1] - ppm[0]))
    fwhm_ppm = region_half_widths_ppm(ppm, np.abs(spectra[ref]), shifts_ppm, fwhm_multiple=1.0)
    near = np.zeros(ppm.size, bool)
    for shift, width in zip(shifts_ppm, fwhm_ppm):
        near |= np.abs(ppm - shift) <= max(8 * width, 20 * step_ppm)
    data = spectra[:, near]
    n = len(shifts_ppm)
    start = np.concatenate([shifts_ppm, np.log(np.maximum(fwhm_ppm * axis.obs_mhz, 0.1))])

    def residual(x: np.ndarray) -> np.ndarray:
        lines = axis.lines(x[:n], np.exp(x[n:]))[near]
        amplitude, *_ = np.linalg.lstsq(lines, data[ref], rcond=None)
        misfit = data[ref] - lines @ amplitude
        return np.concatenate([misfit.real, misfit.imag])

    span = np.maximum(fwhm_ppm, 2 * step_ppm)
    lower = np.concatenate([np.asarray(shifts_ppm) - span, np.full(n, np.log(0.05))])
    upper = np.concatenate([np.asarray(shifts_ppm) + span, np.log(np.maximum(fwhm_ppm * axis.obs_mhz, 1.0) * 20)])
    result = least_squares(residual, np.clip(start, lower + 1e-9, upper - 1e-9), bounds=(lower, upper), x_scale="jac")
    lines = axis.lines(result.x[:n], np.exp(result.x[n:]))[near]
    amplitudes = np.linalg.lstsq(lines, data.T, rcond=None)[0]
    return amplitudes, [float(v) for v in result.x[:n]]


def fit_t1(expno_dir: Path | str, sites_ppm: Sequence[float] | None = None, *,
           integration: str = "lineshape") -> T1Fit:
    """Fit T1 per site of a saturation- or inversion-recovery dataset; sites found on the spectrum if not given.

    integration: "lineshape" (Lorentzians fitted to each row, default) or "region" (sum over each
    site's region, for lines that are far from Lorentzian).
    """
    expno_dir = Path(expno_dir)
    dic, data = read_fids(expno_dir, "ser")
    acqus = dic["acqus"]
    delays = parse_vdlist(_list_file(expno_dir, acqus))
    if len(delays) < data.shape[0]:
        raise AnalysisInputError(f"{expno_dir}: vdlist has {len(delays)} delays for TD1 = {data.shape[0]} rows")
    delays = delays[:data.shape[0]]
    if len(set(delays)) < MIN_DELAYS:
        raise AnalysisInputError(f"{expno_dir}: {len(set(delays))} distinct delays, a T1 fit needs {MIN_DELAYS}")
    try:
        spectra, axis = transform_rows(dic, data)
        temperature_k = parameter_value(dic, "TE", expno_dir)
        d1_s = parameter_value(dic, "D1", expno_dir)
    except KeyError as exc:
        raise AnalysisInputError(f"{expno_dir}/acqus: missing parameter {exc}") from exc
    vd = np.asarray(delays)
    ref = int(np.argmax(vd))  # the most recovered row: positive by convention
    ppm = axis.ppm
    magnitude = np.abs(spectra[ref])
    if sites_ppm is None:
        shifts = find_peaks_ppm(ppm, magnitude)
        if not shifts:
            raise AnalysisInputError(f"{expno_dir}: no peak found on the longest-delay row; give the sites")
    else:
        shifts = [float(s) for s in sites_ppm]
        outside = [s for s in shifts if not ppm.min() <= s <= ppm.max()]
        if outside or not shifts:
            raise AnalysisInputError(f"--sites: {outside or 'none'} outside the spectral window of {expno_dir} "
                                     f"({ppm.min():.2f}..{ppm.max():.2f} ppm)")
    if integration == "lineshape":
        amplitudes, shifts = _lineshape_amplitudes(spectra, axis, shifts, ref)
    elif integration == "region":
        half = region_half_widths_ppm(ppm, magnitude, shifts)
        step = abs(float(ppm[1] - ppm[0]))
        amplitudes = np.array([spectra[:, np.abs(ppm - s) <= h].sum(axis=1) * step for s, h in zip(shifts, half)])
    else:
        raise AnalysisInputError(f"integration {integration!r} unknown (lineshape, region)")
    intensities = (amplitudes * np.exp(-1j * np.angle(amplitudes[:, ref]))[:, None]).real
    pulprog = str(acqus.get("PULPROG", "") or "")
    method = _method(pulprog, intensities.sum(axis=0))
    sites = [fit_recovery(delays, row, s) for s, row in zip(shifts, intensities)]
    warnings = [f"{s.shift_ppm:.2f} ppm: {s.reason}" for s in sites if not s.ok]
    return T1Fit(method, sites, tuple(delays), str(expno_dir), temperature_k, d1_s,
                 str(acqus.get("NUC1", "?")), pulprog, warnings)


def t1_json(fit: T1Fit) -> dict:
    """The JSON object of `exsylab analyze t1` (and the runner's T1 outcome)."""
    return {"path": fit.path, "method": fit.method, "pulprog": fit.pulprog, "nucleus": fit.nucleus,
            "temperature_k": fit.temperature_k, "d1_s": fit.d1_s, "delays_s": list(fit.delays_s),
            "sites": [{"shift_ppm": s.shift_ppm, "t1_s": s.t1_s, "t1_err_s": s.t1_err_s, "amplitude": s.amplitude,
                       "factor": s.factor, "ok": s.ok, "reason": s.reason, "intensities": list(s.intensities)}
                      for s in fit.sites],
            "warnings": list(fit.warnings)}
