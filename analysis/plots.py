"""Figures for EXSY series and cycling summaries (matplotlib, Agg backend, one PNG/PDF per call)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.arrhenius import BOLTZMANN_EV_PER_K  # noqa: E402
from analysis.fit_models import FitModel  # noqa: E402


def plot_contour(ax, spectrum, shifts_ppm: list[float], names: list[str], half_widths_ppm: np.ndarray) -> None:
    """2D contour (positive levels, geometric) with every integration box drawn."""
    margin = 3 * max(half_widths_ppm)
    lo, hi = min(shifts_ppm) - margin, max(shifts_ppm) + margin
    rows = (spectrum.ppm_f1 >= lo) & (spectrum.ppm_f1 <= hi)
    cols = (spectrum.ppm_f2 >= lo) & (spectrum.ppm_f2 <= hi)
    data = spectrum.data[np.ix_(rows, cols)]
    top = float(data.max())
    base = max(5 * spectrum.noise_sd, top * 0.01)
    levels = np.geomspace(base, top, 12) if top > base else [top]
    ax.contour(spectrum.ppm_f2[cols], spectrum.ppm_f1[rows], data, levels=levels, cmap="viridis", linewidths=0.7)
    for a, sa in enumerate(shifts_ppm):
        for b, sb in enumerate(shifts_ppm):
            ax.add_patch(matplotlib.patches.Rectangle((sb - half_widths_ppm[b], sa - half_widths_ppm[a]),
                                                      2 * half_widths_ppm[b], 2 * half_widths_ppm[a],
                                                      fill=False, ls="--", lw=0.6, color="tab:red"))
    for s, n in zip(shifts_ppm, names):
        ax.annotate(n, (s, s), fontsize=7, color="tab:red")
    ax.set_xlim(hi, lo)
    ax.set_ylim(hi, lo)
    ax.set_xlabel(f"F2 {spectrum.nucleus} shift / ppm")
    ax.set_ylabel(f"F1 {spectrum.nucleus} shift / ppm")
    ax.set_title(f"EXSY {spectrum.temperature_k:.0f} K, t_mix {spectrum.mixing_time_s:g} s")


def plot_buildup(ax, times_s: np.ndarray, volumes: np.ndarray, predict, names: list[str], temperature_k: float) -> None:
    """Cross-peak volumes (normalised to the diagonal sum at the shortest time) against mixing time, with the fit."""
    scale = float(np.trace(volumes[np.argmin(times_s)]))
    fine = np.geomspace(max(times_s.min(), 1e-4), times_s.max(), 200)
    model = predict(fine) if predict is not None else None
    n = volumes.shape[1]
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            line = ax.plot(times_s, volumes[:, a, b] / scale, "o", ms=3, label=f"{names[a]}->{names[b]}")[0]
            if model is not None and np.all(np.isfinite(model[:, a, b])):
                ax.plot(fine, model[:, a, b] / scale, "-", color=line.get_color(), lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("mixing time / s")
    ax.set_ylabel("cross volume / diagonal sum (shortest t_mix)")
    ax.set_title(f"Build-up at {temperature_k:.0f} K")
    ax.legend(fontsize=6)


def plot_arrhenius(ax, result: dict, model: FitModel) -> None:
    """ln(quantity) against 1000/T per pair with the fitted lines; the quantity and its label come from the model."""
    for entry in result["arrhenius"]:
        a, b = entry["pair"].split("-", 1)
        temps = np.array([fit["temperature_k"] for fit in result["fits"]])
        values = [next(r[model.arrhenius_quantity] for r in fit["rates"] if r["from"] == a and r["to"] == b)
                  for fit in result["fits"]]
        line = ax.plot(1000 / temps, np.log(values), "o", label=f"{entry['pair']} Ea {entry['ea_ev']:.3f} eV")[0]
        fine = np.linspace(temps.min(), temps.max(), 50)
        ax.plot(1000 / fine, np.log(entry["prefactor"]) - entry["ea_ev"] / (BOLTZMANN_EV_PER_K * fine), "-",
                color=line.get_color())
    ax.set_xlabel("1000 / T / K^-1")
    ax.set_ylabel(model.arrhenius_axis_label)
    ax.set_title("Arrhenius")
    ax.legend(fontsize=7)


def save_exsy_figure(path: Path | str, spectrum, shifts_ppm, names, half_widths_ppm, buildups, result: dict,
                     model: FitModel) -> Path:
    """One figure: contour of the longest mixing time, build-up per temperature, Arrhenius if present."""
    n_panels = 1 + len(buildups) + (1 if result.get("arrhenius") else 0)
    cols = min(3, n_panels)
    rows = int(np.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 4 * rows), squeeze=False)
    flat = axes.ravel()
    plot_contour(flat[0], spectrum, shifts_ppm, names, half_widths_ppm)
    for ax, (temperature_k, times_s, volumes, predict) in zip(flat[1:], buildups):
        plot_buildup(ax, times_s, volumes, predict, names, temperature_k)
    if result.get("arrhenius"):
        plot_arrhenius(flat[len(buildups) + 1], result, model)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.1, top=0.93, wspace=0.35, hspace=0.4)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_capacity_ce(ax_c, cycles: list[dict]) -> None:
    """Charge and discharge capacity per cycle, with the coulombic efficiency on a second axis."""
    numbers = [c["cycle"] for c in cycles]
    ax_c.plot(numbers, [c["charge_mah_per_g"] for c in cycles], "o-", ms=3, label="charge")
    ax_c.plot(numbers, [c["discharge_mah_per_g"] for c in cycles], "s-", ms=3, label="discharge")
    ax_c.set_xlabel("cycle number")
    ax_c.set_ylabel("capacity / mAh g^-1")
    ax_c.set_title("Capacity and coulombic efficiency")
    ax_e = ax_c.twinx()
    ce = [c["coulombic_efficiency_pct"] if c["coulombic_efficiency_pct"] is not None else np.nan for c in cycles]
    ax_e.plot(numbers, ce, "^", ms=3, color="tab:green", label="CE")
    ax_e.set_ylabel("coulombic efficiency / %")
    handles = ax_c.get_legend_handles_labels()[0] + ax_e.get_legend_handles_labels()[0]
    ax_c.legend(handles, [h.get_label() for h in handles], fontsize=7)


def save_cycling_figure(path: Path | str, summary: dict, profiles: list[dict]) -> Path:
    """Voltage profiles (first cycles) and capacity / coulombic efficiency against cycle number."""
    fig, (ax_v, ax_c) = plt.subplots(1, 2, figsize=(10, 4))
    for profile in profiles:
        ax_v.plot(profile["capacity_mah_per_g"], profile["voltage_v"], lw=0.8,
                  label=f"cycle {profile['cycle']} {profile['kind']}")
    ax_v.set_xlabel("capacity / mAh g^-1")
    ax_v.set_ylabel("voltage / V")
    ax_v.set_title("Voltage profiles")
    if profiles:
        ax_v.legend(fontsize=6)
    plot_capacity_ce(ax_c, summary["cycles"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_t1_figure(path: Path | str, fit) -> Path:
    """Recovery curves of a T1 dataset: each site's intensities against the delay, with its fitted curve."""
    from analysis.t1 import recovery

    delays = np.asarray(fit.delays_s, float)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    positive = delays[delays > 0]
    log_axis = positive.size > 1 and positive.max() / positive.min() > 20
    fine = (np.geomspace(positive.min(), delays.max(), 200) if log_axis else np.linspace(0, delays.max(), 200))
    for site in fit.sites:
        label = f"{site.shift_ppm:.2f} ppm: T1 {site.t1_s:.3g} ± {site.t1_err_s:.2g} s"
        line = ax.plot(delays, site.intensities, "o", ms=4, label=label if site.ok else f"{label} (not ok)")[0]
        if np.isfinite(site.t1_s) and site.t1_s > 0:
            ax.plot(fine, recovery(fine, site.amplitude, site.factor, site.t1_s), "-", lw=0.9, color=line.get_color())
    if log_axis:
        ax.set_xscale("log")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("recovery delay vd / s")
    ax.set_ylabel("line amplitude / a.u.")
    ax.set_title(f"{fit.method} recovery, {fit.nucleus}, {fit.temperature_k:.1f} K, D1 {fit.d1_s:g} s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_spectra_overlay(path: Path | str, spectra, ppm_range: tuple[float, float] | None = None) -> Path:
    """1D spectra at several temperatures overlaid (the seed's Figure 3d), each normalised to its maximum."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ordered = sorted(spectra, key=lambda s: s.temperature_k)
    colours = plt.get_cmap("coolwarm")(np.linspace(0, 1, max(len(ordered), 2)))
    low, high = np.inf, -np.inf
    for spectrum, colour in zip(ordered, colours):
        scaled = spectrum.data / float(spectrum.data.max())
        ax.plot(spectrum.ppm, scaled, lw=0.9, color=colour, label=f"{spectrum.temperature_k:.0f} K")
        above = spectrum.ppm[scaled > 0.02]
        if above.size:
            low, high = min(low, float(above.min())), max(high, float(above.max()))
    if ppm_range is None and np.isfinite(low):
        margin = max(2.0, 0.3 * (high - low))
        ppm_range = (high + margin, low - margin)
    if ppm_range is not None:
        ax.set_xlim(max(ppm_range), min(ppm_range))  # NMR convention: shift decreases to the right
    else:
        ax.invert_xaxis()
    nucleus = ordered[0].nucleus if ordered else "?"
    ax.set_xlabel(f"{nucleus} chemical shift / ppm")
    ax.set_ylabel("intensity / normalised to maximum")
    ax.set_title(f"{nucleus} spectra at {len(ordered)} temperature(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
