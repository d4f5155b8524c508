"""Simulated TopSpin: runs the real TopSpin-side script against a simulated TopSpin API.

SimulatedTopSpin serves the automation folder exactly as TopSpin with
drivers/topspin_side/exsylab_automation.py does: the same script runs in a CPython thread with
`SimTopSpinAPI` injected (or under real Jython through the loopback kernel, see
`serve_kernel`). Modelled as documented (docs/dialects/topspin.md): current (acqu) and status
(acqus) parameters kept apart (PUTPAR/GETPAR vs acquisition, teget, masg/GETPARSTAT); one current
dataset per command thread (RE); XCMD returns a result object whose getResult() is negative for a
failed zg; EXEC_PYSCRIPT runs a script in its own command thread; wrpa copies the raw data too and
refuses an existing target; the template holds a test acquisition; datasets are float64 (DTYPA 2)
unless int32 is asked for. Acquisitions take their pulse-sequence time on the simulator's clock,
computed lazily from clock.now(), and leave datasets written by hardware_sim.nmr_dataset.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from drivers.bruker_params import expno_has_data
from drivers.topspin_side import exsylab_automation as script
from hardware_sim import nmr_dataset
from hardware_sim.nmr_physics import sample_from_station
from hardware_sim.topspin_api_client import XcmdResult
from hardware_sim.topspin_api_kernel import KernelServer, start_kernel
from hardware_sim.topspin_params import (DEFAULT_EXSY_PARAMS, canonical_key, coerce, is_f1_key, exsylab_name, lookup,
                                         read_parameter_files, write_parameter_files)

log = logging.getLogger(__name__)

FAULTS = ("dead", "acq_error", "spinning_failure", "disk_full")
WAIT_TILL_DONE, NO_WAIT_TILL_DONE = 1, 0  # TopCmds.py's constants
ZG_FAILED = -1  # XCMD result code of a failed zg (TopSpin scripts test getResult() < 0)
TEMPLATE_NAME = "exsylab_template"
BVT_TIME_CONSTANT_S = 120.0
JYTHON_SHIM_DIR = Path(__file__).resolve().parent
TEMPLATE_VDLIST_S = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # a T1 template's vdlist (TD1 = 8)
# Template parameter sets by experiment kind, over DEFAULT_EXSY_PARAMS (the TopSpin pulse-program names).
TEMPLATE_KINDS: dict[str, dict[str, object]] = {
    "exsy": {},
    "1d": {"PULPROG": "zg", "PARMODE": 0, "D1": 5.0, "NS": 8, "DS": 2},
    "satrect": {"PULPROG": "satrect", "FnMODE": 1, "TD1": 8, "D1": 1.0, "NS": 8, "DS": 2, "VDLIST": "vdlist"},
    "t1ir": {"PULPROG": "t1ir", "FnMODE": 1, "TD1": 8, "D1": 5.0, "NS": 8, "DS": 2, "VDLIST": "vdlist"},
}


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
    command_thread: threading.Thread | None = None   # the command thread whose zg runs this acquisition
    done_event: threading.Event = field(default_factory=threading.Event)


class SimTopSpinAPI:
    """The TopSpin scripting calls the script uses (TopCmds: RE, CURDATA, GETPAR, GETPARSTAT, PUTPAR, XCMD,
    EXEC_PYSCRIPT), simulated.

    While the "dead" fault is injected every call hangs (a TopSpin that froze), so the script
    neither answers jobs nor beats, until the fault is cleared or the simulator stops.
    """

    def __init__(self, sim: "SimulatedTopSpin") -> None:
        self.sim = sim

    def __getattribute__(self, name: str):
        if not name.startswith("_") and name != "sim":
            object.__getattribute__(self, "sim").hang_while_dead()
        return object.__getattribute__(self, name)

    def RE(self, dataset: list, show: str = "n") -> None:
        self.sim.open_dataset(Path(dataset[3]) / dataset[0] / str(dataset[1]))

    def CURDATA(self) -> list:
        path = self.sim.current
        return [path.parent.name, path.name, "1", str(path.parent.parent)]

    def GETPAR(self, name: str) -> str:
        return self.sim.getpar(name, status=False)

    def GETPARSTAT(self, name: str) -> str:
        return self.sim.getpar(name, status=True)

    def PUTPAR(self, name: str, value: str) -> None:
        self.sim.putpar(name, value)

    def XCMD(self, command: str, wait: object = WAIT_TILL_DONE) -> XcmdResult:
        return self.sim.xcmd(command, bool(wait))

    def EXEC_PYSCRIPT(self, text: str) -> None:
        self.sim.exec_pyscript(text)

    def topspin_version(self) -> str:
        return self.sim.topspin_version

    def now(self) -> float:
        return self.sim.clock.now()

    def should_stop(self) -> bool:
        return self.sim.serving_should_stop()


class SimulatedTopSpin:
    """A TopSpin that watches an automation folder through the real TopSpin-side script."""

    def __init__(self, automation_dir: Path, data_dir: Path, clock, *,
                 temperature_source: Callable[[], float] | None = None, mas_rate_hz: float = 10_000.0,
                 sample=None, seed: int = 0, poll_real_s: float = 0.002, heartbeat_real_s: float = 0.05,
                 dtypa: int = 2, template_has_data: bool = True, zg_failure: str = "result",
                 topspin_version: str | None = None) -> None:
        """dtypa 2 (float64, TopSpin 4 / Avance NEO) or 0 (int32, older consoles); template_has_data: the
        template holds a test acquisition, as one set up by hand does; zg_failure "result" (a failed zg is a
        negative XCMD result) or "exception" (it raises)."""
        if dtypa not in (0, 2):
            raise ValueError(f"simulated TopSpin: dtypa must be 0 (int32) or 2 (float64), not {dtypa!r}")
        if zg_failure not in ("result", "exception"):
            raise ValueError(f"simulated TopSpin: zg_failure must be 'result' or 'exception', not {zg_failure!r}")
        self.automation_dir = Path(automation_dir)
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.temperature_source = temperature_source
        self.mas_rate_hz = float(mas_rate_hz)
        self.sample = sample
        self.seed = seed
        self.poll_real_s = poll_real_s
        self.heartbeat_real_s = heartbeat_real_s
        self.dtypa = dtypa
        self.template_has_data = template_has_data
        self.zg_failure = zg_failure
        self.topspin_version = topspin_version or nmr_dataset.TOPSPIN_VERSIONS[dtypa]
        self.api = SimTopSpinAPI(self)
        self.faults: set[str] = set()
        self._lock = threading.RLock()
        self._params: dict[Path, dict[str, object]] = {}   # current parameters (acqu, acqu2)
        self._status: dict[Path, dict[str, object]] = {}   # status parameters (acqus, acqu2s)
        self._acquisition: _Acquisition | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._kernel: KernelServer | None = None
        self._alive = threading.Event()
        self._alive.set()
        self._bvt_target_k = 293.0
        self._bvt_from_k = 293.0
        self._bvt_since_s = clock.now()
        self.template = self.data_dir / TEMPLATE_NAME / "1"
        self._context = threading.local()  # each command thread has its own current dataset

    @property
    def current(self) -> Path:
        """This command thread's current dataset (the template until it opens another)."""
        return getattr(self._context, "current", self.template)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Make the template dataset and run the TopSpin-side script in a CPython thread."""
        self._ensure_template()
        self._stopping = False
        self._start_thread()

    def _ensure_template(self) -> None:
        self.provide_template(self.template)

    def provide_template(self, expno_dir: Path, kind: str = "exsy") -> None:
        """Write a template dataset of `kind` (TEMPLATE_KINDS: 6Li EXSY, one-pulse 1D, saturation- or
        inversion-recovery T1), with a test acquisition, unless one exists there."""
        if kind not in TEMPLATE_KINDS:
            raise ValueError(f"simulated TopSpin: template kind {kind!r} is none of {', '.join(TEMPLATE_KINDS)}")
        if not (expno_dir / "acqu").exists():
            params = {**DEFAULT_EXSY_PARAMS, "DTYPA": self.dtypa, **TEMPLATE_KINDS[kind]}
            dimensions = "1" if kind == "1d" else "12"
            write_parameter_files(expno_dir, params, dimensions=dimensions)
            if self.template_has_data:  # a template set up by hand holds its test acquisition
                test = {**params, "NS": 1, "DS": 0, "TD1": 2, "DATE": self.clock.now()}
                if kind in ("satrect", "t1ir"):
                    test = {**test, "TD1": len(TEMPLATE_VDLIST_S), nmr_dataset.VDLIST_KEY: list(TEMPLATE_VDLIST_S)}
                    (expno_dir / "vdlist").write_text("".join(f"{d:g}s\n" for d in TEMPLATE_VDLIST_S))
                nmr_dataset.write_acquired_dataset(expno_dir, test, self.sample_temperature_k(),
                                                   sample=self.sample, seed=self.seed)
                write_parameter_files(expno_dir, params, dimensions=dimensions, files="current")  # acqu as left
        self._params.pop(expno_dir, None)
        self._status.pop(expno_dir, None)

    def _start_thread(self) -> None:
        argv = ["--automation", str(self.automation_dir), "--data", str(self.data_dir),
                "--poll", repr(self.poll_real_s), "--heartbeat", repr(self.heartbeat_real_s), "--announce", "no"]
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
                "--data", str(self.data_dir), "--poll", "0.01", "--heartbeat", "0.1",
                "--sim-kernel", f"127.0.0.1:{port}"]

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

    def _load(self, path: Path) -> None:
        """Know a dataset from its files (TopSpin reads acqu* and acqu*s when a dataset is opened)."""
        if path not in self._params:
            if not (path / "acqu").exists():
                raise SimTopSpinError(f"RE: dataset {path} does not exist")
            self._params[path] = read_parameter_files(path)
            self._status[path] = (read_parameter_files(path, status=True) if (path / "acqus").exists()
                                  else dict(self._params[path]))

    def open_dataset(self, path: Path) -> None:
        """RE: make `path` the current dataset of the calling command thread (it must exist, as in TopSpin)."""
        path = self._checked_path(path)
        with self._lock:
            self._advance()
            self._load(path)
            self._context.current = path
        self._settle_finished_command()

    def _settle_finished_command(self) -> None:
        """Once an acquisition has ended, let its command thread return from zg (and record the result) before
        another command thread's call goes on: TopSpin's zg command ends with its acquisition."""
        acq = self._acquisition
        thread = acq.command_thread if acq is not None else None
        if acq is not None and acq.done_event.is_set() and thread is not None \
                and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def getpar(self, name: str, *, status: bool) -> str:
        """GETPAR (current, acqu) or GETPARSTAT (status, acqus) on the current dataset; unknown names are errors."""
        with self._lock:
            self._advance()
            self._load(self.current)
            key = exsylab_name(name)
            try:
                value = lookup((self._status if status else self._params)[self.current], key)
            except KeyError:
                raise SimTopSpinError(f"{'GETPARSTAT' if status else 'GETPAR'}: unknown parameter {name!r} "
                                      f"in {self.current}") from None
            return str(value)

    def putpar(self, name: str, value: str) -> None:
        """PUTPAR on the current dataset: the current parameters (acqu or acqu2) only, never the status."""
        with self._lock:
            self._advance()
            self._load(self.current)
            self._refuse_if_disk_full(self.current / "acqu")
            self._refuse_if_acquiring(self.current, "PUTPAR")
            params = self._params[self.current]
            key = canonical_key(params, exsylab_name(name))
            params[key] = coerce(value)
            write_parameter_files(self.current, params, dimensions="2" if is_f1_key(key) else "1", files="current")

    def _set_status(self, key: str, value: float) -> None:
        """Store a measured value in the current dataset's status parameters (and acqus if it holds no data)."""
        self._load(self.current)
        status = self._status[self.current]
        status[canonical_key(status, key)] = value
        if not expno_has_data(self.current):
            write_parameter_files(self.current, status, dimensions="1", files="status")

    def _refuse_if_disk_full(self, target: Path) -> None:
        if "disk_full" in self.faults:
            raise SimTopSpinError(f"disk full: no space left on device writing {target}")

    def _refuse_if_acquiring(self, path: Path, what: str) -> None:
        acq = self._acquisition
        if acq is not None and acq.state == "running" and acq.path == path:
            raise SimTopSpinError(f"{what}: acquisition running in {path}")

    # ---- commands ----------------------------------------------------------------------
    def xcmd(self, command: str, wait: bool) -> XcmdResult:
        """XCMD: wrpa, zg, halt/stop, teget, teset, masg; anything else is an unknown command."""
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
        if verb == "teget":
            with self._lock:
                self._set_status("TE", round(self.sample_temperature_k(), 2))
            return XcmdResult(0, "")
        if verb == "masg":
            with self._lock:
                self._set_status("MASR", round(self.mas_rate_now_hz(), 1))
            return XcmdResult(0, "")
        if verb == "teset" and len(words) == 2:
            self.teset(float(words[1]))
            return XcmdResult(0, "")
        raise SimTopSpinError(f"XCMD: command {command!r} not known to the simulated TopSpin")

    def exec_pyscript(self, text: str) -> None:
        """EXEC_PYSCRIPT: run a Python script text in its own command thread, with TopCmds' names."""
        namespace = {"RE": self.api.RE, "XCMD": self.api.XCMD, "GETPAR": self.api.GETPAR,
                     "GETPARSTAT": self.api.GETPARSTAT, "PUTPAR": self.api.PUTPAR, "CURDATA": self.api.CURDATA,
                     "WAIT_TILL_DONE": WAIT_TILL_DONE, "NO_WAIT_TILL_DONE": NO_WAIT_TILL_DONE}
        code = compile(text, "<EXEC_PYSCRIPT>", "exec")
        threading.Thread(target=exec, args=(code, namespace), name="sim-topspin-cmdthread", daemon=True).start()

    def _wrpa(self, args: list[str]) -> XcmdResult:
        """wrpa NAME EXPNO PROCNO DIR: copy the whole current experiment, raw data included; TopSpin asks
        before overwriting an existing experiment (here: refused)."""
        if len(args) != 4:
            raise SimTopSpinError("wrpa: expected NAME EXPNO PROCNO DIR")
        name, expno, _procno, folder = args
        target = self._checked_path(Path(folder) / name / expno)
        with self._lock:
            self._advance()
            self._refuse_if_disk_full(target)
            if target.exists():
                raise SimTopSpinError(f"wrpa: {target} exists; TopSpin asks before overwriting it")
            shutil.copytree(self.current, target)
        return XcmdResult(0, "")

    def _failed_zg(self, message: str) -> XcmdResult:
        """A zg that failed: TopSpin's negative result (default) or an exception."""
        log.warning("simulated TopSpin: %s", message)
        if self.zg_failure == "exception":
            raise SimTopSpinError(message)
        return XcmdResult(ZG_FAILED, message)

    def _zg(self, wait: bool) -> XcmdResult:
        with self._lock:
            self._advance()
            path = self.current
            self._load(path)
            if self._acquisition is not None and self._acquisition.state == "running":
                return self._failed_zg(f"zg: acquisition already running in {self._acquisition.path}")
            if expno_has_data(path):
                return self._failed_zg(f"zg: {path} holds data; TopSpin would ask to overwrite")
            if "disk_full" in self.faults:
                return self._failed_zg(f"zg: disk full: no space left on device writing {path / 'ser'}")
            if "spinning_failure" in self.faults:
                return self._failed_zg(f"zg: spinning failure: MAS rate 0 Hz (set {self.mas_rate_hz:.0f} Hz)")
            params = dict(self._params[path])
            params["DTYPA"] = self.dtypa  # the console decides the data type, not the parameter set
            if nmr_dataset.experiment_kind(params) in ("satrect", "t1ir"):
                problem = self._attach_vdlist(path, params)
                if problem:
                    return self._failed_zg(problem)
            params["DATE"] = self.clock.now()  # acqus DATE and audit times follow the simulator's clock
            acq = _Acquisition(path=path, params=params, start_s=self.clock.now(),
                               duration_s=nmr_dataset.acquisition_duration_s(params),
                               seed=self._noise_seed(path),
                               command_thread=threading.current_thread() if wait else None)
            self._acquisition = acq
            # TopSpin creates ser (fid for 1D) when the acquisition starts
            (path / ("fid" if nmr_dataset.experiment_kind(params) == "1d" else "ser")).touch()
            log.info("simulated TopSpin: zg in %s for %.1f s", path, acq.duration_s)
        if not wait:
            return XcmdResult(0, "")
        while not acq.done_event.wait(self.poll_real_s):
            if self._stopping:
                return self._failed_zg("zg: TopSpin was closed during the acquisition")
            with self._lock:
                self._advance()
        if acq.state == "failed":
            return self._failed_zg(acq.message)
        return XcmdResult(0, "acquisition finished")

    def _attach_vdlist(self, path: Path, params: dict[str, object]) -> str:
        """Read the vd list named by VDLIST (a file in the expno folder) into params; copy it to `vdlist` as
        TopSpin does at zg. Returns the reason a zg must fail, or ""."""
        name = str(params.get("VDLIST", "")).strip()
        list_file = path / name
        if not name or "/" in name or not list_file.is_file():
            return f"zg: vd list {name!r} not found in {path} (VDLIST)"
        try:
            delays = nmr_dataset.parse_vdlist(list_file.read_text(encoding="ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            return f"zg: {list_file}: {exc}"
        td1 = int(float(params.get("TD1", 0)))  # type: ignore[arg-type]
        if td1 != len(delays):
            return f"zg: TD1 = {td1} but the vd list {name} holds {len(delays)} delays"
        if name != "vdlist":
            shutil.copyfile(list_file, path / "vdlist")
        params[nmr_dataset.VDLIST_KEY] = delays
        return ""

    def _halt(self) -> XcmdResult:
        with self._lock:
            acq = self._acquisition
            if acq is not None and acq.state == "running":
                acq.halt_requested = True
                self._advance()
        return XcmdResult(0, "")

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
        for placeholder in (acq.path / "ser", acq.path / "fid"):
            if placeholder.exists() and placeholder.stat().st_size == 0:
                placeholder.unlink()  # the writer creates the real ser/fid (and never writes over one)
        if failure is not None:
            acq.state, acq.message = "failed", failure
            if "disk_full" not in self.faults:
                nmr_dataset.write_partial_dataset(acq.path, acq.params, self.sample_temperature_k(), fraction,
                                                  sample=self.sample, seed=acq.seed)
        else:
            nmr_dataset.write_acquired_dataset(acq.path, acq.params, self.sample_temperature_k(),
                                               sample=self.sample, seed=acq.seed)
            acq.state, acq.message = "done", "acquisition finished"
        if (acq.path / "acqus").exists():
            self._status[acq.path] = read_parameter_files(acq.path, status=True)
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

    def _noise_seed(self, path: Path) -> int:
        """The noise of an acquisition: fixed by the run's seed, the dataset name and the point's title.

        A point acquired again (after a kill, in a fresh expno) gets the noise it would have had, so a
        resumed simulated run writes the data an uninterrupted one would; without a title, the expno counts.
        """
        title_file = path / "pdata" / "1" / "title"
        title = title_file.read_text(errors="replace") if title_file.is_file() else f"expno {path.name}"
        return zlib.crc32(f"{self.seed}|{path.parent.name}|{title}".encode())

    def mas_rate_now_hz(self) -> float:
        """The MAS rate now: 0 after a spinning failure."""
        return 0.0 if "spinning_failure" in self.faults else self.mas_rate_hz



def simulate_for_station(entry: dict, clock, *, seed: int = 0, automation_dir: Path, data_dir: Path,
                         peers: dict | None = None, templates: tuple[tuple, ...] = (),
                         **_context: object) -> tuple[SimulatedTopSpin, str]:
    """The registry's way in: a simulated TopSpin on the run's folders, holding the templates a user would have set up.

    `templates` holds (name, expno) or (name, expno, kind) with kind one of TEMPLATE_KINDS (default "exsy").
    The sample is the station entry's `sample` (protocols.station.SampleSpec dumped; absent: the seed's).
    Its sample temperature follows a simulated VT in `peers`, if the station has one.
    """
    vt = (peers or {}).get("vt")
    automation_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    mas_rate_hz = float((entry.get("sample") or {}).get("mas_rate_hz", 10_000.0))
    if vt is not None:  # the rotor spins at the sample's rate: the probe's frictional heating follows it
        vt.model.set_mas_rate_hz(mas_rate_hz)
    sim = SimulatedTopSpin(automation_dir, data_dir, clock, seed=seed, sample=sample_from_station(entry.get("sample")),
                           temperature_source=vt.model.sample_k if vt is not None else None, mas_rate_hz=mas_rate_hz)
    for name, expno, *kind in templates:
        sim.provide_template(data_dir / name / str(expno), *kind)
    sim.start()
    return sim, str(automation_dir)
