"""Write TopSpin 2D EXSY datasets (acqus/acqu, acqu2s/acqu2, pulseprogram, audita.txt, ser) as
the simulated spectrometer acquires them, with the signal computed from nmr_physics.

Layout follows TopSpin 4 on an Avance NEO console by default: float64 ser (DTYPA 2); DTYPA 0
gives the int32 ser of older consoles (TopSpin 3.x). Each FID starts on a 1024-byte boundary
(padded to 256 int32 or 128 float64 points, the rule nmrglue reads by), DIGMOD 1 with a group
delay, F1's quadrature mode in acqu2s FnMODE (States-TPPI, 5), F2 FnMODE 0 (DQD).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import nmrglue as ng

from hardware_sim.nmr_physics import ExsySample, paper_sample

TOPSPIN_VERSIONS = {2: "4.1.4", 0: "3.6.2"}  # the version a simulated dataset claims, by DTYPA
TOPSPIN_VERSION = TOPSPIN_VERSIONS[2]
ADC_RATE_HZ = 20.0e6          # DECIM = ADC_RATE_HZ / SW_h, as in the reference datasets
COUNTS_PER_SCAN_PER_RG = 4096.0  # ADC counts of the full equilibrium FID per scan and unit RG
NOISE_PER_SCAN = 0.02         # complex noise sigma per point per scan, relative to full magnetisation
FID_BLOCK_BYTES = 1024        # TopSpin pads each FID in ser to whole 1 KiB blocks
INT32_MAX = 2**31 - 1

DEFAULTS: dict[str, object] = {
    "NS": 16, "DS": 4, "TD": 2048, "TD1": 32, "D1": 5.0, "D8": 0.01, "IN0": 1.6e-3,
    "SW": 100.0, "SFO1": 73.578, "O1": -83.0, "MASR": 10000, "DTYPA": 2,
    "PULPROG": "noesyph", "FnMODE": 5, "NUC1": "6Li", "GRPDLY": 67.9862518310547,
    "DSPFVS": 20, "BYTORDA": 0, "RG": 64, "P1": 3.9, "USER": "exsylab", "HOST": "hardware_sim",
    "PARMODE": 1,
}
FNMODES_WITH_PAIRED_T1 = (4, 5, 6)  # States, States-TPPI, echo-antiecho: two FIDs per t1 value


def _num(params: Mapping[str, object], key: str) -> float:
    """A numeric parameter from params (numbers or numeric strings) or its default."""
    value = params.get(key, DEFAULTS.get(key))
    if value is None:
        raise KeyError(f"NMR dataset: parameter {key} missing and has no default")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"NMR dataset: parameter {key}={value!r} is not a number") from None


def _int(params: Mapping[str, object], key: str) -> int:
    """An integer parameter; refuses non-integral values."""
    value = _num(params, key)
    if value != int(value):
        raise ValueError(f"NMR dataset: parameter {key}={value} must be an integer")
    return int(value)


def _str(params: Mapping[str, object], key: str) -> str:
    """A string parameter or its default."""
    return str(params.get(key, DEFAULTS.get(key, "")))


EXPERIMENT_KINDS = ("1d", "satrect", "t1ir", "exsy")
VDLIST_UNITS_S = {"": 1.0, "s": 1.0, "m": 1e-3, "u": 1e-6}  # TopSpin list suffixes: s (default), m(s), u(s)
VDLIST_KEY = "_VDLIST_S"  # params key (left out of the files) under which the simulator passes the delays


def experiment_kind(params: Mapping[str, object]) -> str:
    """"1d" (PARMODE 0), "satrect"/"t1ir" (a saturation- or inversion-recovery PULPROG) or "exsy"."""
    if _int(params, "PARMODE") == 0:
        return "1d"
    pulprog = _str(params, "PULPROG").lower()
    if pulprog.startswith("satrec"):
        return "satrect"
    if pulprog.startswith("t1ir"):
        return "t1ir"
    return "exsy"


def parse_vdlist(text: str) -> list[float]:
    """Delays in s from a TopSpin vd list: one per line, optional suffix s, m (ms) or u (us); blank lines skipped."""
    delays = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        unit = entry[-1].lower() if entry[-1].isalpha() else ""
        try:
            value = float(entry[:-1] if unit else entry) * VDLIST_UNITS_S[unit]
        except (KeyError, ValueError):
            raise ValueError(f"vd list line {number}: {line!r} is not a delay (number with s, m or u)") from None
        if value < 0:
            raise ValueError(f"vd list line {number}: delay {line!r} is negative")
        delays.append(value)
    return delays


def vdlist_s(params: Mapping[str, object]) -> list[float]:
    """The delays of a T1 acquisition (params[VDLIST_KEY]); one row of ser per delay."""
    delays = params.get(VDLIST_KEY)
    if not isinstance(delays, (list, tuple)) or not delays:
        raise ValueError(f"NMR dataset: a {_str(params, 'PULPROG')} acquisition needs a vd list (VDLIST)")
    return [float(d) for d in delays]


def acquisition_time_s(params: Mapping[str, object]) -> float:
    """AQ = TD / (2 SW_h)."""
    return _num(params, "TD") / (2.0 * sweep_width_hz(params))


def d1_eff_s(params: Mapping[str, object]) -> float:
    """Recovery time before each scan: D1 + AQ (z magnetisation is ~0 after the read pulse)."""
    return _num(params, "D1") + acquisition_time_s(params)


def sweep_width_hz(params: Mapping[str, object]) -> float:
    """SW_h = SW (ppm) * SFO1 (MHz)."""
    return _num(params, "SW") * _num(params, "SFO1")


def t1_evolution_s(params: Mapping[str, object]) -> np.ndarray:
    """t1 of each of the TD1 recorded FIDs (paired for States/States-TPPI/echo-antiecho)."""
    rows = np.arange(_int(params, "TD1"))
    steps = rows // 2 if _int(params, "FnMODE") in FNMODES_WITH_PAIRED_T1 else rows
    return steps * _num(params, "IN0")


def acquisition_duration_s(params: Mapping[str, object]) -> float:
    """Pulse-sequence time of the acquisition: 2 s start-up + dummy scans + NS scans per FID (1D: one FID;
    T1: one per delay, each scan D1 + vd + AQ; EXSY: D1 + t1 + D8 + AQ)."""
    kind = experiment_kind(params)
    ns, ds = _int(params, "NS"), _int(params, "DS")
    base_s = d1_eff_s(params)
    if kind == "1d":
        return 2.0 + (ds + ns) * base_s
    if kind in ("satrect", "t1ir"):
        delays = np.array(vdlist_s(params))
        return 2.0 + ds * (base_s + float(delays[0])) + ns * float(np.sum(base_s + delays))
    per_scan_s = base_s + _num(params, "D8")
    return 2.0 + ds * per_scan_s + ns * float(np.sum(per_scan_s + t1_evolution_s(params)))


def padded_points(td: int, bytes_per_point: int = 4) -> int:
    """Points one FID occupies in ser/fid once padded to whole 1024-byte blocks."""
    block = FID_BLOCK_BYTES // bytes_per_point
    return -(-td // block) * block


# ----------------------------------------------------------------------------- signal


def _offsets_hz(sample: ExsySample, sfo1_mhz: float, o1_hz: float, temperature_k: float) -> np.ndarray:
    """Site frequencies relative to the carrier: shift(T) * BF1 - O1, with BF1 = SFO1 - O1/1e6."""
    bf1_mhz = sfo1_mhz - o1_hz * 1e-6
    return np.array([s.shift_at(temperature_k) * bf1_mhz for s in sample.sites]) - o1_hz


def site_amplitudes(params: Mapping[str, object], temperature_k: float, sample: ExsySample) -> np.ndarray:
    """Longitudinal magnetisation per FID row and detected site (rows x sites, units of total M0) of a 1D or T1
    acquisition, with incomplete relaxation over D1_eff: each scan starts from f = 1 - exp(-D1_eff/T1)."""
    p = sample.populations
    f = sample.relaxed_fraction(d1_eff_s(params), temperature_k)
    kind = experiment_kind(params)
    if kind == "1d":
        return (p * f)[None, :]
    recovery = np.exp(-np.outer(vdlist_s(params), 1.0 / sample.t1_s(temperature_k)))  # delays x sites
    if kind == "satrect":  # saturation destroys whatever D1 left: M0 (1 - exp(-vd/T1))
        return p[None, :] * (1.0 - recovery)
    if kind == "t1ir":     # inversion of M0 f: M0 (1 - (1 + f) exp(-vd/T1)); f = 1 gives 1 - 2 exp(-vd/T1)
        return p[None, :] * (1.0 - (1.0 + f)[None, :] * recovery)
    raise ValueError(f"NMR dataset: {kind} data has no per-row site amplitudes")


def _exsy_amplitudes(params: Mapping[str, object], temperature_k: float, sample: ExsySample,
                     offsets: np.ndarray, lw: np.ndarray) -> np.ndarray:
    """Rows x F2-site amplitudes of States-TPPI EXSY data: volumes A(D8) with each column (starting site)
    scaled by its relaxed fraction after D1_eff."""
    if _int(params, "TD1") < 1:
        raise ValueError("NMR dataset: TD1 must be >= 1")
    volumes = sample.mixing_matrix(_num(params, "D8"), temperature_k)  # [F2 site, F1 site]
    volumes = volumes * sample.relaxed_fraction(d1_eff_s(params), temperature_k)[None, :]
    t1 = t1_evolution_s(params)
    phase = 2 * np.pi * np.outer(t1, offsets)  # rows x sites
    decay = np.exp(-np.pi * np.outer(t1, lw))
    rows = np.arange(t1.size)
    if _int(params, "FnMODE") in FNMODES_WITH_PAIRED_T1:
        tppi = np.where((rows // 2) % 2 == 0, 1.0, -1.0)[:, None]
        modulation = np.where((rows % 2 == 0)[:, None], np.cos(phase), np.sin(phase)) * tppi * decay
    else:
        modulation = np.cos(phase) * decay
    # rows x sites amplitudes, a sum over the few sites (broadcast: no BLAS thread start-up)
    return (modulation[:, None, :] * volumes[None, :, :]).sum(axis=2)


def synthesize_ser(params: Mapping[str, object], temperature_k: float,
                   sample: ExsySample | None = None, seed: int = 0) -> np.ndarray:
    """Complex time-domain data (rows x TD/2 points): EXSY (States-TPPI in F1), a T1 series (one row per vd
    delay) or a 1D FID (one row); Bruker DQD in F2.

    Bruker's sign convention: a site above the carrier precesses as exp(+2 pi i nu t) in both
    dimensions, so nmrglue's fft followed by rev puts the spectrum on the decreasing-ppm axis (as
    in nmrglue's Bruker example). EXSY FnMODE 4/5/6: row 2k holds the cos, row 2k+1 the sin t1
    modulation, both times (-1)**k (the TPPI step); other FnMODEs get the cos modulation only.
    The F2 FID is delayed by GRPDLY points, as the DIGMOD 1 filter does; the scale is ADC counts
    (not yet rounded).
    """
    sample = sample if sample is not None else paper_sample()
    td, ns = _int(params, "TD"), _int(params, "NS")
    if td < 2 or td % 2:
        raise ValueError(f"NMR dataset: TD={td} must be even and >= 2")
    offsets = _offsets_hz(sample, _num(params, "SFO1"), _num(params, "O1"), temperature_k)
    lw = np.array([s.linewidth_hz for s in sample.sites])
    t2 = np.arange(td // 2) / sweep_width_hz(params)
    f2_basis = np.exp(np.outer(2j * np.pi * offsets - np.pi * lw, t2))  # sites x points
    if experiment_kind(params) == "exsy":
        amplitudes = _exsy_amplitudes(params, temperature_k, sample, offsets, lw) * ns
    else:
        amplitudes = site_amplitudes(params, temperature_k, sample) * ns
    signal = (amplitudes[:, :, None] * f2_basis[None, :, :]).sum(axis=1)

    rng = np.random.default_rng(seed)
    sigma = NOISE_PER_SCAN * math.sqrt(ns) / math.sqrt(2.0)
    signal += rng.standard_normal(signal.shape + (2,)).view(np.complex128)[..., 0] * sigma
    delayed = ng.proc_base.fsh2(signal, -_num(params, "GRPDLY"))
    return delayed * (COUNTS_PER_SCAN_PER_RG * _num(params, "RG"))


def to_int32_interleaved(data: np.ndarray) -> np.ndarray:
    """Round complex data to int32 real/imag pairs; refuse (never clip) values beyond int32."""
    peak = float(np.max(np.abs(np.concatenate([data.real.ravel(), data.imag.ravel()])), initial=0.0))
    if peak > INT32_MAX:
        raise OverflowError(f"NMR dataset: signal {peak:.3g} counts overflows int32; lower RG or NS")
    out = np.empty(data.shape[:-1] + (2 * data.shape[-1],), dtype=np.int32)
    out[..., 0::2] = np.rint(data.real)
    out[..., 1::2] = np.rint(data.imag)
    return out


def to_float64_interleaved(data: np.ndarray) -> np.ndarray:
    """Complex data as float64 real/imag pairs (DTYPA 2: no rounding, no int32 range limit)."""
    out = np.empty(data.shape[:-1] + (2 * data.shape[-1],), dtype=np.float64)
    out[..., 0::2] = data.real
    out[..., 1::2] = data.imag
    return out


def to_raw_points(data: np.ndarray, dtypa: int) -> np.ndarray:
    """Complex data as the stored points of DTYPA 0 (int32) or 2 (float64)."""
    if dtypa == 0:
        return to_int32_interleaved(data)
    if dtypa == 2:
        return to_float64_interleaved(data)
    raise ValueError(f"NMR dataset: DTYPA {dtypa} is neither 0 (int32) nor 2 (float64)")


def ser_bytes(fids: np.ndarray, big_endian: bool = False) -> bytes:
    """Raw ser/fid content: each FID (a row of TD int32 or float64 values) zero-padded to 1024-byte blocks."""
    rows = np.atleast_2d(fids)
    kind = "f8" if rows.dtype.kind == "f" else "i4"
    padded = np.zeros((rows.shape[0], padded_points(rows.shape[1], int(kind[1]))),
                      dtype=(">" if big_endian else "<") + kind)
    padded[:, : rows.shape[1]] = rows
    return padded.tobytes()


# ----------------------------------------------------------------------------- JCAMP files


def _format_number(value: float | int) -> str:
    """A number as TopSpin writes it: integers plain, floats with up to 15 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.15g}"


