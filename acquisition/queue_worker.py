"""Runs a station's queue one entry after another through the API's start_run and resume_run.

An entry is marked running (with its run folder) before its run starts, so a serve killed at
any moment finds it on restart and resumes it with `resume_run` (or starts it, when the kill
came before its folder existed). A failed or stopped run holds the queue until someone says
continue: the next person's series does not start on a station that just went wrong.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable

from protocols import InputError

from . import api
from . import control as control_mod
from .run_folder import open_run_folder
from .run_queue import QueueEntry, RunQueue

log = logging.getLogger(__name__)

WAIT_REAL_S = 0.5  # how often an idle worker looks whether it should shut down (real seconds)


class QueueWorker:
    """The one thread that runs the queue's entries on the station, whose real instruments serve holds."""

    def __init__(self, queue: RunQueue, station_path: Path, runs_dir: Path, say: Callable[[str], None] = print) -> None:
        self.queue = queue
        self.station_path = station_path
        self.runs_dir = runs_dir
        self._say = say
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._current: QueueEntry | None = None
        self._thread = threading.Thread(target=self._loop, name="queue-worker", daemon=True)

    @property
    def current(self) -> QueueEntry | None:
        """The entry running now, if any."""
        with self._lock:
            return self._current

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the running run safely and wait for it; its entry stays 'running', so the next serve resumes it.

        A run still opening its station is asked as soon as its folder exists. The wait lasts as long
        as the stop does (a protocol may let a running 2D finish); KeyboardInterrupt ends it early.
        """
        self._stopping.set()
        self.queue.wake()
        asked = False
        while self._thread.is_alive():
            current = self.current
            if not asked and current is not None and current.run_dir:
                try:
                    control_mod.request(open_run_folder(Path(current.run_dir)), "stop")
                    asked = True
                    self._say(f"{current.id}: asked to stop safely")
                except InputError:  # its folder is not made yet: start_run is still opening the station
                    pass
            self._thread.join(timeout=WAIT_REAL_S / 5)

    def _loop(self) -> None:
        interrupted = self.queue.interrupted()
        if interrupted is not None:
            self._run(interrupted)
        while not self._stopping.is_set():
            entry = self.queue.next_waiting(timeout_s=WAIT_REAL_S)
            if entry is not None and not self._stopping.is_set():
                self._run(entry)

    def _new_run_dir(self, entry: QueueEntry) -> Path:
        names = "-".join(re.sub(r"\.ya?ml$", "", n) for n in entry.names)[:60]
        return (self.runs_dir / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{entry.id}-{names}").resolve()

    def _run(self, entry: QueueEntry) -> None:
        """Start the entry's run, or resume it when its folder exists (a restart, or an entry queued again)."""
        run_dir = Path(entry.run_dir) if entry.run_dir else self._new_run_dir(entry)
        entry = self.queue.update(entry.id, state="running", run_dir=str(run_dir),
                                  started_at=entry.started_at or time.time())
        with self._lock:
            self._current = entry
        started = (run_dir / "inputs" / "manifest.json").exists()
        self._say(f"{entry.id}: {'resuming' if started else 'starting'} {', '.join(entry.names)} in {run_dir}")
        try:
            if started:
                _, result = api.resume_run(run_dir, show_progress=False, station_held=True)
            else:
                _, result = api.start_run(entry.protocols, self.station_path, run_dir, show_progress=False,
                                          station_held=True)
        except InputError as exc:
            self._finish(entry, "refused", exc.message())
            return
        except Exception as exc:  # noqa: BLE001 - the queue must go on being served; the entry says why
            log.exception("queue entry %s", entry.id)
            self._finish(entry, "failed", f"{type(exc).__name__}: {exc}")
            return
        finally:
            with self._lock:
                self._current = None
        if result is None:  # a runner in another process had it: it goes on there
            self._finish(entry, "failed", "another exsylab process is running this folder")
        elif result.status == "stopped" and self._stopping.is_set():
            self.queue.update(entry.id, message="interrupted by the shutdown of serve; resumed when it starts again")
            self._say(f"{entry.id}: interrupted by shutdown; resumed on the next start")
        else:
            message = "; ".join(f"{k}: {v.status}" + (f" ({v.message})" if v.message else "")
                                for k, v in result.lanes.items())
            self._finish(entry, result.status, message)

    def _finish(self, entry: QueueEntry, state: str, message: str) -> None:
        self.queue.update(entry.id, state=state, ended_at=time.time(), message=message)
        held = " (queue held: `exsylab queue continue` starts the next)" if state in ("failed", "stopped", "refused") else ""
        self._say(f"{entry.id}: {state}{': ' + message if message else ''}{held}")
