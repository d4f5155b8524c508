"""Spectrometer driver: a Bruker spectrometer driven through TopSpin automation files.

The host writes one job file per request into <automation>/jobs/ (write <id>.json.tmp, fsync,
rename to <id>.json); drivers/topspin_side/exsylab_automation.py, running inside TopSpin,
executes it and writes <automation>/results/<id>.json. Job results are real-time I/O, polled
through an injected `RealTimeIO` at about `poll_interval_real_s` (50 ms: the folder may be a
network share); acquisitions take spectrometer time and are waited for through the clock.

Liveness: the TopSpin side rewrites heartbeat.json about once a second with a new sequence
number. The host never compares the spectrometer PC's clock with its own (the two may be
skewed by hours across a share): the TopSpin side is alive while the sequence number keeps
changing, judged over the host's own real time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from common.topspin_names import MAX_EXPNO, dataset_name_problem, expno_problem
from drivers.bruker_params import expno_has_data
from drivers.errors import InstrumentConfigurationError, InstrumentError, InstrumentUnreachable

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
RESULTS_DIR = "results"
HEARTBEAT_FILE = "heartbeat.json"
_RESTART_GRACE_REAL_S = 2.0  # how long a heartbeat marked stopped is watched for a restarted script
MIN_PYTHON = (2, 7)  # TopSpin >= 3.5 ships Jython 2.7; older TopSpin ships Jython 2.5 (see docs/dialects/topspin.md)
# exsylab names (D8, TD1) or TopSpin's own spelling ("D 8", "1 TD", "PLdB 1", "1 FnMODE")
_PARAM_NAME = re.compile(r"^(?:[1-3] )?[A-Za-z][A-Za-z0-9_]*(?: [0-9]{1,3})?$")


_END_MARGIN_S = 0.5  # the first "done?" question comes this long after the expected end
_LATE_STATUS_EVERY_S = 5.0  # then TopSpin is asked at least this often until it is done


class SpectrometerError(InstrumentError):
    """Any failure of the spectrometer or of the TopSpin automation channel."""


class TopSpinNotRunning(SpectrometerError, InstrumentUnreachable):
    """The TopSpin-side script is not serving the automation folder (heartbeat missing, stopped or not changing)."""


class SpectrometerConfigurationError(SpectrometerError, InstrumentConfigurationError):
    """TopSpin answers but cannot be used as set up (Jython too old, template dataset missing)."""


class JobFailed(SpectrometerError):
    """TopSpin refused or failed a job; the message is TopSpin's."""


class AcquisitionOverdue(SpectrometerError):
    """An acquisition is still running long after its expected duration."""


class ExpnoCollision(SpectrometerError):
    """The experiment number already holds data; nothing was written."""


class SpinningFailure(SpectrometerError):
    """MAS spinning failed during or before an acquisition."""


class InvalidDataset(SpectrometerError, ValueError):
    """A dataset name or expno that could escape the data folder or is out of range."""


class InvalidParameter(SpectrometerError, ValueError):
    """A parameter name that is neither an exsylab name (D8, TD1) nor TopSpin's spelling ("D 8", "1 TD")."""


class RealTimeIO:
    """The host's real time for I/O waits (job results, heartbeat changes): injectable, so one object owns it."""

    def now_s(self) -> float:
        """Monotonic real seconds."""
        return time.monotonic()

    def sleep_s(self, seconds: float) -> None:
        """Sleep `seconds` of real time."""
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class Heartbeat:
    """What the TopSpin side's heartbeat file says (its time is the spectrometer PC's and is never compared)."""

    seq: int
    stopped: bool
    refused: str | None
    topspin_version: str
    python_version: str


@dataclass(frozen=True)
class AcquisitionStatus:
    """What TopSpin reports about one dataset's acquisition."""

    state: Literal["idle", "running", "done", "failed"]
    message: str
    path: str
    scans_done: int | None = None


def check_dataset_name(name: str) -> str:
    """Return `name` if it is a safe TopSpin dataset name (it cannot leave the data folder)."""
    problem = dataset_name_problem(name)
    if problem:
        raise InvalidDataset(f"TopSpin: refused dataset name: {problem}")
    return name


