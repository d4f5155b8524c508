"""The `exsylab` command line: a thin shell over the Python API; input errors exit 2 without a traceback."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table

from protocols import InputError, Plan, load_plan

from .analyze_cmd import add_analyze_parser, run_analyze
from .progress import format_duration

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def print_plan(plan: Plan, console: Console, start: dt.datetime | None = None) -> None:
    """The plan as a table with per-step and cumulative estimates and the expected finish."""
    start = start or dt.datetime.now().astimezone()
    table = Table(title=f"Plan: {', '.join(plan.protocols)} on {plan.station}", show_lines=False)
    for column in ("#", "lane", "kind", "step", "estimate", "lane elapsed"):
        table.add_column(column, justify="right" if column in ("#", "estimate", "lane elapsed") else "left")
    elapsed: dict[str, float] = {}
    for step in plan.steps:
        if step.kind == "move_temperature" and step.index > 0:
            table.add_section()  # one section per temperature block
        elapsed[step.lane] = elapsed.get(step.lane, 0.0) + step.estimate_s
        table.add_row(str(step.index), step.lane, step.kind, step.label, format_duration(step.estimate_s),
                      format_duration(elapsed[step.lane]))
    console.print(table)
    for line in _block_summaries(plan):
        console.print(line, highlight=False, soft_wrap=True)
    for lane, total_s in plan.lane_estimates_s().items():
        console.print(f"lane {lane}: {format_duration(total_s)} ({total_s / 3600:.2f} h)")
    finish = start + dt.timedelta(seconds=plan.total_estimate_s)
    console.print(f"total estimate {format_duration(plan.total_estimate_s)} "
                  f"({plan.total_estimate_s / 3600:.2f} h); expected finish {finish:%Y-%m-%d %H:%M %Z} if started now")


def _block_summaries(plan: Plan) -> list[str]:
    """Per temperature block of the NMR lane: time per step kind, and how EXSY D1 is set."""
    blocks: list[tuple[float, dict[str, list[float]], str]] = []
    for step in plan.steps:
        if step.kind == "move_temperature":
            blocks.append((getattr(step, "temperature_k"), {}, ""))
        elif blocks and step.lane == "nmr":
            temperature_k, kinds, rule = blocks[-1]
            kinds.setdefault(step.kind, []).append(step.estimate_s)
            if (d1_rule := getattr(step, "d1_rule", None)) is not None and step.kind == "acquire_2d":
                rule = (f"EXSY D1 = {d1_rule.factor:g} x T1 within {d1_rule.min_s:g}..{d1_rule.max_s:g} s "
                        f"(estimated with {d1_rule.max_s:g} s until measured)")
            blocks[-1] = (temperature_k, kinds, rule)
    if not any({"spectrum_1d", "t1"} & set(kinds) for _, kinds, _ in blocks):
        return []
    names = {"wait_stable": "wait", "spectrum_1d": "1D", "t1": "T1", "acquire_2d": "EXSY"}
    lines = []
    for temperature_k, kinds, rule in blocks:
        parts = [f"{names.get(k, k)}{f' x{len(v)}' if len(v) > 1 else ''} {format_duration(sum(v))}"
                 for k, v in kinds.items()]
        lines.append(f"block {temperature_k:.1f} K: " + ", ".join(parts) + (f"; {rule}" if rule else ""))
    return lines


def cmd_plan(args: argparse.Namespace) -> int:
    plan, station = load_plan(args.protocol, args.station)
    from .program_cycler_lane import check_programs

    check_programs(plan, station, args.station or "built-in simulated station")
    if args.json:
        print(json.dumps(plan.to_json_dict(), indent=1))
    else:
        print_plan(plan, Console())
    return EXIT_OK


def _report(folder, result, console: Console) -> int:
    from . import api  # drivers load only for commands that need them

    if result is None:
        console.print(f"runner of {folder.root} asked to continue")
        return EXIT_OK
    status = api.run_status(folder.root)
    console.print(f"run {result.status}: {folder.root}")
    console.print(f"steps: {status['steps']}")
    done = sum(1 for d in status["datasets"] if d["status"] == "done")
    if status["datasets"]:
        console.print(f"datasets: {done} complete of {len(status['datasets'])} written (see datasets.json)")
    from .adaptive_report import adaptive_lines

    for line in adaptive_lines(status["adaptive"]):
        console.print(line, highlight=False)
    for failure in status["failed"]:
        console.print(f"[red]failed step {failure['index']} ({failure['label']}): {failure['error']}[/red]")
    console.print(f"the full account: {folder.root / 'report.md'}")
    if result.status != "done":
        print(f"exsylab: run {result.status}; see {folder.root}/logs/run.log and `exsylab status {folder.root}`",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from . import api  # drivers load only for commands that need them

    folder, result = api.start_run(args.protocol, args.station, args.run_dir, show_progress=not args.quiet,
                                   signals=True)
    return _report(folder, result, Console())


def cmd_resume(args: argparse.Namespace) -> int:
    from . import api  # drivers load only for commands that need them

    folder, result = api.resume_run(args.run_dir, show_progress=not args.quiet, signals=True)
    return _report(folder, result, Console())


def cmd_control(args: argparse.Namespace) -> int:
    from . import api  # drivers load only for commands that need them

    lines = api.request_control(args.run_dir, args.command)
    for line in lines:  # no runner alive: the vendor jobs it left running were stopped directly
        print(line)
    if not lines:
        print(f"asked the runner of {args.run_dir} to {args.command}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from . import api  # drivers load only for commands that need them

    status = api.run_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=1, default=str))
        return EXIT_OK
    console = Console()
    console.print(f"{status['run_dir']}: [bold]{status['state']}[/bold]")
    table = Table()
    for column in ("lane", "done", "failed", "current step", "ETA"):
        table.add_column(column)
    for lane, info in status["lanes"].items():
        table.add_row(lane, f"{info['done']}/{info['total']}", str(info["failed"]), info["current"] or "-",
                      format_duration(info["eta_s"]))
    console.print(table)
    from .adaptive_report import adaptive_lines

    for line in adaptive_lines(status["adaptive"]):
        console.print(line, highlight=False)
    for failure in status["failed"]:
        console.print(f"[red]failed step {failure['index']} ({failure['label']}): {failure['error']}[/red]")
    return EXIT_OK


PAPER_EA_EV = {"Li2S-LPSC": 0.107, "Li2S-LiI": 0.142, "LPSC-LiI": 0.117}


def cmd_demo(args: argparse.Namespace) -> int:
    """The paper's series and cycling on the simulated station, then the analysis of what was acquired."""
    from analysis.api import analyze_cycling, analyze_series, analyze_spectra
    from analysis.series import run_datasets
    from analysis.errors import AnalysisFitError, AnalysisInputError

    from . import api

    root = Path(__file__).resolve().parents[1] / "examples"
    protocols = [root / "vt-series-paper.yaml", root / "cycling-fixed-capacity.yaml"]
    run_dir = Path(args.out) / dt.datetime.now().strftime("%Y%m%d-%H%M%S-paper-demo")
    console = Console()
    plan, _ = load_plan(protocols, None)
    for lane, total_s in plan.lane_estimates_s().items():
        console.print(f"plan: lane {lane}: {len(plan.lanes[lane])} steps, {total_s / 3600:.1f} h of instrument time")
    console.print(f"running both on the simulated station in virtual time into {run_dir} ...")
    folder, result = api.start_run(protocols, None, run_dir, show_progress=True)
    code = _report(folder, result, console)
    if code != EXIT_OK:
        return code
    analysis_dir = folder.root / "analysis"
    analysis_dir.mkdir(exist_ok=True)
    try:
        exsy = analyze_series(folder.root, sites=[2.31, 1.29, -4.56], names=["Li2S", "LPSC", "LiI"],
                              plot=analysis_dir / "exsy.png")
        analyze_spectra(list(run_datasets(folder.root, "spectrum_1d")), plot=analysis_dir / "spectra-1d.png")
        summary = json.loads((folder.root / "summary.json").read_text())
        bdf = next(iter(summary["cycling"].values()))["bdf"]
        cycling = analyze_cycling(bdf, plot=analysis_dir / "cycling.png")
    except (AnalysisInputError, AnalysisFitError, StopIteration, KeyError) as exc:
        print(f"exsylab: demo analysis failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    t1_table = Table(title="T1 measured at each temperature (used for the EXSY recycle delay and to correct the fit)")
    for column in ("T / K", "T1 Li2S / s", "T1 LPSC / s", "T1 LiI / s"):
        t1_table.add_column(column)
    for temperature, t1s in exsy["t1_correction"]["t1_s_by_temperature"].items():
        t1_table.add_row(temperature, *(f"{v:.3g}" for v in t1s))
    console.print(t1_table)
    table = Table(title="Activation energies from the simulated series (matrix model)")
    for column in ("pair", "Ea / eV", "stderr / eV", "paper / eV"):
        table.add_column(column)
    for fit in exsy["arrhenius"]:
        table.add_row(fit["pair"], f"{fit['ea_ev']:.4f}", f"{fit['ea_stderr_ev']:.4f}",
                      f"{PAPER_EA_EV.get(fit['pair'], float('nan')):.3f}")
    console.print(table)
    average, activation = cycling["average"], cycling["activation"]
    console.print(f"cycling: {cycling['n_cycles']} cycles, mean coulombic efficiency "
                  f"{average['coulombic_efficiency_pct']:.2f} %, activation plateau {activation['plateau_v']:.3f} V "
                  f"vs In-Li (paper: 1.69 V, about 100 mV overpotential)")
    console.print(f"plots and data in {folder.root} (analysis/, data/, cycler/, journal.sqlite)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exsylab",
        description="Run VT-EXSY NMR series and battery cycling on a real or simulated station.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="compile protocols into a plan and print it with time estimates; touches nothing")
    p.add_argument("protocol", nargs="+", help="protocol file(s) (YAML)")
    p.add_argument("--station", help="station file (default: the built-in simulated station)")
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run protocols on a station (default: the simulated station, in virtual time)")
    p.add_argument("protocol", nargs="+", help="protocol file(s) (YAML); several run concurrently on their own instruments")
    p.add_argument("--station", help="station file (default: the built-in simulated station)")
    p.add_argument("--run-dir", help="new folder for the run (default: runs/<time>-<protocols>)")
    p.add_argument("--quiet", action="store_true", help="no live progress view")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a run: un-pause it, or restart it at the first unfinished step")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no live progress view")
    p.set_defaults(func=cmd_resume)

    for name, text in (("pause", "pause a running run at its next safe point"),
                       ("stop", "stop a running run safely (channels off, VT held); with no runner alive, stop the "
                                "vendor jobs it left running on program cyclers")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", metavar="RUN_DIR")
        p.set_defaults(func=cmd_control, command=name)

    p = sub.add_parser("status", help="what a run is doing or did, from its journal")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    p.set_defaults(func=cmd_status)

    add_analyze_parser(sub)

    from .convert_cmd import add_convert_parser
    from .protocol_cmd import add_protocol_parser

    add_convert_parser(sub)
    add_protocol_parser(sub)

    from .selftest import add_selftest_parser
    from .serve_cmd import add_serve_parsers
    from .sim_cmd import add_sim_parser

    add_sim_parser(sub)
    add_selftest_parser(sub)
    add_serve_parsers(sub)

    p = sub.add_parser("demo", help="the paper's VT-EXSY series and fixed-capacity cycling on the simulated station")
    p.add_argument("--out", default="demo-out", help="folder for the demo's run (default: demo-out)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = run_analyze if args.command == "analyze" else args.func
    try:
        return func(args)
    except InputError as exc:
        print(f"exsylab: refused: {exc.message()}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("exsylab: interrupted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
