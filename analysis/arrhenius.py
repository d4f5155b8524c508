"""Arrhenius fits, q(T) = A exp(-Ea / (kB T)), of rates or diffusion coefficients across temperatures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.constants import physical_constants

from analysis.errors import AnalysisFitError

BOLTZMANN_EV_PER_K = physical_constants["Boltzmann constant in eV/K"][0]


@dataclass(frozen=True)
class ArrheniusFit:
    """Activation energy (eV) and prefactor (units of the fitted quantity), each with a standard error."""

    ea_ev: float
    ea_stderr_ev: float
    prefactor: float
    prefactor_stderr: float


def fit_arrhenius(temperatures_k: np.ndarray, values: np.ndarray, stderrs: np.ndarray | None = None) -> ArrheniusFit:
    """Weighted straight line of ln(q) against 1/(kB T); weights from relative standard errors if given.

    The standard errors scale with the scatter about the line (reduced chi-square), so they are honest
    when the per-point errors are under- or over-estimated.
    """
    t = np.asarray(temperatures_k, float)
    q = np.asarray(values, float)
    if t.size < 2 or np.unique(t).size < 2:
        raise AnalysisFitError("Arrhenius fit needs at least two distinct temperatures")
    if np.any(q <= 0) or not np.all(np.isfinite(q)):
        raise AnalysisFitError(f"Arrhenius fit needs positive finite values, got {q.tolist()}")
    x = 1.0 / (BOLTZMANN_EV_PER_K * t)
    y = np.log(q)
    if stderrs is not None and np.all(np.asarray(stderrs) > 0):
        w = q / np.asarray(stderrs, float)
    else:
        w = np.ones_like(q)
    design = np.stack([np.ones_like(x), -x], axis=1) * w[:, None]
    coef, *_ = np.linalg.lstsq(design, y * w, rcond=None)
    resid = (y - (coef[0] - coef[1] * x)) * w
    dof = t.size - 2
    cov = np.linalg.inv(design.T @ design)
    if dof > 0:
        reduced_chi2 = float(resid @ resid) / dof
        cov = cov * (reduced_chi2 if stderrs is None else max(reduced_chi2, 1.0))
    ln_a, ea = coef
    prefactor = float(np.exp(ln_a))
    return ArrheniusFit(float(ea), float(np.sqrt(cov[1, 1])), prefactor, prefactor * float(np.sqrt(cov[0, 0])))
