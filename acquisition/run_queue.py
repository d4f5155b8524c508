"""The queue of runs of one station, on disk: what `exsylab serve` runs next, surviving restarts and kill -9.

The queue is one JSON file (`queue.json` in the serve folder) rewritten atomically on every
change, and a folder per entry holding copies of its protocol files as submitted, so an entry
runs what was queued even if the originals change or an upload is all there was.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from protocols import InputError
from protocols.errors import MISSING

from .run_folder import write_atomic

QUEUE_FILE = "queue.json"
ENTRIES_DIR = "queued"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class QueueEntry:
    """One queued run: the protocols it runs together (as one `exsylab run A B`), and what became of it."""

    id: str
    protocols: list[str]  # copies inside the queue folder
    names: list[str]  # the names they were submitted under
    state: str = "queued"  # queued; running (a restart resumes it); done, failed, stopped, refused, removed
    run_dir: str | None = None
    added_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    message: str = ""


def safe_file_name(name: str) -> str:
    """A submitted file name reduced to one harmless path component (no folders, no '..')."""
    base = _SAFE_NAME.sub("-", Path(name.replace("\\", "/")).name).strip(".-")
    return base or "protocol.yaml"


class RunQueue:
    """The persistent queue; every method is safe from several threads of the one serve process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._path = self.folder / QUEUE_FILE
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._held = False
        self._next_number = 1
        self._entries: list[QueueEntry] = []
        if self._path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            self._entries = [QueueEntry(**e) for e in data["entries"]]
            self._next_number = int(data["next_number"])
            self._held = bool(data.get("held", False))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(self._path, "entries", MISSING, f"queue file cannot be read ({exc}); "
                                                             "move it away to start an empty queue") from None

    def _save(self) -> None:
        data = {"next_number": self._next_number, "held": self._held, "entries": [asdict(e) for e in self._entries]}
        write_atomic(self._path, json.dumps(data, indent=1))
        self._changed.notify_all()

    def entries(self) -> list[QueueEntry]:
        """Every entry, in queue order (final ones stay, for the record)."""
        with self._lock:
            return [QueueEntry(**asdict(e)) for e in self._entries]

    def get(self, entry_id: str) -> QueueEntry:
        with self._lock:
            return QueueEntry(**asdict(self._find(entry_id)))

    def _find(self, entry_id: str) -> QueueEntry:
        for entry in self._entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(entry_id)

    @property
    def held(self) -> bool:
        """True after a run failed, was stopped or refused: nothing more starts until someone says `queue continue`."""
        with self._lock:
            return self._held

    def add(self, files: Sequence[tuple[str, bytes]], validate: Callable[[list[Path]], None]) -> QueueEntry:
        """Queue protocol files (name, content) to run together, once `validate` accepts their copies.

        A refusal (InputError) names the file as submitted; nothing is queued and no copy is kept.
        """
        if not files:
            raise InputError("queue", "protocols", MISSING, "no protocol given")
        with self._lock:
            entry_id = f"q{self._next_number}"
            folder = self.folder / ENTRIES_DIR / entry_id
            shutil.rmtree(folder, ignore_errors=True)  # left by an add that died half way: never listed
            folder.mkdir(parents=True)
            paths = []
            for i, (name, content) in enumerate(files):
                path = folder / f"{i + 1}-{safe_file_name(name)}"
                path.write_bytes(content)
                paths.append(path)
            try:
                validate(paths)
            except InputError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                submitted = {str(p): n for p, (n, _) in zip(paths, files)}
                raise InputError(submitted.get(exc.source, exc.source), exc.field, exc.value, exc.reason) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            entry = QueueEntry(id=entry_id, protocols=[str(p) for p in paths], names=[Path(n).name for n, _ in files])
            self._next_number += 1
            self._entries.append(entry)
            self._save()
            return QueueEntry(**asdict(entry))

    def remove(self, entry_id: str) -> QueueEntry:
        """Take a waiting entry out of the queue (kept in the file as removed); a running one must be stopped."""
        with self._lock:
            entry = self._find(entry_id)
            if entry.state != "queued":
                raise ValueError(f"{entry_id} is {entry.state}: only a queued entry can be removed"
                                 + (" (stop the run instead)" if entry.state == "running" else ""))
            entry.state = "removed"
            entry.ended_at = time.time()
            self._save()
            return QueueEntry(**asdict(entry))

    def move(self, entry_id: str, position: int) -> None:
        """Put a waiting entry at `position` (0 = next) among the waiting entries."""
        with self._lock:
            entry = self._find(entry_id)
            if entry.state != "queued":
                raise ValueError(f"{entry_id} is {entry.state}: only a queued entry can be moved")
            waiting = [e for e in self._entries if e.state == "queued" and e is not entry]
            position = max(0, min(position, len(waiting)))
            waiting.insert(position, entry)
            others = iter(waiting)
            self._entries = [next(others) if e.state == "queued" else e for e in self._entries]
            self._save()

    def requeue(self, entry_id: str) -> QueueEntry:
        """Run a failed, stopped or refused entry again, next: its run resumes in its folder (if it has one)."""
        with self._lock:
            entry = self._find(entry_id)
            if entry.state not in ("failed", "stopped", "refused"):
                raise ValueError(f"{entry_id} is {entry.state}: only a failed, stopped or refused entry can be queued again")
            entry.state, entry.ended_at, entry.message = "queued", None, f"queued again (was {entry.state})"
            self._entries.remove(entry)
            first_waiting = next((i for i, e in enumerate(self._entries) if e.state == "queued"), len(self._entries))
            self._entries.insert(first_waiting, entry)
            self._held = False
            self._save()
            return QueueEntry(**asdict(entry))

    def set_held(self, held: bool) -> None:
        with self._lock:
            self._held = held
            self._save()

    def interrupted(self) -> QueueEntry | None:
        """The entry a killed or stopped serve was running: resumed first on start."""
        with self._lock:
            entry = next((e for e in self._entries if e.state == "running"), None)
            return QueueEntry(**asdict(entry)) if entry else None

    def next_waiting(self, timeout_s: float) -> QueueEntry | None:
        """The first queued entry (unless the queue is held), waiting up to timeout_s (real seconds) for one."""
        with self._lock:
            self._changed.wait_for(lambda: not self._held and any(e.state == "queued" for e in self._entries),
                                   timeout=timeout_s)
            if self._held:
                return None
            entry = next((e for e in self._entries if e.state == "queued"), None)
            return QueueEntry(**asdict(entry)) if entry else None

    def wake(self) -> None:
        """Let a waiting next_waiting() return (at shutdown)."""
        with self._lock:
            self._changed.notify_all()

    def update(self, entry_id: str, **changes: Any) -> QueueEntry:
        """Record what became of an entry (state, run_dir, times, message)."""
        with self._lock:
            entry = self._find(entry_id)
            for key, value in changes.items():
                if not hasattr(entry, key):
                    raise AttributeError(key)
                setattr(entry, key, value)
            if changes.get("state") in ("failed", "stopped", "refused"):
                self._held = True
            self._save()
            return QueueEntry(**asdict(entry))
