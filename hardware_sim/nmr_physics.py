"""6Li exchange (EXSY) spin physics: sites, Arrhenius exchange rates, mixing-time volume matrix.

The model is the standard one for 2D exchange spectroscopy: longitudinal magnetisation on N sites
evolves during the mixing time as dM/dt = -L (M - M_eq), with L[i, i] = 1/T1_i + sum_j k_ij and
L[i, j] = -k_ji. The peak-volume matrix is A(t) = exp(-L t) M0, M0 = diag(populations);
A[i, j] is the magnetisation found on site i (F2) after mixing that started on site j (F1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.constants import physical_constants

BOLTZMANN_EV_PER_K = physical_constants["Boltzmann constant in eV/K"][0]


@dataclass(frozen=True)
class Site:
    """One 6Li environment: chemical shift, fraction of the Li, Lorentzian FWHM and T1 (Arrhenius in 1/T1)."""

    name: str
    shift_ppm: float
    population: float
    linewidth_hz: float
    t1_s: float                      # at reference_temperature_k
    t1_ea_ev: float = 0.0            # 1/T1 = (1/t1_s) exp(-t1_ea_ev/kB (1/T - 1/T_ref)): 0 = T1 constant
    reference_temperature_k: float = 293.0
    shift_slope_ppm_per_k: float = 0.0  # a chemical-shift thermometer's line moves (lead nitrate: +0.753 ppm/K)

    def shift_at(self, temperature_k: float) -> float:
        """The shift in ppm at a sample temperature (linear about the reference temperature)."""
        return self.shift_ppm + self.shift_slope_ppm_per_k * (temperature_k - self.reference_temperature_k)

    def t1_at(self, temperature_k: float) -> float:
        """T1 in s at the given temperature (a positive t1_ea_ev shortens T1 on heating)."""
        if temperature_k <= 0:
            raise ValueError(f"temperature must be positive, got {temperature_k} K")
        exponent = self.t1_ea_ev / BOLTZMANN_EV_PER_K * (1.0 / temperature_k - 1.0 / self.reference_temperature_k)
        return self.t1_s * math.exp(exponent)


@dataclass(frozen=True)
class ArrheniusRate:
    """A rate constant k(T) = prefactor * exp(-Ea / (kB T)), in 1/s."""

    prefactor_per_s: float
    ea_ev: float

    def at(self, temperature_k: float) -> float:
        """The rate constant in 1/s at the given temperature."""
        if temperature_k <= 0:
            raise ValueError(f"temperature must be positive, got {temperature_k} K")
        return self.prefactor_per_s * math.exp(-self.ea_ev / (BOLTZMANN_EV_PER_K * temperature_k))

    @classmethod
    def from_rate(cls, rate_per_s: float, temperature_k: float, ea_ev: float) -> "ArrheniusRate":
        """The Arrhenius law with activation energy ea_ev that gives rate_per_s at temperature_k."""
        prefactor = rate_per_s * math.exp(ea_ev / (BOLTZMANN_EV_PER_K * temperature_k))
        return cls(prefactor_per_s=prefactor, ea_ev=ea_ev)


@dataclass(frozen=True)
class ExsySample:
    """Sites and their pairwise exchange laws; exchange[(a, b)] is the forward rate a -> b."""

    sites: tuple[Site, ...]
    exchange: dict[tuple[str, str], ArrheniusRate] = field(default_factory=dict)
    spin_diffusion: bool = False   # adds SPIN_DIFFUSION_RATE_PER_S (temperature-independent) to every listed pair

    def __post_init__(self) -> None:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate site names in {names}")
        for site in self.sites:
            if site.population <= 0 or site.linewidth_hz <= 0 or site.t1_s <= 0:
                raise ValueError(f"site {site.name}: population, linewidth and T1 must be > 0")
        for a, b in self.exchange:
            if a not in names or b not in names or a == b:
                raise ValueError(f"exchange pair ({a}, {b}) does not name two distinct sites {names}")
            if (b, a) in self.exchange:
                raise ValueError(f"exchange pair ({a}, {b}) given in both directions; give one")

    @property
    def names(self) -> list[str]:
        """Site names in matrix order."""
        return [s.name for s in self.sites]

    @property
    def populations(self) -> np.ndarray:
        """Equilibrium populations, normalised to sum 1."""
        p = np.array([s.population for s in self.sites], dtype=float)
        return p / p.sum()

    def t1_s(self, temperature_k: float) -> np.ndarray:
        """Each site's T1 in s at the given temperature, in matrix order."""
        return np.array([s.t1_at(temperature_k) for s in self.sites])

    def relaxed_fraction(self, d1_eff_s: float, temperature_k: float) -> np.ndarray:
        """1 - exp(-D1_eff/T1) per site: the part of M0 regrown before a scan (incomplete relaxation)."""
        if d1_eff_s < 0:
            raise ValueError(f"recovery time must be >= 0, got {d1_eff_s} s")
        return -np.expm1(-d1_eff_s / self.t1_s(temperature_k))

    def rate_matrix(self, temperature_k: float) -> np.ndarray:
        """K[i, j] = rate constant i -> j in 1/s (zero diagonal); reverse rates by detailed balance."""
        index = {n: i for i, n in enumerate(self.names)}
        p = self.populations
        k = np.zeros((len(self.sites), len(self.sites)))
        for (a, b), law in self.exchange.items():
            i, j = index[a], index[b]
            k[i, j] = law.at(temperature_k) + (SPIN_DIFFUSION_RATE_PER_S if self.spin_diffusion else 0.0)
            k[j, i] = k[i, j] * p[i] / p[j]
        return k

    def relaxation_exchange_matrix(self, temperature_k: float) -> np.ndarray:
        """L with dM/dt = -L (M - M_eq): 1/T1 + outgoing rates on the diagonal, -k_ji off it."""
        k = self.rate_matrix(temperature_k)
        r1 = 1.0 / self.t1_s(temperature_k)
        return np.diag(r1 + k.sum(axis=1)) - k.T

    def mixing_matrix(self, t_s: float, temperature_k: float) -> np.ndarray:
        """EXSY volume matrix A(t) = exp(-L t) diag(p): A[i, j] from site j (F1) to site i (F2)."""
        if t_s < 0:
            raise ValueError(f"mixing time must be >= 0, got {t_s} s")
        # L diag(p) is symmetric (detailed balance), so S = p^-1/2 L p^1/2 is too: use eigh.
        root_p = np.sqrt(self.populations)
        sym = self.relaxation_exchange_matrix(temperature_k) * root_p[None, :] / root_p[:, None]
        eigenvalues, vectors = np.linalg.eigh((sym + sym.T) / 2.0)
        propagator = (vectors * np.exp(-eigenvalues * t_s)) @ vectors.T
        return root_p[:, None] * propagator * root_p[None, :]


