"""Exclusive ownership of instruments: one lock file per instrument, portable, safe on a shared folder.

A lock file is created exclusively and says who holds it (JSON: holder, pid, host, when, the
process's start time). A lock whose holder ran on this computer and is gone (the pid is dead, or
now belongs to a process started at another time) is stale and is taken over, with a warning.
A lock from another computer is never taken over: its pid cannot be checked from here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Sequence

import psutil

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "EXSYLAB_LOCK_DIR"
_START_TIME_TOLERANCE_S = 1.0  # one process's create time, read twice, agrees far better than this
_SLUG_CHARS = 40
_ATTEMPTS = 5  # a lock released between our failed create and our read: try again, a few times


def default_lock_dir() -> Path:
    """Where instrument locks live: $EXSYLAB_LOCK_DIR, else a per-user local folder.

    Windows: %LOCALAPPDATA%\\exsylab\\locks. POSIX: $XDG_CACHE_HOME/exsylab/locks (~/.cache/...);
    not $XDG_RUNTIME_DIR, which is removed at logout while a run started over ssh goes on.
    """
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "exsylab" / "locks"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exsylab" / "locks"


def lock_file_name(address: str) -> str:
    """A file name valid on every platform for an address: a readable slug plus a hash that keeps it unique."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", address).strip("-")[:_SLUG_CHARS] or "instrument"
    return f"{slug}-{hashlib.sha256(address.encode()).hexdigest()[:12]}.lock"


@dataclass(frozen=True)
class LockRecord:
    """What a lock file says about its holder."""

    holder: str
    pid: int
    host: str
    started_unix_s: float
    process_started_unix_s: float | None
    process_started_since_boot_s: float | None

    @classmethod
    def of_this_process(cls, holder: str) -> LockRecord:
        started = _process_start(os.getpid())
        return cls(holder=" ".join(holder.split()), pid=os.getpid(), host=socket.gethostname(),
                   started_unix_s=time.time(), process_started_unix_s=started[0] if started else None,
                   process_started_since_boot_s=started[1] if started else None)

    @classmethod
    def parse(cls, raw: bytes) -> LockRecord | None:
        """The record in a lock file's bytes; None for an empty (being written) or corrupt file."""
        try:
            data = json.loads(raw.decode("utf-8"))
            started, since_boot = data.get("process_started_unix_s"), data.get("process_started_since_boot_s")
            return cls(holder=str(data["holder"]), pid=int(data["pid"]), host=str(data["host"]),
                       started_unix_s=float(data["started_unix_s"]),
                       process_started_unix_s=None if started is None else float(started),
                       process_started_since_boot_s=None if since_boot is None else float(since_boot))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    def stale_because(self) -> str | None:
        """Why the holder is gone ('dead', 'pid reused'); None while it may be running (or runs elsewhere).

        The pid's process is the holder if its start time agrees as a date or as time since boot:
        a clock step shifts one of the two (psutil derives dates from the boot time on Linux), a
        process started at another moment differs in both.
        """
        if self.host != socket.gethostname():
            return None
        try:
            started = _process_start(self.pid)
        except psutil.NoSuchProcess:
            return "dead"
        if started is None or self.process_started_unix_s is None:
            return None
        recorded = (self.process_started_unix_s, self.process_started_since_boot_s)
        if any(r is not None and abs(now - r) <= _START_TIME_TOLERANCE_S for now, r in zip(started, recorded)):
            return None
        return "pid reused by another process"


def _process_start(pid: int) -> tuple[float, float] | None:
    """A process's start as (Unix time, seconds since boot); None if not allowed to know.

    Raises NoSuchProcess when it is gone, a zombie (exited, not yet reaped) included.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            raise psutil.ZombieProcess(pid)
        boot = psutil.boot_time()
        created = process.create_time()
    except psutil.AccessDenied:  # another user's process
        return None
    return created, created - boot


@dataclass(frozen=True)
class Holder:
    """Who holds a lock file that was refused to us; record None when the file cannot be read."""

    path: Path
    record: LockRecord | None

    def describe(self) -> str:
        """One line: the holder, its pid, host and since when, and how to clear the lock if it cannot be checked."""
        record = self.record
        if record is None:
            return (f"an unknown holder (the lock file {self.path} cannot be read: being written, or left corrupt; "
                    "if no exsylab is running, delete it)")
        since = dt.datetime.fromtimestamp(record.started_unix_s).isoformat(sep=" ", timespec="seconds")
        text = f"{record.holder} (pid {record.pid} on {record.host}, since {since})"
        if record.host != socket.gethostname():
            text += f"; if {record.host} is not running exsylab any more, delete {self.path}"
        return text


class InstrumentInUse(Exception):
    """An instrument (or an explicit lock file) is held by another run or command."""

    def __init__(self, what: str, holder: Holder) -> None:
        super().__init__(f"{what} is held by {holder.describe()}")
        self.what = what
        self.holder = holder


def _write_new(path: Path, raw: bytes) -> None:
    """Create a file that must not exist (O_CREAT|O_EXCL) and write it durably; FileExistsError if it does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path, raw: bytes) -> bool:
    """Create the lock file with our record, never seen empty by a reader; False when it exists.

    The record is written to a private file first and hard-linked into place (atomic, never
    overwrites). Where hard links are not supported (FAT, some shares) the lock file is created
    with O_EXCL and written at once: a reader in that instant finds it unreadable and is refused.
    """
    private = path.with_name(f"{path.name}.{os.getpid()}-{os.urandom(4).hex()}.new")
    _write_new(private, raw)
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here
        try:
            _write_new(path, raw)
            return True
        except FileExistsError:
            return False
    finally:
        private.unlink(missing_ok=True)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def current_holder(path: Path) -> Holder | None:
    """The holder of a lock file now; None when there is no lock or its holder is gone."""
    raw = _read(path)
    if raw is None:
        return None
    record = LockRecord.parse(raw)
    if record is not None and record.stale_because() is not None:
        return None
    return Holder(path, record)


