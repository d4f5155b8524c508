"""Exchange models fitted to EXSY volume matrices across mixing times at one temperature.

V[a, b](t) is the volume at F1 = site a, F2 = site b: magnetisation that started on a and is on b
after the mixing time t. Rates k[i, j] are i -> j in 1/s; detailed balance p_i k_ij = p_j k_ji.
All fits use scipy.optimize.least_squares on log parameters; standard errors come from the
Jacobian covariance, s^2 (J^T J)^-1, propagated to derived quantities by the delta method.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from analysis.errors import AnalysisFitError

log = logging.getLogger(__name__)

LOG_K_BOUNDS = (np.log(1e-7), np.log(1e5))
LOG_R1_BOUNDS = (np.log(1e-6), np.log(1e4))
LOG_D_BOUNDS = (np.log(1e-30), np.log(1e-5))


def _least_squares(*args: Any, **kwargs: Any) -> Any:
    """scipy.optimize.least_squares, imported on first use so that the CLI (which reads the model table) starts fast."""
    from scipy.optimize import least_squares

    return least_squares(*args, **kwargs)


def _at_bound(value: float, bounds: tuple[float, float]) -> bool:
    """A log parameter pinned to its bound: the data did not determine it (e.g. no exchange)."""
    return bool(value - bounds[0] < 1e-3 or bounds[1] - value < 1e-3)


@dataclass
class ExchangeFit:
    """Result of one model at one temperature: rates (1/s) with standard errors, T1 (s), D (m^2/s)."""

    model: str
    n_sites: int
    k_per_s: np.ndarray
    k_stderr_per_s: np.ndarray
    populations: np.ndarray
    t1_s: np.ndarray | None = None
    t1_stderr_s: np.ndarray | None = None
    d_m2_per_s: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    rms_residual: float = 0.0
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    at_bound: set[tuple[int, int]] = field(default_factory=set)  # pairs (i < j) whose rate hit a bound


def _propagator(k: np.ndarray, r1: np.ndarray, p: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """exp(-L t) for every t via the symmetrised relaxation-exchange matrix (detailed balance)."""
    n = len(p)
    big_l = np.diag(r1 + k.sum(axis=1)) - k.T
    sq = np.sqrt(p)
    sym = big_l * sq[None, :] / sq[:, None]
    sym = 0.5 * (sym + sym.T)
    lam, u = np.linalg.eigh(sym)
    e = np.exp(-np.outer(times_s, lam))  # (T, n)
    core = np.einsum("ik,tk,jk->tij", u, e, u)
    return core * sq[None, :, None] / sq[None, None, :] if n else core


def matrix_volumes(k: np.ndarray, r1: np.ndarray, m0: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Model volumes V[t, a, b] = exp(-L t)[b, a] M0[a] of the N-site matrix model."""
    p = m0 / m0.sum()
    prop = _propagator(k, r1, p, np.asarray(times_s, float))
    return np.transpose(prop, (0, 2, 1)) * m0[None, :, None]


def two_site_volumes(k_ab: float, k_ba: float, r1a: float, r1b: float, m0a: float, m0b: float,
                     times_s: np.ndarray) -> np.ndarray:
    """Perrin & Dwyer (Chem. Rev. 1990, 90, 935) analytic two-site volumes V[t, a, b] (Sylvester form)."""
    l11, l22 = r1a + k_ab, r1b + k_ba
    half_sum, half_diff = (l11 + l22) / 2, (l11 - l22) / 2
    root = np.sqrt(half_diff ** 2 + k_ab * k_ba)
    lp, lm = half_sum + root, half_sum - root
    t = np.asarray(times_s, float)
    ep, em = np.exp(-lp * t), np.exp(-lm * t)
    # exp(-Lt) = [(L - lm) e^{-lp t} - (L - lp) e^{-lm t}] / (lp - lm); L = [[l11, -k_ba], [-k_ab, l22]]
    denom = lp - lm if root > 0 else 1.0
    if root > 0:
        e11 = ((l11 - lm) * ep - (l11 - lp) * em) / denom
        e22 = ((l22 - lm) * ep - (l22 - lp) * em) / denom
        e12 = (-k_ba) * (ep - em) / denom   # a <- b
        e21 = (-k_ab) * (ep - em) / denom   # b <- a
    else:
        e11, e22, e12, e21 = np.exp(-l11 * t), np.exp(-l22 * t), 0 * t, 0 * t
    out = np.empty((t.size, 2, 2))
    out[:, 0, 0] = e11 * m0a
    out[:, 1, 1] = e22 * m0b
    out[:, 0, 1] = e21 * m0a   # started on a, now on b
    out[:, 1, 0] = e12 * m0b
    return out


