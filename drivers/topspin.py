"""Spectrometer driver: a Bruker spectrometer driven through TopSpin automation files.

The host writes one job file per request into <automation>/jobs/ (write <id>.json.tmp, fsync,
rename to <id>.json); drivers/topspin_side/exsylab_automation.py, running inside TopSpin,
executes it and writes <automation>/results/<id>.json. Job results are real-time I/O (waited
for with short real sleeps); acquisitions take spectrometer time (waited for through the clock).
A heartbeat file that the TopSpin side refreshes tells the host whether anyone is listening.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_attempt, wait_fixed

from drivers.bruker_params import expno_has_data
from drivers.errors import InstrumentError

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
RESULTS_DIR = "results"
HEARTBEAT_FILE = "heartbeat.json"
MAX_EXPNO = 99999
_STALE_GRACE_REAL_S = 0.25   # a heartbeat stale by the clock gets this much real time to refresh
_LIVENESS_CHECK_REAL_S = 0.02  # how often a job wait re-reads the heartbeat
_PARAM_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


_END_MARGIN_S = 0.5  # the first "done?" question comes this long after the expected end
_LATE_STATUS_EVERY_S = 5.0  # then TopSpin is asked at least this often until it is done


class SpectrometerError(InstrumentError):
    """Any failure of the spectrometer or of the TopSpin automation channel."""


class TopSpinNotRunning(SpectrometerError):
    """The TopSpin-side script is not serving the automation folder (stale or missing heartbeat)."""


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
    """A parameter name that is not a plain TopSpin name (letters, digits, underscore)."""


@dataclass(frozen=True)
class AcquisitionStatus:
    """What TopSpin reports about one dataset's acquisition."""

    state: Literal["idle", "running", "done", "failed"]
    message: str
    path: str
    scans_done: int | None = None


def check_dataset_name(name: str) -> str:
    """Return `name` if it is a plain folder name; refuse separators, '..', absolute paths."""
    if (not isinstance(name, str) or not name or "/" in name or "\\" in name or ".." in name
            or "\x00" in name or name.startswith("~") or os.path.isabs(name) or name.strip() != name):
        raise InvalidDataset(f"TopSpin: refused dataset name {name!r} (path separators, '..', "
                             "absolute path or surrounding blanks)")
    return name


def check_param_name(key: str) -> str:
    """Return `key` if it is a plain parameter name such as D8, TD1, FnMODE."""
    if not isinstance(key, str) or not key or not set(key) <= _PARAM_NAME_CHARS:
        raise InvalidParameter(f"TopSpin: refused parameter name {key!r}")
    return key


def check_expno(expno: int) -> int:
    """Return `expno` if it is an int within TopSpin's 1..99999."""
    if isinstance(expno, bool) or not isinstance(expno, int) or not 1 <= expno <= MAX_EXPNO:
        raise InvalidDataset(f"TopSpin: expno {expno!r} outside 1..{MAX_EXPNO}")
    return expno