def _format_pair(key: str, value: object) -> str:
    """One ##$KEY= line (plus continuation lines for arrays), TopSpin style."""
    if isinstance(value, (list, tuple)):
        lines, line = [f"##${key}= (0..{len(value) - 1})"], ""
        for item in value:
            text = f"<{item}>" if isinstance(item, str) else _format_number(item)  # type: ignore[arg-type]
            if line and len(line) + 1 + len(text) > 72:
                lines.append(line)
                line = text
            else:
                line = f"{line} {text}" if line else text
        lines.append(line)
        return "\n".join(lines)
    if isinstance(value, str):
        return f"##${key}= <{value}>"
    if value is None:
        return f"##${key}= "
    return f"##${key}= {_format_number(value)}"  # type: ignore[arg-type]


def jcamp_text(params: Mapping[str, object], path_label: str, when: datetime,
               owner: str = "exsylab", host: str = "hardware_sim", process: str = "go") -> str:
    """A TopSpin parameter file (acqus, acqu2s, ...) with keys in TopSpin's (ASCII) order."""
    version = TOPSPIN_VERSIONS.get(int(params.get("DTYPA", 2)), TOPSPIN_VERSION)  # type: ignore[call-overload]
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} " + when.strftime("%z")
    head = [
        f"##TITLE= Parameter file, TOPSPIN\t\tVersion {version}",
        "##JCAMPDX= 5.0",
        "##DATATYPE= Parameter Values",
        "##NPOINTS= 10\t$$ modification sequence number",
        "##ORIGIN= Bruker BioSpin GmbH",
        f"##OWNER= {owner}",
        f"$$ {stamp}  {owner}@{host}",
        f"$$ {path_label}",
        f"$$ process /opt/topspin{version}/prog/mod/{process}",
    ]
    body = [_format_pair(k, params[k]) for k in sorted(params)]
    return "\n".join(head + body + ["##END=", ""])


