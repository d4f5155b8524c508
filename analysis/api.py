"""Python API behind `exsylab analyze`: one function per CLI action, each returning the JSON object."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from analysis.arrhenius import fit_arrhenius
from analysis.cycling import summarize_cycling
from analysis.errors import AnalysisFitError, AnalysisInputError
from analysis.exchange_models import ExchangeFit
from analysis.exsy_processing import ProcessingOptions, Spectrum2D, process_dataset
from analysis.fit_models import get_fit_model, validated_options
from analysis.integration import (box_half_widths_ppm, check_sites, find_diagonal_sites, lineshape_volumes,
                                  volume_matrix)
from analysis.series import expno_paths, parse_names, parse_sites, run_datasets, series_datasets
from analysis.t1 import T1Fit, fit_t1
from common.sites import SITE_MATCH_PPM

log = logging.getLogger(__name__)

TEMPERATURE_GROUP_K = 1.0  # datasets within 1 K of each other belong to one temperature
T1Table = Mapping[float, Sequence[float]]  # temperature K -> measured T1 (s) per site, in site order


def analyze_exsy(dataset_dir: Path | str, expnos: list[int] | str, sites: None | str | list[float] = None,
                 names: list[str] | str | None = None, model: str = "matrix", mixing_param: str = "D8", *,
                 method: str = "auto", model_options: object | Mapping[str, object] | None = None,
                 options: ProcessingOptions | None = None, temperature_param: str = "TE",
                 t1_by_temperature: T1Table | None = None, plot: Path | str | None = None) -> dict:
    """Analyse the expnos of one TopSpin data folder: volumes, per-temperature fits and Arrhenius."""
    return analyze_paths(expno_paths(dataset_dir, expnos), sites, names, model, mixing_param, method=method,
                         model_options=model_options, options=options, temperature_param=temperature_param,
                         t1_by_temperature=t1_by_temperature, plot=plot)


def analyze_series(run_dir: Path | str, sites: None | str | list[float] = None, names: list[str] | str | None = None,
                   model: str = "matrix", mixing_param: str = "D8", *, method: str = "auto",
                   model_options: object | Mapping[str, object] | None = None, temperature_param: str = "TE",
                   t1_by_temperature: T1Table | None = None, t1_from_run: bool = True,
                   plot: Path | str | None = None) -> dict:
    """Analyse the 'done' EXSY datasets listed in <run_dir>/datasets.json (written by the runner).

    Unless a T1 table is given or t1_from_run is False, the run's own T1 datasets are fitted and
    used to correct each point for the magnetisation its recycle delay let recover.
    """
    run_fits = run_t1_fits(run_dir, sites) if t1_by_temperature is None and t1_from_run else None
    return analyze_paths(series_datasets(run_dir), sites, names, model, mixing_param, method=method,
                         model_options=model_options, temperature_param=temperature_param,
                         t1_by_temperature=t1_by_temperature, t1_fits=run_fits, plot=plot)


def run_t1_fits(run_dir: Path | str, sites: None | str | list[float]) -> list[T1Fit]:
    """T1 per site of every 'done' T1 dataset of a run (fitted now, from the data on disk)."""
    parsed = parse_sites(sites) if isinstance(sites, str) or sites is None else [float(s) for s in sites]
    return [fit_t1(path, None if isinstance(parsed, str) else parsed) for path in run_datasets(run_dir, "t1")]


def _t1_table_from_fits(fits: Sequence[T1Fit], shifts: list[float], names: list[str]) -> tuple[dict[float, list[float]], list[str]]:
    """Site-ordered T1 per temperature from T1 fits; a temperature missing a site is left out, with a warning."""
    table: dict[float, list[float]] = {}
    warnings = []
    for fit in fits:
        values = []
        for shift, name in zip(shifts, names):
            near = [s for s in fit.sites if abs(s.shift_ppm - shift) <= SITE_MATCH_PPM]
            best = min(near, key=lambda s: abs(s.shift_ppm - shift)) if near else None
            if best is None or not best.ok:
                warnings.append(f"{fit.temperature_k:.1f} K: no usable T1 of {name} in {fit.path} "
                                f"({best.reason if best else 'site not found'}); that temperature is not corrected")
                break
            values.append(best.t1_s)
        else:
            table[fit.temperature_k] = values
    return table, warnings


def analyze_cycling(bdf_csv: Path | str, active_mass_g: float | None = None, *, plot: Path | str | None = None) -> dict:
    """Per-cycle capacities, coulombic efficiency, averages and activation plateau of one cycler file (any format)."""
    summary, profiles = summarize_cycling(bdf_csv, active_mass_g)
    if plot is not None:
        from analysis.plots import save_cycling_figure
        save_cycling_figure(plot, summary, profiles)
    return summary


def _measured_t1(table: T1Table | None, temperature_k: float, n_sites: int, strict: bool = True) -> list[float] | None:
    """The measured T1 per site at a temperature (within TEMPERATURE_GROUP_K), or None (strict: none is an error)."""
    if table is None:
        return None
    near = [t for t in table if abs(float(t) - temperature_k) <= TEMPERATURE_GROUP_K]
    if not near and not strict:
        return None
    if not near:
        raise AnalysisInputError(f"t1_by_temperature: no T1 measured within {TEMPERATURE_GROUP_K} K of "
                                 f"{temperature_k:.1f} K (have {', '.join(f'{float(t):.1f}' for t in table)})")
    values = [float(v) for v in table[near[0]]]
    if len(values) != n_sites or not all(v > 0 for v in values):
        raise AnalysisInputError(f"t1_by_temperature {float(near[0]):.1f} K: need {n_sites} positive T1 values "
                                 f"(one per site), got {values}")
    return values


def relaxation_factors(spectrum: Spectrum2D, t1_s: list[float] | None) -> np.ndarray | None:
    """1 - exp(-(D1 + AQ) / T1) per site: the recovered fraction of M0 at the start of each scan."""
    if t1_s is None:
        return None
    if not np.isfinite(spectrum.d1_s):
        raise AnalysisInputError(f"{spectrum.path}/acqus: no D1, cannot correct for the recycle delay")
    return 1.0 - np.exp(-(spectrum.d1_s + spectrum.aq_s) / np.asarray(t1_s, float))


def _short_d1_warnings(fit: ExchangeFit, group: list[Spectrum2D], temperature_k: float,
                       names: list[str]) -> list[str]:
    """Warn (uncorrected data) when a point's D1 + AQ is shorter than 3 x the T1 the exchange fit found."""
    if fit.t1_s is None:
        return []
    d1_eff_s = min(s.d1_s + s.aq_s for s in group)
    out = []
    for name, t1 in zip(names, fit.t1_s):
        if np.isfinite(d1_eff_s) and d1_eff_s < 3 * t1:
            out.append(f"{temperature_k:.1f} K: D1 + AQ {d1_eff_s:.3g} s < 3 x T1 of {name} ({t1:.3g} s from the "
                       f"exchange fit): {100 * np.exp(-d1_eff_s / t1):.0f} % saturated, populations and rates "
                       f"biased; give measured T1 (t1_by_temperature) to correct")
            log.warning("%s", out[-1])
    return out