def check_param_name(key: str) -> str:
    """Return `key` if it is a parameter name such as D8, TD1, NS or TopSpin's "D 8", "1 TD", "PLdB 1"."""
    if not isinstance(key, str) or not _PARAM_NAME.match(key):
        raise InvalidParameter(f"TopSpin: refused parameter name {key!r}")
    return key


def check_expno(expno: int) -> int:
    """Return `expno` if it is an int within TopSpin's 1..99999."""
    problem = expno_problem(expno)
    if problem:
        raise InvalidDataset(f"TopSpin: {problem}")
    return expno


class TopSpinDriver:
    """Drives TopSpin through an automation folder; acquisition waits go through `clock`, folder I/O through `real_time`."""

    def __init__(self, automation_dir: Path, data_dir: Path, clock, *, heartbeat_timeout_s: float = 30.0,
                 job_timeout_s: float = 60.0, poll_s: float = 0.5, poll_interval_real_s: float = 0.05,
                 real_time: RealTimeIO | None = None) -> None:
        """heartbeat_timeout_s and job_timeout_s count the host's real time; poll_s is the clock's time between
        acquisition polls; poll_interval_real_s is the steady folder-poll period (the first checks of a job come
        sooner, doubling up to it)."""
        if poll_interval_real_s <= 0 or heartbeat_timeout_s <= 0:
            raise ValueError("TopSpin: poll_interval_real_s and heartbeat_timeout_s must be > 0")
        self.automation_dir = Path(automation_dir)
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.job_timeout_s = job_timeout_s
        self.poll_s = poll_s
        self.poll_interval_real_s = poll_interval_real_s
        self.real_time = real_time if real_time is not None else RealTimeIO()
        self.jobs_dir = self.automation_dir / JOBS_DIR
        self.results_dir = self.automation_dir / RESULTS_DIR
        self.heartbeat_path = self.automation_dir / HEARTBEAT_FILE
        self._created: set[tuple[str, int]] = set()
        self._abandoned: set[str] = set()   # jobs given up on after TopSpin took them
        self._looked = False                 # the heartbeat file was read at least once
        self._seen_beat: str | None = None   # the heartbeat file's content when it last changed
        self._seen_change_real_s: float | None = None
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            self.results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TopSpinNotRunning(f"TopSpin: automation folder {self.automation_dir} cannot be opened: {exc}") from exc

    # ---- liveness ------------------------------------------------------------------
    def read_heartbeat(self) -> Heartbeat | None:
        """The heartbeat file as the TopSpin side last wrote it (None when missing or unreadable)."""
        try:
            beat = json.loads(self.heartbeat_path.read_text())
            return Heartbeat(seq=int(beat["seq"]), stopped=bool(beat.get("stopped")), refused=beat.get("refused"),
                             topspin_version=str(beat.get("topspin_version", "unknown")),
                             python_version=str(beat.get("python_version", "unknown")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _observe_heartbeat(self) -> Heartbeat | None:
        """Read the heartbeat and note, on the host's real time, when its content last changed (the first look
        only records it: a file left by a dead side must not count as a beat)."""
        try:
            text: str | None = self.heartbeat_path.read_text()
        except OSError:
            text = None
        if not self._looked:
            self._looked, self._seen_beat = True, text
        elif text != self._seen_beat:
            self._seen_beat, self._seen_change_real_s = text, self.real_time.now_s()
        return self.read_heartbeat() if text is not None else None

    def _beating(self) -> bool:
        """True when the heartbeat changed within heartbeat_timeout_s of host real time and is not stopped."""
        beat = self._observe_heartbeat()
        if beat is None or beat.stopped or beat.refused or self._seen_change_real_s is None:
            return False
        return self.real_time.now_s() - self._seen_change_real_s <= self.heartbeat_timeout_s

    def heartbeat_seq(self) -> int | None:
        """The TopSpin side's heartbeat counter (None when it is missing or the script stopped): a new value
        proves the script is running again, whatever the clocks say."""
        beat = self.read_heartbeat()
        return beat.seq if beat is not None and not beat.stopped and not beat.refused else None

    def is_alive(self) -> bool:
        """True when the TopSpin side's heartbeat is changing: seen to change within heartbeat_timeout_s of host
        real time, or changing now (waits up to heartbeat_timeout_s for a change). Never compares clocks."""
        if self._beating():
            return True
        seen = self._seen_beat
        start = self.real_time.now_s()
        while True:
            beat = self._observe_heartbeat()
            if beat is not None and self._seen_beat != seen and not beat.stopped and not beat.refused:
                return True
            # a stopped or refused side gets a short while to be restarted; a silent one the whole timeout
            ended = beat is not None and (beat.stopped or beat.refused)
            limit_s = min(self.heartbeat_timeout_s, _RESTART_GRACE_REAL_S) if ended else self.heartbeat_timeout_s
            if self.real_time.now_s() - start >= limit_s:
                return False
            self.real_time.sleep_s(self.poll_interval_real_s)

    def ping(self) -> float:
        """One job round trip through TopSpin (for selftests); returns the TopSpin side's clock time."""
        return float(self._job("ping")["time"])  # type: ignore[index]

    def preflight(self, templates: Sequence[tuple[str, int, str]] = ()) -> str:
        """Identify the TopSpin side (alive, TopSpin and Jython versions) and check each template dataset exists;
        raise TopSpinNotRunning or SpectrometerConfigurationError with one line naming the automation folder."""
        where = f"TopSpin (automation folder {self.automation_dir})"
        beat = self.read_heartbeat()
        if beat is not None and beat.refused:
            raise SpectrometerConfigurationError(f"{where}: the exsylab script refused to run: {beat.refused}")
        if not self.is_alive():
            state = ("missing" if beat is None else "marked stopped" if beat.stopped else "not changing")
            raise TopSpinNotRunning(f"{where}: heartbeat {state}; start exsylab_automation in TopSpin "
                                    "(drivers/topspin_side/INSTALL.md)")
        beat = self.read_heartbeat()
        assert beat is not None
        if _version_tuple(beat.python_version) < MIN_PYTHON:
            raise SpectrometerConfigurationError(
                f"{where}: Jython {beat.python_version} is too old; exsylab_automation needs Jython "
                f"{'.'.join(map(str, MIN_PYTHON))} (TopSpin >= 3.5)")
        self.ping()
        for name, expno, _experiment in templates:
            path = self.expno_dir(name, expno)
            if not (path / "acqu").is_file():
                raise SpectrometerConfigurationError(
                    f"{where}: template dataset {path} has no acqu file; set up the template experiment "
                    f"{name} {expno} in TopSpin (data folder {self.data_dir})")
        templates_text = ", ".join(f"{n}/{e}" for n, e, _ in templates) or "no template named"
        return (f"TopSpin {beat.topspin_version}, Jython {beat.python_version}; heartbeat alive; "
                f"templates present: {templates_text}")

    # ---- job channel ---------------------------------------------------------------
    def _job(self, op: str, **args: object) -> object:
        """Send one job and return its value; raise TopSpinNotRunning or JobFailed."""
        if not self._beating() and not self.is_alive():
            beat = self.read_heartbeat()
            raise TopSpinNotRunning(f"TopSpin: job {op!r} not sent: heartbeat {self.heartbeat_path} "
                                    f"{'missing' if beat is None else 'stopped' if beat.stopped else 'not changing'}"
                                    " (is exsylab_automation running?)")
        self._drop_late_results()
        job_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # a unique name only; never compared as a time
        job = {"id": job_id, "op": op, "args": args}
        job_path = self.jobs_dir / f"{job_id}.json"
        try:
            self._write_job(job_path, job)
        except OSError as exc:
            raise SpectrometerError(f"TopSpin: cannot write job {op!r} to {job_path}: {exc}") from exc
        result = self._wait_result(job_id, op, job_path)
        if not result.get("ok"):
            error = SpinningFailure if result.get("kind") == "spinning_failure" else JobFailed
            raise error(f"TopSpin: job {op!r} {args} failed: {result.get('error')}")
        return result.get("value")

    def _write_job(self, job_path: Path, job: dict) -> None:
        """Write <id>.json.tmp, fsync, rename to <id>.json; retried on transient OSError (network shares)."""
        def write() -> None:
            tmp = job_path.with_suffix(".json.tmp")
            with open(tmp, "w") as handle:
                json.dump(job, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, job_path)

        self._retry_io(write, f"write job {job_path.name}")

    def _retry_io(self, action: Callable[[], object], what: str, attempts: int = 3) -> object:
        """Run a file operation, retrying a transient OSError (network share) after a poll interval."""
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except OSError as exc:
                if attempt == attempts:
                    raise
                log.warning("TopSpin: %s failed (%s); retrying", what, exc)
                self.real_time.sleep_s(self.poll_interval_real_s)
        raise AssertionError("unreachable")

    def _take_result(self, result_path: Path) -> dict:
        """Read and remove a result file; retried on transient OSError, ValueError if not JSON."""
        def take() -> dict:
            result = json.loads(result_path.read_text())
            result_path.unlink()
            return result

        return self._retry_io(take, f"read result {result_path.name}")  # type: ignore[return-value]

    def _wait_result(self, job_id: str, op: str, job_path: Path) -> dict:
        """Poll for the job's result (first checks soon, then every poll_interval_real_s); give up when the
        heartbeat stops changing for heartbeat_timeout_s or after job_timeout_s, both of host real time."""
        result_path = self.results_dir / f"{job_id}.json"
        start = self.real_time.now_s()
        nap = min(0.001, self.poll_interval_real_s)
        while True:
            if result_path.exists():
                try:
                    return self._take_result(result_path)
                except (OSError, ValueError) as exc:
                    raise SpectrometerError(f"TopSpin: unreadable result for job {op!r} at {result_path}: "
                                            f"{exc}") from exc
            self.real_time.sleep_s(nap)
            nap = min(nap * 2, self.poll_interval_real_s)
            now = self.real_time.now_s()
            beat = self._observe_heartbeat()
            silent = (beat is None or beat.stopped or self._seen_change_real_s is None
                      or now - max(self._seen_change_real_s, start) > self.heartbeat_timeout_s)
            if silent or now - start > self.job_timeout_s:
                withdrawn = self._withdraw(job_path)
                if not withdrawn:
                    self._abandoned.add(job_id)
                reason = "heartbeat stopped" if silent else f"no result within {self.job_timeout_s} s"
                error = TopSpinNotRunning if silent else JobFailed
                raise error(f"TopSpin: job {op!r} ({job_id}): {reason}; job "
                            f"{'withdrawn' if withdrawn else 'already taken by TopSpin'}")

    def _drop_late_results(self) -> None:
        """Remove results that arrived after the host gave up on their job (logged, not used)."""
        for job_id in list(self._abandoned):
            late = self.results_dir / f"{job_id}.json"
            if late.exists():
                log.warning("TopSpin: discarding late result of abandoned job %s: %s", job_id, late.read_text())
                late.unlink()
                self._abandoned.discard(job_id)

    @staticmethod
    def _withdraw(job_path: Path) -> bool:
        """Remove an unanswered job so a TopSpin that comes back does not run a stale request."""
        try:
            job_path.unlink()
            return True
        except FileNotFoundError:
            return False

    # ---- datasets ------------------------------------------------------------------
    def expno_dir(self, name: str, expno: int) -> Path:
        """<data_dir>/<name>/<expno>, after refusing unsafe names, out-of-range expnos and symlinks leading out."""
        path = self.data_dir / check_dataset_name(name) / str(check_expno(expno))
        real = path.resolve()
        if not real.is_relative_to(self.data_dir.resolve()):
            raise InvalidDataset(f"TopSpin: refused {path}: it resolves to {real}, outside the data folder "
                                 f"{self.data_dir} (symlink?)")
        return path

    def next_free_expno(self, name: str, start: int = 1) -> int:
        """The first expno >= start whose folder does not exist (never a used number)."""
        expno = check_expno(start)
        while self.expno_dir(name, expno).exists():
            expno += 1
            if expno > MAX_EXPNO:
                raise SpectrometerError(f"TopSpin: no free expno in {name} from {start}")
        return expno

    def _refuse_if_data(self, name: str, expno: int, action: str) -> Path:
        path = self.expno_dir(name, expno)
        if expno_has_data(path):
            raise ExpnoCollision(f"TopSpin: {action} refused: {path} already holds data; "
                                 f"use next_free_expno({name!r}) = {self.next_free_expno(name, expno)}")
        return path

    def create_dataset(self, name: str, expno: int, template: tuple[str, int] | None = None) -> Path:
        """Create name/expno with the parameters (never the fid/ser) of `template` (name, expno) or of TopSpin's
        current dataset; raise ExpnoCollision before anything is written if expno holds data."""
        path = self._refuse_if_data(name, expno, "create_dataset")
        args: dict[str, object] = {"name": name, "expno": expno, "template": None}
        if template is not None:
            self.expno_dir(*template)
            args["template"] = [template[0], template[1]]
        created = self._job("create", **args)
        if Path(str(created)) != path:
            raise SpectrometerError(f"TopSpin: created {created}, expected {path}: data_dir {self.data_dir} "
                                    "does not match TopSpin's data folder")
        self._created.add((name, expno))
        log.info("TopSpin: created %s from %s", path, template or "current dataset")
        return path

    def set_params(self, name: str, expno: int, params: Mapping[str, object]) -> None:
        """PUTPAR each acquisition parameter (exsylab names D8, TD1, NS or TopSpin's "D 8", "1 TD", "1 FnMODE").
        A "TITLE" entry is not a TopSpin parameter: it is written as the dataset's title (set_title)."""
        self._refuse_if_data(name, expno, "set_params")
        values = {k: v for k, v in params.items() if k != "TITLE"}
        for key in values:
            check_param_name(key)
        self._job("set_params", name=name, expno=expno, params={k: str(v) for k, v in values.items()})
        if "TITLE" in params:
            self.set_title(name, expno, str(params["TITLE"]))

    def set_title(self, name: str, expno: int, title: str) -> None:
        """Write the dataset's title, name/expno/pdata/1/title (what TopSpin's setti edits)."""
        self._refuse_if_data(name, expno, "set_title")
        self._job("set_title", name=name, expno=expno, title=str(title))

    def write_list(self, name: str, expno: int, list_name: str, values_s: Sequence[float]) -> Path:
        """Write the delay list name/expno/<list_name> (one delay per line, seconds with the s suffix, as TopSpin
        reads a vdlist) through the TopSpin-side script, which sets VDLIST = list_name and TD1 = len(values_s)."""
        self._refuse_if_data(name, expno, "write_list")
        problem = dataset_name_problem(list_name)
        if problem:
            raise SpectrometerError(f"TopSpin: write_list {name}/{expno}: list name {list_name!r}: {problem}")
        delays = [float(v) for v in values_s]
        if not delays or any(not (0.0 <= d < math.inf) for d in delays):
            raise SpectrometerError(f"TopSpin: write_list {name}/{expno}/{list_name}: delays must be a non-empty "
                                    f"list of finite numbers >= 0 s, got {list(values_s)!r}")
        return Path(str(self._job("write_list", name=name, expno=expno, list_name=list_name, values_s=delays)))

    def get_param(self, name: str, expno: int, key: str) -> str:
        """GETPAR `key` of name/expno: the current (acqu) parameter, as TopSpin's text."""
        self.expno_dir(name, expno)
        return str(self._job("get_param", name=name, expno=expno, key=check_param_name(key)))

    def get_status_param(self, name: str, expno: int, key: str) -> str:
        """GETPARSTAT `key` of name/expno: the status (acqus) parameter, what the acquisition recorded."""
        self.expno_dir(name, expno)
        return str(self._job("get_param_status", name=name, expno=expno, key=check_param_name(key)))

    def delete_dataset(self, name: str, expno: int) -> None:
        """Delete a scratch dataset this driver created; refuse any other."""
        path = self.expno_dir(name, expno)
        if (name, expno) not in self._created:
            raise SpectrometerError(f"TopSpin: refusing to delete {path}: not created by this driver")
        shutil.rmtree(path)
        self._created.discard((name, expno))
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()

    # ---- acquisition ---------------------------------------------------------------
    def start_acquisition(self, name: str, expno: int) -> None:
        """Start zg on name/expno; ExpnoCollision if it already holds data."""
        self._refuse_if_data(name, expno, "start_acquisition")
        self._job("start", name=name, expno=expno)
        log.info("TopSpin: zg started in %s", self.expno_dir(name, expno))

    def acquisition_status(self, name: str, expno: int) -> AcquisitionStatus:
        """TopSpin's view of the acquisition in name/expno."""
        return self._status(name, expno)[0]

    def _status(self, name: str, expno: int) -> tuple[AcquisitionStatus, str | None]:
        """The status and the failure kind ("spinning_failure", "acq_error" or None)."""
        self.expno_dir(name, expno)
        value = self._job("status", name=name, expno=expno)
        if not isinstance(value, dict) or value.get("state") not in ("idle", "running", "done", "failed"):
            raise SpectrometerError(f"TopSpin: malformed status for {name}/{expno}: {value!r}")
        status = AcquisitionStatus(state=value["state"], message=str(value.get("message", "")),
                                   path=str(value.get("path", "")), scans_done=value.get("scans_done"))
        return status, value.get("kind")

    def wait_acquisition(self, name: str, expno: int, expected_s: float, *, overdue_factor: float = 1.5,
                         poll_s: float | None = None, on_poll: Callable[[], None] | None = None,
                         status_every_s: float | None = None) -> AcquisitionStatus:
        """Wait (clock time) until the acquisition is done, calling on_poll every poll_s. TopSpin is
        asked every status_every_s (default max(poll_s, expected_s / 8): few jobs in virtual time),
        just after expected_s, and then every min(poll_s, 5 s). Raises AcquisitionOverdue past expected_s *
        overdue_factor, SpinningFailure, JobFailed, TopSpinNotRunning."""
        poll = self.poll_s if poll_s is None else poll_s
        cadence_s = max(poll, expected_s / 8.0) if status_every_s is None else max(poll, status_every_s)
        if poll <= 0 or expected_s < 0:
            raise ValueError(f"TopSpin: wait_acquisition needs poll_s > 0 and expected_s >= 0, "
                             f"got {poll}, {expected_s}")
        start = self.clock.now()
        expected_end = start + expected_s
        deadline = start + expected_s * overdue_factor
        next_status = start
        while True:
            now = self.clock.now()
            if now >= next_status:
                status, kind = self._status(name, expno)
                if status.state == "done":
                    return status
                if status.state == "failed":
                    error = SpinningFailure if kind == "spinning_failure" else JobFailed
                    raise error(f"TopSpin: acquisition {name}/{expno} failed: {status.message}")
                if status.state == "idle":
                    raise JobFailed(f"TopSpin: no acquisition running in {name}/{expno}: {status.message}")
                if now > deadline:
                    raise AcquisitionOverdue(
                        f"TopSpin: acquisition {name}/{expno} still {status.state} after {now - start:.0f} s "
                        f"(expected {expected_s:.0f} s, limit x{overdue_factor}); {status.message}")
                if now < expected_end + _END_MARGIN_S:
                    next_status = min(now + cadence_s, expected_end + _END_MARGIN_S)  # ask right at the end
                else:
                    next_status = now + min(poll, _LATE_STATUS_EVERY_S)
            if on_poll is not None:
                on_poll()
            self.clock.sleep(min(poll, next_status - self.clock.now()) if next_status > self.clock.now() else 0.0)

    def stop_acquisition(self) -> None:
        """Halt the running acquisition (TopSpin keeps the rows acquired so far)."""
        self._job("stop")

    # ---- MAS and VT ----------------------------------------------------------------
    def read_mas_rate_hz(self) -> float:
        """The MAS rate measured now (masg, then the status parameter MASR); 0 when spinning has failed."""
        return float(self._job("mas_rate"))  # type: ignore[arg-type]

    def teset(self, temperature_k: float) -> None:
        """Set the TopSpin-controlled VT target (stations whose VT unit TopSpin runs)."""
        self._job("teset", temperature_k=float(temperature_k))

    def teget(self) -> float:
        """The temperature TopSpin's VT unit measures now, in K (teget, then the status parameter TE; never
        the TE that was PUTPAR as a target)."""
        return float(self._job("teget"))  # type: ignore[arg-type]


def _version_tuple(text: str) -> tuple[int, ...]:
    """(2, 7, 3) from "2.7.3" or "2.7.3 (default, ...)"; () when unreadable."""
    match = re.match(r"^(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else ()


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, *, data_dir: Path,
                      timeout_s: float | None = None, **_context: Any) -> "TopSpinDriver":
    """The registry's way in: TopSpin through the automation folder `address`, which must exist."""
    automation_dir = Path(address)
    if not automation_dir.is_dir():
        raise TopSpinNotRunning(f"TopSpin automation folder {automation_dir} does not exist: install and start "
                                "exsylab_automation.py in TopSpin (drivers/topspin_side/INSTALL.md)")
    options: dict[str, Any] = {"job_timeout_s": max(5.0, 5 * timeout_s)} if timeout_s is not None else {}
    return TopSpinDriver(automation_dir, data_dir, clock, heartbeat_timeout_s=entry["heartbeat_timeout_s"], **options)
