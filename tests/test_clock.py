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