def write_jcamp_params(path: Path, params: Mapping[str, object], when: datetime,
                       owner: str = "exsylab", host: str = "hardware_sim") -> None:
    """Write one TopSpin parameter file; keys starting with '_' (nmrglue bookkeeping) are left out."""
    clean = {k: v for k, v in params.items() if not k.startswith("_")}
    _write_atomic(path, jcamp_text(clean, str(path), when, owner, host).encode("utf-8"))


def _write_atomic(path: Path, content: bytes) -> None:
    """Write a file through a temporary name and rename, so no reader sees half a file.

    No fsync: this is the simulator's disk, and a dataset costs well under 50 ms this way."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _when(params: Mapping[str, object]) -> datetime:
    """Acquisition timestamp: params['DATE'] (epoch s, from the simulator's clock) or now."""
    if params.get("DATE") is None:
        return datetime.now(timezone.utc)
    return datetime.fromtimestamp(_num(params, "DATE"), timezone.utc)


def _array(length: int, fill: float, entries: Mapping[int, float] | None = None) -> list[float]:
    """A TopSpin parameter array with the given fill and a few set entries {index: value}."""
    values = [fill] * length
    for index, value in (entries or {}).items():
        values[index] = value
    return values


def acqus_params(params: Mapping[str, object], temperature_k: float) -> dict[str, object]:
    """The F2 (acqus) parameter set for an EXSY acquisition with the requested parameters."""
    sfo1, o1 = _num(params, "SFO1"), _num(params, "O1")
    sw_h = sweep_width_hz(params)
    in0 = _num(params, "IN0")
    return {
        "ACQT0": 1, "AQ_mod": 3, "AQSEQ": 0, "AUNM": "au_zg", "BF1": round(sfo1 - o1 * 1e-6, 9),
        "BYTORDA": _int(params, "BYTORDA"), "CNST": _array(64, 1.0),
        "D": _array(64, 0.0, {1: _num(params, "D1"), 8: _num(params, "D8")}),
        "DATE": int(_when(params).timestamp()), "DECIM": ADC_RATE_HZ / sw_h, "DIGMOD": 1,
        "DIGTYP": 12, "DQDMODE": 0, "DS": _int(params, "DS"), "DSPFIRM": 0,
        "DSPFVS": _int(params, "DSPFVS"), "DTYPA": _int(params, "DTYPA"), "FnMODE": 0, "GRPDLY": _num(params, "GRPDLY"),
        "IN": _array(64, in0), "INP": _array(64, 0.0), "L": _array(32, 1),
        "MASR": _num(params, "MASR"), "NC": 0, "NS": _int(params, "NS"), "NUC1": _str(params, "NUC1"),
        "NUC2": "off", "O1": o1, "OVERFLW": 0, "P": _array(64, 0.0, {1: _num(params, "P1")}),
        "PARMODE": 0 if experiment_kind(params) == "1d" else 1, "PL": _array(64, 120.0, {1: -2.0}), "PROBHD": "4 mm MAS WVT 1H/X",
        "PULPROG": _str(params, "PULPROG"), "RG": _num(params, "RG"), "SFO1": sfo1,
        "SOLVENT": "none", "SW": _num(params, "SW"), "SW_h": sw_h, "TD": _int(params, "TD"),
        "TD0": 1, "TE": temperature_k,  # status TE: what the VT unit measured, whatever TE was requested
        "TEG": temperature_k, "VDLIST": _str(params, "VDLIST") if "VDLIST" in params else "DDDDDDDDDDDDDDD",
    }


def acqu2s_params(params: Mapping[str, object]) -> dict[str, object]:
    """The F1 (acqu2s) parameter set: TD1, FnMODE and the F1 sweep width 1/IN0."""
    sfo1, o1 = _num(params, "SFO1"), _num(params, "O1")
    sw_h = 1.0 / _num(params, "IN0")
    return {
        "ACQT0": 0, "BF1": round(sfo1 - o1 * 1e-6, 9), "FnMODE": _int(params, "FnMODE"),
        "IN": _array(64, _num(params, "IN0")), "NUC1": _str(params, "NUC1"), "O1": o1,
        "SFO1": sfo1, "SW": sw_h / sfo1, "SW_h": sw_h,
        "TD": len(vdlist_s(params)) if experiment_kind(params) in ("satrect", "t1ir") else _int(params, "TD1"),
    }


PULSEPROGRAM = """# 1 "/opt/topspin{version}/exp/stan/nmr/lists/pp/{pulprog}"
;{pulprog}
;avance-version (12/01/11)
;2D homonuclear correlation via dipolar coupling
;dipolar coupling may be due to noe or chemical exchange.
;phase sensitive
;(exsylab hardware_sim: 6Li EXSY, States-TPPI in F1)
;
;$CLASS=HighRes
;$DIM=2D
;$TYPE=
;$SUBTYPE=
;$COMMENT=

"p2=p1*2"
"d0=3u"
"in0=inf1"
"acqt0=-p1*2/3.1416"

1 ze
2 d1
3 p1 ph1
  d0
  p1 ph2
  d8
  p1 ph3
  go=2 ph31
  d1 mc #0 to 2 F1PH(ip1, id0)
exit

ph1=0 2
ph2=0 0 0 0 0 0 0 0 2 2 2 2 2 2 2 2
ph3=0 0 2 2 1 1 3 3
ph31=0 2 2 0 1 3 3 1 2 0 0 2 3 1 1 3

;pl1 : f1 channel - power level for pulse (default)
;p1 : f1 channel -  90 degree high power pulse
;d0 : incremented delay (2D)                         [3 usec]
;d1 : relaxation delay; 1-5 * T1
;d8 : mixing time
;inf1: 1/SW = 2 * DW
;in0: 1/(1 * SW) = 2 * DW
;nd0: 1
;ns: 2 * n
;ds: 16
;td1: number of experiments
;FnMODE: States-TPPI, TPPI, States or QSEQ
"""


PULSEPROGRAM_T1 = """# 1 "/opt/topspin{version}/exp/stan/nmr/lists/pp/{pulprog}"
;{pulprog}
;T1 measurement by {method}
;(exsylab hardware_sim: one row of ser per vd-list delay)
;
;$CLASS=HighRes
;$DIM=2D
;$TYPE=
;$SUBTYPE=
;$COMMENT=

1 ze
2 d1
{preparation}
  vd
  p1 ph1
  go=2 ph31
  30m wr #0 if #0 ivd
  lo to 1 times td1
exit

ph1=0 2 2 0 1 3 3 1
ph31=0 2 2 0 1 3 3 1

;d1 : relaxation delay; 1-5 * T1
;vd : variable delay, taken from vd-list
;td1: number of experiments = number of delays in vd-list
"""

PULSEPROGRAM_1D = """# 1 "/opt/topspin{version}/exp/stan/nmr/lists/pp/{pulprog}"
;{pulprog}
;basic one-pulse experiment
;(exsylab hardware_sim)
;
;$CLASS=HighRes
;$DIM=1D
;$TYPE=
;$SUBTYPE=
;$COMMENT=

1 ze
2 d1
  p1 ph1
  go=2 ph31
  30m mc #0 to 2 F0(zd)
exit

ph1=0 2 2 0 1 3 3 1
ph31=0 2 2 0 1 3 3 1

;d1 : relaxation delay; 1-5 * T1
;p1 : f1 channel - 90 degree high power pulse
"""
T1_PREPARATIONS = {"satrect": ("saturation recovery", "  10u pl1:f1\n  (p1 ph2):f1\n  10m\n  (p1 ph2):f1"),
                   "t1ir": ("inversion recovery", "  p2 ph2")}


def pulseprogram_text(params: Mapping[str, object]) -> str:
    """The pulseprogram file TopSpin writes (the pulse program with its includes expanded) for this acquisition."""
    version = TOPSPIN_VERSIONS.get(_int(params, "DTYPA"), TOPSPIN_VERSION)
    pulprog, kind = _str(params, "PULPROG"), experiment_kind(params)
    if kind == "1d":
        return PULSEPROGRAM_1D.format(version=version, pulprog=pulprog)
    if kind in T1_PREPARATIONS:
        method, preparation = T1_PREPARATIONS[kind]
        return PULSEPROGRAM_T1.format(version=version, pulprog=pulprog, method=method, preparation=preparation)
    return PULSEPROGRAM.format(version=version, pulprog=pulprog)


def audit_text(path_label: str, started: datetime, completed: datetime, ser: bytes,
               owner: str = "exsylab", host: str = "hardware_sim") -> str:
    """audita.txt with one 'created by zg' entry and the MD5 of the raw data, as TopSpin writes it."""
    def stamp(t: datetime) -> str:
        return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d} " + t.strftime("%z")

    digest = hashlib.md5(ser).hexdigest().upper()
    digest_text = " ".join(digest[i:i + 2] for i in range(0, 32, 2))
    return "\n".join([
        f"##TITLE= Audit trail, TOPSPIN\t\tVersion {TOPSPIN_VERSION}",
        "##JCAMPDX= 5.01",
        "##ORIGIN= Bruker BioSpin GmbH",
        f"##OWNER= {owner}",
        f"$$ {path_label}",
        "##AUDIT TRAIL=  $$ (NUMBER, WHEN, WHO, WHERE, PROCESS, VERSION, WHAT)",
        f"(   1,<{stamp(completed)}>,<{owner}>,<{host}>,<go4>,<TOPSPIN {TOPSPIN_VERSION}>,",
        "      <created by zg",
        f"\tstarted at {stamp(started)},",
        "\tPOWCHK enabled, PULCHK enabled,",
        f"       data hash MD5: {len(ser)}",
        f"       {digest_text}>)",
        "##END=",
        "",
    ])


