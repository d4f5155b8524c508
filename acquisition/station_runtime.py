"""Opening a station: drivers over their transports, and the simulators behind `sim://` addresses.

A `sim://` address starts the matching simulator on its real wire (a pty for the VT
controller, a loopback SCPI server per cycler channel, an automation folder for TopSpin),
and the real driver is then pointed at it exactly as at an instrument.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.clock import Clock
from drivers.cycler import CyclerChannel, CyclerLimits
from drivers.keithley2450 import Keithley2450
from drivers.lakeshore import LakeShore336
from drivers.topspin import TopSpinDriver
from drivers.vt import MasCalibration, TemperatureController, TopSpinVt, VtLimits
from protocols.station import StationSpec

log = logging.getLogger(__name__)

SIM_SCHEME = "sim://"


def _is_sim(address: str | None) -> bool:
    return bool(address) and str(address).startswith(SIM_SCHEME)


@dataclass
class StationRuntime:
    """The open instruments of a station for one run (and the simulators it started)."""

    station: StationSpec
    clock: Clock
    spectrometer: TopSpinDriver | None = None
    vt: TemperatureController | None = None
    smus: dict[str, Keithley2450] = field(default_factory=dict)
    simulators: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated_spectrometer(self) -> bool:
        return "topspin" in self.simulators

    def cycler_channel(self, channel: str, limits: CyclerLimits, test_start_unix_s: float | None = None) -> CyclerChannel:
        """A cycler channel with the protocol's limits, on the station's instrument (test time from test_start)."""
        return CyclerChannel(channel, self.smus[channel], self.clock, limits, test_start_unix_s=test_start_unix_s)

    def calibration_for(self, mas_rate_hz: float) -> MasCalibration | None:
        """The station's VT calibration for this MAS rate, if any, for the driver."""
        cal = self.station.vt.calibration_for(mas_rate_hz) if self.station.vt is not None else None
        if cal is None:
            return None
        return MasCalibration(mas_rate_hz=cal.mas_rate_hz, points=tuple(tuple(p) for p in cal.points))

    def close(self) -> None:
        """Leave every instrument safe, release transports, stop simulators. Never raises."""
        for name, smu in self.smus.items():
            try:
                smu.safe_off()
                smu.close()
            except Exception as exc:  # noqa: BLE001 - shutting down must go on
                log.error("closing cycler %s: %s", name, exc)
        if self.vt is not None:
            try:
                self.vt.hold_safe()
                self.vt.close()
            except Exception as exc:  # noqa: BLE001
                log.error("closing VT: %s", exc)
        for name, sim in reversed(list(self.simulators.items())):
            try:
                sim.stop()
            except Exception as exc:  # noqa: BLE001
                log.error("stopping simulator %s: %s", name, exc)


def spectrometer_folders(station: StationSpec, workdir: Path) -> tuple[Path, Path]:
    """(automation folder, data folder) of the station's spectrometer; relative ones live in `workdir`."""
    spec = station.spectrometer
    if spec is None:
        raise ValueError(f"station {station.name!r} has no spectrometer")
    return tuple(p if p.is_absolute() else workdir / p for p in (spec.automation_dir, spec.data_dir))  # type: ignore[return-value]


def open_station(station: StationSpec, clock: Clock, workdir: Path, *, seed: int = 0,
                 cells: dict[str, dict[str, Any]] | None = None) -> StationRuntime:
    """Start what `sim://` asks for, then open every instrument's driver; close all on failure.

    `cells` (channel -> active_mass_g, area_cm2) sizes the simulated cell behind a `sim://` channel.
    """
    runtime = StationRuntime(station=station, clock=clock)
    try:
        _open(runtime, workdir, seed, cells or {})
    except BaseException:
        runtime.close()
        raise
    return runtime


def _open(runtime: StationRuntime, workdir: Path, seed: int, cells: dict[str, dict[str, Any]]) -> None:
    station, clock = runtime.station, runtime.clock
    vt_sim = None
    if station.vt is not None and station.vt.driver == "lakeshore336" and _is_sim(station.vt.port):
        from hardware_sim.vt_sim import IN_PROCESS_COMMAND_GAP_REAL_S, SimulatedLakeShore336

        vt_sim = SimulatedLakeShore336(clock, seed=seed, min_command_gap_real_s=IN_PROCESS_COMMAND_GAP_REAL_S)
        runtime.simulators["vt"] = vt_sim
        vt_sim.start()
    if station.spectrometer is not None:
        spec = station.spectrometer
        automation_dir, data_dir = spectrometer_folders(station, workdir)
        if station.simulated:
            from hardware_sim.topspin_sim import SimulatedTopSpin

            source = vt_sim.model.sample_k if vt_sim is not None else None
            automation_dir.mkdir(parents=True, exist_ok=True)
            data_dir.mkdir(parents=True, exist_ok=True)
            topspin_sim = SimulatedTopSpin(automation_dir, data_dir, clock, temperature_source=source, seed=seed)
            runtime.simulators["topspin"] = topspin_sim
            topspin_sim.start()
        runtime.spectrometer = TopSpinDriver(automation_dir, data_dir, clock,
                                             heartbeat_timeout_s=spec.heartbeat_timeout_s)
    if station.vt is not None:
        vt = station.vt
        limits = VtLimits(min_k=vt.limits.min_k, max_k=vt.limits.max_k, max_ramp_k_per_min=vt.limits.max_ramp_k_per_min)
        if vt.driver == "topspin":
            if runtime.spectrometer is None:
                raise RuntimeError("a TopSpin-controlled VT needs the station's spectrometer")
            runtime.vt = TopSpinVt(runtime.spectrometer, clock, limits)
        else:
            port = vt_sim.link_path if vt_sim is not None else str(vt.port)
            gap = {"min_command_gap_real_s": vt_sim.min_command_gap_real_s} if vt_sim is not None else {}
            runtime.vt = LakeShore336(port, clock, limits, baudrate=vt.baudrate, output=vt.output,
                                      sensor_input=vt.sensor_input, **gap)
    for name, cycler in station.cyclers.items():
        resource = cycler.resource
        if _is_sim(resource):
            from hardware_sim.cell import Li2SCell
            from hardware_sim.smu_sim import SimulatedKeithley2450

            size = cells.get(name, {})
            cell = Li2SCell(active_mass_g=size.get("active_mass_g") or 1.5e-3, area_cm2=size.get("area_cm2") or 0.785,
                            seed=seed)
            smu_sim = SimulatedKeithley2450(clock, cell)
            runtime.simulators[f"cycler:{name}"] = smu_sim
            resource = smu_sim.start()
        runtime.smus[name] = Keithley2450(resource)