def _group_temperatures(temps: list[float]) -> list[list[int]]:
    order = np.argsort(temps)
    groups: list[list[int]] = []
    for idx in order:
        if groups and temps[idx] - temps[groups[-1][-1]] <= TEMPERATURE_GROUP_K:
            groups[-1].append(int(idx))
        else:
            groups.append([int(idx)])
    return groups


def _resolve_sites(spectra: list[Spectrum2D], sites: None | str | list[float],
                   names: list[str] | str | None) -> tuple[list[float], list[str]]:
    parsed = parse_sites(sites) if isinstance(sites, str) or sites is None else [float(s) for s in sites]
    if isinstance(parsed, str):
        reference = min(spectra, key=lambda s: (s.mixing_time_s, s.temperature_k))
        shifts = find_diagonal_sites(reference)
    else:
        shifts = list(parsed)
    return shifts, parse_names(names, len(shifts)) or [f"S{i + 1}" for i in range(len(shifts))]


def _fit_json(fit: ExchangeFit, temperature_k: float, names: list[str]) -> dict:
    rates = []
    for i, j in itertools.permutations(range(fit.n_sites), 2):
        entry = {"from": names[i], "to": names[j], "k_per_s": float(fit.k_per_s[i, j]),
                 "k_stderr_per_s": float(fit.k_stderr_per_s[i, j])}
        pair = (min(i, j), max(i, j))
        if pair in fit.d_m2_per_s:
            entry["D_m2_per_s"], entry["D_stderr_m2_per_s"] = map(float, fit.d_m2_per_s[pair])
        rates.append(entry)
    out = {"temperature_k": float(temperature_k), "model": fit.model, "rates": rates,
           "populations": [float(p) for p in fit.populations], "rms_residual": fit.rms_residual}
    if fit.t1_s is not None and fit.t1_stderr_s is not None:
        out["t1_s"] = [{"site": n, "t1_s": float(t), "t1_stderr_s": float(se)}
                       for n, t, se in zip(names, fit.t1_s, fit.t1_stderr_s)]
    return out