# ----------------------------------------------------------------------------- datasets


def write_dataset_files(expno_dir: Path, acqus: Mapping[str, object], acqu2s: Mapping[str, object] | None,
                        fids: np.ndarray, when: datetime, pulseprogram: str | None = None,
                        title: str | None = None, owner: str = "exsylab", host: str = "hardware_sim",
                        acqu: Mapping[str, object] | None = None) -> bytes:
    """Write acqus/acqu (+ acqu2s/acqu2 for 2D), pulseprogram, pdata/1/title (`title`, or kept as set by
    setti; empty when there is none) and ser (fid for 1D) from int32 or float64 points; returns the raw bytes.

    The byte order follows acqus BYTORDA (0 little, 1 big endian). Shared by the simulator and the
    round-trip test against real TopSpin data.
    """
    expno_dir = Path(expno_dir)
    (expno_dir / "pdata" / "1").mkdir(parents=True, exist_ok=True)
    files = [("acqus", acqus), ("acqu", acqus if acqu is None else acqu)]  # acqu: the current parameters
    if acqu2s is not None:
        files += [("acqu2s", acqu2s), ("acqu2", acqu2s)]
    for name, values in files:
        write_jcamp_params(expno_dir / name, values, when, owner, host)
    if pulseprogram is not None:
        _write_atomic(expno_dir / "pulseprogram", pulseprogram.encode("utf-8"))
    title_path = expno_dir / "pdata" / "1" / "title"
    if title is not None or not title_path.exists():
        _write_atomic(title_path, ((title or "") + "\n").encode("utf-8"))
    raw = ser_bytes(fids, big_endian=int(acqus.get("BYTORDA", 0)) == 1)  # type: ignore[call-overload]
    _write_atomic(expno_dir / ("ser" if acqu2s is not None else "fid"), raw)
    return raw


