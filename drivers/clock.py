"""The one owner of time: every wait in drivers, runner and simulators goes through a Clock.

`RealClock` is wall time (optionally sped up for an accelerated simulated bench);
`VirtualClock` is discrete-event time, so a 40-hour series simulates in seconds.
"""

from __future__ import annotations

import contextlib
import heapq
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

    def signal(self) -> "Signal":
        """A flag another thread sets to end a `wait` early."""

    def wait(self, signal: "Signal", seconds: float) -> bool:
        """Sleep until `signal` is set or `seconds` of this clock's time have passed; True if it was set (then cleared)."""


class Signal(Protocol):
    """What a waiter's peer may do with a clock's signal."""

    def set(self) -> None: ...


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

    def signal(self) -> threading.Event:
        return threading.Event()

    def wait(self, signal: Signal, seconds: float) -> bool:
        assert isinstance(signal, threading.Event)  # made by signal() above
        fired = signal.wait(max(0.0, seconds) / self.speed)
        signal.clear()
        return fired


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
    so concurrent lanes interleave as they would in real time. Only the sleepers due are
    woken (one event each), so hundreds of participants cost no more per tick than those due.
    """

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._participants = 0
        self._asleep: list[tuple[float, int, _Sleeper]] = []  # heap by wake-up time
        self._sleeping = 0
        self._seq = 0

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` without waiting (for tests and simulators)."""
        with self._lock:
            self._now += max(0.0, seconds)
            self._release_due()

    def sleep(self, seconds: float) -> None:
        self._wait(None, seconds)

    def signal(self) -> "ClockSignal":
        """A flag another thread sets to end a `wait` early."""
        return ClockSignal(self)

    def wait(self, signal: Signal, seconds: float) -> bool:
        """Sleep until `signal` is set or `seconds` have passed; True (and the flag cleared) if it was set."""
        assert isinstance(signal, ClockSignal)  # made by signal() above
        return self._wait(signal, seconds)

    def _wait(self, signal: "ClockSignal | None", seconds: float) -> bool:
        seconds = max(0.0, float(seconds))
        with self._lock:
            if signal is not None and signal.flag:
                signal.flag = False
                return True
            if self._participants <= 1:
                self._now = max(self._now, self._now + seconds)
                self._release_due()
                if signal is not None:
                    flag, signal.flag = signal.flag, False
                    return flag
                return False
            sleeper = _Sleeper(self._now + seconds)
            self._seq += 1
            heapq.heappush(self._asleep, (sleeper.wake, self._seq, sleeper))
            self._sleeping += 1
            if signal is not None:
                signal.waiter = sleeper
            self._maybe_advance()
        sleeper.event.wait()
        if signal is None:
            return False
        with self._lock:
            signal.waiter = None
            flag, signal.flag = signal.flag, False
            return flag

    def _release(self, sleeper: "_Sleeper") -> None:
        if not sleeper.released:
            sleeper.released = True
            self._sleeping -= 1
            sleeper.event.set()

    def _release_due(self) -> None:
        while self._asleep and (self._asleep[0][2].released or self._asleep[0][0] <= self._now):
            self._release(heapq.heappop(self._asleep)[2])

    def _maybe_advance(self) -> None:
        """Called with the lock held: when every participant sleeps, jump to the earliest wake-up."""
        self._release_due()
        if self._sleeping >= self._participants > 0 and self._asleep:
            self._now = max(self._now, self._asleep[0][0])
            self._release_due()

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        with self._lock:
            self._participants += 1
        try:
            yield
        finally:
            with self._lock:
                self._participants -= 1
                self._maybe_advance()


class _Sleeper:
    """One thread asleep on a VirtualClock until `wake` (or its signal)."""

    __slots__ = ("wake", "event", "released")

    def __init__(self, wake: float) -> None:
        self.wake = wake
        self.event = threading.Event()
        self.released = False


class ClockSignal:
    """A flag that ends a participant's `VirtualClock.wait` early (set from any thread)."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self.flag = False
        self.waiter: _Sleeper | None = None

    def set(self) -> None:
        clock = self._clock
        with clock._lock:
            self.flag = True
            if self.waiter is not None:
                clock._release(self.waiter)
                clock._maybe_advance()
