"""`exsylab selftest`: a safe preflight of a bench before an overnight run.

Every instrument answers and identifies itself; the VT reading lies within the probe limits;
the TopSpin side beats, answers a job, and can create and delete a scratch dataset; each cycler
channel reports its output off and reads the open-circuit voltage. Nothing is heated or left
behind: the VT set point is not touched; a cycler's output is on only for its one open-circuit
reading, as a 0 A current source (no load on the cell), and off again afterwards.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from typing import TYPE_CHECKING

from drivers.clock import Clock, RealClock
from protocols import InputError
from protocols.loader import load_station
from protocols.station import CyclerSpec, StationSpec

if TYPE_CHECKING:  # drivers load only when a selftest runs, not for every CLI command
    from drivers.source_meter import SourceMeter
    from drivers.topspin import TopSpinDriver
    from drivers.vt import TemperatureController

    from .station_runtime import StationRuntime

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
SCRATCH_PREFIX = "exsylab_selftest_"
SPECTROMETER_ROLE, VT_ROLE = "spectrometer", "vt"


@dataclass(frozen=True)
class Check:
    """One line of the selftest table."""

    instrument: str
    check: str
    ok: bool
    detail: str


class _Checks:
    """Collects checks; a failing check never stops the others."""

    def __init__(self) -> None:
        self.results: list[Check] = []

    def run(self, instrument: str, check: str, probe: Callable[[], tuple[bool, str]]) -> bool:
        try:
            ok, detail = probe()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a table row
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.results.append(Check(instrument, check, ok, detail))
        return ok


def selftest(station: StationSpec, *, clock: Clock | None = None, workdir: Path | None = None,
             timeout_s: float = 2.0) -> list[Check]:
    """Run every check against the station's instruments; returns one Check per row.

    Instruments open through the same factory as a run's (locks, then open and preflight), each on
    its own so that one missing instrument does not hide the others; `sim://` ones start their
    simulators in `workdir` (default: a temporary folder). Raises PreflightRefused when another
    run holds one of the instruments.
    """
    from .station_runtime import CYCLER_PREFIX, OpenContext, PreflightRefused, StationRuntime, lock_real, open_role
    from .station_runtime import roles_of

    roles = roles_of(station, [SPECTROMETER_ROLE, VT_ROLE, *(CYCLER_PREFIX + c for c in station.cyclers)])
    clock = clock or RealClock(speed=station.clock_speed, epoch_unix_s=station.clock_epoch_unix_s)
    checks = _Checks()
    with tempfile.TemporaryDirectory(prefix="exsylab-selftest-") as tmp:
        ctx = OpenContext(workdir=workdir or Path(tmp), io_timeout_s=timeout_s)
        runtime = StationRuntime(station=station, clock=clock)
        try:
            lock_real(runtime, roles, holder="exsylab selftest")
            for role in roles:
                def probe(role=role) -> tuple[bool, str]:
                    try:
                        open_role(runtime, role, ctx)
                    except PreflightRefused as exc:
                        return False, exc.reason
                    return True, runtime.summaries[role.name]

                checks.run(_instrument_label(role.name), "open and preflight", probe)
            _check_runtime(runtime, checks)
        finally:
            runtime.close(make_safe=False)  # the bench stays as the user left it
    return checks.results


def _instrument_label(role: str) -> str:
    return {"spectrometer": "TopSpin", "vt": "VT"}.get(role, role.replace(":", " "))


def _check_runtime(runtime: StationRuntime, checks: _Checks) -> None:
    """The deeper checks, for each instrument that passed its preflight (`runtime.summaries`)."""
    passed = runtime.summaries
    if runtime.spectrometer is not None and "spectrometer" in passed:
        _check_topspin(runtime.spectrometer, checks)
    if runtime.vt is not None and runtime.station.vt is not None and "vt" in passed:
        _check_vt(runtime.vt, checks)
    from .program_cycler_lane import is_program_driver

    for name, smu in runtime.cyclers.items():
        if f"cycler:{name}" in passed:
            spec = runtime.station.cyclers[name]
            if is_program_driver(spec.driver):
                _check_program_cycler(name, smu, checks)
            else:
                _check_cycler(name, smu, spec, checks)


def _check_program_cycler(name: str, channel: Any, checks: _Checks) -> None:
    """A program-running cycler's channel: its state and last voltage, read only (nothing is started)."""

    def state() -> tuple[bool, str]:
        s = channel.state()
        voltage = f"{s.voltage_v:.4f} V" if s.voltage_v is not None else "no voltage"
        job = f", job {s.label}" if s.label else ""
        reason = f" ({s.reason})" if s.reason else ""
        return s.state not in ("alarm", "protection"), f"state {s.state}{reason}, last voltage {voltage}{job}"

    checks.run(f"cycler {name}", "channel state", state)