def _write_exsy(expno_dir: Path, params: Mapping[str, object], temperature_k: float,
                fraction: float, sample: ExsySample | None, seed: int) -> None:
    """Synthesize and write a dataset (EXSY, T1 or 1D) whose ser/fid holds the first `fraction` of the FIDs."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"NMR dataset: fraction {fraction} must be within [0, 1]")
    for name in ("ser", "fid"):
        if (Path(expno_dir) / name).exists():
            raise FileExistsError(f"NMR dataset: {Path(expno_dir) / name} already holds data; "
                                  "an acquisition never overwrites it")
    fids = to_raw_points(synthesize_ser(params, temperature_k, sample, seed), _int(params, "DTYPA"))
    rows = math.floor(fraction * fids.shape[0] + 1e-9)
    completed = _when(params)
    elapsed_s = fraction * acquisition_duration_s(params)  # an interrupted run stopped early
    started = datetime.fromtimestamp(completed.timestamp() - elapsed_s, timezone.utc)
    expno_dir = Path(expno_dir)
    status = acqus_params(params, temperature_k)
    current = {**status, "TE": _num(params, "TE")} if "TE" in params else status  # acqu keeps the requested TE
    acqu2s = None if experiment_kind(params) == "1d" else acqu2s_params(params)
    raw = write_dataset_files(expno_dir, status, acqu2s, fids[:rows], completed, pulseprogram_text(params),
                              None, _str(params, "USER"), _str(params, "HOST"), acqu=current)
    audit = audit_text(str(expno_dir / "audita.txt"), started, completed, raw,
                       _str(params, "USER"), _str(params, "HOST"))
    _write_atomic(expno_dir / "audita.txt", audit.encode("utf-8"))


def write_acquired_dataset(expno_dir: Path, params: Mapping[str, object], temperature_k: float,
                           sample: ExsySample | None = None, seed: int = 0) -> None:
    """Write a complete TopSpin dataset (acqus/acqu, acqu2s/acqu2 and ser for EXSY and T1, fid for 1D;
    pulseprogram, audita.txt) for an acquisition with the given parameters at the given sample temperature."""
    _write_exsy(expno_dir, params, temperature_k, 1.0, sample, seed)


def write_partial_dataset(expno_dir: Path, params: Mapping[str, object], temperature_k: float,
                          fraction: float, sample: ExsySample | None = None, seed: int = 0) -> None:
    """Same, but only the first `fraction` of the t1 increments in ser (an interrupted acquisition;
    TopSpin writes ser row by row)."""
    _write_exsy(expno_dir, params, temperature_k, fraction, sample, seed)
