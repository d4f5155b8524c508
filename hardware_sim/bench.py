"""A whole simulated bench in one process: VT controller on a pty, cyclers on loopback TCP, TopSpin on a folder.

All instruments share one accelerated RealClock (speed, epoch), written into the station
description so another process's RealClock agrees with it. The TopSpin simulator reads the VT
simulator's sample temperature, and the template dataset `exsylab_template/1` exists from start.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from drivers.clock import RealClock
from hardware_sim.bts_sim import BtsServer
from hardware_sim.cell import Li2SCell
from hardware_sim.smu_sim import SimulatedKeithley2450
from hardware_sim.topspin_sim import TEMPLATE_NAME, SimulatedTopSpin
from hardware_sim.vt_sim import SimulatedLakeShore336

log = logging.getLogger(__name__)

TEMPLATE_EXPNO = 1
CHANNELS = ("ch1", "ch2")
BTS_LAYOUT = {21: {1: 8, 2: 8}}
"""The simulated Neware BTS server: device 21, sub-devices 1 and 2, eight channels each."""
BTS_STATION_CHANNELS = {"nw1": (21, 1, 1), "nw2": (21, 1, 2)}
"""The BTS channels the written station file names (the others are there for aurora-neware and the like)."""
VT_LIMITS_K = (173.0, 423.0)
VT_MAX_RAMP_K_PER_MIN = 5.0
CALIBRATION_MAS_RATE_HZ = 10_000.0
# the TopSpin side must beat within this many real seconds, whatever the speed
HEARTBEAT_TIMEOUT_REAL_S = 2.0


class SimBench:
    """The simulated instruments of a bench, started together on one clock; `station()` says where they are."""

    def __init__(self, workdir: Path, *, speed: float = 600.0, seed: int = 0,
                 epoch_unix_s: float | None = None, channels: tuple[str, ...] = CHANNELS) -> None:
        self.workdir = Path(workdir).resolve()
        self.speed = float(speed)
        self.seed = int(seed)
        self.clock = RealClock(speed=self.speed, epoch_unix_s=time.time() if epoch_unix_s is None else epoch_unix_s)
        self.automation_dir = self.workdir / "automation"
        self.data_dir = self.workdir / "data"
        self.vt = SimulatedLakeShore336(self.clock, seed=self.seed)
        self.topspin: SimulatedTopSpin | None = None
        self.smus: dict[str, SimulatedKeithley2450] = {
            name: SimulatedKeithley2450(self.clock, Li2SCell(seed=self.seed + i)) for i, name in enumerate(channels)}
        self.resources: dict[str, str] = {}
        self.bts = BtsServer(self.clock, name="bts", seed=self.seed + 100)
        self.bts.add_devices(BTS_LAYOUT)
        self.bts_resource = ""
        self._started = False

    def start(self) -> dict[str, Any]:
        """Start every simulator (stopping those started if one fails); returns the station description."""
        try:
            self.automation_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.vt.start()
            self.topspin = SimulatedTopSpin(self.automation_dir, self.data_dir, self.clock,
                                            temperature_source=self.vt.model.sample_k, seed=self.seed)
            self.topspin.start()
            for name, smu in self.smus.items():
                self.resources[name] = smu.start()
            self.bts_resource = self.bts.start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        log.info("simulated bench up in %s at speed %g", self.workdir, self.speed)
        return self.station()

    def stop(self) -> None:
        """Stop every simulator; the data and automation folders stay. Never raises."""
        sims: list[tuple[str, Any]] = [*self.smus.items(), ("bts", self.bts), ("topspin", self.topspin), ("vt", self.vt)]
        for name, sim in sims:
            if sim is None:
                continue
            try:
                sim.stop()
            except Exception as exc:  # noqa: BLE001 - shutting down must go on
                log.error("stopping simulator %s: %s", name, exc)
        self._started = False

    def __enter__(self) -> "SimBench":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def template(self) -> tuple[str, int]:
        """The template dataset (NAME, EXPNO) the bench provides for protocols."""
        return TEMPLATE_NAME, TEMPLATE_EXPNO

    def station(self) -> dict[str, Any]:
        """A station file's content (kind: station, real addresses) pointing at the running simulators."""
        heating_k = self.vt.model.mas_heating_k_at_10khz * (CALIBRATION_MAS_RATE_HZ / 10_000.0) ** 2
        low_k, high_k = VT_LIMITS_K
        return {
            "kind": "station",
            "name": f"simulated bench (speed {self.speed:g}) in {self.workdir}",
            "clock_speed": self.speed,
            "clock_epoch_unix_s": self.clock.epoch_unix_s,
            "spectrometer": {
                "driver": "topspin",
                "automation_dir": str(self.automation_dir),
                "data_dir": str(self.data_dir),
                "heartbeat_timeout": f"{max(30.0, HEARTBEAT_TIMEOUT_REAL_S * self.speed):g} s",
            },
            "vt": {
                "driver": "lakeshore336",
                "port": self.vt.link_path,
                "limits": {"min": f"{low_k:g} K", "max": f"{high_k:g} K", "max_ramp": f"{VT_MAX_RAMP_K_PER_MIN:g} K/min"},
                "ambient": f"{self.vt.model.ambient_k:g} K",
                "calibration": [{"mas_rate": f"{CALIBRATION_MAS_RATE_HZ / 1000:g} kHz",
                                 "thermometer": "simulated (thermal model)",
                                 "points": [[low_k, low_k + heating_k], [high_k, high_k + heating_k]]}],
            },
            "cyclers": {**{name: {"driver": "keithley2450", "resource": resource, "voltage_min": "-0.5 V",
                                  "voltage_max": "5 V", "current_max": "100 mA"}
                           for name, resource in self.resources.items()},
                        **{name: {"driver": "neware-bts", "resource": self.bts_resource, "device_id": key[0],
                                  "subdevice_id": key[1], "channel_id": key[2], "voltage_min": "0 V",
                                  "voltage_max": "5 V", "current_max": "10 mA",
                                  "step_dir": str(self.workdir / "neware-steps")}
                           for name, key in BTS_STATION_CHANNELS.items()}},
        }
