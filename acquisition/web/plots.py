"""The page's figures as PNG, drawn by the server with the analysis package's own plot functions.

Figures are built on `matplotlib.figure.Figure` (no pyplot: requests are served from several
threads) and cached by what they show (the run, the figure, its version), so a page that asks
again for an unchanged figure costs nothing.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.errors import AnalysisInputError
from analysis.exsy_processing import Spectrum2D, process_dataset
from analysis.integration import box_half_widths_ppm, find_diagonal_sites, volume_matrix
from analysis.plots import plot_buildup, plot_capacity_ce, plot_contour

from ..journal import Journal
from ..run_folder import RunFolder
from .views import EXSY_KIND, cycling_data, temperature_trace

FIGURES = ("contour", "buildup", "temperature", "cycling")
_CACHE_SIZE = 64


class NothingToPlot(Exception):
    """The run has no data for this figure yet."""


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _exsy_paths(folder: RunFolder) -> list[dict[str, Any]]:
    journal = Journal(folder.journal)
    try:
        return [d for d in journal.datasets() if d["kind"] == EXSY_KIND and d["status"] == "done"]
    finally:
        journal.close()


class FigureCache:
    """Renders a run's figures on request; processed spectra and finished PNGs are kept (bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pngs: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._spectra: OrderedDict[str, Spectrum2D] = OrderedDict()

    def png(self, run_dir: Path, name: str, version: str, cell: str | None = None) -> bytes:
        """The PNG of figure `name` of the run (at `version`, as run_snapshot numbers it); NothingToPlot if empty."""
        key = (str(run_dir), f"{name}:{cell or ''}", version)
        with self._lock:
            if key in self._pngs:
                self._pngs.move_to_end(key)
                return self._pngs[key]
            draw: dict[str, Callable[[], bytes]] = {
                "contour": lambda: self._contour(RunFolder(run_dir)),
                "buildup": lambda: self._buildup(RunFolder(run_dir)),
                "temperature": lambda: _temperature(RunFolder(run_dir)),
                "cycling": lambda: _cycling(RunFolder(run_dir), cell or ""),
            }
            data = draw[name]()
            self._pngs[key] = data
            while len(self._pngs) > _CACHE_SIZE:
                self._pngs.popitem(last=False)
            return data

    def _spectrum(self, path: str) -> Spectrum2D:
        """A finished dataset never changes: processed once."""
        if path not in self._spectra:
            self._spectra[path] = process_dataset(path)
            while len(self._spectra) > _CACHE_SIZE:
                self._spectra.popitem(last=False)
        return self._spectra[path]

    def _sites(self, spectrum: Spectrum2D) -> tuple[list[float], list[str]]:
        shifts = find_diagonal_sites(spectrum)
        return shifts, [f"{s:.2f} ppm" for s in shifts]

    def _contour(self, folder: RunFolder) -> bytes:
        exsy = _exsy_paths(folder)
        if not exsy:
            raise NothingToPlot("no 2D dataset yet")
        latest = max(exsy, key=lambda d: d["at"])
        spectrum = self._spectrum(latest["path"])
        shifts, names = self._sites(spectrum)
        fig = Figure(figsize=(5, 4.4))
        ax = fig.add_subplot()
        plot_contour(ax, spectrum, shifts, names, box_half_widths_ppm(shifts))
        ax.set_title(f"{latest['dataset']}/{latest['expno']}: {spectrum.temperature_k:.1f} K, "
                     f"t_mix {spectrum.mixing_time_s:g} s", fontsize=9)
        fig.tight_layout()
        return _png(fig)

    def _buildup(self, folder: RunFolder) -> bytes:
        """Cross-peak volumes against mixing time per temperature, sites from the run's first 2D."""
        exsy = sorted(_exsy_paths(folder), key=lambda d: d["at"])
        if not exsy:
            raise NothingToPlot("no 2D dataset yet")
        spectra = [self._spectrum(d["path"]) for d in exsy]
        shifts, names = self._sites(spectra[0])
        if len(shifts) < 2:
            raise NothingToPlot("fewer than two sites on the diagonal of the first 2D")
        groups: dict[float, list[tuple[float, np.ndarray]]] = {}
        for d, spectrum in zip(exsy, spectra):
            try:
                volumes = volume_matrix(spectrum, shifts, "box")
            except AnalysisInputError:  # a site outside this spectrum's window: left out of the curve
                continue
            groups.setdefault(round(float(d["temperature_k"]), 1), []).append((spectrum.mixing_time_s, volumes))
        if not groups:
            raise NothingToPlot("no 2D dataset could be integrated")
        cols = min(2, len(groups))
        rows = int(np.ceil(len(groups) / cols))
        fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
        for k, (temperature_k, points) in enumerate(sorted(groups.items())):
            points.sort(key=lambda p: p[0])
            ax = fig.add_subplot(rows, cols, k + 1)
            plot_buildup(ax, np.array([p[0] for p in points]), np.array([p[1] for p in points]), None, names,
                         temperature_k)
        fig.tight_layout()
        return _png(fig)


def _temperature(folder: RunFolder) -> bytes:
    trace = temperature_trace(folder) if folder.journal.exists() else []
    if not trace:
        raise NothingToPlot("no temperature recorded yet")
    start = trace[0][0]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    hours = [(t - start) / 3600 for t, _, _ in trace]
    ax.plot(hours, [k for _, k, _ in trace], "o-", ms=3, lw=0.8, label="sample (recorded)")
    ax.set_xlabel("run time / h")
    ax.set_ylabel("sample temperature / K")
    ax.set_title("Sample temperature")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _cycling(folder: RunFolder, cell: str) -> bytes:
    bdf = folder.cycler / f"{Path(cell).name}.csv"
    data = cycling_data(bdf) if bdf.is_file() else None
    if data is None:
        raise NothingToPlot(f"no cycling data for {cell} yet")
    fig = Figure(figsize=(9, 3.4))
    ax_v, ax_c = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax_v.plot([p["test_time_s"] / 3600 for p in data["voltage"]], [p["voltage_v"] for p in data["voltage"]], lw=0.8)
    ax_v.set_xlabel("test time / h")
    ax_v.set_ylabel("voltage / V")
    ax_v.set_title(f"{cell}: voltage")
    plot_capacity_ce(ax_c, data["cycles"])
    fig.tight_layout()
    return _png(fig)
