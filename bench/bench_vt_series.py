"""The seed's whole VT experiment (1D, T1, EXSY with D1 from T1) and a MAS calibration, on the simulated station.

Prints: wall time of the 44.5-hour series; the plan's estimate before and after the measured D1;
the time one T1 fit takes on the runner's machine (it happens between acquisitions); the T1 and D1
per temperature; the activation energies with and without the correction from the measured T1;
and, for the lead nitrate calibration at 15 kHz, the recovered frictional heating against the
simulator's (target: within 0.5 K at every set point).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.api import start_run  # noqa: E402
from acquisition.journal import Journal  # noqa: E402
from analysis.api import analyze_series  # noqa: E402
from analysis.t1 import fit_t1  # noqa: E402
from drivers.clock import VirtualClock  # noqa: E402
from hardware_sim.thermal import ThermalModel  # noqa: E402
from protocols import load_plan  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SERIES = EXAMPLES / "vt-series-paper.yaml"
SITES = [2.31, 1.29, -4.56]
NAMES = ["Li2S", "LPSC", "LiI"]
PAPER_EA_EV = {"Li2S-LPSC": 0.107, "Li2S-LiI": 0.142, "LPSC-LiI": 0.117}


def short_t1_station(tmp: Path) -> Path:
    """The simulated station with a sample whose T1 (0.5-1 s) puts 3 x T1 below the 5 s cap."""
    station = yaml.safe_load((EXAMPLES / "station-sim.yaml").read_text())
    station["spectrometer"]["sample"] = {"sites": [
        {"name": n, "shift": ppm, "population": p, "linewidth": "30 Hz", "t1": f"{t1} s"}
        for n, ppm, p, t1 in (("Li2S", 2.31, 0.5, 1.0), ("LPSC", 1.29, 0.35, 0.5), ("LiI", -4.56, 0.15, 0.7))]}
    path = tmp / "short-t1-station.yaml"
    path.write_text(yaml.safe_dump(station))
    return path


def run_series(tmp: Path, station: Path | None, name: str) -> Path:
    plan, _ = load_plan([SERIES], station)
    t0 = time.perf_counter()
    folder, result = start_run([SERIES], station, tmp / name, show_progress=False)
    wall_s = time.perf_counter() - t0
    assert result.ok, result.lanes
    steps = Journal(folder.journal).steps()
    revised_s = sum(s.estimate_s for s in steps if s.lane == "nmr")
    print(f"VT series ({name}): {len(steps)} steps, plan {plan.total_estimate_s / 3600:.2f} h, after the measured "
          f"D1 {revised_s / 3600:.2f} h, run wall time {wall_s:.1f} s")
    return folder.root


def series(tmp: Path) -> None:
    run_series(tmp, short_t1_station(tmp), "sample with T1 0.5-1 s")
    root = run_series(tmp, None, "the seed's sample, T1 10-20 s")
    steps = Journal(root / "journal.sqlite").steps()
    t1_steps = [s for s in steps if s.kind == "t1"]
    paths = [s.outcome["path"] for s in t1_steps]
    t0 = time.perf_counter()
    for path in paths:
        fit_t1(path, SITES)
    print(f"T1 fit: {(time.perf_counter() - t0) / len(paths) * 1e3:.0f} ms per dataset ({len(paths)} datasets)")
    for s in t1_steps:
        t1 = ", ".join(f"{x['name']} {x['t1_s']:.3g}±{x['t1_err_s']:.2g} s" for x in s.outcome["t1"]["sites"])
        print(f"  {s.outcome['temperature_k']:.1f} K: {t1}; EXSY D1 {s.outcome['t1']['d1_s']:g} s "
              f"(3 x T1 = {s.outcome['t1']['d1_wanted_s']:.3g} s)")
    for corrected in (False, True):
        fits = analyze_series(root, SITES, NAMES, t1_from_run=corrected)["arrhenius"]
        text = ", ".join(f"{a['pair']} {a['ea_ev']:.4f}±{a['ea_stderr_ev']:.4f} (paper {PAPER_EA_EV[a['pair']]})"
                         for a in fits)
        print(f"Ea {'with' if corrected else 'without'} the measured-T1 correction: {text}")


def calibration(tmp: Path) -> None:
    rate_hz = 15_000.0
    station = yaml.safe_load((EXAMPLES / "station-sim-lead-nitrate.yaml").read_text())
    station["spectrometer"]["sample"]["mas_rate"] = f"{rate_hz:g} Hz"
    protocol = yaml.safe_load((EXAMPLES / "mas-calibration-lead-nitrate.yaml").read_text())
    protocol["spectrum"]["mas_rate"] = f"{rate_hz:g} Hz"
    (tmp / "station.yaml").write_text(yaml.safe_dump(station))
    (tmp / "calibration.yaml").write_text(yaml.safe_dump(protocol))
    t0 = time.perf_counter()
    folder, result = start_run([tmp / "calibration.yaml"], tmp / "station.yaml", tmp / "cal", show_progress=False)
    wall_s = time.perf_counter() - t0
    assert result.ok, result.lanes
    fit = next(s for s in Journal(folder.journal).steps() if s.kind == "fit_calibration").outcome
    truth_k = ThermalModel(VirtualClock(0.0), mas_rate_hz=rate_hz).mas_heating_k()
    worst_k = max(abs(sample - setpoint - truth_k) for setpoint, sample in fit["points"])
    print(f"MAS calibration at {rate_hz / 1e3:g} kHz: simulator heating {truth_k:.2f} K, recovered "
          + ", ".join(f"{sample - setpoint:.2f}" for setpoint, sample in fit["points"])
          + f" K; worst error {worst_k:.3f} K (target 0.5 K); rms residual {fit['residual_k']:.3f} K; "
          f"wall time {wall_s:.1f} s")


def main() -> None:
    logging.getLogger("analysis").setLevel(logging.ERROR)  # the uncorrected analysis warns per site and temperature
    with tempfile.TemporaryDirectory() as tmp:
        series(Path(tmp))
        calibration(Path(tmp))


if __name__ == "__main__":
    main()