class TopSpinDriver:
    """Drives TopSpin through an automation folder; all acquisition waits go through `clock`."""

    def __init__(self, automation_dir: Path, data_dir: Path, clock, *, heartbeat_timeout_s: float = 30.0,
                 job_timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        self.automation_dir = Path(automation_dir)
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.job_timeout_s = job_timeout_s
        self.poll_s = poll_s
        self.jobs_dir = self.automation_dir / JOBS_DIR
        self.results_dir = self.automation_dir / RESULTS_DIR
        self.heartbeat_path = self.automation_dir / HEARTBEAT_FILE
        self._created: set[tuple[str, int]] = set()
        self._abandoned: set[str] = set()   # jobs given up on after TopSpin took them
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)

    # ---- liveness ------------------------------------------------------------------
    def _read_heartbeat(self) -> tuple[float, int] | None:
        try:
            beat = json.loads(self.heartbeat_path.read_text())
            if beat.get("stopped"):
                return None  # the script's loop ended (stop file or TopSpin closing it)
            return float(beat["time"]), int(beat["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def heartbeat_seq(self) -> int | None:
        """The TopSpin side's heartbeat counter (None when it is missing or the script stopped): a new value
        proves the script is running again, whatever the clocks say."""
        beat = self._read_heartbeat()
        return beat[1] if beat else None

    def _fresh(self, beat: tuple[float, int] | None) -> bool:
        return beat is not None and self.clock.now() - beat[0] <= self.heartbeat_timeout_s

    def is_alive(self) -> bool:
        """True when the TopSpin side refreshed its heartbeat within heartbeat_timeout_s (clock time)."""
        if self._fresh(self._read_heartbeat()):
            return True
        # After a jump of virtual time the script needs a moment of real time to beat again.
        deadline = time.monotonic() + _STALE_GRACE_REAL_S
        while time.monotonic() < deadline:
            time.sleep(0.0005)
            if self._fresh(self._read_heartbeat()):
                return True
        return False

    def ping(self) -> float:
        """One job round trip through TopSpin (for selftests); returns the TopSpin side's clock time."""
        return float(self._job("ping")["time"])  # type: ignore[index]

    # ---- job channel ---------------------------------------------------------------
    def _job(self, op: str, **args: object) -> object:
        """Send one job and return its value; raise TopSpinNotRunning or JobFailed."""
        if self._read_heartbeat() is None and not self.is_alive():
            raise TopSpinNotRunning(f"TopSpin: job {op!r} not sent: heartbeat {self.heartbeat_path} missing or "
                                    "marked stopped (is exsylab_automation running?)")
        self._drop_late_results()
        job_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        job = {"id": job_id, "op": op, "args": args, "sent_clock_s": self.clock.now()}
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

    @retry(retry=retry_if_exception_type(OSError), stop=stop_after_attempt(3), wait=wait_fixed(0.05),
           before_sleep=before_sleep_log(log, logging.WARNING), reraise=True)
    def _write_job(self, job_path: Path, job: dict) -> None:
        """Write <id>.json.tmp, fsync, rename to <id>.json; retried on transient OSError (network shares)."""
        tmp = job_path.with_suffix(".json.tmp")
        with open(tmp, "w") as handle:
            json.dump(job, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, job_path)

    @staticmethod
    @retry(retry=retry_if_exception_type(OSError), stop=stop_after_attempt(3), wait=wait_fixed(0.05),
           before_sleep=before_sleep_log(log, logging.WARNING), reraise=True)
    def _take_result(result_path: Path) -> dict:
        """Read and remove a result file; retried on transient OSError, ValueError if not JSON."""
        result = json.loads(result_path.read_text())
        result_path.unlink()
        return result

    def _wait_result(self, job_id: str, op: str, job_path: Path) -> dict:
        result_path = self.results_dir / f"{job_id}.json"
        start = time.monotonic()
        first_beat = self._read_heartbeat()
        last_change = last_check = start
        nap = 0.0002
        while True:
            if result_path.exists():
                try:
                    return self._take_result(result_path)
                except (OSError, ValueError) as exc:
                    raise SpectrometerError(f"TopSpin: unreadable result for job {op!r} at {result_path}: "
                                            f"{exc}") from exc
            time.sleep(nap)
            nap = min(nap * 2, 0.001)
            now = time.monotonic()
            if now - last_check < _LIVENESS_CHECK_REAL_S:
                continue
            last_check = now
            beat = self._read_heartbeat()
            if beat != first_beat:
                first_beat, last_change = beat, now
            dead_by_clock = not self._fresh(beat) and now - start > _STALE_GRACE_REAL_S
            dead_by_silence = now - last_change > min(self.heartbeat_timeout_s, self.job_timeout_s)
            if dead_by_clock or dead_by_silence or now - start > self.job_timeout_s:
                # (a heartbeat stale by the clock gets the grace period: the script beats again
                # right after a jump of virtual time, in the same loop that answers this job)
                withdrawn = self._withdraw(job_path)
                if not withdrawn:
                    self._abandoned.add(job_id)
                reason = ("heartbeat stopped" if dead_by_clock or dead_by_silence
                          else f"no result within {self.job_timeout_s} s")
                error = TopSpinNotRunning if (dead_by_clock or dead_by_silence) else JobFailed
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
        """Create name/expno with the parameters of `template` (name, expno) or of TopSpin's current
        dataset; raise ExpnoCollision before anything is written if expno holds data."""
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
        """PUTPAR each parameter (TopSpin names: D8, TE, NS, DS, TD1, D1, IN0, TITLE, ...)."""
        self._refuse_if_data(name, expno, "set_params")
        for key in params:
            check_param_name(key)
        self._job("set_params", name=name, expno=expno, params={k: str(v) for k, v in params.items()})

    def get_param(self, name: str, expno: int, key: str) -> str:
        """GETPAR `key` of name/expno, as TopSpin's text."""
        self.expno_dir(name, expno)
        return str(self._job("get_param", name=name, expno=expno, key=check_param_name(key)))

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
        """The MAS rate TopSpin reports now (0 when spinning has failed)."""
        return float(self._job("mas_rate"))  # type: ignore[arg-type]

    def teset(self, temperature_k: float) -> None:
        """Set the TopSpin-controlled VT target (stations whose VT unit TopSpin runs)."""
        self._job("teset", temperature_k=float(temperature_k))

    def teget(self) -> float:
        """The sample temperature TopSpin's VT reports, in K."""
        return float(self._job("teget"))  # type: ignore[arg-type]


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, *, data_dir: Path,
                      **_context: Any) -> "TopSpinDriver":
    """The registry's way in: TopSpin through the automation folder `address`, which must exist."""
    automation_dir = Path(address)
    if not automation_dir.is_dir():
        raise TopSpinNotRunning(f"TopSpin automation folder {automation_dir} does not exist: install and start "
                                "exsylab_automation.py in TopSpin (drivers/topspin_side/INSTALL.md)")
    return TopSpinDriver(automation_dir, data_dir, clock, heartbeat_timeout_s=entry["heartbeat_timeout_s"])
