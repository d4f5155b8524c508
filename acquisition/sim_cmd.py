"""`exsylab sim`: the simulated bench as its own process, with a station file pointing at it.

The runner, `exsylab selftest` or any pyserial/pyvisa client then drive the simulators exactly
as they would a real bench. Runs until Ctrl-C or SIGTERM, then stops the simulators and keeps
the data folder and the station file.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from protocols.loader import parse_station

from .run_folder import write_atomic


def add_sim_parser(sub: Any) -> None:
    """The `sim` subcommand's arguments."""
    p = sub.add_parser("sim", help="run the simulated bench in this process and write a station file for it")
    p.add_argument("--station-out", required=True, help="station file to write (YAML)")
    p.add_argument("--speed", type=float, default=600.0, help="simulated seconds per real second (default 600)")
    p.add_argument("--workdir", help="folder for the automation and data folders (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulators' noise")
    p.set_defaults(func=cmd_sim)


def write_station_file(path: Path, station: dict[str, Any]) -> None:
    """Validate the station description as the runner will, then write it atomically."""
    parse_station(station, path)
    header = ("# Written by `exsylab sim`: a simulated bench in its own process. Valid while it runs.\n"
              "# Template dataset for protocols: exsylab_template, expno 1.\n")
    write_atomic(path, header + yaml.safe_dump(station, sort_keys=False))


def cmd_sim(args: argparse.Namespace) -> int:
    """Start the bench, write the station file, serve until Ctrl-C/SIGTERM, stop cleanly."""
    from hardware_sim.bench import SimBench  # simulators load only for this command

    if not 0 < args.speed <= 100_000:
        print(f"exsylab: refused: --speed {args.speed:g} must be in (0, 100000]", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="exsylab-sim-"))
    station_out = Path(args.station_out)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    bench = SimBench(workdir, speed=args.speed, seed=args.seed)
    try:
        station = bench.start()
        write_station_file(station_out, station)
        print(f"simulated bench running at speed {args.speed:g}", flush=True)
        print(f"  station file : {station_out.resolve()}")
        print(f"  VT (pty)     : {station['vt']['port']}")
        for name, cycler in station["cyclers"].items():
            where = cycler["resource"]
            if cycler["driver"] == "neware-bts":
                where += f" (Neware BTS, channel {cycler['device_id']}-{cycler['subdevice_id']}-{cycler['channel_id']})"
            print(f"  cycler {name:6s}: {where}")
        print(f"  TopSpin      : automation {bench.automation_dir}, data {bench.data_dir}")
        print(f"  template     : {bench.template[0]}/{bench.template[1]}")
        print("Ctrl-C or SIGTERM stops it.", flush=True)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        bench.stop()
        signal.signal(signal.SIGTERM, previous)
    print(f"simulated bench stopped; data kept in {bench.data_dir}; station file {station_out} now points at "
          "stopped simulators", flush=True)
    return 0
