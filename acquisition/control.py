"""Pause, resume and stop: a control file in the run folder, and the lock that says a runner is alive."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from typing import Literal

from .run_folder import RunFolder, write_atomic

Command = Literal["run", "pause", "stop"]


def request(folder: RunFolder, command: Command) -> None:
    """Ask the runner of this folder to pause, resume or stop (from any process)."""
    write_atomic(folder.control, command + "\n")


def runner_alive(folder: RunFolder) -> bool:
    """True when a runner process holds the folder's lock."""
    if not folder.lock.exists():
        return False
    with open(folder.lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


class RunLock:
    """Held by the one runner of a folder for as long as it runs."""

    def __init__(self, folder: RunFolder) -> None:
        self._path = folder.lock
        self._handle = None

    def acquire(self) -> bool:
        self._handle = open(self._path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            self._handle = None
            return False
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


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
        """Ctrl-C: the first asks to pause (lifted by `exsylab resume RUN_DIR`), the second to stop."""
        with self._lock:
            self._interrupts += 1
            if self._interrupts == 1:
                write_atomic(self._folder.control, "pause\n")
            return self._interrupts

    def install_sigint(self) -> None:
        """Ctrl-C once: pause at the next safe point; twice: stop safely."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame) -> None:  # noqa: ARG001
            self.interrupt()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, lambda s, f: (self.interrupt(), self.interrupt()))
