"""Parameter sets of the simulated TopSpin: defaults, name mapping and parameter files on disk.

The simulator keeps each dataset's parameters under flat keys (D8, TD1, NS; FnMODE is F1's
quadrature mode, TopSpin's "1 FnMODE"; F2's FnMODE, always 0 in real EXSY data, is FnMODE_F2) in
two sets, as TopSpin does: the current parameters (acqu/acqu2, what PUTPAR writes and GETPAR
reads) and the status parameters (acqus/acqu2s, what the acquisition, teget and masg write and
GETPARSTAT reads).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import nmrglue as ng

from hardware_sim.nmr_dataset import DEFAULTS

# The template parameter set: the dataset writer's 6Li noesyph defaults plus a requested TE.
DEFAULT_EXSY_PARAMS: dict[str, object] = {**DEFAULTS, "TE": 293.0}
ARRAY_SIZE = 64
_ARRAYS = ("D", "P", "IN", "PL", "CNST", "L")
_F1_KEYS = {"TD1": "TD", "SW1": "SW", "FNMODE": "FnMODE"}   # flat key (upper) -> acqu2 key
_F1_FLAT = {"TD": "TD1", "SW": "SW1", "FNMODE": "FnMODE"}   # TopSpin "1 X" (upper X) -> flat key
F2_FNMODE = "FnMODE_F2"
_ARRAY_KEY = re.compile(r"^(D|P|IN|PL|CNST|L)(\d+)$")


def exsylab_name(topspin_name: str) -> str:
    """Translate TopSpin's GETPAR/PUTPAR name ("D 8", "1 TD") into the exsylab key ("D8", "TD1")."""
    parts = topspin_name.split()
    if len(parts) == 2 and parts[0] == "1":
        return _F1_FLAT.get(parts[1].upper(), parts[1] + "1")
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0].upper() + parts[1]
    if len(parts) != 1:
        raise KeyError(f"unknown parameter name {topspin_name!r}")
    if parts[0].upper() == "FNMODE":
        return F2_FNMODE
    return parts[0]


def lookup(params: Mapping[str, object], key: str) -> object:
    """Case-insensitive parameter lookup (TopSpin accepts 'ns' and 'NS')."""
    for name, value in params.items():
        if name.upper() == key.upper():
            return value
    raise KeyError(key)


def canonical_key(params: Mapping[str, object], key: str) -> str:
    """The spelling under which `key` is stored: an existing or default key matching it
    case-insensitively (TopSpin accepts 'ns' for NS), else `key` itself."""
    for known in list(params) + list(DEFAULT_EXSY_PARAMS):
        if known.upper() == key.upper():
            return known
    return key


def coerce(value: object) -> object:
    """Turn PUTPAR's text into the number it spells, or keep the text."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return value


def _jcamp(title: str, scalars: Mapping[str, object], arrays: Mapping[str, list]) -> dict:
    dic: dict[str, object] = {"_coreheader": [f"##TITLE= {title}", "##JCAMPDX= 5.0",
                                              "##DATATYPE= Parameter Values", "##ORIGIN= Bruker BioSpin GmbH",
                                              "##OWNER= exsylab-sim"],
                              "_comments": ["$$ written by the exsylab TopSpin simulator (parameters only)"]}
    for key, value in scalars.items():
        dic[key] = value if isinstance(value, (int, float)) else str(value)
    dic.update(arrays)
    return dic


def is_f1_key(key: str) -> bool:
    """True for parameters of the indirect dimension (stored in acqu2/acqu2s)."""
    return key.upper() in _F1_KEYS


def write_parameter_files(expno_dir: Path, params: Mapping[str, object], *, dimensions: str = "12",
                          files: str = "both") -> None:
    """Write acqu (F2, dimension "1") and acqu2 (F1, "2") for a dataset that holds no data yet
    ("current"), their status twins acqus/acqu2s ("status"), or both."""
    expno_dir.mkdir(parents=True, exist_ok=True)
    arrays = {name: [0.0] * ARRAY_SIZE for name in _ARRAYS}
    f2: dict[str, object] = {}
    f1: dict[str, object] = {}
    for key, value in params.items():
        match = _ARRAY_KEY.match(key.upper())
        upper = key.upper()
        if match and int(match.group(2)) < ARRAY_SIZE:
            arrays[match.group(1)][int(match.group(2))] = float(coerce(value))  # type: ignore[arg-type]
        elif upper in _F1_KEYS:
            f1[_F1_KEYS[upper]] = coerce(value)
        elif upper == F2_FNMODE.upper():
            f2["FnMODE"] = coerce(value)
        else:
            f2[key] = coerce(value)
    f1.setdefault("TD", 1)
    f2.setdefault("FnMODE", 0)  # F2 is always acquired with DQD: FnMODE 0 (as in the reference datasets)
    for shared in ("NUC1", "SFO1", "BYTORDA", "DTYPA"):
        if shared in f2:
            f1.setdefault(shared, f2[shared])
    names = {"1": ("acqu", arrays, f2), "2": ("acqu2", {}, f1)}
    suffixes = {"both": ("", "s"), "current": ("",), "status": ("s",)}[files]
    for dimension in dimensions:
        name, values, scalars = names[dimension]
        dic = _jcamp("Parameter file", scalars, values)
        for suffix in suffixes:
            ng.bruker.write_jcamp(dic, str(expno_dir / (name + suffix)), overwrite=True)


def read_parameter_files(expno_dir: Path, *, status: bool = False) -> dict[str, object]:
    """Read a dataset's acqu/acqu2 (or, with status, acqus/acqu2s) back into flat keys."""
    params: dict[str, object] = {}
    suffix = "s" if status else ""
    acqus = ng.bruker.read_jcamp(str(expno_dir / ("acqu" + suffix)))
    for key, value in acqus.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list) and key in _ARRAYS:
            params.update({f"{key}{i}": v for i, v in enumerate(value) if v})
        elif not isinstance(value, list):
            params[F2_FNMODE if key == "FnMODE" else key] = value
    if (expno_dir / ("acqu2" + suffix)).exists():
        acqu2s = ng.bruker.read_jcamp(str(expno_dir / ("acqu2" + suffix)))
        for flat_upper, f1_key in _F1_KEYS.items():
            if f1_key in acqu2s:
                params[{"FNMODE": "FnMODE"}.get(flat_upper, flat_upper)] = acqu2s[f1_key]
    return params
