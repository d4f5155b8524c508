"""Simulated TopSpin: runs the real TopSpin-side script against a simulated TopSpin API.

SimulatedTopSpin serves the automation folder exactly as TopSpin with
drivers/topspin_side/exsylab_automation.py does: the same script runs in a CPython thread with
`SimTopSpinAPI` injected (or under real Jython through the loopback kernel, see
`serve_kernel`). Acquisitions take their pulse-sequence time on the simulator's clock, computed
lazily from clock.now(), and leave datasets written by hardware_sim.nmr_dataset.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from drivers.bruker_params import expno_has_data
from drivers.topspin_side import exsylab_automation as script
from hardware_sim import nmr_dataset
from hardware_sim.topspin_api_kernel import start_kernel
from hardware_sim.topspin_params import (DEFAULT_EXSY_PARAMS, canonical_key, coerce, is_f1_key, exsylab_name, lookup,
                                         read_parameter_files, write_parameter_files)

log = logging.getLogger(__name__)

FAULTS = ("dead", "acq_error", "spinning_failure", "disk_full")
TEMPLATE_NAME = "exsylab_template"
BVT_TIME_CONSTANT_S = 120.0
JYTHON_SHIM_DIR = Path(__file__).resolve().parent


class SimTopSpinError(RuntimeError):
    """An error as TopSpin would report it (the message reaches the host in JobFailed)."""


@dataclass
class _Acquisition:
    path: Path
    params: dict[str, object]
    start_s: float
    duration_s: float
    seed: int
    state: str = "running"            # running | done | failed
    message: str = ""
    halt_requested: bool = False
    done_event: threading.Event = field(default_factory=threading.Event)


class SimTopSpinAPI:
    """The TopSpin scripting calls (RE, CURDATA, GETPAR, PUTPAR, XCMD) the script uses, simulated.

    While the "dead" fault is injected every call hangs (a TopSpin that froze), so the script
    neither answers jobs nor beats, until the fault is cleared or the simulator stops.
    """

    def __init__(self, sim: "SimulatedTopSpin") -> None:
        self.sim = sim

    def __getattribute__(self, name: str):
        if not name.startswith("_") and name != "sim":
            object.__getattribute__(self, "sim").hang_while_dead()
        return object.__getattribute__(self, name)

    def RE(self, dataset: list) -> None:
        self.sim.open_dataset(Path(dataset[3]) / dataset[0] / str(dataset[1]))

    def CURDATA(self) -> list:
        path = self.sim.current
        return [path.parent.name, path.name, "1", str(path.parent.parent)]

    def GETPAR(self, name: str) -> str:
        return self.sim.getpar(name)

    def PUTPAR(self, name: str, value: str) -> None:
        self.sim.putpar(name, value)

    def XCMD(self, command: str, wait: bool) -> int:
        return self.sim.xcmd(command, bool(wait))

    def TESET(self, temperature_k: float) -> None:
        self.sim.teset(float(temperature_k))

    def TEGET(self) -> float:
        return self.sim.sample_temperature_k()

    def MASR(self) -> float:
        return self.sim.mas_rate_now_hz()

    def now(self) -> float:
        return self.sim.clock.now()

    def should_stop(self) -> bool:
        return self.sim.serving_should_stop()


class SimulatedTopSpin:
    """A TopSpin that watches an automation folder through the real TopSpin-side script."""

    def __init__(self, automation_dir: Path, data_dir: Path, clock, *,
                 temperature_source: Callable[[], float] | None = None, mas_rate_hz: float = 10_000.0,
                 sample=None, seed: int = 0, poll_real_s: float = 0.002) -> None:
        self.automation_dir = Path(automation_dir)
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.temperature_source = temperature_source
        self.mas_rate_hz = float(mas_rate_hz)
        self.sample = sample
        self.seed = seed
        self.poll_real_s = poll_real_s
        self.api = SimTopSpinAPI(self)
        self.faults: set[str] = set()
        self._lock = threading.RLock()
        self._params: dict[Path, dict[str, object]] = {}
        self._acquisition: _Acquisition | None = None
        self._acquisition_count = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._kernel = None
        self._alive = threading.Event()
        self._alive.set()
        self._bvt_target_k = 293.0
        self._bvt_from_k = 293.0
        self._bvt_since_s = clock.now()
        self.template = self.data_dir / TEMPLATE_NAME / "1"
        self.current = self.template

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Make the template dataset and run the TopSpin-side script in a CPython thread."""
        self._ensure_template()
        self._stopping = False
        self._start_thread()

    def _ensure_template(self) -> None:
        """Write the template dataset (6Li EXSY defaults) unless a previous run left one."""
        if not (self.template / "acqu").exists():
            self._params[self.template] = dict(DEFAULT_EXSY_PARAMS)
            write_parameter_files(self.template, DEFAULT_EXSY_PARAMS)
        else:  # a restarted TopSpin knows its datasets from their files
            self._params[self.template] = read_parameter_files(self.template)

    def _start_thread(self) -> None:
        argv = ["--automation", str(self.automation_dir), "--data", str(self.data_dir),
                "--poll", repr(self.poll_real_s), "--announce", "no"]
        self._thread = threading.Thread(target=script.main, args=(argv,), kwargs={"api": self.api},
                                        name="sim-topspin-script", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the script thread and the kernel (the acquisition engine stays consistent)."""
        self._stopping = True
        self._alive.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._kernel is not None:
            self._kernel.shutdown()
            self._kernel.server_close()
            self._kernel = None

    def __enter__(self) -> "SimulatedTopSpin":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serving_should_stop(self) -> bool:
        """True once stop() was called (the script then leaves its loop)."""
        return self._stopping

    def hang_while_dead(self) -> None:
        """Block the caller (the script) while the "dead" fault is injected."""
        while "dead" in self.faults and not self._stopping:
            self._alive.wait(0.05)

    def serve_kernel(self) -> int:
        """Serve this API on 127.0.0.1 for a Jython-hosted script; return the port."""
        self._ensure_template()
        self._stopping = False
        self._kernel = start_kernel(self.api)
        return self._kernel.server_address[1]

    def jython_argv(self, port: int, jython: str = "jython") -> list[str]:
        """Command line that runs the TopSpin-side script under Jython against the kernel."""
        return [jython, "-B", script.__file__, "--automation", str(self.automation_dir),
                "--data", str(self.data_dir), "--poll", "0.01", "--sim-kernel", f"127.0.0.1:{port}"]

    def jython_env(self) -> dict[str, str]:
        """Environment for jython_argv: the client shim on JYTHONPATH."""
        env = dict(os.environ)
        env["JYTHONPATH"] = str(JYTHON_SHIM_DIR)
        env.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")  # faster JVM start
        return env

    # ---- faults ------------------------------------------------------------------------
    def inject(self, fault: str) -> None:
        """Inject "dead", "acq_error", "spinning_failure" or "disk_full"."""
        if fault not in FAULTS:
            raise ValueError(f"unknown TopSpin fault {fault!r}; known: {', '.join(FAULTS)}")
        log.info("simulated TopSpin: injecting fault %s", fault)
        with self._lock:
            self.faults.add(fault)
            if fault == "dead":
                self._alive.clear()
            self._advance()

    def clear_faults(self) -> None:
        """Remove every fault; a frozen ("dead") script carries on."""
        with self._lock:
            self.faults.clear()
            self._alive.set()

    # ---- datasets and parameters -------------------------------------------------------
    def _checked_path(self, path: Path) -> Path:
        resolved = Path(os.path.normpath(path))
        if self.data_dir.resolve() not in resolved.resolve().parents:
            raise SimTopSpinError(f"dataset {path} is outside the data directory {self.data_dir}")
        return resolved

    def open_dataset(self, path: Path) -> None:
        """RE: make `path` the current dataset (it must exist, as in TopSpin)."""
        path = self._checked_path(path)
        with self._lock:
            self._advance()
            if path not in self._params:
                if not (path / "acqu").exists():
                    raise SimTopSpinError(f"RE: dataset {path} does not exist")
                self._params[path] = read_parameter_files(path)
            self.current = path

    def getpar(self, name: str) -> str:
        """GETPAR on the current dataset; unknown names are TopSpin errors."""
        with self._lock:
            self._advance()
            key = exsylab_name(name)
            try:
                value = lookup(self._params[self.current], key)
            except KeyError:
                raise SimTopSpinError(f"GETPAR: unknown parameter {name!r} in {self.current}") from None
            return str(value)

    def putpar(self, name: str, value: str) -> None:
        """PUTPAR on the current dataset; rewrites acqu or acqu2 as TopSpin does."""
        with self._lock:
            self._advance()
            self._refuse_if_disk_full(self.current / "acqu")
            self._refuse_if_acquiring(self.current, "PUTPAR")
            params = self._params[self.current]
            key = canonical_key(params, exsylab_name(name))
            params[key] = coerce(value)
            write_parameter_files(self.current, params, dimensions="2" if is_f1_key(key) else "1",
                                  status_files=False)

    def _refuse_if_disk_full(self, target: Path) -> None:
        if "disk_full" in self.faults:
            raise SimTopSpinError(f"disk full: no space left on device writing {target}")

    def _refuse_if_acquiring(self, path: Path, what: str) -> None:
        acq = self._acquisition
        if acq is not None and acq.state == "running" and acq.path == path:
            raise SimTopSpinError(f"{what}: acquisition running in {path}")

    # ---- commands ----------------------------------------------------------------------
    def xcmd(self, command: str, wait: bool) -> int:
        """XCMD: wrpa, zg, halt/stop; anything else is an unknown command."""
        words = shlex.split(command)
        if not words:
            raise SimTopSpinError("XCMD: empty command")
        verb = words[0].lower()
        if verb == "wrpa":
            return self._wrpa(words[1:])
        if verb == "zg":
            return self._zg(wait)
        if verb in ("halt", "stop"):
            return self._halt()
        raise SimTopSpinError(f"XCMD: command {command!r} not known to the simulated TopSpin")

    def _wrpa(self, args: list[str]) -> int:
        if len(args) != 4:
            raise SimTopSpinError("wrpa: expected NAME EXPNO PROCNO DIR")
        name, expno, _procno, folder = args
        target = self._checked_path(Path(folder) / name / expno)
        with self._lock:
            self._advance()
            self._refuse_if_disk_full(target)
            if expno_has_data(target):
                raise SimTopSpinError(f"wrpa: {target} holds data; not overwritten")
            params = dict(self._params[self.current])
            self._params[target] = params
            write_parameter_files(target, params)
        return 0

    def _zg(self, wait: bool) -> int:
        with self._lock:
            self._advance()
            path = self.current
            if self._acquisition is not None and self._acquisition.state == "running":
                raise SimTopSpinError(f"zg: acquisition already running in {self._acquisition.path}")
            if expno_has_data(path):
                raise SimTopSpinError(f"zg: {path} holds data; TopSpin would ask to overwrite")
            self._refuse_if_disk_full(path / "ser")
            if "spinning_failure" in self.faults:
                raise SimTopSpinError(f"zg: spinning failure: MAS rate 0 Hz (set {self.mas_rate_hz:.0f} Hz)")
            params = dict(self._params[path])
            params["DATE"] = self.clock.now()  # acqus DATE and audit times follow the simulator's clock
            self._acquisition_count += 1
            acq = _Acquisition(path=path, params=params, start_s=self.clock.now(),
                               duration_s=nmr_dataset.acquisition_duration_s(params),
                               seed=self.seed + self._acquisition_count)
            self._acquisition = acq
            (path / "ser").touch()  # TopSpin creates ser when the acquisition starts
            log.info("simulated TopSpin: zg in %s for %.1f s", path, acq.duration_s)
        if not wait:
            return 0
        while not acq.done_event.wait(self.poll_real_s):
            if self._stopping:
                raise SimTopSpinError("zg: TopSpin was closed during the acquisition")
            with self._lock:
                self._advance()
        if acq.state == "failed":
            raise SimTopSpinError(acq.message)
        return 0

    def _halt(self) -> int:
        with self._lock:
            acq = self._acquisition
            if acq is not None and acq.state == "running":
                acq.halt_requested = True
                self._advance()
        return 0

    def _advance(self) -> None:
        """Bring the running acquisition up to clock.now(): finish, fail or leave it running."""
        acq = self._acquisition
        if acq is None or acq.state != "running":
            return
        now = self.clock.now()
        elapsed = now - acq.start_s
        fraction = min(1.0, max(0.0, elapsed / acq.duration_s)) if acq.duration_s > 0 else 1.0
        failure = None
        if acq.halt_requested:
            failure = f"acquisition halted by request after {elapsed:.1f} s of {acq.duration_s:.1f} s"
        elif "spinning_failure" in self.faults:
            failure = (f"spinning failure: MAS rate fell to 0 Hz (set {self.mas_rate_hz:.0f} Hz); "
                       f"acquisition stopped after {elapsed:.1f} s")
        elif "acq_error" in self.faults:
            failure = f"acquisition error: receiver overflow (ADC) after {elapsed:.1f} s"
        elif "disk_full" in self.faults:
            failure = f"disk full: no space left on device writing {acq.path / 'ser'}"
        if failure is None and elapsed < acq.duration_s:
            return
        placeholder = acq.path / "ser"
        if placeholder.exists() and placeholder.stat().st_size == 0:
            placeholder.unlink()  # the writer creates the real ser (and never writes over one)
        if failure is not None:
            acq.state, acq.message = "failed", failure
            if "disk_full" not in self.faults:
                nmr_dataset.write_partial_dataset(acq.path, acq.params, self.sample_temperature_k(), fraction,
                                                  sample=self.sample, seed=acq.seed)
            log.warning("simulated TopSpin: %s (%s)", failure, acq.path)
        else:
            nmr_dataset.write_acquired_dataset(acq.path, acq.params, self.sample_temperature_k(),
                                               sample=self.sample, seed=acq.seed)
            acq.state, acq.message = "done", "acquisition finished"
        acq.done_event.set()

    # ---- VT and MAS --------------------------------------------------------------------
    def teset(self, temperature_k: float) -> None:
        """Set the BVT target; the sample follows with a first-order lag."""
        if not 100.0 <= temperature_k <= 500.0:
            raise SimTopSpinError(f"teset: {temperature_k} K outside the BVT range 100..500 K")
        with self._lock:
            self._bvt_from_k = self._bvt_model_k()
            self._bvt_since_s = self.clock.now()
            self._bvt_target_k = temperature_k

    def _bvt_model_k(self) -> float:
        elapsed = max(0.0, self.clock.now() - self._bvt_since_s)
        return self._bvt_target_k + (self._bvt_from_k - self._bvt_target_k) * math.exp(-elapsed / BVT_TIME_CONSTANT_S)

    def sample_temperature_k(self) -> float:
        """The sample temperature: the VT simulator's when given, else the built-in BVT model."""
        if self.temperature_source is not None:
            return float(self.temperature_source())
        return self._bvt_model_k()

    def mas_rate_now_hz(self) -> float:
        """The MAS rate now: 0 after a spinning failure."""
        return 0.0 if "spinning_failure" in self.faults else self.mas_rate_hz



def simulate_for_station(entry: dict, clock, *, seed: int = 0, automation_dir: Path, data_dir: Path,
                         peers: dict | None = None, templates: tuple[tuple[str, int], ...] = (),
                         **_context: object) -> tuple[SimulatedTopSpin, str]:
    """The registry's way in: a simulated TopSpin on the run's folders, holding the templates a user would have set up.

    Its sample temperature follows a simulated VT in `peers`, if the station has one.
    """
    vt = (peers or {}).get("vt")
    automation_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, expno in templates:
        path = data_dir / name / str(expno)
        if not (path / "acqu").exists():
            write_parameter_files(path, DEFAULT_EXSY_PARAMS)
    sim = SimulatedTopSpin(automation_dir, data_dir, clock, seed=seed,
                           temperature_source=vt.model.sample_k if vt is not None else None)
    sim.start()
    return sim, str(automation_dir)
