"""The clock: virtual time advances without real sleeping, and interleaves threads."""

from __future__ import annotations

import threading
import time

from drivers.clock import RealClock, VirtualClock


def test_virtual_sleep_advances_instantly() -> None:
    clock = VirtualClock(start=0.0)
    t0 = time.monotonic()
    clock.sleep(3600.0)
    assert clock.now() == 3600.0
    assert time.monotonic() - t0 < 0.5


def test_virtual_clock_interleaves_participants_in_time_order() -> None:
    clock = VirtualClock(start=0.0)
    events: list[tuple[str, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def lane(name: str, step_s: float, n: int) -> None:
        with clock.participant():
            barrier.wait()
            for _ in range(n):
                clock.sleep(step_s)
                with lock:
                    events.append((name, clock.now()))

    threads = [threading.Thread(target=lane, args=("a", 10.0, 3)), threading.Thread(target=lane, args=("b", 15.0, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    times = [t for _, t in events]
    assert times == sorted(times)
    assert ("a", 30.0) in events and ("b", 30.0) in events


def test_real_clock_speed_factor() -> None:
    clock = RealClock(speed=1000.0)
    t0 = clock.now()
    clock.sleep(50.0)  # 50 ms real
    assert clock.now() - t0 >= 49.0


def test_virtual_wait_ends_early_on_signal_and_time_waits_for_the_waiter() -> None:
    clock = VirtualClock(start=0.0)
    signal = clock.signal()
    seen: list[tuple[bool, float]] = []
    barrier = threading.Barrier(2)

    def waiter() -> None:
        with clock.participant():
            barrier.wait()
            seen.append((clock.wait(signal, 1000.0), clock.now()))
            seen.append((clock.wait(signal, 5.0), clock.now()))

    def setter() -> None:
        with clock.participant():
            barrier.wait()
            clock.sleep(30.0)
            signal.set()
            clock.sleep(1.0)

    threads = [threading.Thread(target=waiter), threading.Thread(target=setter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert seen == [(True, 30.0), (False, 35.0)]


def test_virtual_clock_with_many_participants_wakes_each_at_its_time() -> None:
    clock = VirtualClock(start=0.0)
    n = 50
    barrier = threading.Barrier(n)
    ends: list[float] = []
    lock = threading.Lock()

    def lane(k: int) -> None:
        with clock.participant():
            barrier.wait()
            for _ in range(20):
                clock.sleep(1.0 + k % 3)
            with lock:
                ends.append(clock.now())

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(set(ends)) == [20.0, 40.0, 60.0]
