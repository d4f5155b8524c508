"""Which EXSY point to acquire next: the Fisher information of the fitted N-site model, propagated to Ea, per hour.

At each temperature the matrix model (analysis.exchange_models) predicts the volume matrix V(t; theta)
with theta = (log M0 per site, log k_ij for i < j, log R1 per site), the parameters the fit uses.
A point at mixing time t adds J(t)^T J(t) / sigma^2 to that temperature's information, J the
Jacobian of V(t) w.r.t. theta and sigma the noise of one volume (from the fit's residuals). The
covariance of log k at a temperature is the matching block of the information's inverse, and the
variance of each pair's Ea follows from the weighted Arrhenius line through ln k against 1/(kB T).
A candidate's score is the drop in the target's objective (the sum, over the quantities not yet at
target, of variance / target^2) per hour of its cost, VT move included. Pure functions, no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from analysis.arrhenius import BOLTZMANN_EV_PER_K
from analysis.exchange_models import matrix_volumes

TargetKind = Literal["ea_stderr_ev", "rate_relative_stderr"]
JACOBIAN_STEP = 1e-5  # central differences in log parameters
MAX_INFLATION = 25.0  # at most this ratio between the analysis's variance and the design's is carried over


@dataclass(frozen=True)
class TemperatureModel:
    """The fitted model at one temperature: rates k[i, j] (1/s, detailed balance), R1 per site, M0 per site, noise."""

    temperature_k: float
    rates_per_s: np.ndarray
    r1_per_s: np.ndarray
    m0: np.ndarray
    noise_sd: float

    @property
    def n_sites(self) -> int:
        return int(self.m0.size)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(self.n_sites), 2))

    def theta(self) -> np.ndarray:
        """(log M0, log k_ij for i < j, log R1): the parametrisation of analysis.exchange_models.fit_matrix."""
        k = np.clip(self.rates_per_s, 1e-12, None)
        return np.concatenate([np.log(self.m0), [np.log(k[i, j]) for i, j in self.pairs],
                               np.log(np.clip(self.r1_per_s, 1e-12, None))])

    def volumes(self, theta: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """V[t, a, b] for parameters theta (detailed balance gives k_ji from k_ij and the populations)."""
        n, pairs = self.n_sites, self.pairs
        m0 = np.exp(theta[:n])
        p = m0 / m0.sum()
        k = np.zeros((n, n))
        for idx, (i, j) in enumerate(pairs):
            k[i, j] = np.exp(theta[n + idx])
            k[j, i] = k[i, j] * p[i] / p[j]
        return matrix_volumes(k, np.exp(theta[n + len(pairs):]), m0, np.asarray(times_s, float))

    def information(self, times_s: Sequence[float]) -> np.ndarray:
        """Per mixing time, J^T J / sigma^2 (shape (len(times), n_theta, n_theta))."""
        times = np.asarray(times_s, float)
        theta = self.theta()
        jac = np.empty((times.size, self.n_sites ** 2, theta.size))
        for i in range(theta.size):
            step = np.zeros_like(theta)
            step[i] = JACOBIAN_STEP
            jac[:, :, i] = ((self.volumes(theta + step, times) - self.volumes(theta - step, times))
                            .reshape(times.size, -1) / (2 * JACOBIAN_STEP))
        return np.einsum("tvi,tvj->tij", jac, jac) / self.noise_sd ** 2


def model_from_fit(temperature_k: float, rates_per_s: np.ndarray, t1_s: Sequence[float] | None,
                   populations: Sequence[float], times_s: Sequence[float], volumes: np.ndarray,
                   rms_residual: float) -> TemperatureModel:
    """The design's model from a fit (rates, T1, populations) and the volumes it was fitted to.

    M0's scale is the least-squares one for the fitted shape; sigma is the residual rms corrected
    for the fitted parameters' degrees of freedom (as the fit's own covariance is).
    """
    n = len(populations)
    p = np.asarray(populations, float)
    r1 = 1.0 / np.asarray(t1_s, float) if t1_s is not None else np.zeros(n)
    volumes = np.asarray(volumes, float)
    shape = matrix_volumes(np.asarray(rates_per_s, float), r1, p, np.asarray(times_s, float))
    scale = float((shape * volumes).sum() / (shape * shape).sum())
    n_obs, n_params = volumes.size, n + n * (n - 1) // 2 + n
    noise_sd = float(rms_residual) * np.sqrt(n_obs / max(n_obs - n_params, 1))
    return TemperatureModel(float(temperature_k), np.asarray(rates_per_s, float), r1, p * scale,
                            max(noise_sd, 1e-12 * scale))


def log_rate_covariance(model: TemperatureModel, info: np.ndarray) -> np.ndarray:
    """Covariance of log k_ij (i < j) at one temperature: that block of the information's (pseudo-)inverse."""
    n, n_pairs = model.n_sites, len(model.pairs)
    return np.linalg.pinv(info)[n:n + n_pairs, n:n + n_pairs]