def _check_topspin(driver: TopSpinDriver, checks: _Checks) -> None:
    def heartbeat() -> tuple[bool, str]:
        alive = driver.is_alive()
        return alive, f"{driver.heartbeat_path} fresh" if alive else f"{driver.heartbeat_path} missing or stale"

    if not checks.run("TopSpin", "heartbeat", heartbeat):
        return

    def ping() -> tuple[bool, str]:
        start = time.monotonic()
        driver.ping()
        return True, f"job round trip {1000 * (time.monotonic() - start):.0f} ms"

    if not checks.run("TopSpin", "job round trip", ping):
        return

    def scratch() -> tuple[bool, str]:
        name = f"{SCRATCH_PREFIX}{os.getpid()}_{int(time.time())}"
        if (driver.data_dir / name).exists():
            return False, f"scratch name {name} already exists; not touched"
        path = driver.create_dataset(name, 1)
        created = path.is_dir()
        driver.delete_dataset(name, 1)
        gone = not (driver.data_dir / name).exists()
        return created and gone, f"created and deleted {path}" if created and gone else \
            f"{path}: created {created}, deleted {gone}"

    checks.run("TopSpin", "scratch dataset", scratch)


def _check_vt(vt: TemperatureController, checks: _Checks) -> None:
    if not checks.run("VT", "identify", lambda: (True, vt.identify())):
        return

    def reading() -> tuple[bool, str]:
        sensor_k = vt.read_sensor_k()
        ok = vt.limits.min_k <= sensor_k <= vt.limits.max_k
        return ok, f"sensor {sensor_k:.2f} K; probe limits {vt.limits.min_k:g}..{vt.limits.max_k:g} K"

    checks.run("VT", "reading sane", reading)


def _check_cycler(name: str, smu: SourceMeter, spec: CyclerSpec, checks: _Checks) -> None:
    instrument = f"cycler {name}"
    if not checks.run(instrument, "identify", lambda: (True, smu.identify())):
        return

    def output_off() -> tuple[bool, str]:
        on = smu.output_is_on()
        return (not on), "output off" if not on else "output is ON (in use?); selftest leaves it alone"

    if not checks.run(instrument, "output off", output_off):
        return

    def ocv() -> tuple[bool, str]:
        voltage_v = smu.measure_open_circuit_v(spec.voltage_max_v)
        ok = spec.voltage_min_v <= voltage_v <= spec.voltage_max_v
        return ok, f"{voltage_v:.4f} V with the output off (limits {spec.voltage_min_v:g}..{spec.voltage_max_v:g} V)"

    checks.run(instrument, "open-circuit voltage", ocv)


def print_table(results: list[Check], console: Console, title: str) -> None:
    """The checks as a table (instrument, check, result, detail)."""
    table = Table(title=title)
    for column in ("instrument", "check", "result", "detail"):
        table.add_column(column, overflow="fold")
    order = list(dict.fromkeys(r.instrument for r in results))
    for r in sorted(results, key=lambda r: order.index(r.instrument)):
        table.add_row(r.instrument, r.check, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
    console.print(table)


def add_selftest_parser(sub: Any) -> None:
    """The `selftest` subcommand's arguments."""
    p = sub.add_parser("selftest", help="check every instrument of a station safely before a run; changes nothing")
    p.add_argument("--station", required=True, help="station file (YAML)")
    p.add_argument("--timeout", type=float, default=2.0, help="I/O timeout per instrument reply, real seconds")
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    """Exit 0 when every check passes, 1 on any failure, 2 for a bad station file."""
    try:
        station = load_station(args.station)
    except InputError as exc:
        print(f"exsylab: refused: {exc.message()}", file=sys.stderr)
        return EXIT_REFUSED
    from .station_runtime import PreflightRefused

    try:
        results = selftest(station, timeout_s=args.timeout)
    except PreflightRefused as exc:
        print(f"exsylab: refused: {args.station}: {exc.field} = {exc.address!r}: {exc.reason}", file=sys.stderr)
        return EXIT_REFUSED
    console = Console(width=max(Console().width, 120))
    print_table(results, console, f"selftest of {station.name}")
    failed = [r for r in results if not r.ok]
    if not results:
        console.print("[red]the station lists no instruments[/red]")
        return EXIT_FAILED
    console.print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    return EXIT_FAILED if failed else EXIT_OK
