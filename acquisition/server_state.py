"""How `exsylab queue` finds the `exsylab serve` that owns a station: a lock and a state file in the lock folder.

Beside the instrument locks (station `lock_dir:`, $EXSYLAB_LOCK_DIR or the per-user folder) the
server of a station holds `serve-<station>-<hash>.lock` (a second server of the same station
file is refused, naming the holder) and writes `serve-<station>-<hash>.json` with its URL and
control token, readable by its user only (mode 0600). The name is derived from the station
file's absolute path, so every command given the same file finds the same server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from protocols import InputError
from protocols.errors import MISSING
from protocols.station import StationSpec

from .instrument_locks import LockFile, current_holder, default_lock_dir, lock_file_name


@dataclass(frozen=True)
class ServerState:
    """What a running server tells the command line: where it listens and the token that controls it."""

    url: str
    token: str
    pid: int
    station: str


def _base(station_path: Path, station: StationSpec) -> Path:
    folder = station.lock_dir or default_lock_dir()
    return folder / ("serve-" + lock_file_name(str(station_path.resolve())).removesuffix(".lock"))


def server_lock(station_path: Path, station: StationSpec) -> LockFile:
    """The lock a station's server holds while it runs (taken over when its holder died, e.g. kill -9)."""
    base = _base(station_path, station)
    base.parent.mkdir(parents=True, exist_ok=True)
    return LockFile(base.with_suffix(".lock"), f"exsylab serve --station {station_path.resolve()}")


def write_state(station_path: Path, station: StationSpec, state: ServerState) -> Path:
    """Write the state file (0600: it holds the token), replacing one a dead server left."""
    path = _base(station_path, station).with_suffix(".json")
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state.__dict__, handle)
    os.replace(tmp, path)
    return path


def remove_state(station_path: Path, station: StationSpec) -> None:
    _base(station_path, station).with_suffix(".json").unlink(missing_ok=True)


def read_state(station_path: Path, station: StationSpec) -> ServerState:
    """The live server of this station; InputError (exit 2) when none is running."""
    base = _base(station_path, station)
    if current_holder(base.with_suffix(".lock")) is None:
        raise InputError(station_path, "--station", MISSING,
                         "no `exsylab serve` is running for this station (start one with `exsylab serve --station ...`)")
    try:
        data = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
        return ServerState(url=str(data["url"]), token=str(data["token"]), pid=int(data["pid"]),
                           station=str(data["station"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(base.with_suffix(".json"), "url", MISSING,
                         f"the server's state file cannot be read ({type(exc).__name__}); is it still starting?") from None