def analyze_paths(paths: list[Path], sites: None | str | list[float] = None, names: list[str] | str | None = None,
                  model: str = "matrix", mixing_param: str = "D8", *, method: str = "auto",
                  model_options: object | Mapping[str, object] | None = None,
                  options: ProcessingOptions | None = None, temperature_param: str = "TE",
                  t1_by_temperature: T1Table | None = None, t1_fits: Sequence[T1Fit] | None = None,
                  plot: Path | str | None = None) -> dict:
    """Process, integrate and fit a list of expno folders; the common core of the API functions.

    Each point's own D1 (acqus) is recorded. With measured T1 per site (t1_by_temperature:
    temperature K -> T1 s per site, in site order), the volumes of F1 row a are divided by
    1 - exp(-(D1 + AQ) / T1_a), the fraction of M0 site a had recovered when the point began.
    T1 fits (t1_fits, from the run's own T1 datasets) do the same where they cover a temperature.
    """
    fit_model = get_fit_model(model)
    fit_options = validated_options(fit_model, model_options)
    if not paths:
        raise AnalysisInputError("no datasets given")
    spectra = [process_dataset(p, mixing_param, options, temperature_param) for p in paths]
    shifts, names = _resolve_sites(spectra, sites, names)
    groups = _group_temperatures([s.temperature_k for s in spectra])
    volumes: list[np.ndarray] = [np.empty(0)] * len(spectra)
    for group in groups:  # linewidths fitted once per temperature, on its shortest mixing time
        first = min(group, key=lambda i: spectra[i].mixing_time_s)
        widths = None
        if method in ("auto", "lineshape") and "f1" in spectra[first].models:
            check_sites(spectra[first], shifts)
            widths = lineshape_volumes(spectra[first], shifts)[1]
        for i in group:
            volumes[i] = volume_matrix(spectra[i], shifts, method, widths)
    t1_warnings: list[str] = []
    table, strict = t1_by_temperature, True
    if table is None and t1_fits:
        table, t1_warnings = _t1_table_from_fits(t1_fits, shifts, names)
        strict = False
    factors = [relaxation_factors(s, _measured_t1(table, s.temperature_k, len(shifts), strict)) for s in spectra]
    points = [{"expno": s.expno, "path": str(s.path), "temperature_k": s.temperature_k,
               "mixing_time_s": s.mixing_time_s, "d1_s": s.d1_s, "volumes": v.tolist(),
               **({"relaxation_factors": f.tolist()} if f is not None else {})}
              for s, v, f in zip(spectra, volumes, factors)]
    volumes = [v if f is None else v / f[:, None] for v, f in zip(volumes, factors)]
    result: dict = {"sites": [{"name": n, "shift_ppm": float(s)} for n, s in zip(names, shifts)],
                    "points": points, "fits": [], "arrhenius": [], "warnings": list(t1_warnings),
                    "t1_correction": {"source": "given" if strict and table is not None else
                                      "run T1 datasets" if table else None,
                                      "t1_s_by_temperature": {f"{t:.2f}": list(v) for t, v in (table or {}).items()}}}
    fits: list[tuple[float, ExchangeFit, np.ndarray, np.ndarray]] = []
    for group in groups:
        temperature_k = float(np.mean([spectra[i].temperature_k for i in group]))
        times = np.array([spectra[i].mixing_time_s for i in group])
        if np.unique(times).size < 3:
            result["warnings"].append(f"{temperature_k:.1f} K: only {np.unique(times).size} mixing time(s), not fitted")
            log.warning("%s", result["warnings"][-1])
            continue
        vols = np.array([volumes[i] for i in group])
        fit = fit_model.run(times, vols, fit_options)
        log.info("%.1f K: %s model fitted to %d mixing times, rms residual %.3g", temperature_k, model,
                 times.size, fit.rms_residual)
        fits.append((temperature_k, fit, times, vols))
        result["fits"].append(_fit_json(fit, temperature_k, names))
        if factors[group[0]] is None:
            result["warnings"].extend(_short_d1_warnings(fit, [spectra[i] for i in group], temperature_k, names))
        fit.at_bound |= {(i, j) for i, j in itertools.combinations(range(len(shifts)), 2)
                         if not fit.k_stderr_per_s[i, j] < fit.k_per_s[i, j]}
        for i, j in sorted(fit.at_bound):
            result["warnings"].append(f"{temperature_k:.1f} K: {names[i]}-{names[j]} exchange not determined "
                                      f"(rate at the fit bound or standard error above the rate; no exchange seen?)")
            log.warning("%s", result["warnings"][-1])
    if not fits:
        raise AnalysisFitError("no temperature has three or more mixing times to fit")
    if len(fits) > 1:
        temps = np.array([f[0] for f in fits])
        for i, j in itertools.combinations(range(len(shifts)), 2):
            if any((i, j) in f[1].at_bound for f in fits):
                result["warnings"].append(f"{names[i]}-{names[j]}: no Arrhenius fit, the exchange is not "
                                          f"determined at every temperature")
                continue
            if fit_model.yields_d:
                values = np.array([f[1].d_m2_per_s[(i, j)][0] for f in fits])
                errors = np.array([f[1].d_m2_per_s[(i, j)][1] for f in fits])
            else:
                values = np.array([f[1].k_per_s[i, j] for f in fits])
                errors = np.array([f[1].k_stderr_per_s[i, j] for f in fits])
            arr = fit_arrhenius(temps, values, errors if np.all(errors > 0) else None)
            result["arrhenius"].append({"pair": f"{names[i]}-{names[j]}", "quantity": fit_model.arrhenius_quantity,
                                        "ea_ev": arr.ea_ev, "ea_stderr_ev": arr.ea_stderr_ev,
                                        "prefactor": arr.prefactor, "prefactor_stderr": arr.prefactor_stderr})
    if plot is not None:
        from analysis.plots import save_exsy_figure
        longest = max(spectra, key=lambda s: (s.mixing_time_s, s.temperature_k))
        buildups = [(t, times, vols, fit.predict) for t, fit, times, vols in fits]
        save_exsy_figure(plot, longest, shifts, names, box_half_widths_ppm(shifts), buildups, result, fit_model)
        result["plot"] = str(plot)
    return result


