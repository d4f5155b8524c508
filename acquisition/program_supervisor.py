"""One thread polls every program-cycler channel of a run at its interval and wakes a lane only with news.

A channel's poll is its `state()` and `records_after(last)`; a driver that answers many channels
with one command (Neware's inquire) does so once per tick. Lanes wait on a clock signal, so 256
cells cost one wake-up per tick plus one per cell with new records, in virtual and in real time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from drivers.clock import Clock, Signal
from drivers.errors import InstrumentError
from drivers.program_cycler import ChannelState, ProgramCycler, ProgramRecord

log = logging.getLogger(__name__)

LATE_FRACTION = 0.5
"""A poll this far (in intervals) behind its due time counts as late."""


@dataclass
class Watch:
    """What the supervisor collects for one lane: new records, the latest state, an error."""

    channel: ProgramCycler
    last_id: int
    interval_s: float
    signal: Signal
    should_stop: Callable[[], bool] = lambda: False
    records: list[ProgramRecord] = field(default_factory=list)
    state: ChannelState | None = None
    error: Exception | None = None
    next_due: float = float("-inf")
    _polls_since_records: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[list[ProgramRecord], ChannelState | None, Exception | None]:
        """Everything collected since the last take."""
        with self._lock:
            records, self.records = self.records, []
            return records, self.state, self.error

    def poll(self) -> bool:
        """Poll the channel once; True when the lane has something to act on."""
        try:
            state = self.channel.state()
            changed = self.state is None or (state.state, state.step_index) != (self.state.state, self.state.step_index)
            self._polls_since_records += 1
            # records at every step change and whenever the channel is not running; in between every Nth poll
            # (a driver that must download a whole data file for them says how seldom, `records_poll_every`)
            due = self._polls_since_records >= self.channel.records_poll_every
            records = self.channel.records_after(self.last_id) if changed or due or state.state != "running" else []
            if changed or due or state.state != "running":
                self._polls_since_records = 0
        except (InstrumentError, OSError) as exc:
            with self._lock:
                self.error = exc
            return True
        with self._lock:
            self.state = state
            if records:
                self.records.extend(records)
                self.last_id = records[-1].record_id
        return changed or bool(records)


class ProgramSupervisor:
    """The run's poller of program-cycler channels (one thread, started with the first watch)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._watches: list[Watch] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = clock.signal()
        self.polls = 0
        self.late_polls = 0
        """Polls that started more than LATE_FRACTION of an interval after they were due (clock time)."""
        self.rounds = 0
        self.rounds_over_budget = 0
        """Rounds whose wall time, at the clock's speed, exceeded the shortest interval (late in real time)."""
        self.round_wall_s_total = 0.0
        self.round_wall_s_max = 0.0

    def attach(self, watch: Watch) -> None:
        """Start polling `watch` (at once); called from a lane thread, which is a clock participant."""
        with self._lock:
            self._watches.append(watch)
            if self._thread is None:
                participant = self.clock.participant()
                participant.__enter__()  # counted before the lane waits, so virtual time waits for the poller
                self._thread = threading.Thread(target=self._loop, args=(participant,), name="program-supervisor",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def detach(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)
        self._wake.set()

    def _loop(self, participant: contextlib.AbstractContextManager[None]) -> None:
        try:
            while True:
                with self._lock:
                    watches = list(self._watches)
                    if not watches:
                        self._thread = None
                        return
                now = self.clock.now()
                started = time.perf_counter()
                stopping = watches[0].should_stop()  # one look at the run's control file per round
                for watch in watches:
                    if now >= watch.next_due:
                        if watch.next_due != float("-inf") and now - watch.next_due > LATE_FRACTION * watch.interval_s:
                            self.late_polls += 1
                        self.polls += 1
                        if watch.poll() or stopping:
                            watch.signal.set()
                        watch.next_due = (watch.next_due + watch.interval_s if watch.next_due != float("-inf")
                                          else now + watch.interval_s)
                        if watch.next_due <= now:  # fell behind: the next poll is due one interval from now
                            watch.next_due = now + watch.interval_s
                self._account(time.perf_counter() - started, min(w.interval_s for w in watches))
                wait_s = min(w.next_due for w in watches) - self.clock.now()
                if wait_s > 0:
                    self.clock.wait(self._wake, wait_s)
        except Exception:  # noqa: BLE001 - a lane waits on its signal: tell every one of them
            log.exception("program supervisor crashed")
            with self._lock:
                self._thread = None
                for watch in self._watches:
                    watch.error = RuntimeError("the program supervisor crashed; see the run log")
                    watch.signal.set()
        finally:
            participant.__exit__(None, None, None)


    def _account(self, wall_s: float, interval_s: float) -> None:
        """Round statistics: what the poller costs and whether real time would have kept up."""
        self.rounds += 1
        self.round_wall_s_total += wall_s
        self.round_wall_s_max = max(self.round_wall_s_max, wall_s)
        if wall_s * float(getattr(self.clock, "speed", 1.0)) > interval_s:
            if self.rounds_over_budget == 0:
                log.warning("program supervisor: a poll round took %.3f s of wall time, more than the %.3g s interval",
                            wall_s, interval_s)
            self.rounds_over_budget += 1


_supervisors: "weakref.WeakKeyDictionary[Any, ProgramSupervisor]" = weakref.WeakKeyDictionary()
_supervisors_lock = threading.Lock()


def supervisor_for(clock: Clock) -> ProgramSupervisor:
    """The one supervisor of the run that owns `clock`."""
    with _supervisors_lock:
        if clock not in _supervisors:
            _supervisors[clock] = ProgramSupervisor(clock)
        return _supervisors[clock]
