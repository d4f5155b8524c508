"""`exsylab analyze exsy|series|t1|spectra|cycling`: argument parsing, printing and exit codes (0 ok, 2 refused, 1 failed)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from analysis.errors import AnalysisFitError, AnalysisInputError
from analysis.fit_models import FIT_MODELS, get_fit_model, validated_options


def _option_fields() -> dict[str, tuple[list[str], str]]:
    """Every model option field of the table: the models that take it and its help text."""
    found: dict[str, tuple[list[str], str]] = {}
    for model in FIT_MODELS.values():
        for f in dataclasses.fields(model.options):
            help_text = f"{f.metadata.get('help', f.name)}, default {f.default}"
            found.setdefault(f.name, ([], help_text))[0].append(model.name)
    return found


def _given_model_options(args: argparse.Namespace) -> dict[str, object]:
    """The model option flags given on the command line, by field name."""
    return {name: getattr(args, name) for name in _option_fields() if getattr(args, name) is not None}


def add_analyze_parser(subparsers) -> None:
    """Add the `analyze` subcommand with its exsy, series and cycling actions."""
    analyze = subparsers.add_parser("analyze", help="analyse EXSY, T1 and 1D datasets, a run folder or cycler data")
    actions = analyze.add_subparsers(dest="analyze_action", required=True)

    def common_exsy(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sites", default=None, help="comma-separated ppm list or 'auto' (default auto)")
        p.add_argument("--names", default=None, help="comma-separated site names, same order as --sites")
        p.add_argument("--model", default="matrix", choices=list(FIT_MODELS),
                       help="; ".join(f"{m.name}: {m.description}" for m in FIT_MODELS.values()))
        p.add_argument("--mixing-param", default="D8", help="acqus parameter holding the mixing time (D8, D9, VD)")
        p.add_argument("--temperature-param", default="TE", help="acqus parameter holding the temperature (K)")
        p.add_argument("--method", default="auto", choices=["auto", "box", "lineshape"], help="volume integration")
        for name, (models, help_text) in _option_fields().items():
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                           help=f"{', '.join(models)} model: {help_text}")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--plot", default=None, help="write a figure to this file (png, pdf)")

    exsy = actions.add_parser("exsy", help="a TopSpin data folder and a list of expnos")
    exsy.add_argument("dataset_dir")
    exsy.add_argument("--expnos", required=True, help="e.g. 10-19,21")
    common_exsy(exsy)
    series = actions.add_parser("series", help="a run folder with datasets.json")
    series.add_argument("run_dir")
    series.add_argument("--no-t1-correction", dest="t1_from_run", action="store_false",
                        help="do not correct each point's intensities with the T1 the run measured at its temperature")
    common_exsy(series)
    t1 = actions.add_parser("t1", help="T1 per site of a saturation- or inversion-recovery pseudo-2D (ser + vdlist)")
    t1.add_argument("expno_dir")
    t1.add_argument("--sites", default=None, help="comma-separated ppm list or 'auto' (default: peaks of the last row)")
    t1.add_argument("--integration", default="lineshape", choices=["lineshape", "region"],
                    help="Lorentzian lines fitted per row (default) or a sum over each site's region")
    t1.add_argument("--json", action="store_true", help="print one JSON object")
    t1.add_argument("--plot", default=None, help="write the recovery curves to this file (png, pdf)")
    spectra = actions.add_parser("spectra", help="1D spectra at several temperatures, overlaid")
    spectra.add_argument("expno_dirs", nargs="+")
    spectra.add_argument("--ppm-range", default=None, help="HIGH,LOW shift range of the plot in ppm")
    spectra.add_argument("--json", action="store_true", help="print one JSON object")
    spectra.add_argument("--plot", default=None, help="write the overlay to this file (png, pdf)")
    cycling = actions.add_parser("cycling", help="a cycler file: BDF CSV, BioLogic .mpr, Neware .nda/.ndax")
    cycling.add_argument("file")
    cycling.add_argument("--active-mass-g", type=float, default=None)
    cycling.add_argument("--json", action="store_true")
    cycling.add_argument("--plot", default=None)


def _precheck(args: argparse.Namespace) -> None:
    """Refuse bad lists and missing files before the heavy numerical imports."""
    from analysis.series import expno_paths, parse_names, parse_sites, series_datasets

    if args.analyze_action == "cycling":
        if not Path(args.file).is_file():
            raise AnalysisInputError(f"{args.file}: file not found")
        return
    if args.analyze_action == "t1":
        parse_sites(args.sites, min_sites=1)
        if not Path(args.expno_dir).is_dir():
            raise AnalysisInputError(f"{args.expno_dir}: dataset folder not found")
        return
    if args.analyze_action == "spectra":
        _ppm_range(args.ppm_range)
        for path in args.expno_dirs:
            if not (Path(path) / "fid").is_file():
                raise AnalysisInputError(f"{path}: no fid (not a TopSpin 1D dataset folder)")
        return
    validated_options(get_fit_model(args.model), _given_model_options(args))
    sites = parse_sites(args.sites)
    parse_names(args.names, None if sites == "auto" else len(sites))
    if args.analyze_action == "exsy":
        expno_paths(args.dataset_dir, args.expnos)
    else:
        series_datasets(args.run_dir)


def _ppm_range(text: str | None) -> tuple[float, float] | None:
    """'HIGH,LOW' -> (high, low) in ppm; None when not given."""
    if text is None:
        return None
    try:
        high, low = (float(v) for v in text.split(","))
    except ValueError:
        raise AnalysisInputError(f"--ppm-range: {text!r} is not two comma-separated shifts in ppm") from None
    if high == low:
        raise AnalysisInputError(f"--ppm-range: {text!r} is an empty range")
    return high, low


def _print_t1(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['path']}: {result['method']} recovery, {result['nucleus']}, "
                        f"{result['temperature_k']:.1f} K, D1 {result['d1_s']:g} s")
    for col in ("shift / ppm", "T1 / s", "stderr / s", "ok"):
        table.add_column(col, justify="right")
    for s in result["sites"]:
        table.add_row(f"{s['shift_ppm']:.2f}", f"{s['t1_s']:.4g}", f"{s['t1_err_s']:.2g}",
                      "yes" if s["ok"] else f"no: {s['reason']}")
    Console().print(table)


def _print_spectra(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="1D spectra")
    for col in ("path", "T / K", "D1 / s", "NS", "peaks / ppm"):
        table.add_column(col)
    for s in result["spectra"]:
        table.add_row(s["path"], f"{s['temperature_k']:.1f}", f"{s['d1_s']:g}", str(s["ns"]),
                      ", ".join(f"{p:.2f}" for p in s["peaks_ppm"]))
    Console().print(table)


def _print_exsy(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sites = Table(title="Sites")
    sites.add_column("name")
    sites.add_column("shift / ppm", justify="right")
    for s in result["sites"]:
        sites.add_row(s["name"], f"{s['shift_ppm']:.2f}")
    console.print(sites)
    for fit in result["fits"]:
        table = Table(title=f"{fit['temperature_k']:.1f} K, model {fit['model']}")
        for col in ("from", "to", "k / s^-1", "stderr / s^-1"):
            table.add_column(col)
        for r in fit["rates"]:
            table.add_row(r["from"], r["to"], f"{r['k_per_s']:.4g}", f"{r['k_stderr_per_s']:.2g}")
        console.print(table)
    if result["arrhenius"]:
        table = Table(title="Arrhenius")
        for col in ("pair", "quantity", "Ea / eV", "stderr / eV", "prefactor"):
            table.add_column(col)
        for a in result["arrhenius"]:
            table.add_row(a["pair"], a["quantity"], f"{a['ea_ev']:.4f}", f"{a['ea_stderr_ev']:.4f}", f"{a['prefactor']:.4g}")
        console.print(table)
    correction = result.get("t1_correction") or {}
    if correction.get("source"):
        console.print(f"intensities corrected for the recycle delay with measured T1 ({correction['source']}) at "
                      f"{', '.join(correction['t1_s_by_temperature'])} K")
    for w in result.get("warnings", []):
        console.print(f"warning: {w}")


def _print_cycling(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['file']} ({summary['format']}, {summary['active_mass_g']} g active)")
    for col in ("cycle", "charge / mAh g^-1", "discharge / mAh g^-1", "CE / %"):
        table.add_column(col, justify="right")
    for c in summary["cycles"]:
        ce = c["coulombic_efficiency_pct"]
        table.add_row(str(c["cycle"]), f"{c['charge_mah_per_g']:.1f}", f"{c['discharge_mah_per_g']:.1f}",
                      "-" if ce is None else f"{ce:.2f}")
    console = Console()
    console.print(table)
    avg, act = summary["average"], summary["activation"]
    ce = avg["coulombic_efficiency_pct"]
    console.print(f"average: charge {avg['charge_mah_per_g']:.1f}, discharge {avg['discharge_mah_per_g']:.1f} mAh/g, "
                  f"CE {'-' if ce is None else f'{ce:.2f}'} %")
    console.print(f"activation plateau {act['plateau_v']} V, overpotential {act['overpotential_v']} V")


def _json_safe(value):
    """Non-finite floats become null so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run_analyze(args: argparse.Namespace) -> int:
    """Run one analyze action; 0 ok, 2 refused input (one line on stderr), 1 analysis failed."""
    try:
        _precheck(args)
        from analysis import api

        if args.analyze_action == "cycling":
            result = api.analyze_cycling(args.file, args.active_mass_g, plot=args.plot)
        elif args.analyze_action == "t1":
            result = api.analyze_t1(args.expno_dir, args.sites, integration=args.integration, plot=args.plot)
        elif args.analyze_action == "spectra":
            result = api.analyze_spectra(args.expno_dirs, ppm_range=_ppm_range(args.ppm_range), plot=args.plot)
        elif args.analyze_action == "exsy":
            result = api.analyze_exsy(args.dataset_dir, args.expnos, args.sites, args.names, args.model,
                                      args.mixing_param, method=args.method,
                                      model_options=_given_model_options(args),
                                      temperature_param=args.temperature_param, plot=args.plot)
        else:
            result = api.analyze_series(args.run_dir, args.sites, args.names, args.model, args.mixing_param,
                                        method=args.method, model_options=_given_model_options(args),
                                        temperature_param=args.temperature_param, t1_from_run=args.t1_from_run,
                                        plot=args.plot)
    except AnalysisInputError as exc:
        print(f"exsylab analyze {args.analyze_action}: refused: {exc}", file=sys.stderr)
        return 2
    except AnalysisFitError as exc:
        print(f"exsylab analyze {args.analyze_action}: analysis failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"exsylab analyze {args.analyze_action}: refused: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_json_safe(result), allow_nan=False))
    elif args.analyze_action == "cycling":
        _print_cycling(result)
    elif args.analyze_action in ("t1", "spectra"):
        (_print_t1 if args.analyze_action == "t1" else _print_spectra)(result)
    else:
        _print_exsy(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m acquisition.analyze_cmd analyze ...`) until the lead wires cli.py."""
    parser = argparse.ArgumentParser(prog="exsylab")
    add_analyze_parser(parser.add_subparsers(dest="command", required=True))
    return run_analyze(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
