"""The TopSpin-run VT unit (BVT) end to end: TopSpinVt -> TopSpinDriver -> automation folder -> simulated TopSpin."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.clock import VirtualClock
from drivers.topspin import TopSpinDriver
from drivers.vt import TopSpinVt, UnsafeTemperatureRequest, VtLimits
from hardware_sim.topspin_sim import SimulatedTopSpin


def test_topspin_vt_reaches_and_holds_a_set_point_through_the_automation_folder(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_790_000_000.0)
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock)
    sim.start()
    try:
        driver = TopSpinDriver(tmp_path / "automation", tmp_path / "data", clock)
        vt = TopSpinVt(driver, clock, VtLimits(min_k=233.0, max_k=393.0, max_ramp_k_per_min=5.0))
        summary = vt.preflight()  # every VT backend has one: here identity and one teget
        assert summary.startswith("TopSpin VT via TopSpinDriver; sensor reads ") and summary.endswith(" K")
        vt.set_ramp_rate_k_per_min(5.0)
        t0 = clock.now()
        vt.set_sample_temperature_k(313.0)
        assert clock.now() - t0 == pytest.approx(20.0 / 5.0 * 60.0, abs=31.0)  # stepped at the ramp rate
        result = vt.wait_stable(313.0, tolerance_k=0.5, hold_s=120.0, timeout_s=3600.0)
        assert abs(result.last_reading_k - 313.0) <= 0.5
        assert abs(driver.teget() - 313.0) <= 0.5
        with pytest.raises(UnsafeTemperatureRequest):
            vt.set_sample_temperature_k(450.0)
        assert abs(driver.teget() - 313.0) <= 0.5  # nothing was sent
    finally:
        sim.stop()