def _covariance(result, n_obs: int) -> np.ndarray:
    jac = result.jac
    dof = max(n_obs - jac.shape[1], 1)
    s2 = 2 * result.cost / dof
    return np.linalg.pinv(jac.T @ jac) * s2


def _delta(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Standard errors of fun(x) by the delta method with a numerical gradient."""
    f0 = fun(x)
    grad = np.empty((f0.size, x.size))
    for i in range(x.size):
        h = 1e-6 * max(1.0, abs(x[i]))
        xp = x.copy()
        xp[i] += h
        grad[:, i] = (fun(xp) - f0) / h
    return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", grad, cov, grad), 0, None))


def _check_inputs(times_s: np.ndarray, volumes: np.ndarray, n_params: int) -> None:
    if volumes.ndim != 3 or volumes.shape[1] != volumes.shape[2] or volumes.shape[0] != times_s.size:
        raise AnalysisFitError(f"volumes must be (n_times, N, N), got {volumes.shape}")
    if volumes.size <= n_params:
        raise AnalysisFitError(f"{volumes.shape[0]} mixing times are too few for {n_params} parameters")
    if not np.all(np.isfinite(volumes)):
        raise AnalysisFitError("volumes contain NaN or inf")


def _initial_rates(times_s: np.ndarray, v: np.ndarray, m0: np.ndarray) -> np.ndarray:
    """Initial-slope guess of k[i, j] from the shortest mixing times."""
    n = m0.size
    k0 = np.full((n, n), 0.1)
    order = np.argsort(times_s)
    for i, j in itertools.permutations(range(n), 2):
        frac = 0.5 * (v[order, i, j] + v[order, j, i]) / np.sqrt(m0[i] * m0[j])
        usable = frac < 0.2
        if usable.sum() >= 2 and times_s[order][usable][-1] > 0:
            slope = np.polyfit(times_s[order][usable], frac[usable], 1)[0]
            k0[i, j] = min(max(slope * np.sqrt(m0[j] / m0[i]), 1e-4), 1e3)
    return k0


def fit_matrix(times_s: np.ndarray, volumes: np.ndarray, fit_t1: bool = True) -> ExchangeFit:
    """N-site matrix model M(t) = exp(-L t) M(0), detailed balance, one R1 per site."""
    times_s = np.asarray(times_s, float)
    volumes = np.asarray(volumes, float)
    n = volumes.shape[1]
    pairs = list(itertools.combinations(range(n), 2))
    n_params = n + len(pairs) + (n if fit_t1 else 0)
    _check_inputs(times_s, volumes, n_params)
    scale = float(np.trace(volumes[np.argmin(times_s)]))
    if not scale > 0:
        raise AnalysisFitError("diagonal volumes at the shortest mixing time are not positive")
    v = volumes / scale
    m0_guess = np.clip(np.diag(v[np.argmin(times_s)]), 1e-3, None) * np.exp(0.1 * times_s.min())
    k0 = _initial_rates(times_s, v, m0_guess)
    x0 = np.concatenate([np.log(m0_guess), [np.log(k0[i, j]) for i, j in pairs],
                         np.log(np.full(n, 0.1)) if fit_t1 else []])

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m0 = np.exp(x[:n])
        p = m0 / m0.sum()
        k = np.zeros((n, n))
        for idx, (i, j) in enumerate(pairs):
            k[i, j] = np.exp(x[n + idx])
            k[j, i] = k[i, j] * p[i] / p[j]
        r1 = np.exp(x[n + len(pairs):]) if fit_t1 else np.zeros(n)
        return m0, k, r1

    def residuals(x: np.ndarray) -> np.ndarray:
        m0, k, r1 = unpack(x)
        return (matrix_volumes(k, r1, m0, times_s) - v).ravel()

    lower = np.concatenate([np.full(n, -30.0), np.full(len(pairs), LOG_K_BOUNDS[0]),
                            np.full(n if fit_t1 else 0, LOG_R1_BOUNDS[0])])
    upper = np.concatenate([np.full(n, 30.0), np.full(len(pairs), LOG_K_BOUNDS[1]),
                            np.full(n if fit_t1 else 0, LOG_R1_BOUNDS[1])])
    x0 = np.clip(x0, lower + 1e-9, upper - 1e-9)
    result = _least_squares(residuals, x0, bounds=(lower, upper), method="trf", x_scale=1.0, max_nfev=2000)
    if not result.success:
        raise AnalysisFitError(f"matrix model fit did not converge: {result.message}")
    log.info("matrix model: %d sites, %d mixing times, %d evaluations", n, times_s.size, result.nfev)
    cov = _covariance(result, v.size)
    m0, k, r1 = unpack(result.x)
    k_se = _delta(lambda x: unpack(x)[1].ravel(), result.x, cov).reshape(n, n)
    t1 = t1_se = None
    if fit_t1:
        t1 = 1.0 / r1
        t1_se = _delta(lambda x: 1.0 / unpack(x)[2], result.x, cov)
    rms = float(np.sqrt(np.mean(result.fun ** 2)) * scale)

    def predict(t: np.ndarray) -> np.ndarray:
        return matrix_volumes(k, r1, m0, np.asarray(t, float)) * scale

    at_bound = {pair for idx, pair in enumerate(pairs) if _at_bound(result.x[n + idx], LOG_K_BOUNDS)}
    return ExchangeFit("matrix", n, k, k_se, m0 / m0.sum(), t1, t1_se, {}, rms, predict, at_bound)


def fit_two_site(times_s: np.ndarray, volumes: np.ndarray, fit_t1: bool = True) -> ExchangeFit:
    """Perrin & Dwyer two-site model fitted pair by pair (each 2 x 2 block on its own)."""
    times_s = np.asarray(times_s, float)
    volumes = np.asarray(volumes, float)
    n = volumes.shape[1]
    _check_inputs(times_s, volumes, 5 if fit_t1 else 3)
    k = np.zeros((n, n))
    k_se = np.zeros((n, n))
    t1_by_site: dict[int, list[float]] = {i: [] for i in range(n)}
    t1_se_by_site: dict[int, list[float]] = {i: [] for i in range(n)}
    rms_all, predictors, at_bound = [], {}, set()
    scale = float(np.trace(volumes[np.argmin(times_s)]))
    if not scale > 0:
        raise AnalysisFitError("diagonal volumes at the shortest mixing time are not positive")
    for a, b in itertools.combinations(range(n), 2):
        block = volumes[:, [a, b]][:, :, [a, b]] / scale
        m0_guess = np.clip(np.diag(block[np.argmin(times_s)]), 1e-3, None)
        k0 = _initial_rates(times_s, block, m0_guess)[0, 1]
        x0 = np.array([np.log(m0_guess[0]), np.log(m0_guess[1]), np.log(k0)]
                      + ([np.log(0.1), np.log(0.1)] if fit_t1 else []))

        def unpack(x: np.ndarray) -> tuple[float, float, float, float, float, float]:
            m0a, m0b, kab = np.exp(x[:3])
            kba = kab * m0a / m0b
            r1a, r1b = (np.exp(x[3]), np.exp(x[4])) if fit_t1 else (0.0, 0.0)
            return kab, kba, r1a, r1b, m0a, m0b

        def residuals(x: np.ndarray, block=block) -> np.ndarray:
            return (two_site_volumes(*unpack(x), times_s) - block).ravel()

        lower = np.array([-30, -30, LOG_K_BOUNDS[0]] + [LOG_R1_BOUNDS[0]] * (2 if fit_t1 else 0))
        upper = np.array([30, 30, LOG_K_BOUNDS[1]] + [LOG_R1_BOUNDS[1]] * (2 if fit_t1 else 0))
        result = _least_squares(residuals, np.clip(x0, lower + 1e-9, upper - 1e-9), bounds=(lower, upper),
                               method="trf", max_nfev=2000)
        if not result.success:
            raise AnalysisFitError(f"two-site fit of sites {a}-{b} did not converge: {result.message}")
        log.info("two-site model %d-%d: %d evaluations", a, b, result.nfev)
        cov = _covariance(result, block.size)
        kab, kba, r1a, r1b, m0a, m0b = unpack(result.x)
        se = _delta(lambda x: np.array(unpack(x)[:4]), result.x, cov)
        k[a, b], k[b, a], k_se[a, b], k_se[b, a] = kab, kba, se[0], se[1]
        if fit_t1:
            t1_by_site[a].append(1 / r1a)
            t1_by_site[b].append(1 / r1b)
            t1_se_by_site[a].append(se[2] / r1a ** 2)
            t1_se_by_site[b].append(se[3] / r1b ** 2)
        rms_all.append(np.mean(result.fun ** 2))
        predictors[(a, b)] = unpack(result.x)
        if _at_bound(result.x[2], LOG_K_BOUNDS):
            at_bound.add((a, b))
    populations = np.diag(volumes[np.argmin(times_s)]) / scale
    t1 = np.array([np.median(t1_by_site[i]) for i in range(n)]) if fit_t1 else None
    t1_se = np.array([np.median(t1_se_by_site[i]) for i in range(n)]) if fit_t1 else None

    def predict(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, float)
        out = np.full((t.size, n, n), np.nan)
        for (a, b), params in predictors.items():
            block = two_site_volumes(*params, t) * scale
            out[:, a, a], out[:, b, b] = block[:, 0, 0], block[:, 1, 1]
            out[:, a, b], out[:, b, a] = block[:, 0, 1], block[:, 1, 0]
        return out

    return ExchangeFit("two-site", n, k, k_se, populations / populations.sum(), t1, t1_se, {},
                       float(np.sqrt(np.mean(rms_all)) * scale), predict, at_bound)


def sphere_uptake(tau: np.ndarray, terms: int = 60) -> np.ndarray:
    """Fraction exchanged out of a sphere, F(tau) = 1 - 6/pi^2 sum exp(-n^2 pi^2 tau)/n^2, tau = D t / r^2.

    Crank, The Mathematics of Diffusion, eq. 6.20; the short-time form 6 sqrt(tau/pi) - 3 tau is used
    below tau = 0.01, where the series converges slowly and the two agree to better than 1e-12.
    """
    tau = np.atleast_1d(np.asarray(tau, float))
    out = np.empty_like(tau)
    short = tau < 0.01
    out[short] = 6 * np.sqrt(tau[short] / np.pi) - 3 * tau[short]
    n = np.arange(1, terms + 1)[:, None]
    long_tau = tau[~short][None, :]
    out[~short] = 1 - 6 / np.pi ** 2 * (np.exp(-(n ** 2) * np.pi ** 2 * long_tau) / n ** 2).sum(axis=0)
    return out


def cross_fraction(volumes: np.ndarray, a: int, b: int) -> np.ndarray:
    """Normalised cross-peak intensity of a pair: (V_ab + V_ba) / (V_aa + V_bb + V_ab + V_ba), T1 cancels."""
    cross = volumes[:, a, b] + volumes[:, b, a]
    return cross / (volumes[:, a, a] + volumes[:, b, b] + cross)


def fit_diffusion(times_s: np.ndarray, volumes: np.ndarray, radius_m: float) -> ExchangeFit:
    """Fickian exchange out of spheres of radius radius_m, pair by pair: f(t) = f_eq F(D t / r^2).

    f_eq = 2 p_a p_b / (p_a + p_b)^2 from the diagonal at the shortest mixing time; rates are the
    equivalent first-order rates k_ex = pi^2 D / r^2 split by detailed balance, k_ab = k_ex p_b/(p_a+p_b).
    """
    times_s = np.asarray(times_s, float)
    volumes = np.asarray(volumes, float)
    n = volumes.shape[1]
    _check_inputs(times_s, volumes, 1)
    diag0 = np.diag(volumes[np.argmin(times_s)])
    if not np.all(diag0 > 0):
        raise AnalysisFitError("diagonal volumes at the shortest mixing time are not positive")
    p = diag0 / diag0.sum()
    k = np.zeros((n, n))
    k_se = np.zeros((n, n))
    d_fit: dict[tuple[int, int], tuple[float, float]] = {}
    rms_all, at_bound = [], set()
    for a, b in itertools.combinations(range(n), 2):
        f_obs = cross_fraction(volumes, a, b)
        f_eq = 2 * p[a] * p[b] / (p[a] + p[b]) ** 2

        def residuals(x: np.ndarray, f_obs=f_obs, f_eq=f_eq) -> np.ndarray:
            return f_eq * sphere_uptake(np.exp(x[0]) * times_s / radius_m ** 2) - f_obs

        guesses = [np.clip(np.log(radius_m ** 2 / t), LOG_D_BOUNDS[0] + 1, LOG_D_BOUNDS[1] - 1)
                   for t in np.geomspace(times_s.min() + 1e-6, times_s.max(), 5)]
        best = min((_least_squares(residuals, [g], bounds=LOG_D_BOUNDS, method="trf") for g in guesses),
                   key=lambda r: r.cost)
        if not best.success:
            raise AnalysisFitError(f"diffusion fit of sites {a}-{b} did not converge: {best.message}")
        log.info("diffusion model %d-%d: cost %.3g", a, b, best.cost)
        cov = _covariance(best, times_s.size)
        d = float(np.exp(best.x[0]))
        d_se = d * float(np.sqrt(cov[0, 0]))
        k_ex, k_ex_se = np.pi ** 2 * d / radius_m ** 2, np.pi ** 2 * d_se / radius_m ** 2
        k[a, b], k[b, a] = k_ex * p[b] / (p[a] + p[b]), k_ex * p[a] / (p[a] + p[b])
        k_se[a, b], k_se[b, a] = k_ex_se * p[b] / (p[a] + p[b]), k_ex_se * p[a] / (p[a] + p[b])
        d_fit[(a, b)] = (d, d_se)
        if _at_bound(best.x[0], LOG_D_BOUNDS):
            at_bound.add((a, b))
        rms_all.append(np.mean(best.fun ** 2))
    return ExchangeFit("diffusion", n, k, k_se, p, None, None, d_fit, float(np.sqrt(np.mean(rms_all))), None,
                       at_bound)