def arrhenius_ea_variance(temperatures_k: np.ndarray, log_k_variance: np.ndarray) -> float:
    """Variance of Ea (eV^2) of the weighted line ln k = ln A - Ea x, x = 1 / (kB T), weights 1 / var(ln k)."""
    x = 1.0 / (BOLTZMANN_EV_PER_K * np.asarray(temperatures_k, float))
    w = 1.0 / np.asarray(log_k_variance, float)
    s0, s1, s2 = w.sum(), (w * x).sum(), (w * x * x).sum()
    det = s0 * s2 - s1 * s1
    return float(s0 / det) if det > 0 else float("inf")


@dataclass(frozen=True)
class Candidate:
    """A point the design may choose, with its cost: the acquisition plus, at another temperature, the VT move."""

    temperature_k: float
    mixing_time_s: float
    cost_s: float


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    objective_after: float
    gain_per_h: float


@dataclass
class DesignState:
    """The information gathered so far at every temperature, and what the target asks of it."""

    models: Mapping[float, TemperatureModel]
    info: dict[float, np.ndarray]
    target_kind: TargetKind
    target_value: float
    inflation: dict[str, float] = field(default_factory=dict)  # quantity -> analysis variance / design variance
    met: set[str] = field(default_factory=set)  # quantities already at target by the analysis
    _point_info: dict[tuple[float, float], np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, models: Mapping[float, TemperatureModel], acquired_s: Mapping[float, Sequence[float]],
              target_kind: TargetKind, target_value: float) -> "DesignState":
        """The information of the points acquired so far (temperature -> mixing times), under the fitted models."""
        info = {t: m.information(acquired_s.get(t, ())).sum(axis=0) if acquired_s.get(t)
                else np.zeros((m.theta().size,) * 2) for t, m in models.items()}
        return cls(models, info, target_kind, target_value)

    def variances(self, info: Mapping[float, np.ndarray] | None = None) -> dict[str, float]:
        """The design's variance of every target quantity: 'i-j' (Ea, eV^2) or 'T/i-j' (relative rate)."""
        info = self.info if info is None else info
        temps = sorted(self.models)
        first = self.models[temps[0]]
        covs = {t: log_rate_covariance(self.models[t], info[t]) for t in temps}
        out: dict[str, float] = {}
        for idx, (i, j) in enumerate(first.pairs):
            if self.target_kind == "ea_stderr_ev":
                var = np.array([covs[t][idx, idx] for t in temps])
                out[f"{i}-{j}"] = arrhenius_ea_variance(np.array(temps), np.clip(var, 1e-300, None))
            else:
                for t in temps:
                    out[f"{t:.2f}/{i}-{j}"] = float(covs[t][idx, idx])
        return out

    def calibrate(self, analysis_stderr: Mapping[str, float]) -> None:
        """Carry the analysis's reported stderr over: quantities at target count as met, others scale the design."""
        design = self.variances()
        self.met = {q for q, se in analysis_stderr.items() if se <= self.target_value}
        self.inflation = {q: float(np.clip(se ** 2 / design[q], 1.0, MAX_INFLATION))
                          for q, se in analysis_stderr.items() if q in design and design[q] > 0 and np.isfinite(se)}

    def objective(self, info: Mapping[float, np.ndarray] | None = None) -> float:
        """Sum over quantities not yet at target of (inflated) variance / target^2: what the design drives down."""
        return sum(self.inflation.get(q, 1.0) * v / self.target_value ** 2
                   for q, v in self.variances(info).items() if q not in self.met)

    def predicted_stderr(self, info: Mapping[float, np.ndarray] | None = None) -> dict[str, float]:
        return {q: float(np.sqrt(self.inflation.get(q, 1.0) * v)) for q, v in self.variances(info).items()}

    def point_information(self, temperature_k: float, mixing_time_s: float) -> np.ndarray:
        """J^T J / sigma^2 of one point (cached: the models do not change within a decision)."""
        key = (temperature_k, mixing_time_s)
        if key not in self._point_info:
            self._point_info[key] = self.models[temperature_k].information([mixing_time_s])[0]
        return self._point_info[key]

    def with_point(self, temperature_k: float, mixing_time_s: float,
                   info: Mapping[float, np.ndarray] | None = None) -> dict[float, np.ndarray]:
        """The information with one more point at (temperature, mixing time)."""
        info = dict(self.info if info is None else info)
        info[temperature_k] = info[temperature_k] + self.point_information(temperature_k, mixing_time_s)
        return info

    def rank(self, candidates: Sequence[Candidate], info: Mapping[float, np.ndarray] | None = None) -> list[Scored]:
        """Candidates by objective drop per hour, best first; ties keep the candidates' order (deterministic)."""
        now = self.objective(info)
        scored = []
        for c in candidates:
            after = self.objective(self.with_point(c.temperature_k, c.mixing_time_s, info))
            scored.append(Scored(c, after, (now - after) / (c.cost_s / 3600.0)))
        order = sorted(range(len(scored)), key=lambda i: (-round(scored[i].gain_per_h, 12), i))
        return [scored[i] for i in order]

    def hours_to_target(self, candidates_at: Callable[[float], list[Candidate]], at_k: float, budget_s: float,
                        max_points: int) -> float | None:
        """Greedy look-ahead without new data: hours until the predicted stderrs reach the target (None: not in budget)."""
        info: Mapping[float, np.ndarray] = self.info
        spent_s = 0.0
        for _ in range(max_points):
            predicted = self.predicted_stderr(info)
            if all(se <= self.target_value for q, se in predicted.items() if q not in self.met):
                return spent_s / 3600.0
            ranked = [s for s in self.rank(candidates_at(at_k), info) if spent_s + s.candidate.cost_s <= budget_s]
            if not ranked or ranked[0].gain_per_h <= 0:
                return None
            best = ranked[0].candidate
            info = self.with_point(best.temperature_k, best.mixing_time_s, info)
            spent_s += best.cost_s
            at_k = best.temperature_k
        return None


