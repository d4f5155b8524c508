"""Read TopSpin/XWIN-NMR acquisition parameters and judge a dataset's raw data from the host side.

Pure file reading (no instrument, no clock): used by the spectrometer driver to refuse an expno
that holds data and by resume to tell a complete acquisition from an interrupted one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from nmrglue.fileio.bruker import read_jcamp

ACQU_FILES = ("acqus", "acqu2s", "acqu3s", "acqu4s")
FID_BLOCK_BYTES = 1024  # every FID in fid/ser starts on a 1 KiB boundary
BYTES_PER_POINT = {0: 4, 2: 8}  # DTYPA 0: int32, DTYPA 2: float64


class BrukerParamError(RuntimeError):
    """A dataset's parameter files are missing or do not describe raw data we can size."""


def read_params(expno_dir: Path | str) -> dict[str, dict[str, Any]]:
    """Parameters of a dataset as {'acqus': {...}, 'acqu2s': {...}, ...} (the files present).

    Reads both TopSpin and XWIN-NMR dialects through nmrglue's JCAMP reader; arrays are lists
    (D8 is params['acqus']['D'][8]), strings lose their <>, yes/no become booleans.
    """
    expno = Path(expno_dir)
    if not (expno / "acqus").is_file():
        raise BrukerParamError(f"Bruker dataset {expno}: no acqus file")
    params: dict[str, dict[str, Any]] = {}
    for name in ACQU_FILES:
        path = expno / name
        if path.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params[name] = read_jcamp(str(path), encoding="utf-8")
    return params


def _int_param(params: dict[str, dict[str, Any]], file: str, key: str, expno: Path) -> int:
    """An integer parameter that must be present."""
    try:
        return int(params[file][key])
    except (KeyError, TypeError, ValueError):
        raise BrukerParamError(f"Bruker dataset {expno}: {file} has no usable {key}") from None


def raw_data_file(expno_dir: Path | str) -> Path:
    """The raw data file the parameters imply: 'ser' for nD (TD in acqu2s), 'fid' for 1D."""
    expno = Path(expno_dir)
    return expno / ("ser" if (expno / "acqu2s").is_file() else "fid")


def expected_ser_bytes(expno_dir: Path | str) -> int:
    """Size in bytes of the complete fid/ser: FIDs (product of TD in acqu2s..) x padded TD."""
    expno = Path(expno_dir)
    params = read_params(expno)
    td = _int_param(params, "acqus", "TD", expno)
    dtypa = int(params["acqus"].get("DTYPA", 0))
    if dtypa not in BYTES_PER_POINT:
        raise BrukerParamError(f"Bruker dataset {expno}: DTYPA={dtypa} is neither 0 (int32) nor 2 (float64)")
    fid_bytes = -(-td * BYTES_PER_POINT[dtypa] // FID_BLOCK_BYTES) * FID_BLOCK_BYTES
    fids = 1
    for name in ACQU_FILES[1:]:
        if name in params:
            fids *= _int_param(params, name, "TD", expno)
    return fids * fid_bytes


def dataset_complete(expno_dir: Path | str) -> bool:
    """True when fid/ser exists with exactly the size TD x TD1 (padded) imply."""
    data = raw_data_file(expno_dir)
    return data.is_file() and data.stat().st_size == expected_ser_bytes(expno_dir)


def expno_has_data(expno_dir: Path | str) -> bool:
    """True when anything was acquired here: a non-empty fid or ser."""
    expno = Path(expno_dir)
    return any((expno / name).is_file() and (expno / name).stat().st_size > 0 for name in ("fid", "ser"))
