"""A run's `logs/run.log`: records of exsylab's own loggers, without touching the root logger.

Two runs in one process (a notebook, `exsylab serve`) each get their own file: a thread that a
run registers (its caller and its lane threads) logs only into that run's file; threads no run
registered (simulators) log into every open run log, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Iterator

PACKAGES = ("acquisition", "drivers", "hardware_sim", "protocols", "analysis")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"

_lock = threading.Lock()
_owner: dict[int, str] = {}  # thread ident -> run tag
_active: dict[str, int] = {}  # run tag -> open captures
_saved_levels: dict[str, int] = {}


def register_thread(tag: str) -> None:
    """The calling thread belongs to run `tag` from now on (until it ends)."""
    with _lock:
        _owner[threading.get_ident()] = tag


def unregister_thread() -> None:
    with _lock:
        _owner.pop(threading.get_ident(), None)


class _RunFilter(logging.Filter):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self._tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        owner = _owner.get(record.thread or 0)
        return owner is None or owner == self._tag


@contextlib.contextmanager
def capture(path: Path, tag: str) -> Iterator[None]:
    """Write INFO and above of exsylab's loggers from this run's threads to `path` while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RunFilter(tag))
    with _lock:
        if not _active:
            for name in PACKAGES:
                logger = logging.getLogger(name)
                _saved_levels[name] = logger.level
                if logger.level == logging.NOTSET or logger.level > logging.INFO:
                    logger.setLevel(logging.INFO)
        _active[tag] = _active.get(tag, 0) + 1
        for name in PACKAGES:
            logging.getLogger(name).addHandler(handler)
    register_thread(tag)
    try:
        yield
    finally:
        unregister_thread()
        with _lock:
            for name in PACKAGES:
                logging.getLogger(name).removeHandler(handler)
            _active[tag] -= 1
            if not _active[tag]:
                del _active[tag]
            if not _active:
                for name, level in _saved_levels.items():
                    logging.getLogger(name).setLevel(level)
                _saved_levels.clear()
        handler.close()