class CandidateSource:
    """Every (temperature, mixing time) with its cost from where the sample is now."""

    def __init__(self, temperatures_k: Sequence[float], mixing_times_s: Sequence[float],
                 acquisition_s: Mapping[float, float], move_s: Callable[[float, float], float]) -> None:
        """acquisition_s: mixing time -> its acquisition's duration; move_s(from_k, to_k): the VT move's."""
        self.temperatures_k = sorted(temperatures_k)
        self.mixing_times_s = sorted(mixing_times_s)
        self.acquisition_s = acquisition_s
        self.move_s = move_s

    def __call__(self, at_k: float) -> list[Candidate]:
        return [Candidate(t, m, self.acquisition_s[m] + self.move_s(at_k, t))
                for t in self.temperatures_k for m in self.mixing_times_s]


def models_from_analysis(result: Mapping[str, object], names: Sequence[str],
                         group_k: float = 1.0) -> dict[float, TemperatureModel]:
    """The design's model at every fitted temperature of an analysis result (analysis.api.analyze_paths's JSON)."""
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    points = list(result["points"])  # type: ignore[call-overload]
    models: dict[float, TemperatureModel] = {}
    for fit in result["fits"]:  # type: ignore[attr-defined]
        k = np.zeros((n, n))
        for rate in fit["rates"]:
            k[index[rate["from"]], index[rate["to"]]] = rate["k_per_s"]
        mine = [p for p in points if abs(p["temperature_k"] - fit["temperature_k"]) <= group_k]
        volumes = np.array([np.asarray(p["volumes"], float) / np.asarray(p.get("relaxation_factors", np.ones(n)))[:, None]
                            for p in mine])
        t1 = [entry["t1_s"] for entry in fit["t1_s"]] if "t1_s" in fit else None
        models[float(fit["temperature_k"])] = model_from_fit(fit["temperature_k"], k, t1, fit["populations"],
                                                             [p["mixing_time_s"] for p in mine], volumes,
                                                             fit["rms_residual"])
    return models


def analysis_stderrs(result: Mapping[str, object], names: Sequence[str], target_kind: TargetKind) -> dict[str, float]:
    """The analysis's standard error of every target quantity, keyed as DesignState.variances keys them."""
    index = {name: i for i, name in enumerate(names)}
    out: dict[str, float] = {}
    if target_kind == "ea_stderr_ev":
        for entry in result.get("arrhenius", []):  # type: ignore[attr-defined]
            a, b = entry["pair"].split("-")
            out[f"{index[a]}-{index[b]}"] = float(entry["ea_stderr_ev"])
        return out
    for fit in result["fits"]:  # type: ignore[attr-defined]
        for rate in fit["rates"]:
            i, j = index[rate["from"]], index[rate["to"]]
            if i < j:
                out[f"{fit['temperature_k']:.2f}/{i}-{j}"] = (float(rate["k_stderr_per_s"]) / rate["k_per_s"]
                                                              if rate["k_per_s"] > 0 else float("inf"))
    return out
