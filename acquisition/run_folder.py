"""The run folder: everything a run leaves behind, and everything resume needs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from protocols import InputError
from protocols.errors import MISSING

PLAN_FILE = "plan.json"
JOURNAL_FILE = "journal.sqlite"
CONTROL_FILE = "control"
LOCK_FILE = "runner.lock"
DATASETS_FILE = "datasets.json"
SUMMARY_FILE = "summary.json"
SECRET_KEY = "webhook_token"
SERVER_SECRET = ("server", "token")  # exsylab serve's control token: never copied into a run folder

log = logging.getLogger(__name__)


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run's folder."""

    root: Path

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL_FILE

    @property
    def plan(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def control(self) -> Path:
        return self.root / CONTROL_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cycler(self) -> Path:
        return self.root / "cycler"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def protocol_copies(self) -> list[Path]:
        manifest = json.loads((self.inputs / "manifest.json").read_text())
        return [self.inputs / name for name in manifest["protocols"]]

    def station_copy(self) -> Path | None:
        manifest = json.loads((self.inputs / "manifest.json").read_text())
        return self.inputs / manifest["station"] if manifest["station"] else None

    def write_json(self, name: str, data: Any) -> None:
        write_atomic(self.root / name, json.dumps(data, indent=1, default=str))


def default_run_dir(base: Path, name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return base / f"{stamp}-{name}"


def check_new_run_dir(root: Path) -> None:
    """Refuse a --run-dir that holds a run or anything else (before any instrument is opened)."""
    if (root / JOURNAL_FILE).exists() or (root / "inputs" / "manifest.json").exists():
        raise InputError(root, "--run-dir", MISSING, "already holds a run: use `exsylab resume` or choose another folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(root, "--run-dir", MISSING, "folder is not empty; choose a new one")


def create_run_folder(root: Path, protocol_paths: list[Path], station_path: Path | None) -> RunFolder:
    """Make a new run folder holding copies of the inputs as given; never reuse a folder that holds a run.

    The folder is built beside its final place and renamed into it once the inputs are written, so
    a run killed while starting leaves either no folder or a complete one that `resume` takes.
    """
    root = Path(root).resolve()  # every path the run records is absolute
    check_new_run_dir(root)
    staging = root.with_name(f".{root.name}.creating")
    if staging.exists():  # left by a start that was killed before its folder was complete
        log.warning("removing %s, left by a run killed while it was starting", staging)
        shutil.rmtree(staging)
    folder = RunFolder(staging)
    for sub in (folder.root, folder.logs, folder.cycler, folder.inputs):
        sub.mkdir(parents=True, exist_ok=True)
    names = []
    for i, path in enumerate(protocol_paths):
        name = f"protocol-{i + 1}-{Path(path).name}"
        shutil.copyfile(path, folder.inputs / name)
        names.append(name)
    station_name = None
    if station_path is not None:
        station_name = f"station-{Path(station_path).name}"
        copy_station_redacted(Path(station_path), folder.inputs / station_name)
    write_atomic(folder.inputs / "manifest.json", json.dumps(
        {"protocols": names, "station": station_name,
         "originals": [str(Path(p).resolve()) for p in protocol_paths],
         "station_original": str(Path(station_path).resolve()) if station_path else None}, indent=1))
    if root.exists():
        root.rmdir()  # empty, checked above
    os.replace(staging, root)
    return RunFolder(root)


def copy_station_redacted(source: Path, target: Path) -> None:
    """Copy a station file, leaving out the webhook and server tokens (secrets); resume reads the webhook's from the original."""
    text = source.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    removed = []
    for section, key in (("notifications", SECRET_KEY), SERVER_SECRET):
        part = data.get(section) if isinstance(data, dict) else None
        if isinstance(part, dict) and part.get(key) is not None:
            part.pop(key)
            removed.append(f"{section}.{key}")
    if not removed:
        shutil.copyfile(source, target)
        return
    header = (f"# Copy of {source.resolve()} with {' and '.join(removed)} left out (secrets);\n"
              "# `exsylab resume` reads the webhook token from the original file.\n")
    write_atomic(target, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def restore_secrets(folder: RunFolder, station: Any) -> None:
    """Put the webhook token back into a station loaded from the run folder's copy, from the original file.

    Logged (without the token) when the original is gone or no longer parses: notifications then go
    out without the token.
    """
    manifest = json.loads((folder.inputs / "manifest.json").read_text())
    original = manifest.get("station_original")
    if not original or station.notifications.webhook_url is None:
        return
    try:
        data = yaml.safe_load(Path(original).read_text(encoding="utf-8"))
        token = data["notifications"][SECRET_KEY]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        log.warning("resume: webhook token not restored from %s (%s)", original, type(exc).__name__)
        return
    if isinstance(token, str) and token:
        station.notifications.webhook_token = token


def open_run_folder(root: Path) -> RunFolder:
    """An existing run folder, for resume and status."""
    folder = RunFolder(Path(root).resolve())
    if not (folder.inputs / "manifest.json").exists():
        raise InputError(root, "RUN_DIR", MISSING, "not a run folder (no inputs/manifest.json)")
    return folder
