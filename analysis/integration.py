"""Sites on the diagonal and the N x N volume matrix of a processed 2D spectrum.

Two integration methods: "box" sums the spectrum in a rectangle around every (site i, site j);
"lineshape" fits the spectrum as a separable sum of modelled peaks, V = pinv(G1) S pinv(G2)^T,
which removes the overlap of neighbouring boxes when F1 is short (32 increments).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import find_peaks

from analysis.errors import AnalysisInputError
from analysis.exsy_processing import Spectrum2D

log = logging.getLogger(__name__)


def find_diagonal_sites(spectrum: Spectrum2D, max_sites: int = 6, min_snr: float = 8.0) -> list[float]:
    """Shifts (ppm, descending) of peaks on the diagonal, strongest first up to max_sites."""
    step_f1 = spectrum.ppm_f1[1] - spectrum.ppm_f1[0]
    step_f2 = abs(spectrum.ppm_f2[1] - spectrum.ppm_f2[0])
    position = np.clip((spectrum.ppm_f2 - spectrum.ppm_f1[0]) / step_f1, 0, spectrum.ppm_f1.size - 1.000001)
    below = np.floor(position).astype(int)
    frac = position - below
    columns = np.arange(spectrum.ppm_f2.size)
    diagonal = (1 - frac) * spectrum.data[below, columns] + frac * spectrum.data[below + 1, columns]
    noise = spectrum.noise_sd if spectrum.noise_sd > 0 else float(np.std(diagonal)) * 1e-3
    threshold = max(min_snr * noise, 0.02 * float(diagonal.max()))
    spacing = max(1, int(abs(step_f1) / step_f2))  # one F1 point, in F2 points
    peaks, props = find_peaks(diagonal, height=threshold, distance=spacing, prominence=threshold)
    if peaks.size == 0:
        raise AnalysisInputError(f"{spectrum.path}: no peak found on the diagonal above {min_snr} x noise")
    strongest = peaks[np.argsort(props["peak_heights"])[::-1][:max_sites]]
    shifts = []
    for k in strongest:  # parabolic refinement on the fine F2 grid
        if 0 < k < diagonal.size - 1:
            y0, y1, y2 = diagonal[k - 1:k + 2]
            den = y0 - 2 * y1 + y2
            offset = 0.5 * (y0 - y2) / den if den != 0 else 0.0
        else:
            offset = 0.0
        step = spectrum.ppm_f2[1] - spectrum.ppm_f2[0]
        shifts.append(float(spectrum.ppm_f2[k] + offset * step))
    return sorted(shifts, reverse=True)


def check_sites(spectrum: Spectrum2D, shifts_ppm: list[float]) -> None:
    """Refuse sites outside the spectral window or duplicated."""
    lo2, hi2 = spectrum.ppm_f2.min(), spectrum.ppm_f2.max()
    lo1, hi1 = spectrum.ppm_f1.min(), spectrum.ppm_f1.max()
    for s in shifts_ppm:
        if not (lo2 <= s <= hi2 and lo1 <= s <= hi1):
            raise AnalysisInputError(f"--sites: {s} ppm lies outside the spectral window of {spectrum.path} "
                                     f"(F2 {lo2:.2f}..{hi2:.2f}, F1 {lo1:.2f}..{hi1:.2f} ppm)")
    if len(set(np.round(shifts_ppm, 6))) != len(shifts_ppm) or len(shifts_ppm) < 2:
        raise AnalysisInputError("--sites: need at least two distinct shifts")


def box_half_widths_ppm(shifts_ppm: list[float], max_half_width_ppm: float = 2.0) -> np.ndarray:
    """Half width of each site's box: half the distance to the nearest other site, capped."""
    s = np.asarray(shifts_ppm, float)
    d = np.abs(s[:, None] - s[None, :]) + np.eye(s.size) * 1e9
    return np.minimum(d.min(axis=1) / 2, max_half_width_ppm)


