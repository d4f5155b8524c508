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

from protocols import InputError, Plan, compile_plan, load_protocol, load_station, simulated_station
from protocols.station import StationSpec

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def format_duration(seconds: float) -> str:
    """'1 d 02:03:04' style, for humans."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock


def load_plan(protocol_paths: Sequence[str | Path], station_path: str | Path | None) -> tuple[Plan, StationSpec]:
    """Load protocol files and a station file (or the simulated station) and compile the plan."""
    station = load_station(station_path) if station_path else simulated_station()
    protocols = [load_protocol(p) for p in protocol_paths]
    return compile_plan(protocols, station, sources=[str(p) for p in protocol_paths]), station


def print_plan(plan: Plan, console: Console, start: dt.datetime | None = None) -> None:
    """The plan as a table with per-step and cumulative estimates and the expected finish."""
    start = start or dt.datetime.now().astimezone()
    table = Table(title=f"Plan: {', '.join(plan.protocols)} on {plan.station}", show_lines=False)
    for column in ("#", "lane", "kind", "step", "estimate", "lane elapsed"):
        table.add_column(column, justify="right" if column in ("#", "estimate", "lane elapsed") else "left")
    elapsed: dict[str, float] = {}
    for step in plan.steps:
        elapsed[step.lane] = elapsed.get(step.lane, 0.0) + step.estimate_s
        table.add_row(str(step.index), step.lane, step.kind, step.label, format_duration(step.estimate_s),
                      format_duration(elapsed[step.lane]))
    console.print(table)
    for lane, total_s in plan.lane_estimates_s().items():
        console.print(f"lane {lane}: {format_duration(total_s)} ({total_s / 3600:.2f} h)")
    finish = start + dt.timedelta(seconds=plan.total_estimate_s)
    console.print(f"total estimate {format_duration(plan.total_estimate_s)} "
                  f"({plan.total_estimate_s / 3600:.2f} h); expected finish {finish:%Y-%m-%d %H:%M %Z} if started now")


def cmd_plan(args: argparse.Namespace) -> int:
    plan, _ = load_plan(args.protocol, args.station)
    if args.json:
        print(json.dumps(plan.to_json_dict(), indent=1))
    else:
        print_plan(plan, Console())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parents[1] / "examples"
    protocols = [root / "vt-exsy-paper.yaml", root / "cycling-fixed-capacity.yaml"]
    plan, _ = load_plan(protocols, None)
    console = Console()
    print_plan(plan, console)
    console.print("[yellow]The runner is not built yet: this demo stops at the plan. Nothing was run.[/yellow]")
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

    p = sub.add_parser("demo", help="the paper's VT-EXSY series and fixed-capacity cycling on the simulated station")
    p.add_argument("--out", default="demo-out", help="folder for the demo's run (default: demo-out)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
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
