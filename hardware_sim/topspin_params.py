"""Parameter sets of the simulated TopSpin: defaults, name mapping and parameter files on disk.

The simulator keeps each dataset's acquisition parameters under exsylab names (D8, TD1, NS) and
writes them as TopSpin parameter files (acqu/acqus, acqu2/acqu2s) whenever they change, so a
dataset that was created but not yet acquired looks as it does after TopSpin's `wrpa`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import nmrglue as ng

from hardware_sim.nmr_dataset import DEFAULTS

# The template parameter set: the dataset writer's 6Li noesyph defaults plus a requested TE.
DEFAULT_EXSY_PARAMS: dict[str, object] = {**DEFAULTS, "TE": 293.0, "TITLE": "exsylab 6Li EXSY template"}
ARRAY_SIZE = 64
_ARRAYS = ("D", "P", "IN", "PL", "CNST", "L")
_F1_KEYS = {"TD1": "TD", "SW1": "SW", "FNMODE1": "FnMODE"}
_ARRAY_KEY = re.compile(r"^(D|P|IN|PL|CNST|L)(\d+)$")


def exsylab_name(topspin_name: str) -> str:
    """Translate TopSpin's GETPAR/PUTPAR name ("D 8", "1 TD") into the exsylab key ("D8", "TD1")."""
    parts = topspin_name.split()
    if len(parts) == 2 and parts[0] == "1":
        return parts[1].upper() + "1"
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0].upper() + parts[1]
    if len(parts) != 1:
        raise KeyError(f"unknown parameter name {topspin_name!r}")
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


def write_parameter_files(expno_dir: Path, params: Mapping[str, object]) -> None:
    """Write acqu/acqus (F2) and acqu2/acqu2s (F1) for a dataset that holds no data yet."""
    expno_dir.mkdir(parents=True, exist_ok=True)
    arrays = {name: [0.0] * ARRAY_SIZE for name in _ARRAYS}
    f2: dict[str, object] = {}
    f1: dict[str, object] = {}
    for key, value in params.items():
        match = _ARRAY_KEY.match(key.upper())
        upper = key.upper()
        if match and int(match.group(2)) < ARRAY_SIZE:
            arrays[match.group(1)][int(match.group(2))] = float(coerce(value))
        elif upper in _F1_KEYS:
            f1[_F1_KEYS[upper]] = coerce(value)
        else:
            f2[key] = coerce(value)
    f1.setdefault("TD", 1)
    for shared in ("NUC1", "SFO1", "FnMODE", "BYTORDA", "DTYPA"):
        if shared in f2:
            f1.setdefault(shared, f2[shared])
    for name, (values, scalars) in {"acqu": (arrays, f2), "acqu2": ({}, f1)}.items():
        dic = _jcamp("Parameter file", scalars, values)
        for filename in (name, name + "s"):
            ng.bruker.write_jcamp(dic, str(expno_dir / filename), overwrite=True)


def read_parameter_files(expno_dir: Path) -> dict[str, object]:
    """Read a dataset's acqus/acqu2s back into exsylab keys (for datasets made before a restart)."""
    params: dict[str, object] = {}
    acqus = ng.bruker.read_jcamp(str(expno_dir / "acqus"))
    for key, value in acqus.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list) and key in _ARRAYS:
            params.update({f"{key}{i}": v for i, v in enumerate(value) if v})
        elif not isinstance(value, list):
            params[key] = value
    if (expno_dir / "acqu2s").exists():
        acqu2s = ng.bruker.read_jcamp(str(expno_dir / "acqu2s"))
        for f1_key, f2_key in _F1_KEYS.items():
            if f2_key in acqu2s and f1_key != "FNMODE1":
                params[f1_key] = acqu2s[f2_key]
    return params