# Default rates at 293 K (1/s) and the paper's activation energies (eV), forward direction.
PAPER_RATES_293K = {
    ("Li2S", "LPSC"): (0.03, 0.107),
    ("Li2S", "LiI"): (0.05, 0.142),
    ("LPSC", "LiI"): (0.04, 0.117),
}
REFERENCE_TEMPERATURE_K = 293.0
SPIN_DIFFUSION_RATE_PER_S = 0.01  # a 6Li-6Li spin-diffusion rate (weak: low gamma, dilute 6Li); an assumption


def paper_sample(with_lii: bool = True) -> ExsySample:
    """The Li2S(LiI) / LPSC sample of the paper; without LiI there is no LiI site and no exchange."""
    sites = [
        Site("Li2S", 2.31, 0.50, 30.0, 20.0),
        Site("LPSC", 1.29, 0.35, 12.0, 10.0),
    ]
    if not with_lii:
        return ExsySample(sites=tuple(sites), exchange={})
    sites.append(Site("LiI", -4.56, 0.15, 25.0, 15.0))
    exchange = {
        pair: ArrheniusRate.from_rate(k293, REFERENCE_TEMPERATURE_K, ea)
        for pair, (k293, ea) in PAPER_RATES_293K.items()
    }
    return ExsySample(sites=tuple(sites), exchange=exchange)


def sample_from_station(spec: Mapping[str, Any] | None) -> ExsySample:
    """The ExsySample of a station file's `spectrometer.sample` (protocols.station.SampleSpec dumped by field
    name, SI values); None gives the seed's paper_sample()."""
    if spec is None:
        return paper_sample()
    sites = tuple(Site(str(s["name"]), float(s["shift_ppm"]), float(s["population"]), float(s["linewidth_hz"]),
                       float(s["t1_s"]), float(s.get("t1_ea_ev", 0.0)), float(s.get("reference_temperature_k", 293.0)),
                       float(s.get("shift_slope_ppm_per_k", 0.0)))
                  for s in spec["sites"])
    exchange = {(str(law["sites"][0]), str(law["sites"][1])): ArrheniusRate(float(law["k0_per_s"]), float(law["ea_ev"]))
                for law in spec.get("exchange", [])}
    return ExsySample(sites=sites, exchange=exchange, spin_diffusion=bool(spec.get("spin_diffusion", False)))
