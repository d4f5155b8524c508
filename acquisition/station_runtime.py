"""Opening a station: the one factory that builds instruments from station entries, with preflight and locks.

The runner, `exsylab selftest` and the HIL harness all open instruments here. Only the
instruments a plan's lanes use are opened. A real address is locked first (a second run on it
is refused, naming the holder), then opened and preflighted (identified, configuration checked);
a `sim://` address starts its simulator on its real wire (a pty, a loopback socket, a folder) in
the run folder, and the real driver is pointed at it exactly as at an instrument. Simulation is a
property of each address: virtual time only when every instrument the run opens is simulated.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from drivers.clock import Clock, RealClock, VirtualClock
from drivers.cycler import CyclerChannel, CyclerLimits
from drivers.errors import InstrumentError
from drivers.vt import MasCalibration, TemperatureController
from protocols.station import StationSpec, is_sim

from .instruments import DriverEntry, Kind, UnknownDriver, entry_for, load

log = logging.getLogger(__name__)

SPECTROMETER, VT = "spectrometer", "vt"
TOPSPIN_LOCK_FILE = "exsylab.lock"  # in the automation folder: seen by every computer that shares it


CYCLER_PREFIX = "cycler:"


def cycler_role(channel: str) -> str:
    return f"{CYCLER_PREFIX}{channel}"


class PreflightRefused(Exception):
    """An instrument cannot be used: unknown driver, address not there, wrong configuration, held by another run.

    `field` is where the station file names it (vt.port, cyclers.ch1.resource); one-line message.
    """

    def __init__(self, field: str, address: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.address = address
        self.reason = " ".join(reason.split())


@dataclass(frozen=True)
class Role:
    """One instrument of the station as a run uses it: what kind, which entry, where in the file."""

    name: str  # spectrometer, vt, cycler:<channel>
    kind: Kind
    driver: str
    address: str
    field: str
    entry: dict[str, Any]

    @property
    def simulated(self) -> bool:
        return is_sim(self.address)


LANE_ROLES = {"nmr": (SPECTROMETER, VT)}
"""The instruments a lane uses; a cycler lane `cycler:<ch>` uses the instrument of the same name."""


def roles_of(station: StationSpec, lanes: Iterable[str]) -> list[Role]:
    """The station's instruments that these lanes (or instrument names) use, in the order they must open."""
    wanted = {role for lane in lanes for role in LANE_ROLES.get(lane, (lane,))}
    out: list[Role] = []
    vt, spec = station.vt, station.spectrometer
    if VT in wanted and vt is not None and vt.port is not None:  # a VT on its own wire opens first (a sim TopSpin follows it)
        out.append(Role(VT, "vt", vt.driver, vt.port, "vt.port", vt.model_dump()))
    if SPECTROMETER in wanted and spec is not None:
        out.append(Role(SPECTROMETER, "spectrometer", spec.driver, spec.automation_dir, "spectrometer.automation_dir",
                        spec.model_dump()))
    if VT in wanted and vt is not None and vt.port is None:  # the spectrometer's own VT, through it
        address = spec.automation_dir if spec is not None else "(no spectrometer)"
        out.append(Role(VT, "vt", vt.driver, address, "vt.driver", vt.model_dump()))
    for channel, cycler in station.cyclers.items():
        if cycler_role(channel) in wanted:
            out.append(Role(cycler_role(channel), "cycler", cycler.driver, cycler.resource,
                            f"cyclers.{channel}.resource", {**cycler.model_dump(), "settings": cycler.settings}))
    return out


def needs_virtual_time(roles: list[Role]) -> bool:
    """Virtual time only when every instrument the run opens is in-process (sim://)."""
    return bool(roles) and all(r.simulated for r in roles)


def make_clock(station: StationSpec, roles: list[Role], *, virtual_start_s: float) -> Clock:
    """VirtualClock for an all-simulated run; wall time (or an accelerated bench's shared time) otherwise."""
    if needs_virtual_time(roles):
        return VirtualClock(start=virtual_start_s)
    return RealClock(speed=station.clock_speed, epoch_unix_s=station.clock_epoch_unix_s)


