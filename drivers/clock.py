"""The one owner of time: every wait in drivers, runner and simulators goes through a Clock.

`RealClock` is wall time (optionally sped up for an accelerated simulated bench);
`VirtualClock` is discrete-event time, so a 40-hour series simulates in seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What drivers, runner and simulators need of time."""

    def now(self) -> float:
        """Seconds since the Unix epoch on this clock."""

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of this clock's time pass."""

    def participant(self) -> contextlib.AbstractContextManager[None]:
        """Context in which a thread takes part in (virtual) time; a no-op for real time."""


class RealClock:
    """Wall-clock time, optionally running `speed` times faster than real time.

    With speed > 1, time runs `speed` seconds per real second from `epoch_unix_s` (default:
    when the clock was made). Processes that share an accelerated simulated bench give the
    same speed and epoch, so their clocks agree.
    """

    def __init__(self, speed: float = 1.0, epoch_unix_s: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        self.speed = float(speed)
        self.epoch_unix_s = time.time() if epoch_unix_s is None else float(epoch_unix_s)

    def now(self) -> float:
        if self.speed == 1.0:
            return time.time()
        return self.epoch_unix_s + (time.time() - self.epoch_unix_s) * self.speed

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.speed)

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        yield


class RealTimer:
    """Real-time waits that are not run time (a paused lane, an unreachable TopSpin): passed in, so tests choose."""

    def wait_real_s(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Discrete-event time shared by threads.

    With at most one participant thread, `sleep` advances time at once. With several
    participants (e.g. an NMR series and a cycler channel running concurrently), time
    advances only when every participant is asleep, to the earliest wake-up among them,
    so concurrent lanes interleave as they would in real time.
    """

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()
        self._participants = 0
        self._wakeups: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` without waiting (for tests and simulators)."""
        with self._cond:
            self._now += max(0.0, seconds)
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        with self._cond:
            wake = self._now + seconds
            if self._participants <= 1:
                self._now = max(self._now, wake)
                return
            self._wakeups.append(wake)
            try:
                while self._now < wake:
                    # Advance only when every participant sleeps and none is due yet.
                    pending = [w for w in self._wakeups if w > self._now]
                    if len(pending) >= self._participants:
                        self._now = min(pending)
                        self._cond.notify_all()
                    else:
                        self._cond.wait()
            finally:
                self._wakeups.remove(wake)
                self._cond.notify_all()

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        with self._cond:
            self._participants += 1
        try:
            yield
        finally:
            with self._cond:
                self._participants -= 1
                self._cond.notify_all()
