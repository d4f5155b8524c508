"""TopSpin 1D spectra and the rows of a pseudo-2D (T1) dataset: FID to a complex spectrum with a ppm axis.

The same F2 steps as the 2D processing (exact digital-filter removal, first point x 0.5, zero fill,
Bruker-convention FT), no window: integrals of a region are what T1 fits and thermometers need.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import nmrglue as ng
import numpy as np
from scipy.signal import find_peaks, peak_widths
from scipy.signal._peak_finding_utils import PeakPropertyWarning

from analysis.errors import AnalysisInputError
from analysis.exsy_processing import _auto_p0_deg, _ft, _ppm_axis, parameter_value


@dataclass(frozen=True)
class Spectrum1D:
    """A processed 1D spectrum: real, phased, baseline-corrected data on a descending ppm axis."""

    data: np.ndarray
    ppm: np.ndarray
    path: Path
    expno: int | None
    temperature_k: float
    nucleus: str
    d1_s: float
    ns: int
    noise_sd: float


def _read_parameters(expno_dir: Path, name: str) -> dict:
    try:
        return ng.bruker.read_jcamp(str(expno_dir / name))
    except Exception as exc:  # damaged parameter files come in many shapes
        raise AnalysisInputError(f"{expno_dir}/{name}: unreadable ({type(exc).__name__}: {exc})") from exc


def read_fids(expno_dir: Path | str, data_file: str) -> tuple[dict, np.ndarray]:
    """A 1D `fid` or pseudo-2D `ser` as a 2D complex array of rows; AnalysisInputError if missing or short."""
    expno_dir = Path(expno_dir)
    if not expno_dir.is_dir():
        raise AnalysisInputError(f"{expno_dir}: dataset folder not found")
    for name in ("acqus", data_file):
        if not (expno_dir / name).is_file():
            raise AnalysisInputError(f"{expno_dir}: missing {name} (not a TopSpin {'1D' if data_file == 'fid' else 'pseudo-2D'} dataset)")
    acqus = _read_parameters(expno_dir, "acqus")
    try:
        td = int(acqus["TD"])
        rows = int(_read_parameters(expno_dir, "acqu2s")["TD"]) if data_file == "ser" else 1
        bytes_per_point = 8 if int(acqus.get("DTYPA", 0)) == 2 else 4
    except (KeyError, ValueError, TypeError) as exc:
        raise AnalysisInputError(f"{expno_dir}: acqus/acqu2s lack a usable TD ({exc})") from exc
    if td < 2 or rows < 1:
        raise AnalysisInputError(f"{expno_dir}/acqus: TD={td} with {rows} row(s) describes no data")
    row_bytes = -(-td * bytes_per_point // 1024) * 1024 if data_file == "ser" else td * bytes_per_point
    size = (expno_dir / data_file).stat().st_size
    if size < rows * row_bytes:
        raise AnalysisInputError(f"{expno_dir}/{data_file}: incomplete acquisition ({size} of {rows * row_bytes} bytes)")
    try:
        dic, data = ng.bruker.read(str(expno_dir), read_procs=True)
    except Exception as exc:  # nmrglue raises many types for damaged files
        raise AnalysisInputError(f"{expno_dir}: unreadable dataset ({type(exc).__name__}: {exc})") from exc
    data = np.atleast_2d(data)
    if data.shape[0] < rows:
        raise AnalysisInputError(f"{expno_dir}/{data_file}: {data.shape[0]} rows read, TD1 is {rows}")
    return dic, data[:rows]


@dataclass(frozen=True)
class RowAxis:
    """How the rows were transformed: to push a model line through the same steps."""

    ppm: np.ndarray
    n_time: int
    dwell_s: float
    carrier_ppm: float
    obs_mhz: float

    def lines(self, shifts_ppm: np.ndarray, widths_hz: np.ndarray) -> np.ndarray:
        """Complex spectra (columns) of unit Lorentzian FIDs at shifts_ppm with FWHM widths_hz."""
        t = np.arange(self.n_time) * self.dwell_s
        offsets_hz = (np.asarray(shifts_ppm, float) - self.carrier_ppm) * self.obs_mhz
        fids = np.exp((2j * np.pi * offsets_hz[:, None] - np.pi * np.asarray(widths_hz, float)[:, None]) * t)
        return _transform(fids).T


def _transform(data: np.ndarray) -> np.ndarray:
    """First point x 0.5, zero fill to 2 x next power of two, Bruker FT, constant complex baseline removed."""
    data = np.array(data, complex)
    data[:, 0] *= 0.5
    size = 2 * int(2 ** np.ceil(np.log2(max(data.shape[1], 2))))
    spectra = _ft(ng.proc_base.zf_size(data, size))
    edge = max(1, size // 10)  # constant complex offset from the outer 10 % on each side
    edges = np.concatenate([spectra[:, :edge], spectra[:, -edge:]], axis=1)
    return spectra - (np.median(edges.real, axis=1, keepdims=True) + 1j * np.median(edges.imag, axis=1, keepdims=True))


def transform_rows(dic: dict, data: np.ndarray) -> tuple[np.ndarray, RowAxis]:
    """Complex spectra of every row (digital filter removed exactly, zero filled, FT) and their axis."""
    if int(dic["acqus"].get("DIGMOD", 0) or 0) != 0 and "DECIM" in dic["acqus"]:
        data = ng.bruker.remove_digital_filter(dic, data, truncate=False)
    spectra = _transform(data)
    ppm, carrier_ppm, obs_mhz = _ppm_axis(dic, 1, spectra.shape[1])
    return spectra, RowAxis(ppm, data.shape[1], 1.0 / float(dic["acqus"]["SW_h"]), carrier_ppm, obs_mhz)


def noise_sd(values: np.ndarray) -> float:
    """Robust noise level of a real spectrum: 1.4826 x median absolute deviation."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def find_peaks_ppm(ppm: np.ndarray, spectrum: np.ndarray, max_peaks: int = 6, min_snr: float = 8.0) -> list[float]:
    """Shifts (ppm, descending) of the strongest peaks of a real spectrum, parabolically refined."""
    threshold = max(min_snr * noise_sd(spectrum), 0.05 * float(spectrum.max()))
    peaks, props = find_peaks(spectrum, height=threshold, prominence=threshold)
    strongest = peaks[np.argsort(props["peak_heights"])[::-1][:max_peaks]]
    return sorted((refine_peak_ppm(ppm, spectrum, int(k)) for k in strongest), reverse=True)


