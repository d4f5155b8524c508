"""The seed's fixed VT-EXSY grid against the adaptive protocol, on the same simulated samples.

For each sample (the seed's, and two others with other rates and activation energies, set in the
station file's `spectrometer.sample`): the grid (examples/vt-exsy-paper.yaml, 5 x 8 points) is run
and analysed; then the adaptive protocol (examples/vt-exsy-adaptive.yaml) with half the grid's
hours as budget and the grid's smallest Ea stderr as target. Printed: spectrometer hours, Ea and its
stderr and error against the simulator's truth for both, the hours the adaptive run needed to match
the grid's stderr on every pair (from its journal), and the targets' verdicts. Then the adaptive
run is repeated with other noise seeds (start_run's seed) and the coverage printed: how often
|Ea - truth| <= 2 stderr. `--repeats N` sets the repeats per sample (default 6: each run takes
~20 s of wall time on one core).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.api import start_run  # noqa: E402
from acquisition.journal import Journal  # noqa: E402
from analysis.api import analyze_series  # noqa: E402
from hardware_sim.nmr_physics import BOLTZMANN_EV_PER_K, PAPER_RATES_293K  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GRID, ADAPTIVE = EXAMPLES / "vt-exsy-paper.yaml", EXAMPLES / "vt-exsy-adaptive.yaml"
NAMES = ["Li2S", "LPSC", "LiI"]
SITES = [2.31, 1.29, -4.56]
PAIRS = ["Li2S-LPSC", "Li2S-LiI", "LPSC-LiI"]


def _other_sample(t1_s: tuple[float, float, float], k293: tuple[float, float, float],
                  ea_ev: tuple[float, float, float]) -> dict[str, Any]:
    """A station-file sample with the seed's sites and the given T1, rates at 293.15 K and activation energies."""
    sites = [{"name": n, "shift": ppm, "population": p, "linewidth": "30 Hz", "t1": f"{t1} s"}
             for n, ppm, p, t1 in zip(NAMES, SITES, (0.5, 0.35, 0.15), t1_s)]
    exchange = [{"sites": pair.split("-"), "k0": k * math.exp(ea / (BOLTZMANN_EV_PER_K * 293.15)), "ea": ea}
                for pair, k, ea in zip(PAIRS, k293, ea_ev)]
    return {"sites": sites, "exchange": exchange}


SAMPLES: dict[str, tuple[dict[str, Any] | None, dict[str, float]]] = {
    "seed's sample": (None, {f"{a}-{b}": ea for (a, b), (_, ea) in PAPER_RATES_293K.items()}),
    "fast, high Ea": (_other_sample((4.0, 3.0, 5.0), (0.1, 0.2, 0.15), (0.20, 0.25, 0.15)),
                      dict(zip(PAIRS, (0.20, 0.25, 0.15)))),
    "slow, low Ea": (_other_sample((8.0, 5.0, 6.0), (0.03, 0.05, 0.04), (0.05, 0.08, 0.06)),
                     dict(zip(PAIRS, (0.05, 0.08, 0.06)))),
}


def _station(tmp: Path, name: str, sample: dict[str, Any] | None) -> Path | None:
    if sample is None:
        return None
    station = yaml.safe_load((EXAMPLES / "station-sim.yaml").read_text())
    station["spectrometer"]["sample"] = sample
    path = tmp / f"station-{name.replace(' ', '_').replace(',', '')}.yaml"
    path.write_text(yaml.safe_dump(station, sort_keys=False))
    return path


def _hours(run_dir: Path) -> float:
    steps = Journal(run_dir / "journal.sqlite").steps()
    return (max(s.ended_at for s in steps if s.ended_at) - min(s.started_at for s in steps if s.started_at)) / 3600


def _ea(run_dir: Path) -> dict[str, tuple[float, float]]:
    fits = analyze_series(run_dir, SITES, NAMES, t1_from_run=False)["arrhenius"]
    return {a["pair"]: (a["ea_ev"], a["ea_stderr_ev"]) for a in fits}


