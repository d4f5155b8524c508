"""`exsylab convert FILE --to bdf`: any cycler file analysis.readers reads, written as a BDF file with its metadata."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from pathlib import Path

from analysis.errors import AnalysisInputError
from analysis.readers import read_cycling_file
from common.bdf_columns import COLUMNS, CONSTANT_COLUMNS, bdf_file_name

from .bdf import BdfError, BdfWriter, metadata_path


def add_convert_parser(subparsers) -> None:
    """Add the `convert` command."""
    p = subparsers.add_parser("convert", help="a cycler file (BioLogic .mpr, Neware .nda/.ndax, BDF CSV) as a "
                                              "Battery Data Format file with its metadata")
    p.add_argument("file")
    p.add_argument("--to", required=True, choices=["bdf"])
    p.add_argument("--out-dir", default=".", help="folder for the BDF file and its .bdf.json (default: here)")
    p.add_argument("--cell", help="cell name in the file name (default: from the input file's name)")
    p.add_argument("--institution", default="exsylab", help="institution code heading the file name")
    p.add_argument("--active-mass-g", type=float, default=None, help="recorded in the metadata for later analysis")
    p.set_defaults(func=cmd_convert)


def _cell_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9.+-]+", "-", Path(path.name.removesuffix(".bdf.csv")).stem).strip("-.")
    return re.sub(r"-{2,}", "-", name) or "cell"


def _date(metadata: dict, path: Path) -> str:
    """YYYYMMDD of the test start the file records, else of the file's modification time."""
    start = str(metadata.get("start_time_local") or "")
    if re.match(r"^\d{4}-\d{2}-\d{2}", start):
        return start[:10].replace("-", "")
    return time.strftime("%Y%m%d", time.localtime(path.stat().st_mtime))


def convert_to_bdf(source: Path, out_dir: Path, *, cell: str | None = None, institution: str = "exsylab",
                   active_mass_g: float | None = None) -> Path:
    """Write `Institution__Cell__YYYYMMDD_001.bdf.csv` and its `.bdf.json` from any readable cycler file."""
    data = read_cycling_file(source)
    columns = [c for c in [*COLUMNS, *CONSTANT_COLUMNS] if c in data.columns]
    try:
        target = Path(out_dir) / bdf_file_name(institution, cell or _cell_name(source), _date(data.metadata, source))
    except ValueError as exc:
        raise AnalysisInputError(f"{source}: {exc}") from None
    if target.exists():
        raise AnalysisInputError(f"{target} exists; refusing to overwrite (give --cell or --out-dir)")
    metadata = {**data.metadata, "converted_by": "exsylab convert",
                "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    if active_mass_g is not None:
        metadata["active_mass_g"], metadata["active_mass_source"] = active_mass_g, "exsylab convert --active-mass-g"
    rows = len(data.columns[columns[0]])
    with BdfWriter(target, metadata, columns=columns) as writer:
        for k in range(rows):
            writer.write_row({c: data.columns[c][k] for c in columns})
    return target


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert one file; 0 written, 2 refused (one line on stderr)."""
    try:
        target = convert_to_bdf(Path(args.file), Path(args.out_dir), cell=args.cell, institution=args.institution,
                                active_mass_g=args.active_mass_g)
    except (AnalysisInputError, BdfError, OSError) as exc:
        print(f"exsylab convert: refused: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"{target}\n{metadata_path(target)}")
    return 0
