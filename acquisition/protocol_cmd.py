"""`exsylab protocol export|import`: cycling protocols to PyBaMM experiments and from aurora-unicycler files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from protocols import InputError, load_plan, parse_protocol
from protocols.errors import MISSING
from protocols.pybamm_export import pybamm_experiment
from protocols.unicycler_import import from_unicycler
from protocols.units import parse_quantity


def add_protocol_parser(subparsers) -> None:
    """Add `protocol export` and `protocol import`."""
    protocol = subparsers.add_parser("protocol", help="exchange cycling protocols with PyBaMM and aurora-unicycler")
    actions = protocol.add_subparsers(dest="protocol_action", required=True)
    export = actions.add_parser("export", help="a cycling protocol as a PyBaMM experiment (JSON list of step strings)")
    export.add_argument("protocol", help="exsylab cycling protocol file (YAML)")
    export.add_argument("--to", required=True, choices=["pybamm"])
    export.add_argument("--station", help="station file (default: the built-in simulated station)")
    export.add_argument("--out", help="write the JSON here (default: print it)")
    export.set_defaults(func=cmd_protocol_export)
    imp = actions.add_parser("import", help="an aurora-unicycler protocol (JSON) as an exsylab cycling protocol (YAML)")
    imp.add_argument("file", help="aurora-unicycler protocol JSON")
    imp.add_argument("--from", dest="source_format", required=True, choices=["unicycler"])
    imp.add_argument("--active-mass", required=True, help="active mass of the cell, e.g. '1.5 mg' (unicycler has none)")
    imp.add_argument("--area", required=True, help="electrode area, e.g. '0.785 cm2' (unicycler has none)")
    imp.add_argument("--channel", default="ch1", help="cycler channel of the cell (default ch1)")
    imp.add_argument("--name", help="cell name (default: the unicycler sample name)")
    imp.add_argument("--out", help="write the YAML here (never overwritten; default: print it)")
    imp.set_defaults(func=cmd_protocol_import)


def _write_new(path: Path, text: str, field: str) -> None:
    """Write a new file; an existing one is refused, never overwritten."""
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise InputError(path, field, MISSING, "exists; refusing to overwrite") from None


def cmd_protocol_export(args: argparse.Namespace) -> int:
    """Compile the protocol and print (or write) its PyBaMM experiment; notes go to stderr."""
    plan, _ = load_plan([args.protocol], args.station)
    steps, notes = pybamm_experiment(plan, args.protocol)
    text = json.dumps({"pybamm_experiment": steps, "source": plan.protocols, "notes": notes}, indent=2) + "\n"
    if args.out:
        _write_new(Path(args.out), text, "--out")
    else:
        sys.stdout.write(text)
    for note in notes:
        print(f"exsylab protocol export: note: {note}", file=sys.stderr)
    return 0


def cmd_protocol_import(args: argparse.Namespace) -> int:
    """Translate, check it as exsylab would load it, then print (or write) the protocol YAML."""
    path = Path(args.file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, "", MISSING, f"not a readable JSON file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise InputError(path, "", MISSING, "an aurora-unicycler protocol is a JSON object")
    try:
        mass_g = parse_quantity(args.active_mass, "mass", bare_numbers_allowed=False)
        area_cm2 = parse_quantity(args.area, "area", bare_numbers_allowed=False)
    except ValueError as exc:
        raise InputError("command line", "--active-mass/--area", MISSING, str(exc)) from None
    protocol = from_unicycler(data, str(path), active_mass_g=mass_g, area_cm2=area_cm2, channel=args.channel,
                              name=args.name)
    parse_protocol(protocol, path)  # what exsylab would refuse on loading is refused now, naming the field
    text = (f"# Imported from the aurora-unicycler protocol {path.name} by `exsylab protocol import`.\n"
            + yaml.safe_dump(protocol, sort_keys=False, allow_unicode=True))
    if args.out:
        _write_new(Path(args.out), text, "--out")
    else:
        sys.stdout.write(text)
    return 0