@dataclass
class StationRuntime:
    """The open instruments of a station for one run (the simulators it started, the locks it holds)."""

    station: StationSpec
    clock: Clock
    spectrometer: Any = None
    vt: TemperatureController | None = None
    cyclers: dict[str, Any] = field(default_factory=dict)
    simulators: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    locks: Any = None

    def cycler_channel(self, channel: str, limits: CyclerLimits, test_start_unix_s: float | None = None) -> CyclerChannel:
        """A cycler channel with the protocol's limits, on the station's instrument (test time from test_start)."""
        return CyclerChannel(channel, self.cyclers[channel], self.clock, limits, test_start_unix_s=test_start_unix_s)

    def calibration_for(self, mas_rate_hz: float) -> MasCalibration | None:
        """The station's VT calibration for this MAS rate, if any, for the driver."""
        cal = self.station.vt.calibration_for(mas_rate_hz) if self.station.vt is not None else None
        if cal is None:
            return None
        return MasCalibration(mas_rate_hz=cal.mas_rate_hz, points=tuple((p[0], p[1]) for p in cal.points))

    def close(self, *, make_safe: bool = True) -> None:
        """Leave every instrument safe (unless told not to touch them), release transports and locks. Never raises."""
        for name, cycler in self.cyclers.items():
            if make_safe:
                _quietly(f"switching cycler {name} off", cycler.safe_off)
            _quietly(f"closing cycler {name}", cycler.close)
        if self.vt is not None:
            if make_safe:
                _quietly("holding the VT", self.vt.hold_safe)
            _quietly("closing VT", self.vt.close)
        for name, sim in reversed(list(self.simulators.items())):
            _quietly(f"stopping simulator {name}", sim.stop)
        if self.locks is not None:
            _quietly("releasing instrument locks", self.locks.release)
            self.locks = None


