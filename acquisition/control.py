"""Pause, resume and stop: a control file in the run folder, the lock that says a runner is alive, the CLI's signals."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Literal

from .instrument_locks import LockFile, current_holder
from .run_folder import RunFolder, write_atomic

Command = Literal["run", "pause", "stop"]


def request(folder: RunFolder, command: Command) -> None:
    """Ask the runner of this folder to pause, resume or stop (from any process)."""
    write_atomic(folder.control, command + "\n")


def runner_alive(folder: RunFolder) -> bool:
    """True when a runner holds the folder's lock: a live process here, or any on another computer (unknowable)."""
    return current_holder(folder.lock) is not None


class RunLock:
    """Held by the one runner of a folder for as long as it runs; a dead runner's lock is taken over."""

    def __init__(self, folder: RunFolder) -> None:
        self._file = LockFile(folder.lock, f"the runner of {folder.root}")

    def acquire(self) -> bool:
        """Take the folder; False when a runner holds it (holder() says who)."""
        return self._file.acquire() is None

    def release(self) -> None:
        self._file.release()

    @property
    def takeover(self) -> str | None:
        """The message when acquire() took over a dead runner's lock (also logged as a warning)."""
        return self._file.takeover

    def holder(self) -> str | None:
        """Who holds the folder now, in one line for an error message; None when no runner does."""
        holder = current_holder(self._file.path)
        return holder.describe() if holder is not None else None


class Control:
    """What the runner should do now: the control file plus Ctrl-C (once: pause, twice: stop)."""

    def __init__(self, folder: RunFolder) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._interrupts = 0
        self._mtime_ns = -1
        self._file_command: Command = "run"
        self._control_path = str(folder.control)

    def _read_file(self) -> Command:
        try:
            stat = os.stat(self._control_path)
        except FileNotFoundError:
            return "run"
        if stat.st_mtime_ns != self._mtime_ns:
            self._mtime_ns = stat.st_mtime_ns
            text = self._folder.control.read_text().strip()
            self._file_command = text if text in ("run", "pause", "stop") else "run"  # type: ignore[assignment]
            if self._file_command == "run":
                self._interrupts = 0  # resumed: the next Ctrl-C pauses again
        return self._file_command

    def state(self) -> Command:
        with self._lock:
            return "stop" if self._interrupts >= 2 else self._read_file()

    def interrupt(self) -> int:
        """Ctrl-C: the first asks to pause (lifted by `exsylab resume RUN_DIR`), the second to stop.

        Both are written to the control file too, so that every Control of the folder sees them.
        """
        with self._lock:
            self._interrupts += 1
            if self._interrupts <= 2:
                write_atomic(self._folder.control, ("pause" if self._interrupts == 1 else "stop") + "\n")
            return self._interrupts

    def stop(self) -> None:
        """SIGTERM: stop safely at the next safe point, as a second Ctrl-C would."""
        with self._lock:
            self._interrupts = max(self._interrupts, 2)
            write_atomic(self._folder.control, "stop\n")


@contextmanager
def handle_signals(control: Control) -> Iterator[None]:
    """For the CLI around a run: Ctrl-C once pauses, twice stops, SIGTERM stops; the previous handlers return after.

    Signal handlers can only be set from the main thread; called from another thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, lambda signum, frame: control.interrupt())
    signal.signal(signal.SIGTERM, lambda signum, frame: control.stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():  # None: set outside Python, which cannot be restored exactly
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