def analyze_t1(expno_dir: Path | str, sites: None | str | list[float] = None, *, integration: str = "lineshape",
               plot: Path | str | None = None) -> dict:
    """T1 per site of one saturation- or inversion-recovery dataset (the JSON of `exsylab analyze t1`)."""
    from analysis.t1 import fit_t1, t1_json

    parsed = parse_sites(sites, min_sites=1) if isinstance(sites, str) or sites is None else [float(s) for s in sites]
    fit = fit_t1(expno_dir, None if isinstance(parsed, str) else parsed, integration=integration)
    result = t1_json(fit)
    if plot is not None:
        from analysis.plots import save_t1_figure
        save_t1_figure(plot, fit)
        result["plot"] = str(plot)
    return result


def analyze_spectra(paths: list[Path | str], *, ppm_range: tuple[float, float] | None = None,
                    plot: Path | str | None = None) -> dict:
    """1D spectra (one per temperature): temperature, D1, NS and peaks of each; the overlay figure on request."""
    from analysis.spectrum_1d import find_peaks_ppm, process_1d

    if not paths:
        raise AnalysisInputError("no datasets given")
    spectra = [process_1d(p) for p in paths]
    result: dict = {"spectra": [{"path": str(s.path), "expno": s.expno, "temperature_k": s.temperature_k,
                                 "nucleus": s.nucleus, "d1_s": s.d1_s, "ns": s.ns,
                                 "peaks_ppm": find_peaks_ppm(s.ppm, s.data)} for s in spectra]}
    if plot is not None:
        from analysis.plots import save_spectra_overlay
        save_spectra_overlay(plot, spectra, ppm_range)
        result["plot"] = str(plot)
    return result
