"""Reading protocol and station files: safe YAML, strict models, one clear error on bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import ValidationError

from .adaptive_exsy import AdaptiveExsyProtocol
from .cycling import CyclingProtocol
from .errors import MISSING, InputError, from_validation_error
from .exsy import VtExsyProtocol
from .station import StationSpec, is_sim
from .mas_calibration import MasCalibrationProtocol
from .vt_series import VtSeriesProtocol

Protocol = Union[VtExsyProtocol, VtSeriesProtocol, MasCalibrationProtocol, AdaptiveExsyProtocol, CyclingProtocol]
_PROTOCOL_KINDS: dict[str, type[VtExsyProtocol] | type[VtSeriesProtocol] | type[MasCalibrationProtocol]
                      | type[AdaptiveExsyProtocol] | type[CyclingProtocol]] = {
    "vt-exsy": VtExsyProtocol,
    "vt-series": VtSeriesProtocol,
    "mas-calibration": MasCalibrationProtocol,
    "adaptive-exsy": AdaptiveExsyProtocol,
    "cycling": CyclingProtocol,
}
MAX_FILE_BYTES = 1_000_000


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping (yaml.safe_load: no arbitrary objects)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(path, "", MISSING, f"file is larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "", MISSING, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "", MISSING, "is a folder, not a file") from None
    except UnicodeDecodeError:
        raise InputError(path, "", MISSING, "not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, "", MISSING, f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(path, where, MISSING, f"not valid YAML: {problem}") from None
    except RecursionError:
        raise InputError(path, "", MISSING, "YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(path, "(top level)", MISSING, f"expected a mapping of keys to values, got {type(data).__name__}")
    if any(not isinstance(k, str) for k in data):
        raise InputError(path, "(top level)", MISSING, "keys must be text")
    return data


def parse_protocol(data: dict[str, Any], source: str | Path | None = None, *, from_file: bool = True) -> Protocol:
    """Validate a protocol mapping; `kind` says which protocol it is."""
    kind = data.get("kind", MISSING)
    if kind is MISSING:
        raise InputError(source, "kind", MISSING, f"required: one of {', '.join(_PROTOCOL_KINDS)}")
    model = _PROTOCOL_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InputError(source, "kind", kind, f"unknown protocol kind (use one of {', '.join(_PROTOCOL_KINDS)})")
    try:
        return model.model_validate(data, context={"from_file": from_file})
    except ValidationError as exc:
        raise from_validation_error(source, exc) from None
    except RecursionError:
        raise InputError(source, "", MISSING, "nested too deeply") from None


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file."""
    return parse_protocol(read_yaml_mapping(path), path)


def parse_station(data: dict[str, Any], source: str | Path | None = None, *, from_file: bool = True) -> StationSpec:
    """Validate a station mapping; relative folders are taken relative to the file's folder."""
    try:
        station = StationSpec.model_validate(data, context={"from_file": from_file})
    except ValidationError as exc:
        raise from_validation_error(source, exc) from None
    spec = station.spectrometer
    if source is not None and spec is not None and not is_sim(spec.automation_dir):
        # a real spectrometer's folders are where the file says; a simulated one's live in the run folder
        base = Path(source).resolve().parent
        spec.automation_dir = str(base / spec.automation_dir)
        spec.data_dir = base / spec.data_dir
    return station


def load_station(path: str | Path) -> StationSpec:
    """Read and validate a station file."""
    data = read_yaml_mapping(path)
    if data.get("kind") != "station":
        raise InputError(path, "kind", data.get("kind", MISSING), "a station file must say kind: station")
    return parse_station(data, path)
