"""TopSpin 2D (EXSY, NOESY, COSY) to a real 2D spectrum with ppm axes, using nmrglue.

Reads the dataset's own parameter files for temperature (TE) and mixing time (D8 by default),
removes the digital filter, apodises, zero-fills, Fourier transforms, decodes F1 quadrature by
FnMODE, phases (automatic or manual) and corrects the baseline.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import nmrglue as ng
import numpy as np

from analysis.errors import AnalysisInputError

log = logging.getLogger(__name__)

# acqu2s FnMODE codes (TopSpin) and the equivalent proc2s MC2 codes
FNMODE_NAMES = {1: "QF", 2: "QSEQ", 3: "TPPI", 4: "States", 5: "States-TPPI", 6: "Echo-Antiecho"}
MC2_TO_FNMODE = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6}


@dataclass(frozen=True)
class ProcessingOptions:
    """Processing choices; phases are (p0_deg, p1_deg) per dimension, None means automatic."""

    window_f2: str = "sine"          # "sine" (cosine-bell with offset), "em" or "none"
    window_f1: str = "sine"
    sine_offset: float = 0.5         # 0.5 = cosine bell (pi/2 shifted sine bell)
    sine_power: float = 1.0
    lb_f2_hz: float = 5.0            # for window "em"
    lb_f1_hz: float = 5.0
    size_f2: int | None = None       # zero-filled complex points; None: 2 x next power of 2
    size_f1: int | None = None
    phase_f2: tuple[float, float] | None = None
    phase_f1: tuple[float, float] | None = None
    baseline: str = "cbf"            # "cbf" (constant offset per row from the F2 noise edges) or "none"
    f1_reverse: str = "auto"         # "auto", "yes" or "no": mirror F1 if diagonal says so


@dataclass
class Spectrum2D:
    """A processed 2D spectrum: data[f1, f2] real, ppm axes descending, and its acquisition facts."""

    data: np.ndarray
    ppm_f1: np.ndarray
    ppm_f2: np.ndarray
    path: Path
    expno: int | None
    temperature_k: float
    mixing_time_s: float
    fnmode: str
    nucleus: str
    magnitude: bool
    phases_deg: dict[str, tuple[float, float]] = field(default_factory=dict)
    noise_sd: float = 0.0
    models: dict[str, "LineshapeModel"] = field(default_factory=dict)
    d1_s: float = float("nan")       # acqus D1, the recycle delay (nan when the dataset has none)
    aq_s: float = float("nan")       # acquisition time TD/2 / SW_h: D1 + AQ is the effective recycle delay

    def index_f1(self, ppm: float) -> int:
        """Nearest F1 index of a shift."""
        return int(np.argmin(np.abs(self.ppm_f1 - ppm)))

    def index_f2(self, ppm: float) -> int:
        """Nearest F2 index of a shift."""
        return int(np.argmin(np.abs(self.ppm_f2 - ppm)))


@dataclass(frozen=True)
class LineshapeModel:
    """How one dimension was processed, to push an ideal Lorentzian through the same steps."""

    n_time: int
    dwell_s: float
    size: int
    window: str
    lb_hz: float
    sine_offset: float
    sine_power: float
    carrier_ppm: float
    obs_mhz: float

    def lineshape(self, shift_ppm: float, width_hz: float) -> np.ndarray:
        """Real processed spectrum of a unit-volume Lorentzian at shift_ppm (FWHM width_hz)."""
        t = np.arange(self.n_time) * self.dwell_s
        offset_hz = (shift_ppm - self.carrier_ppm) * self.obs_mhz
        fid = np.exp((2j * np.pi * offset_hz - np.pi * width_hz) * t)
        fid[0] *= 0.5  # first point scaling of a discrete FT of a causal signal
        if self.window == "sine":
            fid = ng.proc_base.sp(fid, off=self.sine_offset, end=1.0, pow=self.sine_power)
        elif self.window == "em":
            fid = ng.proc_base.em(fid, lb=self.lb_hz * self.dwell_s)
        return _ft(ng.proc_base.zf_size(fid, self.size)).real


def _check_complete(expno_dir: Path) -> None:
    """Refuse a ser shorter than TD1 FIDs (an interrupted acquisition) with a clear message."""
    try:
        acqus = ng.bruker.read_jcamp(str(expno_dir / "acqus"))
        acqu2s = ng.bruker.read_jcamp(str(expno_dir / "acqu2s"))
        td, td1 = int(acqus["TD"]), int(acqu2s["TD"])
        bytes_per_point = 8 if int(acqus.get("DTYPA", 0)) == 2 else 4
    except Exception as exc:  # damaged parameter files come in many shapes
        raise AnalysisInputError(f"{expno_dir}: unreadable acqus/acqu2s ({type(exc).__name__}: {exc})") from exc
    if td < 2 or td1 < 1:
        raise AnalysisInputError(f"{expno_dir}/acqus: TD={td}, TD1={td1} describe no 2D data")
    fid_bytes = -(-td * bytes_per_point // 1024) * 1024  # each FID padded to a 1024-byte block
    size = (expno_dir / "ser").stat().st_size
    if size < td1 * fid_bytes:
        raise AnalysisInputError(f"{expno_dir}/ser: incomplete acquisition, {size // fid_bytes} of {td1} FIDs "
                                 f"({size} of {td1 * fid_bytes} bytes)")


def read_dataset(expno_dir: Path) -> tuple[dict, np.ndarray]:
    """Read a TopSpin 2D dataset folder with nmrglue; AnalysisInputError if missing or not 2D."""
    expno_dir = Path(expno_dir)
    if not expno_dir.is_dir():
        raise AnalysisInputError(f"{expno_dir}: dataset folder not found")
    for name in ("acqus", "acqu2s", "ser"):
        if not (expno_dir / name).is_file():
            raise AnalysisInputError(f"{expno_dir}: missing {name} (not a TopSpin 2D dataset)")
    _check_complete(expno_dir)
    try:
        dic, data = ng.bruker.read(str(expno_dir), read_procs=True)
    except Exception as exc:  # nmrglue raises many types for damaged files
        raise AnalysisInputError(f"{expno_dir}: unreadable dataset ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 2:
        raise AnalysisInputError(f"{expno_dir}/ser: expected 2D data, got shape {data.shape}")
    return dic, data


def parameter_value(dic: dict, name: str, expno_dir: Path | str = "") -> float:
    """A scalar acquisition parameter in SI seconds/kelvin: 'D8' (s), 'P1' (us -> s), 'VD', 'TE'."""
    acqus = dic["acqus"]
    match = re.fullmatch(r"([A-Z]+)(\d+)", name.upper())
    if match and match.group(1) in acqus and isinstance(acqus[match.group(1)], list):
        values = acqus[match.group(1)]
        index = int(match.group(2))
        if index >= len(values):
            raise AnalysisInputError(f"{expno_dir}/acqus: {name} out of range")
        try:
            value = float(values[index])
        except (TypeError, ValueError) as exc:
            raise AnalysisInputError(f"{expno_dir}/acqus: {name} is not a number ({values[index]!r})") from exc
        return value * 1e-6 if match.group(1) == "P" else value
    if name.upper() in acqus:
        try:
            return float(acqus[name.upper()])
        except (TypeError, ValueError) as exc:
            raise AnalysisInputError(f"{expno_dir}/acqus: {name} is not a number ({acqus[name.upper()]!r})") from exc
    raise AnalysisInputError(f"{expno_dir}/acqus: parameter {name} not found")


def fnmode_of(dic: dict) -> int:
    """F1 acquisition mode from acqu2s FnMODE, falling back on proc2s MC2 when FnMODE is 0."""
    fnmode = int(dic["acqu2s"].get("FnMODE", 0) or 0)
    if fnmode == 0:
        mc2 = dic.get("proc2s", {}).get("MC2")
        fnmode = MC2_TO_FNMODE.get(int(mc2), 1) if mc2 is not None else 1
    return fnmode


def _apodize(data: np.ndarray, window: str, options: ProcessingOptions, lb_hz: float, sw_hz: float) -> np.ndarray:
    if window == "sine":
        return ng.proc_base.sp(data, off=options.sine_offset, end=1.0, pow=options.sine_power)
    if window == "em":
        return ng.proc_base.em(data, lb=lb_hz / sw_hz)
    if window == "none":
        return data
    raise AnalysisInputError(f"window '{window}' unknown (sine, em, none)")


def _ft(data: np.ndarray) -> np.ndarray:
    """FT along the last axis, Bruker sign convention, high frequency first.

    nmrglue's fft then reverse puts offset 0 one point left of where nmrglue's unit conversion
    places the carrier; the roll by one point makes index k exactly car + (n/2 - k) sw / n.
    """
    return np.roll(ng.proc_base.rev(ng.proc_base.fft(data)), 1, axis=-1)


def _zero_fill_size(n: int, requested: int | None) -> int:
    return requested if requested else 2 * int(2 ** np.ceil(np.log2(max(n, 2))))


def _auto_p0_deg(spectrum: np.ndarray) -> float:
    """Zero-order phase making the total integral absorptive (dispersion integrates to ~0)."""
    total = spectrum.sum()
    return float(-np.degrees(np.angle(total))) if abs(total) > 0 else 0.0


def _f1_decode(data: np.ndarray, fnmode: int) -> np.ndarray:
    """F2-transformed hypercomplex rows to a complex F1 interferogram (rows: t1, cols: F2)."""
    if fnmode in (4, 5):
        f1 = data[0::2].real + 1j * data[1::2].real
        if fnmode == 5:
            f1 = f1 * ((-1.0) ** np.arange(f1.shape[0]))[:, None]
        return f1 + 0j
    if fnmode == 6:
        echo, antiecho = data[0::2], data[1::2]
        cos_rows, sin_rows = echo + antiecho, (echo - antiecho) / 1j
        return cos_rows.real + 1j * sin_rows.real
    raise AssertionError(fnmode)


def _baseline(data: np.ndarray) -> np.ndarray:
    """Subtract a constant per F1 row, the median of the outer 10 % of F2 on each side.

    Only along F2: its window is wide and its edges are free of peaks; a short, folded F1 has
    peak tails at its edges, and an offset taken there would bias volumes.
    """
    edge = max(1, data.shape[1] // 10)
    edges = np.concatenate([data[:, :edge], data[:, -edge:]], axis=1)
    return data - np.median(edges, axis=1, keepdims=True)


def _ppm_axis(dic: dict, dim: int, size: int) -> tuple[np.ndarray, float, float]:
    """Descending ppm axis of a processed dimension (0 = F1, 1 = F2) via nmrglue, carrier ppm, obs MHz."""
    acq = dic["acqus"] if dim == 1 else dic["acqu2s"]
    proc = dic.get("procs" if dim == 1 else "proc2s", {})
    sfo1 = float(acq["SFO1"])
    sw_hz = float(acq["SW_h"]) if dim == 1 else float(acq["SW"]) * sfo1
    obs = float(proc.get("SF") or acq.get("BF1") or sfo1)
    car_hz = (sfo1 - obs) * 1e6
    uc = ng.fileiobase.unit_conversion(size, True, sw_hz, obs, car_hz)
    return uc.ppm_scale(), car_hz / obs, obs


def _diagonal_score(data: np.ndarray, ppm_f1: np.ndarray, ppm_f2: np.ndarray) -> float:
    """How well F1 and F2 projections agree on a common ppm grid (correlation)."""
    p1 = np.abs(data).sum(axis=1)
    p2 = np.abs(data).sum(axis=0)
    p2_on_f1 = np.interp(ppm_f1[::-1], ppm_f2[::-1], p2[::-1])[::-1]
    p1c, p2c = p1 - p1.mean(), p2_on_f1 - p2_on_f1.mean()
    denom = np.sqrt((p1c ** 2).sum() * (p2c ** 2).sum())
    return float((p1c * p2c).sum() / denom) if denom > 0 else 0.0


def process_dataset(expno_dir: Path | str, mixing_param: str = "D8",
                    options: ProcessingOptions | None = None, temperature_param: str = "TE") -> Spectrum2D:
    """Process one TopSpin 2D dataset into a real, phased, baseline-corrected Spectrum2D."""
    options = options or ProcessingOptions()
    expno_dir = Path(expno_dir)
    dic, data = read_dataset(expno_dir)
    try:
        temperature_k = parameter_value(dic, temperature_param, expno_dir)
        mixing_time_s = parameter_value(dic, mixing_param, expno_dir)
        fnmode = fnmode_of(dic)
        sw2_hz = float(dic["acqus"]["SW_h"])
        sw1_hz = float(dic["acqu2s"]["SW"]) * float(dic["acqu2s"]["SFO1"])
    except KeyError as exc:
        raise AnalysisInputError(f"{expno_dir}/acqus: missing parameter {exc}") from exc
    if fnmode not in FNMODE_NAMES or fnmode == 2:
        raise AnalysisInputError(f"{expno_dir}/acqu2s: FnMODE {fnmode} not supported")
    if fnmode in (4, 5, 6) and data.shape[0] % 2:
        data = data[:-1]
    if data.shape[0] < 2:
        raise AnalysisInputError(f"{expno_dir}/ser: fewer than 2 increments")

    # F2: digital filter, apodisation, zero fill, FT (Bruker sign convention: fft then reverse)
    if int(dic["acqus"].get("DIGMOD", 0) or 0) != 0 and "DECIM" in dic["acqus"]:
        # exact (non-truncated) group delay, as TopSpin does; no first-order phase is left behind
        data = ng.bruker.remove_digital_filter(dic, data, truncate=False)
    n_time_f2 = data.shape[1]
    data = data.copy()
    data[:, 0] *= 0.5
    data = _apodize(data, options.window_f2, options, options.lb_f2_hz, sw2_hz)
    size_f2 = _zero_fill_size(data.shape[1], options.size_f2)
    data = ng.proc_base.zf_size(data, size_f2)
    data = _ft(data)

    magnitude = fnmode == 1
    phases: dict[str, tuple[float, float]] = {}
    if not magnitude:
        first = data[0] if fnmode != 6 else data[0] + data[1]
        p0, p1 = options.phase_f2 if options.phase_f2 else (_auto_p0_deg(first), 0.0)
        data = ng.proc_base.ps(data, p0=p0, p1=p1)
        phases["f2"] = (p0, p1)

    # F1 quadrature decoding -> complex interferogram along axis 0
    if fnmode == 3:
        inter = data.real.T
        inter = _apodize(inter, options.window_f1, options, options.lb_f1_hz, 2 * sw1_hz)
        n = _zero_fill_size(inter.shape[1], options.size_f1)
        full = np.fft.fft(inter, n=2 * n, axis=1)[:, :n]
        spec_t = full[:, ::-1]
    else:
        inter = (data if magnitude else _f1_decode(data, fnmode)).T.copy()
        n_time_f1 = inter.shape[1]
        inter[:, 0] *= 0.5
        inter = _apodize(inter, options.window_f1, options, options.lb_f1_hz, sw1_hz)
        n = _zero_fill_size(inter.shape[1], options.size_f1)
        inter = ng.proc_base.zf_size(inter, n)
        spec_t = _ft(inter)
    spec = spec_t.T  # rows F1, cols F2

    if magnitude:
        real = np.abs(spec)
    else:
        p0, p1 = options.phase_f1 if options.phase_f1 else (_auto_p0_deg(spec.sum(axis=1)), 0.0)
        real = ng.proc_base.ps(spec.T, p0=p0, p1=p1).T.real
        phases["f1"] = (p0, p1)

    ppm_f2, car2_ppm, obs2 = _ppm_axis(dic, 1, real.shape[1])
    ppm_f1, car1_ppm, obs1 = _ppm_axis(dic, 0, real.shape[0])
    models: dict[str, LineshapeModel] = {}
    mirrored = False
    if options.f1_reverse == "yes" or (
            options.f1_reverse == "auto"
            and _diagonal_score(real[::-1], ppm_f1, ppm_f2) > _diagonal_score(real, ppm_f1, ppm_f2) + 0.05):
        log.info("%s: F1 mirrored to put peaks on the diagonal", expno_dir)
        real = real[::-1].copy()
        mirrored = True
    if not magnitude and fnmode != 3 and not mirrored:
        models["f2"] = LineshapeModel(n_time_f2, 1.0 / sw2_hz, real.shape[1], options.window_f2, options.lb_f2_hz,
                                      options.sine_offset, options.sine_power, car2_ppm, obs2)
        models["f1"] = LineshapeModel(n_time_f1, 1.0 / sw1_hz, real.shape[0], options.window_f1, options.lb_f1_hz,
                                      options.sine_offset, options.sine_power, car1_ppm, obs1)
    if options.baseline == "cbf":
        real = _baseline(real)
    elif options.baseline != "none":
        raise AnalysisInputError(f"baseline '{options.baseline}' unknown (cbf, none)")
    noise_sd = float(1.4826 * np.median(np.abs(real - np.median(real))))
    nucleus = str(dic["acqus"].get("NUC1", "?"))
    expno = int(expno_dir.name) if expno_dir.name.isdigit() else None
    d1_s = parameter_value(dic, "D1", expno_dir) if isinstance(dic["acqus"].get("D"), list) else float("nan")
    aq_s = int(dic["acqus"]["TD"]) / 2 / sw2_hz
    return Spectrum2D(real, ppm_f1, ppm_f2, expno_dir, expno, temperature_k, mixing_time_s,
                      FNMODE_NAMES[fnmode], nucleus, magnitude, phases, noise_sd, models, d1_s, aq_s)
