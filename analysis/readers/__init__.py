"""Cycler data files by format: one registry from format name to reader, the format found from content, then suffix.

Every reader returns the same `CyclingData`: columns under their Battery Data Format labels
(capacities cumulative since the test start, current positive on charge) and the file's
metadata, so the cycling summary, the plots and `exsylab convert` treat every format alike.
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from analysis.errors import AnalysisInputError
from common.bdf_columns import CURRENT, TEST_TIME, VOLTAGE, canonical_label

from .model import CyclingData

__all__ = ["CyclingData", "CyclingFormat", "FORMATS", "detect_format", "read_cycling_file"]


def _is_bdf_csv(head: bytes) -> bool:
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    labels = {canonical_label(h.strip('"')) for h in first.split(",")}
    return {TEST_TIME, VOLTAGE, CURRENT} <= labels


def _is_ndax(head: bytes, path: Path) -> bool:
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "data.ndc" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


@dataclass(frozen=True)
class CyclingFormat:
    """One file format: how to recognise it and which reader (imported only when used) opens it."""

    name: str
    description: str
    suffixes: tuple[str, ...]
    reader: str
    """"module:function" taking a Path and returning CyclingData."""
    recognise: Callable[[bytes, Path], bool]

    def read(self, path: Path) -> CyclingData:
        module, function = self.reader.split(":")
        return getattr(importlib.import_module(module), function)(path)


FORMATS: dict[str, CyclingFormat] = {
    "bdf-csv": CyclingFormat("bdf-csv", "Battery Data Format CSV (exsylab's own cycler files and any BDF CSV)",
                             (".csv", ".bdf"), "analysis.readers.bdf_csv:read", lambda head, _: _is_bdf_csv(head)),
    "biologic-mpr": CyclingFormat("biologic-mpr", "BioLogic EC-Lab .mpr (read with galvani)", (".mpr",),
                                  "analysis.readers.biologic_mpr:read",
                                  lambda head, _: head.startswith(b"BIO-LOGIC MODULAR FILE")),
    "neware-nda": CyclingFormat("neware-nda", "Neware BTS .nda (read with NewareNDA)", (".nda",),
                                "analysis.readers.neware_nda:read", lambda head, _: head.startswith(b"NEWARE")),
    "neware-ndax": CyclingFormat("neware-ndax", "Neware BTS .ndax (read with NewareNDA)", (".ndax",),
                                 "analysis.readers.neware_nda:read", _is_ndax),
}
"""Format name -> format; `detect_format` tries each in this order."""


def detect_format(path: Path | str) -> CyclingFormat:
    """The format of a cycler data file, from its first bytes, else from its suffix; refused in one line when neither."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisInputError(f"{path}: file not found")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise AnalysisInputError(f"{path}: unreadable ({exc})") from exc
    for fmt in FORMATS.values():
        if fmt.recognise(head, path):  # content decides: a renamed file is read by what it holds
            return fmt
    by_suffix = [f for f in FORMATS.values() if path.suffix.lower() in f.suffixes]
    if by_suffix:  # its reader says precisely what is wrong with it
        return by_suffix[0]
    raise AnalysisInputError(f"{path}: not a cycler data file exsylab can read (known formats: {', '.join(FORMATS)})")


def read_cycling_file(path: Path | str) -> CyclingData:
    """Read any supported cycler file into BDF columns; a file the reader library cannot parse is refused in one line."""
    path = Path(path)
    fmt = detect_format(path)
    try:
        data = fmt.read(path)
    except AnalysisInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the vendor library's own error, named in one line
        reason = " ".join(str(exc).split())
        raise AnalysisInputError(f"{path}: {fmt.description}: the reader failed ({type(exc).__name__}: {reason})") from exc
    data.metadata.setdefault("source_format", fmt.name)
    return data