class LockFile:
    """One lock file, created exclusively; a stale one is taken over, and `takeover` says so."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.takeover: str | None = None
        self._holder = holder
        self._raw: bytes | None = None  # what we wrote, while we hold it

    def acquire(self) -> Holder | None:
        """Take the lock: None when taken, else who holds it."""
        raw = LockRecord.of_this_process(self._holder).to_bytes()
        for _ in range(_ATTEMPTS):
            if _create(self.path, raw):
                self._raw = raw
                return None
            found = _read(self.path)
            if found is None:  # released meanwhile
                continue
            record = LockRecord.parse(found)
            reason = record.stale_because() if record is not None else None
            if record is None or reason is None:
                return Holder(self.path, record)
            return self._take_over(found, record, reason, raw)
        return Holder(self.path, LockRecord.parse(_read(self.path) or b""))

    def _take_over(self, stale_raw: bytes, stale: LockRecord, reason: str, raw: bytes) -> Holder | None:
        """Replace a stale lock; takers of the same stale lock queue on a ticket, so one of them wins.

        The ticket is itself a lock file named after the stale content: whoever holds it checks the
        stale lock is still the one it read, removes it and creates its own with O_EXCL; the others
        then find a live lock. A ticket left by a taker that died is stale in turn and taken over.
        """
        digest = hashlib.sha256(stale_raw).hexdigest()[:12]
        ticket = LockFile(self.path.with_name(f"{self.path.name}.takeover-{digest}"), self._holder)
        blocker = ticket.acquire()
        if blocker is not None:
            return blocker
        try:
            if _read(self.path) == stale_raw:
                self.path.unlink(missing_ok=True)
            if not _create(self.path, raw):
                return Holder(self.path, LockRecord.parse(_read(self.path) or b""))
        finally:
            ticket.release()
        self._raw = raw
        self.takeover = f"took over the lock of {stale.holder} (pid {stale.pid}, {reason}): {self.path}"
        log.warning("%s", self.takeover)
        return None

    def release(self) -> None:
        """Remove the lock file if it is still ours; idempotent."""
        if self._raw is None:
            return
        try:
            if _read(self.path) == self._raw:
                self.path.unlink(missing_ok=True)
        except OSError as exc:  # left behind, it is stale once we exit and the next holder takes it over
            log.warning("could not remove the lock file %s: %s", self.path, exc)
        self._raw = None


class InstrumentLocks:
    """The lock files one run or command holds; release() or the end of a with block lets them go."""

    def __init__(self, files: Sequence[LockFile]) -> None:
        self._files = list(files)
        self.takeovers: list[str] = [f.takeover for f in self._files if f.takeover is not None]

    def release(self) -> None:
        """Let every lock go; idempotent."""
        for lock in reversed(self._files):
            lock.release()

    def __enter__(self) -> InstrumentLocks:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def hold_instruments(addresses: Sequence[str], holder: str, *, lock_dir: Path,
                     extra_lock_files: Sequence[Path] = ()) -> InstrumentLocks:
    """Hold every instrument (a lock file per address in lock_dir, plus lock files at given paths), or none.

    Raises InstrumentInUse naming the first one held by someone else, after releasing what was taken.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    wanted = [(f"instrument {a}", lock_dir / lock_file_name(a)) for a in dict.fromkeys(addresses)]
    wanted += [(f"lock file {p}", Path(p)) for p in dict.fromkeys(extra_lock_files)]
    taken: list[LockFile] = []
    try:
        for what, path in wanted:
            lock = LockFile(path, holder)
            blocker = lock.acquire()
            if blocker is not None:
                raise InstrumentInUse(what, blocker)
            taken.append(lock)
    except BaseException:
        InstrumentLocks(taken).release()
        raise
    return InstrumentLocks(taken)