def _quietly(what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - shutting down must go on
        log.error("%s: %s", what, exc)


@dataclass(frozen=True)
class OpenContext:
    """What opening needs beyond the station entries."""

    workdir: Path  # a simulated TopSpin's folders live here (the run folder)
    seed: int = 0
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel -> active_mass_g, area_cm2
    templates: tuple[tuple[str, int, str], ...] = ()  # TopSpin datasets the plan copies parameters from, with their experiment
    io_timeout_s: float | None = None  # selftest's shorter reply timeout
    station_held: bool = False  # this process already holds every real instrument (exsylab serve): no locks of its own


def lock_key(role: Role) -> str:
    """One spelling per instrument: a serial device through its symlinks, COM ports upper-case, folders resolved."""
    address = role.address
    if role.kind == "spectrometer":
        return "topspin:" + os.path.realpath(address)
    if re.fullmatch(r"(?i)com\d+", address):
        return address.upper()
    if address.startswith("/") or "\\" in address:
        return os.path.realpath(address)
    return address


def lock_real(runtime: StationRuntime, roles: list[Role], holder: str) -> None:
    """Take the lock of every real instrument in `roles`, all or nothing; PreflightRefused naming the holder."""
    from .instrument_locks import InstrumentInUse, default_lock_dir, hold_instruments

    real = [r for r in roles if not r.simulated and r.field != "vt.driver"]  # a TopSpin VT is its spectrometer's
    if not real:
        return
    extra: list[Path] = []
    spectrometer = next((r for r in real if r.kind == "spectrometer"), None)
    if spectrometer is not None and Path(spectrometer.address).is_dir():
        extra.append(Path(spectrometer.address) / TOPSPIN_LOCK_FILE)  # seen by every computer sharing the folder
    keys = {lock_key(r): r for r in real}
    try:
        runtime.locks = hold_instruments(list(keys), holder, lock_dir=runtime.station.lock_dir or default_lock_dir(),
                                         extra_lock_files=extra)
    except InstrumentInUse as exc:
        role = keys.get(exc.what.removeprefix("instrument "), spectrometer if spectrometer is not None else real[0])
        raise PreflightRefused(role.field, role.address, str(exc)) from None
    except OSError as exc:  # a lock folder or a shared automation folder that cannot be written
        role = spectrometer if spectrometer is not None else real[0]
        raise PreflightRefused(role.field, role.address, f"cannot take the instrument lock: {exc}") from None


def _entry(role: Role) -> DriverEntry:
    try:
        return entry_for(role.kind, role.driver)
    except UnknownDriver as exc:
        field = role.field if role.field == "vt.driver" else role.field.rsplit(".", 1)[0] + ".driver"
        raise PreflightRefused(field, role.driver, str(exc)) from None


def open_role(runtime: StationRuntime, role: Role, ctx: OpenContext) -> None:
    """Open (and for sim:// first start) one instrument, then preflight it; PreflightRefused on any problem."""
    entry = _entry(role)
    address = role.address
    context: dict[str, Any] = {"seed": ctx.seed, "peers": runtime.simulators, "templates": ctx.templates,
                               "workdir": ctx.workdir}
    if ctx.io_timeout_s is not None:
        context["timeout_s"] = ctx.io_timeout_s
    if role.kind == "spectrometer":
        automation_dir, data_dir = runtime.station.spectrometer.folders(ctx.workdir)  # type: ignore[union-attr]
        context.update(automation_dir=automation_dir, data_dir=data_dir)
        address = str(automation_dir)
    elif role.kind == "cycler":
        context["cell"] = ctx.cells.get(role.name.split(":", 1)[1], {})
    elif role.field == "vt.driver":
        context["spectrometer"] = runtime.spectrometer
    try:
        if role.simulated and entry.simulator is not None:
            simulator, address = load(entry.simulator)(role.entry, runtime.clock, **context)
            runtime.simulators[role.name] = simulator
            context["simulator"] = simulator
        driver = load(entry.driver)(role.entry, address, runtime.clock, **context)
    except InstrumentError as exc:
        raise PreflightRefused(role.field, role.address, f"cannot open: {exc}") from None
    except (OSError, ValueError) as exc:  # a driver that let a transport error through
        raise PreflightRefused(role.field, role.address, f"cannot open: {type(exc).__name__}: {exc}") from None
    _attach(runtime, role, driver)
    try:
        summary = driver.preflight(ctx.templates) if role.kind == "spectrometer" else driver.preflight()
    except InstrumentError as exc:
        raise PreflightRefused(role.field, role.address, str(exc)) from None
    runtime.summaries[role.name] = summary  # the run logs it into its own run.log


def _attach(runtime: StationRuntime, role: Role, driver: Any) -> None:
    if role.kind == "spectrometer":
        runtime.spectrometer = driver
    elif role.kind == "vt":
        runtime.vt = driver
    else:
        runtime.cyclers[role.name.split(":", 1)[1]] = driver


def open_station(station: StationSpec, clock: Clock, roles: list[Role], ctx: OpenContext, *, holder: str,
                 phase: Callable[[Role], bool] = lambda role: True, runtime: StationRuntime | None = None) -> StationRuntime:
    """Lock, open and preflight the `roles` for which `phase(role)` holds; close everything on failure.

    A run calls it twice: real instruments before its folder exists, simulated ones inside it.
    """
    for role in roles:  # every driver name is checked before anything is opened, in either phase
        _entry(role)
    runtime = runtime or StationRuntime(station=station, clock=clock)
    try:
        chosen = [r for r in roles if phase(r)]
        if not ctx.station_held:
            lock_real(runtime, chosen, holder)
        for role in chosen:
            open_role(runtime, role, ctx)
    except BaseException:
        runtime.close(make_safe=False)
        raise
    return runtime


def hold_station(station: StationSpec, holder: str) -> Any:
    """Lock every real instrument of the station, for `exsylab serve` to hold between its runs (None: all simulated).

    PreflightRefused names the instrument and its holder when another run or command has one.
    """
    runtime = StationRuntime(station=station, clock=RealClock())
    lock_real(runtime, roles_of(station, [*LANE_ROLES["nmr"], *(cycler_role(c) for c in station.cyclers)]), holder)
    return runtime.locks
