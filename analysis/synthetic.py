"""Independent forward model of a 2D EXSY series written as TopSpin-like datasets.

Used by tests and benchmarks as known truth: a sum of 2D Lorentzians whose volumes follow
exp(-L t) diag(M0), written with nmrglue.bruker.write. It shares no code with the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nmrglue as ng
import numpy as np
from scipy.linalg import expm


def exchange_volumes(rates_per_s: np.ndarray, populations: np.ndarray, t1_s: np.ndarray,
                     mixing_time_s: float) -> np.ndarray:
    """Volume matrix V[a, b] (F1 site a, F2 site b) after a mixing time; rates_per_s[i, j] is i -> j."""
    k = np.asarray(rates_per_s, float)
    n = len(populations)
    rel = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                rel[j, i] -= k[i, j]
        rel[i, i] = 1.0 / t1_s[i] + sum(k[i, j] for j in range(n) if j != i)
    propagator = expm(-rel * mixing_time_s)  # M(t) = propagator @ M(0)
    return (propagator * np.asarray(populations, float)[None, :]).T


def detailed_balance_rates(forward_per_s: dict[tuple[int, int], float], populations: np.ndarray) -> np.ndarray:
    """Full rate matrix from i<j forward rates with p_i k_ij = p_j k_ji."""
    n = len(populations)
    k = np.zeros((n, n))
    for (i, j), kij in forward_per_s.items():
        k[i, j] = kij
        k[j, i] = kij * populations[i] / populations[j]
    return k


def write_synthetic_exsy(expno_dir: Path, volumes: np.ndarray, shifts_ppm: list[float], *,
                         mixing_time_s: float, temperature_k: float, fnmode: int = 5,
                         td: int = 2048, td1: int = 32, sw_ppm: float = 40.0, sfo1_mhz: float = 73.578,
                         carrier_ppm: float = -1.0, in0_s: float = 1e-3, linewidth_hz: float = 15.0,
                         noise: float = 0.0, seed: int = 0, grpdly: int = 76, nucleus: str = "6Li",
                         mixing_param: str = "D8", d1_s: float = 5.0) -> Path:
    """Write one 2D dataset (acqus, acqu2s, ser, pulseprogram) with the given peak volumes."""
    rng = np.random.default_rng(seed)
    bf1 = sfo1_mhz - carrier_ppm * sfo1_mhz * 1e-6
    o1_hz = (sfo1_mhz - bf1) * 1e6
    sw_h = sw_ppm * sfo1_mhz
    n2 = td // 2
    t2 = (np.arange(n2) - grpdly) / sw_h
    offsets_hz = np.array([s * bf1 - o1_hz for s in shifts_ppm])
    decay = np.exp(-np.pi * linewidth_hz * np.clip(t2, 0, None))
    f2_sig = np.array([np.where(t2 >= 0, np.exp(2j * np.pi * nu * t2) * decay, 0) for nu in offsets_hz])
    n_sites = len(shifts_ppm)
    if fnmode == 3:  # TPPI: real points at half the dwell, phase +90 degrees per point
        t1 = np.arange(td1) * in0_s
        k = np.arange(td1)
        rows = np.zeros((td1, n2), complex)
        for a in range(n_sites):
            f1 = np.cos(2 * np.pi * offsets_hz[a] * t1 + k * np.pi / 2) * np.exp(-np.pi * linewidth_hz * t1)
            rows += f1[:, None] * (volumes[a] @ f2_sig)[None, :]
    else:
        npairs = td1 // 2 if fnmode in (4, 5, 6) else td1
        t1 = np.arange(npairs) * in0_s
        rows = np.zeros((td1, n2), complex)
        for a in range(n_sites):
            env = np.exp(-np.pi * linewidth_hz * t1)
            phase = 2 * np.pi * offsets_hz[a] * t1
            f2 = volumes[a] @ f2_sig
            if fnmode in (4, 5):
                sign = (-1.0) ** np.arange(npairs) if fnmode == 5 else 1.0
                rows[0::2] += (sign * np.cos(phase) * env)[:, None] * f2[None, :]
                rows[1::2] += (sign * np.sin(phase) * env)[:, None] * f2[None, :]
            elif fnmode == 6:
                rows[0::2] += (np.exp(1j * phase) * env)[:, None] * f2[None, :]
                rows[1::2] += (np.exp(-1j * phase) * env)[:, None] * f2[None, :]
            else:  # QF, phase-modulated (gradient-selected) rows
                rows += (np.exp(1j * phase) * env)[:, None] * f2[None, :]
    rows[:, t2 >= 0] += noise * (rng.standard_normal((td1, int((t2 >= 0).sum())))
                                 + 1j * rng.standard_normal((td1, int((t2 >= 0).sum()))))
    sw1_ppm = (1.0 / in0_s if fnmode != 3 else 0.5 / in0_s) / sfo1_mhz
    delays = [0.0] * 64
    delays[1] = float(d1_s)
    sfo1_mhz, bf1, o1_hz, sw_h, in0_s = map(float, (sfo1_mhz, bf1, o1_hz, sw_h, in0_s))
    common = {"_comments": [], "_coreheader": ["##TITLE= Parameter file, TopSpin 4.1.4", "##JCAMPDX= 5.0"], "SFO1": sfo1_mhz, "BF1": bf1, "O1": o1_hz, "NUC1": nucleus, "PULPROG": "noesyph",
              "BYTORDA": 0, "DTYPA": 2, "TE": float(temperature_k), "NS": 16, "DS": 4}
    acqus: dict[str, Any] = dict(common, TD=td, SW=sw_ppm, SW_h=sw_h, AQ_mod=3, DIGMOD=1, DECIM=16, DSPFVS=20,
                 GRPDLY=float(grpdly), FnMODE=0, D=delays, IN=[in0_s] * 64, IN0=in0_s, VD=0.0)
    if mixing_param.startswith("D") and mixing_param[1:].isdigit():
        acqus["D"][int(mixing_param[1:])] = float(mixing_time_s)
    else:
        acqus[mixing_param] = float(mixing_time_s)
    acqu2s = dict(common, TD=td1, SW=float(sw1_ppm), SW_h=sw1_ppm * sfo1_mhz, FnMODE=fnmode, IN=[in0_s] * 64, IN0=in0_s)
    dic = {"acqus": acqus, "acqu2s": acqu2s, "pprog": {}}
    expno_dir = Path(expno_dir)
    expno_dir.mkdir(parents=True, exist_ok=True)
    ng.bruker.write(str(expno_dir), dic, rows, overwrite=True, write_prog=False, isfloat=True, big=False)
    (expno_dir / "pulseprogram").write_text(";noesyph\n;synthetic EXSY written by analysis.synthetic\n")
    return expno_dir


def _one_pulse_fids(amplitudes: np.ndarray, shifts_ppm: list[float], *, td: int, sw_ppm: float, sfo1_mhz: float,
                    carrier_ppm: float, linewidth_hz: float, grpdly: int, noise: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Rows of FIDs (digital-filter delayed) for amplitudes[row, site] of Lorentzian lines."""
    bf1 = sfo1_mhz - carrier_ppm * sfo1_mhz * 1e-6
    o1_hz = (sfo1_mhz - bf1) * 1e6
    sw_h = sw_ppm * sfo1_mhz
    t2 = (np.arange(td // 2) - grpdly) / sw_h
    offsets_hz = np.array([s * bf1 - o1_hz for s in shifts_ppm])
    decay = np.exp(-np.pi * linewidth_hz * np.clip(t2, 0, None))
    lines = np.array([np.where(t2 >= 0, np.exp(2j * np.pi * nu * t2) * decay, 0) for nu in offsets_hz])
    rows = np.atleast_2d(amplitudes) @ lines
    live = t2 >= 0
    shape = (rows.shape[0], int(live.sum()))
    rows[:, live] += noise * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return rows


def _one_pulse_acqus(*, td: int, sw_ppm: float, sfo1_mhz: float, carrier_ppm: float, grpdly: int,
                     temperature_k: float, d1_s: float, nucleus: str, pulprog: str, ns: int) -> dict[str, Any]:
    bf1 = sfo1_mhz - carrier_ppm * sfo1_mhz * 1e-6
    delays = [0.0] * 64
    delays[1] = float(d1_s)
    return {"_comments": [], "_coreheader": ["##TITLE= Parameter file, TopSpin 4.1.4", "##JCAMPDX= 5.0"],
            "SFO1": float(sfo1_mhz), "BF1": float(bf1), "O1": float((sfo1_mhz - bf1) * 1e6), "NUC1": nucleus,
            "PULPROG": pulprog, "BYTORDA": 0, "DTYPA": 2, "TE": float(temperature_k), "NS": ns, "DS": 4,
            "TD": td, "SW": float(sw_ppm), "SW_h": float(sw_ppm * sfo1_mhz), "AQ_mod": 3, "DIGMOD": 1, "DECIM": 16,
            "DSPFVS": 20, "GRPDLY": float(grpdly), "FnMODE": 0, "D": delays, "MASR": 10000}


def acquisition_time_s(td: int, sw_ppm: float, sfo1_mhz: float) -> float:
    """AQ = (TD / 2) / SW_h: the FID length, part of the effective recycle delay."""
    return td / 2 / (sw_ppm * sfo1_mhz)


def write_synthetic_1d(expno_dir: Path, shifts_ppm: list[float], amplitudes: list[float], *, temperature_k: float,
                       d1_s: float = 5.0, td: int = 4096, sw_ppm: float = 40.0, sfo1_mhz: float = 73.578,
                       carrier_ppm: float = -1.0, linewidth_hz: float = 15.0, noise: float = 0.0, seed: int = 0,
                       grpdly: int = 76, nucleus: str = "6Li", ns: int = 16) -> Path:
    """Write a one-pulse 1D dataset (acqus, fid, pulseprogram) with the given line amplitudes."""
    rng = np.random.default_rng(seed)
    fid = _one_pulse_fids(np.asarray(amplitudes, float), shifts_ppm, td=td, sw_ppm=sw_ppm, sfo1_mhz=sfo1_mhz,
                          carrier_ppm=carrier_ppm, linewidth_hz=linewidth_hz, grpdly=grpdly, noise=noise, rng=rng)[0]
    acqus = _one_pulse_acqus(td=td, sw_ppm=sw_ppm, sfo1_mhz=sfo1_mhz, carrier_ppm=carrier_ppm, grpdly=grpdly,
                             temperature_k=temperature_k, d1_s=d1_s, nucleus=nucleus, pulprog="zg", ns=ns)
    expno_dir = Path(expno_dir)
    expno_dir.mkdir(parents=True, exist_ok=True)
    ng.bruker.write(str(expno_dir), {"acqus": acqus, "pprog": {}}, fid, overwrite=True, write_prog=False,
                    isfloat=True, big=False)
    (expno_dir / "pulseprogram").write_text(";zg\n;synthetic one-pulse spectrum written by analysis.synthetic\n")
    return expno_dir


def recovery_intensities(m0: float, t1_s: float, delays_s: list[float], method: str, d1_eff_s: float) -> np.ndarray:
    """Saturation: M0 (1 - e^{-vd/T1}); inversion from M0 (1 - e^{-D1eff/T1}): M0 (1 - (1 + that/M0) e^{-vd/T1})."""
    vd = np.asarray(delays_s, float)
    if method == "saturation":
        return m0 * (1 - np.exp(-vd / t1_s))
    start = 1 - np.exp(-d1_eff_s / t1_s)
    return m0 * (1 - (1 + start) * np.exp(-vd / t1_s))


def write_synthetic_t1(expno_dir: Path, shifts_ppm: list[float], m0: list[float], t1_s: list[float],
                       delays_s: list[float], *, method: str = "saturation", temperature_k: float = 300.0,
                       d1_s: float = 5.0, td: int = 2048, sw_ppm: float = 40.0, sfo1_mhz: float = 73.578,
                       carrier_ppm: float = -1.0, linewidth_hz: float = 15.0, noise: float = 0.0, seed: int = 0,
                       grpdly: int = 76, nucleus: str = "6Li") -> Path:
    """Write a T1 pseudo-2D (ser, acqus/acqu2s, vdlist as TopSpin writes it, VDLIST parameter)."""
    rng = np.random.default_rng(seed)
    d1_eff_s = d1_s + acquisition_time_s(td, sw_ppm, sfo1_mhz)
    amplitudes = np.stack([recovery_intensities(m, t, delays_s, method, d1_eff_s) for m, t in zip(m0, t1_s)], axis=1)
    rows = _one_pulse_fids(amplitudes, shifts_ppm, td=td, sw_ppm=sw_ppm, sfo1_mhz=sfo1_mhz, carrier_ppm=carrier_ppm,
                           linewidth_hz=linewidth_hz, grpdly=grpdly, noise=noise, rng=rng)
    pulprog = "satrect" if method == "saturation" else "t1ir"
    acqus = _one_pulse_acqus(td=td, sw_ppm=sw_ppm, sfo1_mhz=sfo1_mhz, carrier_ppm=carrier_ppm, grpdly=grpdly,
                             temperature_k=temperature_k, d1_s=d1_s, nucleus=nucleus, pulprog=pulprog, ns=8)
    acqus["VDLIST"] = "vdlist"
    acqu2s = {k: acqus[k] for k in ("_comments", "_coreheader", "SFO1", "BF1", "O1", "NUC1", "PULPROG")}
    acqu2s.update(TD=len(delays_s), SW=1.0, FnMODE=1)
    expno_dir = Path(expno_dir)
    expno_dir.mkdir(parents=True, exist_ok=True)
    ng.bruker.write(str(expno_dir), {"acqus": acqus, "acqu2s": acqu2s, "pprog": {}}, rows, overwrite=True,
                    write_prog=False, isfloat=True, big=False)
    (expno_dir / "vdlist").write_text("".join(f"{d:g}s\n" for d in delays_s))
    (expno_dir / "pulseprogram").write_text(f";{pulprog}\n;synthetic T1 pseudo-2D written by analysis.synthetic\n")
    return expno_dir