def refine_peak_ppm(ppm: np.ndarray, spectrum: np.ndarray, index: int) -> float:
    """The maximum near index, refined by a parabola through three points."""
    if not 0 < index < spectrum.size - 1:
        return float(ppm[index])
    y0, y1, y2 = spectrum[index - 1:index + 2]
    den = y0 - 2 * y1 + y2
    offset = 0.5 * (y0 - y2) / den if den != 0 else 0.0
    return float(ppm[index] + offset * (ppm[1] - ppm[0]))


def thermometer_shift_ppm(expno_dir: Path | str, near_ppm: float | None = None, window_ppm: float = 50.0) -> float:
    """Shift of a thermometer's single line in a 1D dataset: the magnitude spectrum's maximum (within window_ppm
    of near_ppm if given), refined. Magnitude mode, because a residual first-order phase shifts the maximum of a
    phased line far from the carrier (207Pb lies thousands of ppm out) while |S| peaks at the line itself."""
    expno_dir = Path(expno_dir)
    dic, data = read_fids(expno_dir, "fid")
    spectra, axis = transform_rows(dic, data)
    magnitude = np.abs(spectra[0])
    mask = np.ones(axis.ppm.size, bool) if near_ppm is None else np.abs(axis.ppm - near_ppm) <= window_ppm
    if not mask.any():
        raise AnalysisInputError(f"{expno_dir}: {near_ppm:g} ppm lies outside the spectral window")
    index = int(np.flatnonzero(mask)[np.argmax(magnitude[mask])])
    return refine_peak_ppm(axis.ppm, magnitude, index)


def region_half_widths_ppm(ppm: np.ndarray, magnitude: np.ndarray, shifts_ppm: list[float],
                           fwhm_multiple: float = 3.0) -> np.ndarray:
    """Half width of each site's integration region: fwhm_multiple x its FWHM, at most half-way to a neighbour."""
    step = abs(float(ppm[1] - ppm[0]))
    widths = []
    for shift in shifts_ppm:
        index = int(np.argmin(np.abs(ppm - shift)))
        lo, hi = max(index - 3, 0), min(index + 4, ppm.size)
        index = lo + int(np.argmax(magnitude[lo:hi]))
        with warnings.catch_warnings():  # a site given off any peak has no width: fall back to 2 points
            warnings.simplefilter("ignore", PeakPropertyWarning)
            fwhm_points = float(peak_widths(magnitude, [index], rel_height=0.5)[0][0])
        widths.append(fwhm_multiple * max(fwhm_points, 2.0) * step)
    half = np.array(widths)
    if len(shifts_ppm) > 1:
        s = np.asarray(shifts_ppm, float)
        gaps = np.abs(s[:, None] - s[None, :]) + np.eye(s.size) * 1e9
        half = np.minimum(half, gaps.min(axis=1) / 2)
    return half


def process_1d(expno_dir: Path | str, temperature_param: str = "TE") -> Spectrum1D:
    """Read and process a TopSpin 1D dataset (fid) into a real, phased Spectrum1D."""
    expno_dir = Path(expno_dir)
    dic, data = read_fids(expno_dir, "fid")
    try:
        temperature_k = parameter_value(dic, temperature_param, expno_dir)
        d1_s = parameter_value(dic, "D1", expno_dir)
        spectra, axis = transform_rows(dic, data)
    except KeyError as exc:
        raise AnalysisInputError(f"{expno_dir}/acqus: missing parameter {exc}") from exc
    phased = ng.proc_base.ps(spectra[0], p0=_auto_p0_deg(spectra[0]), p1=0.0).real
    return Spectrum1D(phased, axis.ppm, expno_dir, int(expno_dir.name) if expno_dir.name.isdigit() else None,
                      temperature_k, str(dic["acqus"].get("NUC1", "?")), d1_s, int(dic["acqus"].get("NS", 0) or 0),
                      noise_sd(phased))