def box_volumes(spectrum: Spectrum2D, shifts_ppm: list[float], half_widths_ppm: np.ndarray | None = None) -> np.ndarray:
    """V[a, b]: spectrum summed over the F1 box of site a and the F2 box of site b (ppm^2 units)."""
    hw = box_half_widths_ppm(shifts_ppm) if half_widths_ppm is None else np.asarray(half_widths_ppm)
    d1 = abs(spectrum.ppm_f1[1] - spectrum.ppm_f1[0])
    d2 = abs(spectrum.ppm_f2[1] - spectrum.ppm_f2[0])
    n = len(shifts_ppm)
    volumes = np.zeros((n, n))
    for a, sa in enumerate(shifts_ppm):
        rows = np.abs(spectrum.ppm_f1 - sa) <= hw[a]
        for b, sb in enumerate(shifts_ppm):
            cols = np.abs(spectrum.ppm_f2 - sb) <= hw[b]
            volumes[a, b] = spectrum.data[np.ix_(rows, cols)].sum() * d1 * d2
    return volumes


def _design(spectrum: Spectrum2D, shifts_ppm: list[float], widths_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g1 = np.stack([spectrum.models["f1"].lineshape(s, w) for s, w in zip(shifts_ppm, widths_hz)], axis=1)
    g2 = np.stack([spectrum.models["f2"].lineshape(s, w) for s, w in zip(shifts_ppm, widths_hz)], axis=1)
    return g1, g2


def lineshape_volumes(spectrum: Spectrum2D, shifts_ppm: list[float],
                      widths_hz: np.ndarray | list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Volumes by separable lineshape least squares, S = G1 V G2^T; one Lorentzian FWHM per site.

    The widths (same in t1 and t2: both evolve the same chemical shift) are fitted when not given,
    by variable projection: V is solved linearly for every trial set of widths. Only the F2 columns
    within 1 ppm of a site enter the fit. Returns (V, widths_hz); V is in time-domain amplitude units.
    """
    if "f1" not in spectrum.models:
        raise AnalysisInputError(f"{spectrum.path}: lineshape integration needs phase-sensitive States, "
                                 f"States-TPPI or echo-antiecho data (got {spectrum.fnmode})")
    near = np.zeros(spectrum.ppm_f2.size, bool)
    for s in shifts_ppm:
        near |= np.abs(spectrum.ppm_f2 - s) < 1.0
    data = spectrum.data[:, near]

    def solve(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g1, g2 = _design(spectrum, shifts_ppm, widths)
        g2 = g2[near]
        v = np.linalg.pinv(g1) @ data @ np.linalg.pinv(g2).T
        return v, (data - g1 @ v @ g2.T).ravel()

    if widths_hz is None:
        start = np.log(np.full(len(shifts_ppm), 15.0))
        result = least_squares(lambda x: solve(np.exp(x))[1], start, bounds=(np.log(0.2), np.log(500.0)),
                               x_scale=1.0, diff_step=1e-3, xtol=1e-6, max_nfev=200)
        widths = np.exp(result.x)
        log.info("%s: fitted linewidths %s Hz (%d evaluations)", spectrum.path,
                 np.array2string(widths, precision=1), result.nfev)
    else:
        widths = np.asarray(widths_hz, float)
    volumes, _ = solve(widths)
    return volumes, widths


def volume_matrix(spectrum: Spectrum2D, shifts_ppm: list[float], method: str = "auto",
                  widths_hz: np.ndarray | list[float] | None = None) -> np.ndarray:
    """N x N volume matrix V[F1 site, F2 site] by "box", "lineshape" or "auto" (lineshape when possible)."""
    check_sites(spectrum, shifts_ppm)
    if method == "auto":
        method = "lineshape" if "f1" in spectrum.models else "box"
    if method == "box":
        volumes = box_volumes(spectrum, shifts_ppm)
    elif method == "lineshape":
        volumes, _ = lineshape_volumes(spectrum, shifts_ppm, widths_hz)
    else:
        raise AnalysisInputError(f"integration method '{method}' unknown (auto, box, lineshape)")
    if not np.all(np.isfinite(volumes)):
        raise AnalysisInputError(f"{spectrum.path}: volume matrix not finite")
    return volumes