def _adaptive_protocol(tmp: Path, tag: str, target_ev: float, budget_h: float) -> Path:
    data = yaml.safe_load(ADAPTIVE.read_text())
    data["target"] = {"ea_stderr": round(target_ev, 5)}
    data["budget"] = f"{budget_h:.3f} h"
    path = tmp / f"adaptive-{tag}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _hours_to_match(run_dir: Path, grid: dict[str, tuple[float, float]]) -> float | None:
    """Hours (planned, as the run accounts them) at the first decision whose fit had every pair at or below the grid's stderr."""
    for e in Journal(run_dir / "journal.sqlite").events(limit=1_000_000):
        stderr = e["detail"].get("stderr") if e["status"] == "adaptive_decision" else None
        if stderr and all(stderr.get(p) is not None and stderr[p] <= grid[p][1] for p in PAIRS):
            return float(e["detail"]["hours_used"])
    return None


def _line(tag: str, hours: float, ea: dict[str, tuple[float, float]], truth: dict[str, float]) -> str:
    parts = [f"{p} {ea[p][0]:.4f}±{ea[p][1]:.4f} (err {ea[p][0] - truth[p]:+.4f})" if p in ea else f"{p} n/a"
             for p in PAIRS]
    return f"  {tag:9s} {hours:6.2f} h  " + "; ".join(parts)


def compare(tmp: Path, repeats: int) -> None:
    covered = total = 0
    verdicts = []
    for name, (sample, truth) in SAMPLES.items():
        station = _station(tmp, name, sample)
        tag = name.split(",")[0].replace("'", "").replace(" ", "_")
        t0 = time.perf_counter()
        grid_folder, grid_result = start_run([GRID], station, tmp / f"grid-{tag}", show_progress=False)
        assert grid_result.ok, grid_result.lanes
        grid_h, grid = _hours(grid_folder.root), _ea(grid_folder.root)
        grid_wall_s = time.perf_counter() - t0
        target = min(se for _, se in grid.values())
        protocol = _adaptive_protocol(tmp, tag, target, grid_h / 2)
        t0 = time.perf_counter()
        folder, result = start_run([protocol], station, tmp / f"adaptive-{tag}", show_progress=False)
        assert result.ok, result.lanes
        wall_s = time.perf_counter() - t0
        outcome = Journal(folder.journal).steps()[0].outcome
        ada = {a["pair"]: (a["ea_ev"], a["ea_stderr_ev"]) for a in outcome["arrhenius"]}
        match_h = _hours_to_match(folder.root, grid)
        print(f"{name}: truth " + ", ".join(f"{p} {truth[p]:g}" for p in PAIRS) + " eV")
        print(_line("grid", grid_h, grid, truth) + f"   ({grid_wall_s:.0f} s wall)")
        print(_line("adaptive", _hours(folder.root), ada, truth) + f"   ({wall_s:.0f} s wall; {outcome['points']} points,"
              f" stopped: {outcome['stop_reason']}; target {target:.4f} eV, budget {grid_h / 2:.2f} h)")
        ok = all(p in ada and ada[p][1] <= grid[p][1] for p in PAIRS) and _hours(folder.root) <= grid_h / 2 + 0.05
        print(f"  adaptive matched the grid's stderr on every pair after "
              + (f"{match_h:.2f} h ({100 * match_h / grid_h:.0f} % of the grid's hours)" if match_h is not None
                 else "- (not within its budget)")
              + f"; target (<= half the hours, stderr <= grid's on all three pairs): {'MET' if ok else 'NOT MET'}")
        verdicts.append(ok)
        runs = [ada]
        for seed in range(1, repeats):
            f, r = start_run([protocol], station, tmp / f"adaptive-{tag}-seed{seed}", show_progress=False, seed=seed)
            assert r.ok, r.lanes
            runs.append({a["pair"]: (a["ea_ev"], a["ea_stderr_ev"]) for a in Journal(f.journal).steps()[0].outcome["arrhenius"]})
        inside = sum(1 for run in runs for p in PAIRS if p in run and abs(run[p][0] - truth[p]) <= 2 * run[p][1])
        n = sum(1 for run in runs for p in PAIRS if p in run)
        print(f"  coverage over {len(runs)} noise seeds: {inside}/{n} Ea within 2 stderr of the truth "
              f"({100 * inside / max(n, 1):.0f} %)")
        covered, total = covered + inside, total + n
    print(f"hours target met on {sum(verdicts)}/{len(verdicts)} samples; coverage overall {covered}/{total} = "
          f"{100 * covered / max(total, 1):.1f} % (target >= 95 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=6, help="adaptive runs per sample (noise seeds 0..N-1)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        compare(Path(tmp), max(args.repeats, 1))


if __name__ == "__main__":
    main()
