"""The NMR lane: temperature moves, stability waits, 1D spectra, T1 measurements and 2D EXSY, with VT watching.

Never overwrites: an expno that holds data is refused (or skipped to the next free one, by
policy) before acquisition; a point re-acquired after an excursion or an interrupted
acquisition goes into a fresh expno and the earlier dataset is kept and marked. A T1 is fitted as
soon as its dataset is written; an EXSY point with a D1 rule reads that fit from the journal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from drivers.bruker_params import dataset_complete, expno_has_data
from drivers.topspin import (
    AcquisitionOverdue,
    ExpnoCollision,
    JobFailed,
    SpectrometerError,
    SpinningFailure,
    TopSpinDriver,
    TopSpinNotRunning,
)
from drivers.clock import RealTimer
from drivers.errors import InstrumentError
from drivers.vt import TemperatureController
from analysis.errors import AnalysisInputError
from protocols.nmr_steps import FitCalibration, Spectrum1D, T1Measurement
from protocols.plan import SITE_MATCH_PPM, Acquire2D, D1Choice, D1Rule, MoveTemperature, Stability, Step, WaitStable
from protocols.timing import ramp_s

from .adaptive_lane import run_adaptive_exsy
from .run_folder import write_atomic
from .runner import StepContext, StepFailed, StopRequested

log = logging.getLogger(__name__)

MARK_FILE = "exsylab-status.txt"  # written into an expno folder whose data must not be used
MAX_ACQUISITION_ATTEMPTS = 3
VT_POLL_S = 10.0  # clock seconds between VT readings while waiting for stability
EXCURSION_POLL_S = 60.0  # clock seconds between VT readings while an acquisition runs
TOPSPIN_OUTAGE_POLL_REAL_S = 0.5  # real seconds between heartbeat checks while TopSpin is unreachable
VDLIST = "vdlist"  # TopSpin's delay-list file in the expno folder (parameter VDLIST names it)

AcquisitionStep = Acquire2D | Spectrum1D | T1Measurement
ACQUISITION_STEPS = (Acquire2D, Spectrum1D, T1Measurement)  # the step kinds that write a TopSpin expno


def fit_t1(expno_dir: Path, sites_ppm: tuple[float, ...] | None) -> Any:
    """analysis.t1.fit_t1 on the dataset just written (imported on first use: the runner need not load scipy)."""
    from analysis.t1 import fit_t1 as fit

    return fit(expno_dir, list(sites_ppm) if sites_ppm is not None else None)


def _site_name(shift_ppm: float, sites_ppm: tuple[float, ...] | None, names: tuple[str, ...] | None) -> str | None:
    """The protocol's name of the site nearest a fitted shift (within SITE_MATCH_PPM), if it named its sites."""
    if not sites_ppm or not names:
        return None
    distance, name = min((abs(shift_ppm - ppm), name) for ppm, name in zip(sites_ppm, names))
    return name if distance <= SITE_MATCH_PPM else None


def planned_collisions(data_dir: Path, steps: list[AcquisitionStep]) -> list[str]:
    """Planned expnos that already hold data under an 'error' policy: checked before any instrument is opened."""
    problems = []
    for step in steps:
        path = data_dir / step.dataset / str(step.expno)
        if step.policy.on_collision == "error" and expno_has_data(path):
            problems.append(f"{step.dataset}/{step.expno} already holds data ({path})")
    return problems


def mark_dataset(expno_dir: Path, status: str, reason: str) -> None:
    """Leave a note in a kept-but-unusable dataset (partial, flagged), beside TopSpin's own files."""
    write_atomic(expno_dir / MARK_FILE, f"{status}: {reason}\n")


class NmrLane:
    """Executes the NMR lane's steps on the spectrometer and the VT unit."""

    def __init__(self, spectrometer: TopSpinDriver, vt: TemperatureController, *, overdue_factor: float = 1.5,
                 real_timer: RealTimer | None = None, fit_calibration: Callable[[FitCalibration, StepContext],
                                                                                dict[str, Any]] | None = None) -> None:
        """fit_calibration: the executor of a calibration run's last step (it writes into the run folder)."""
        self.spectrometer = spectrometer
        self.vt = vt
        self._fit_calibration = fit_calibration
        self.overdue_factor = overdue_factor
        self._real_timer = real_timer or RealTimer()
        self._reserved_expnos: set[tuple[str, int]] = set()
        # False until this process has moved the VT itself: after a resume the VT may have lost its set point
        self._temperature_established = False

    def wait_real_s(self, seconds: float) -> None:
        """Wait real time that is not run time (a pause), on the lane's injected timer."""
        self._real_timer.wait_real_s(seconds)

    @property
    def temperature_established(self) -> bool:
        """This process has set the VT itself (after a resume it has not: the VT may have lost its set point)."""
        return self._temperature_established

    # ---- LaneExecutor -------------------------------------------------------------------
    def kinds(self) -> dict[str, Callable[[Any, StepContext], dict[str, Any]]]:
        """The step kinds this lane executes, each with its executor (the dispatch table)."""
        table: dict[str, Callable[[Any, StepContext], dict[str, Any]]] = {
            "move_temperature": self._move, "wait_stable": self._wait, "acquire_2d": self._acquire_exsy,
            "spectrum_1d": self._acquire, "t1": self._measure_t1,
            "adaptive_exsy": lambda step, ctx: run_adaptive_exsy(step, ctx, self)}
        if self._fit_calibration is not None:
            table["fit_calibration"] = self._fit_calibration
        return table

    def execute(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        if ctx.should_stop():
            raise StopRequested()
        run = self.kinds()[step.kind]  # the runner checked every kind of the plan before starting
        try:
            return run(step, ctx)
        except InstrumentError as exc:
            raise StepFailed(str(exc), detail={"error_type": type(exc).__name__}) from exc

    def reconcile(self, step: Step, progress: dict[str, Any], ctx: StepContext) -> str:
        """A step found 'running' on resume: an acquisition that finished counts as done; else redo."""
        if not isinstance(step, ACQUISITION_STEPS) or "expno" not in progress:
            return "redo"
        expno = int(progress["expno"])
        path = self.spectrometer.expno_dir(step.dataset, expno)
        state: str
        try:
            state = self.spectrometer.acquisition_status(step.dataset, expno).state
        except SpectrometerError as exc:
            log.warning("resume: cannot ask TopSpin about %s/%s (%s); judging the files", step.dataset, expno, exc)
            state = "unknown"
        if state == "running":
            # still acquiring (TopSpin outlived us): let it finish, then judge
            remaining = max(step.estimate_s - (ctx.clock.now() - float(progress.get("started_at", ctx.clock.now()))), 0.0)
            self.spectrometer.wait_acquisition(step.dataset, expno, remaining + 60.0, overdue_factor=self.overdue_factor,
                                               poll_s=EXCURSION_POLL_S)
            state = "done"
        if state in ("done", "idle", "unknown") and dataset_complete(path) and not progress.get("flagged"):
            self._record(ctx, step, expno, path, "done", progress, note="completed while the runner was down")
            return "done"
        if expno_has_data(path):
            mark_dataset(path, "partial", "acquisition interrupted (runner stopped); the point was acquired again")
            self._record(ctx, step, expno, path, "partial", progress, note="interrupted; kept and marked")
            ctx.note("partial", dataset=step.dataset, expno=expno)
        return "redo"

    def make_safe(self) -> None:
        try:
            self.vt.hold_safe()
        except Exception as exc:  # noqa: BLE001 - hold_safe logs; nothing may escape here
            log.error("VT hold failed: %s", exc)

    # ---- steps ---------------------------------------------------------------------------
    def _move(self, step: MoveTemperature, ctx: StepContext) -> dict[str, Any]:
        """Start the ramp and let it run: the step lasts as long as the set point takes to get there."""
        setpoint_k = self._ramp(step.temperature_k, step.from_k, step.ramp_k_per_min, ctx)
        return {"sample_target_k": step.temperature_k, "setpoint_k": setpoint_k, "sample_k": self.vt.read_sample_k()}

    def _ramp(self, temperature_k: float, from_k: float, ramp_k_per_min: float, ctx: StepContext) -> float:
        """Send the ramp rate and the sample temperature, and let the ramp run; the VT set point it took."""
        self.vt.set_ramp_rate_k_per_min(ramp_k_per_min)
        setpoint_k = self.vt.set_sample_temperature_k(temperature_k)
        self._temperature_established = True
        ctx.clock.sleep(ramp_s(from_k, temperature_k, ramp_k_per_min))
        return setpoint_k

    def move_and_wait(self, temperature_k: float, ramp_k_per_min: float, stability: Stability,
                      ctx: StepContext) -> dict[str, Any]:
        """A move decided during a step (the adaptive run's): ramp from where the sample is, then wait until stable."""
        from_k = self.vt.read_sample_k()
        setpoint_k = self._ramp(temperature_k, from_k, ramp_k_per_min, ctx)
        result = self._wait_stable(temperature_k, stability)
        return {"from_k": from_k, "setpoint_k": setpoint_k, "sample_k": result.last_reading_k,
                "waited_s": result.waited_s}

    def _wait(self, step: WaitStable, ctx: StepContext) -> dict[str, Any]:
        if not self._temperature_established:  # resumed at a wait: the VT may have lost its set point
            ctx.note("reestablish_temperature", target_k=step.temperature_k)
            self.vt.set_ramp_rate_k_per_min(self.vt.limits.max_ramp_k_per_min)
            self.vt.set_sample_temperature_k(step.temperature_k)
            self._temperature_established = True
        result = self._wait_stable(step.temperature_k, step.stability)
        return {"sample_k": result.last_reading_k, "setpoint_k": result.setpoint_k, "waited_s": result.waited_s}

    def _wait_stable(self, temperature_k: float, stability: Stability) -> Any:
        return self.vt.wait_stable(temperature_k, stability.tolerance_k, stability.hold_s, stability.timeout_s,
                                   poll_s=VT_POLL_S)

    def _reestablish_temperature(self, step: AcquisitionStep, ctx: StepContext) -> None:
        """After a resume, set and wait for the point's temperature before acquiring (the VT may have reset)."""
        ctx.note("reestablish_temperature", target_k=step.temperature_k)
        self.vt.set_ramp_rate_k_per_min(self.vt.limits.max_ramp_k_per_min)
        self.vt.set_sample_temperature_k(step.temperature_k)
        self._temperature_established = True
        self._wait_stable(step.temperature_k, step.stability)

    def _fresh_expno(self, step: AcquisitionStep) -> int:
        """A never-used expno for a re-acquisition, above the whole series' planned range."""
        expno = self.spectrometer.next_free_expno(step.dataset, start=step.expno + 1000)
        while (step.dataset, expno) in self._reserved_expnos:
            expno = self.spectrometer.next_free_expno(step.dataset, start=expno + 1)
        return expno

    def acquire_point(self, step: Acquire2D, ctx: StepContext) -> dict[str, Any]:
        """A 2D decided during a step (the adaptive run's): acquired and recorded exactly like a planned point."""
        return self._acquire(step, ctx)

    def _acquire(self, step: AcquisitionStep, ctx: StepContext, note: str = "") -> dict[str, Any]:
        """Acquire the step's expno (never overwriting), re-acquiring after excursions and TopSpin outages."""
        expno = step.expno
        path = self.spectrometer.expno_dir(step.dataset, expno)
        point = step.record_params().get("point")  # an adaptive run's points share their step's index
        tried = [d for d in ctx.journal.datasets() if d["idx"] == step.index and d["params"].get("point") == point
                 and expno_has_data(Path(d["path"]))]
        if tried:  # an earlier attempt (failed, partial, flagged) keeps its data: a fresh expno for this one
            expno = self._fresh_expno(step)
        elif expno_has_data(path):
            if step.policy.on_collision == "error" and (step.dataset, expno) not in self._reserved_expnos:
                raise StepFailed(f"{step.dataset}/{expno} already holds data; refusing to overwrite it", lane_fatal=True)
            expno = self._fresh_expno(step)
        for attempt in range(1, MAX_ACQUISITION_ATTEMPTS + 1):
            try:
                if not self._temperature_established:
                    self._reestablish_temperature(step, ctx)
                outcome = self._acquire_once(step, expno, ctx, note)
            except TopSpinNotRunning as exc:
                self._pause_until_topspin_returns(ctx, exc)
                finished = self._judge_after_outage(step, expno, ctx)
                if finished is not None:
                    return finished
                if expno_has_data(self.spectrometer.expno_dir(step.dataset, expno)):
                    expno = self._fresh_expno(step)
                continue
            if not outcome.get("flagged") or step.policy.on_vt_excursion == "flag":
                return outcome
            # re-acquire: the flagged dataset stays, marked; wait for the temperature, then a fresh expno
            ctx.note("reacquire", expno=expno, max_deviation_k=outcome["max_deviation_k"], attempt=attempt)
            self._wait_stable(step.temperature_k, step.stability)
            expno = self._fresh_expno(step)
        raise StepFailed(f"{step.dataset}: {step.label} was not acquired cleanly in {MAX_ACQUISITION_ATTEMPTS} attempts (temperature excursions or "
                         "TopSpin outages; see the journal's events)", lane_fatal=False)

    def _acquire_exsy(self, step: Acquire2D, ctx: StepContext) -> dict[str, Any]:
        """An EXSY point; with a D1 rule its D1 comes from the T1 fitted at its temperature (read from the journal)."""
        if step.d1_rule is None:
            return self._acquire(step, ctx)
        choice = self._d1_from_journal(step.d1_rule, ctx)
        note = ""
        if choice.fallback:
            note = f"D1 {choice.d1_s:g} s (the rule's maximum): {choice.fallback}"
            ctx.note("d1_fallback", d1_s=choice.d1_s, reason=choice.fallback, t1_step=step.d1_rule.t1_step)
            log.warning("EXSY %s: %s", step.label, note)
        elif choice.clamped:
            note = f"D1 {choice.d1_s:g} s: {step.d1_rule.factor:g} x T1 = {choice.wanted_s:.3g} s clamped"
        outcome = self._acquire(step.with_d1(choice.d1_s), ctx, note=note)
        return {**outcome, "d1_s": choice.d1_s, "d1_fallback": choice.fallback, "d1_wanted_s": choice.wanted_s}

    def _d1_from_journal(self, rule: D1Rule, ctx: StepContext) -> D1Choice:
        """The D1 (or the maximum and why) from the T1 step's outcome in the journal (never lane memory)."""
        record = next((r for r in ctx.journal.steps() if r.index == rule.t1_step), None)
        if record is None or record.status != "done":
            return D1Choice(rule.max_s, f"the T1 step {rule.t1_step} did not finish", None)
        fit = record.outcome.get("t1")
        if fit is None:  # fitted after a resume by an earlier point of this block
            fit = next((e["detail"] for e in reversed(ctx.journal.events(limit=100_000))
                        if e["status"] == "t1_measured" and e["detail"].get("t1_step") == rule.t1_step), None)
        if fit is None:  # done by resume's reconcile (no fit in its outcome): fit the kept dataset, never re-measure
            datasets = [d for d in ctx.journal.datasets() if d["idx"] == rule.t1_step and d["status"] == "done"]
            if not datasets:
                return D1Choice(rule.max_s, f"the T1 step {rule.t1_step} left no complete dataset", None)
            fit = self._fit_outcome(Path(datasets[-1]["path"]), None, None, rule)
            ctx.note("t1_measured", t1_step=rule.t1_step, path=datasets[-1]["path"], **fit)
        if fit.get("error"):
            return D1Choice(rule.max_s, f"T1 fit: {fit['error']}", None)
        return rule.choose([(s["shift_ppm"], s["t1_s"], s["ok"]) for s in fit["sites"]])

    def _measure_t1(self, step: T1Measurement, ctx: StepContext) -> dict[str, Any]:
        """Acquire the recovery series, then fit T1 per site at once; the fit and the D1 it gives go in the outcome."""
        outcome = self._acquire(step, ctx)
        fit = self._fit_outcome(Path(outcome["path"]), step.sites_ppm, step.site_names, step.d1_rule)
        ctx.note("t1_measured", temperature_k=step.temperature_k, expno=outcome["expno"], **fit)
        if fit.get("error") or any(not s["ok"] for s in fit["sites"]):
            log.warning("T1 at %.1f K: %s", step.temperature_k,
                        fit.get("error") or "; ".join(f"{s['shift_ppm']:g} ppm: {s['reason']}" for s in fit["sites"]
                                                      if not s["ok"]))
        return {**outcome, "temperature_k": step.temperature_k, "t1": fit}

    @staticmethod
    def _fit_outcome(path: Path, sites_ppm: tuple[float, ...] | None, names: tuple[str, ...] | None,
                     rule: D1Rule | None) -> dict[str, Any]:
        """The T1 fit as plain data: per site shift, T1, error, ok, reason; the D1 the rule gives from it."""
        try:
            fit = fit_t1(path, sites_ppm)
        except AnalysisInputError as exc:
            out: dict[str, Any] = {"method": None, "sites": [], "error": str(exc)}
        else:
            out = {"method": fit.method, "error": "", "sites": [
                {"name": _site_name(float(s.shift_ppm), sites_ppm, names), "shift_ppm": float(s.shift_ppm),
                 "t1_s": float(s.t1_s) if s.t1_s is not None else None,
                 "t1_err_s": float(s.t1_err_s) if s.t1_err_s is not None else None, "ok": bool(s.ok),
                 "reason": s.reason} for s in fit.sites]}
        if rule is not None:
            choice = D1Choice(rule.max_s, f"T1 fit: {out['error']}", None) if out["error"] else \
                rule.choose([(s["shift_ppm"], s["t1_s"], s["ok"]) for s in out["sites"]])
            out.update(d1_s=choice.d1_s, d1_fallback=choice.fallback, d1_wanted_s=choice.wanted_s)
        return out

    def _pause_until_topspin_returns(self, ctx: StepContext, exc: TopSpinNotRunning) -> None:
        """The lane waits, VT holding, until TopSpin's heartbeat is back (or the user stops the run)."""
        self.make_safe()
        self._temperature_established = False  # wait for the temperature again before acquiring
        ctx.note("paused", reason=str(exc))
        ctx.notifier.notify({"event": "lane paused", "lane": "nmr", "reason": str(exc),
                             "action": "restart TopSpin's exsylab_automation script; the run continues by itself"})
        log.error("NMR lane paused: %s", exc)
        last_seq = self.spectrometer.heartbeat_seq()
        while self.spectrometer.heartbeat_seq() in (None, last_seq) or not self.spectrometer.is_alive():
            if ctx.should_stop():
                raise StopRequested()
            self._real_timer.wait_real_s(TOPSPIN_OUTAGE_POLL_REAL_S)  # the heartbeat is the TopSpin PC's, not our clock's
        ctx.note("resumed", reason="TopSpin's heartbeat is back")
        ctx.notifier.notify({"event": "lane resumed", "lane": "nmr"})

    def _judge_after_outage(self, step: AcquisitionStep, expno: int, ctx: StepContext) -> dict[str, Any] | None:
        """After TopSpin came back: an acquisition that completed is kept as done; a partial one is marked."""
        path = self.spectrometer.expno_dir(step.dataset, expno)
        state: str
        try:
            state = self.spectrometer.acquisition_status(step.dataset, expno).state
        except SpectrometerError:
            state = "unknown"
        if state == "done" and dataset_complete(path):
            self._record(ctx, step, expno, path, "done", {}, note="completed while TopSpin was unreachable")
            return {"expno": expno, "path": str(path), "flagged": False, "after_outage": True}
        if state == "running":
            self._stop_quietly()
        if expno_has_data(path):
            mark_dataset(path, "partial", "TopSpin was unreachable during the acquisition; the point was acquired again")
            self._record(ctx, step, expno, path, "partial", {}, note="TopSpin unreachable; kept and marked")
        return None

    def _params(self, step: AcquisitionStep, setpoint_k: float | None) -> dict[str, object]:
        """The TopSpin parameters of the step (PARMODE says 1D or 2D, whatever the template was)."""
        kind: dict[str, object]
        if isinstance(step, Acquire2D):
            a = step.acquisition
            kind = {"PULPROG": a.pulprog, "NS": a.ns, "DS": a.ds, "TD": a.td2, "TD1": a.td1,
                    "D1": a.d1_s, "D8": step.mixing_time_s, "IN0": a.in0_s, "SW": a.sw_ppm, "SFO1": a.sfo1_mhz,
                    "1 FnMODE": a.fn_mode, "MASR": a.mas_rate_hz}  # F1's quadrature mode (acqu2); F2's stays 0
        else:
            b = step.acquisition
            kind = {"PULPROG": b.pulprog, "PARMODE": 0, "NS": b.ns, "DS": b.ds, "TD": b.td, "D1": b.d1_s,
                    "SW": b.sw_ppm, "SFO1": b.sfo1_mhz, "MASR": b.mas_rate_hz}
            if b.o1p_ppm is not None:  # O1P is TopSpin's view of O1 (Hz) = O1P x BF1; SFO1 = BF1 + O1
                o1_hz = b.o1p_ppm * b.sfo1_mhz
                kind.update({"O1": o1_hz, "SFO1": b.sfo1_mhz + o1_hz * 1e-6})
            if isinstance(step, T1Measurement):  # a pseudo-2D: one row per delay of the vdlist
                kind.update({"PARMODE": 1, "TD1": len(step.delays_s)})
        return {
            **kind,
            # TE (acqu) is the requested sample temperature; acqus TE records what the VT measured.
            # TITLE becomes pdata/1/title (the driver's set_title); the VT set point goes in it
            "TE": step.temperature_k,
            "TITLE": step.title + (f"\nVT set point {setpoint_k:.2f} K (sensor), sample {step.temperature_k:.2f} K"
                                   if setpoint_k is not None else ""),
        }

    def _acquire_once(self, step: AcquisitionStep, expno: int, ctx: StepContext, note: str = "") -> dict[str, Any]:
        name = step.dataset
        self._reserved_expnos.add((name, expno))
        try:
            path = self.spectrometer.create_dataset(name, expno, template=(step.template.name, step.template.expno))
        except ExpnoCollision as exc:
            raise StepFailed(str(exc)) from exc
        setpoint_k = self.vt.setpoint_k
        self.spectrometer.set_params(name, expno, self._params(step, setpoint_k))
        if isinstance(step, T1Measurement):  # written as TopSpin does: <expno>/vdlist, VDLIST = vdlist
            self.spectrometer.write_list(name, expno, VDLIST, step.delays_s)
        sample_start_k = self.vt.read_sample_k()
        started_at = ctx.clock.now()
        ctx.running(expno=expno, path=str(path), started_at=started_at)
        self._record(ctx, step, expno, path, "running", {"sample_k": sample_start_k, "setpoint_k": setpoint_k})
        watch = {"max_deviation_k": abs(sample_start_k - step.temperature_k), "flagged": False, "readings": 0}

        def on_poll() -> None:
            ok, reading_k = self.vt.in_band(step.temperature_k, step.policy.excursion_tolerance_k)
            watch["readings"] += 1
            watch["max_deviation_k"] = max(watch["max_deviation_k"], abs(reading_k - step.temperature_k))
            if not ok and not watch["flagged"]:
                watch["flagged"] = True
                ctx.note("vt_excursion", expno=expno, reading_k=reading_k, target_k=step.temperature_k)
                if step.policy.on_vt_excursion == "stop":
                    self.spectrometer.stop_acquisition()
                    raise StepFailed(f"sample temperature {reading_k:.2f} K left {step.temperature_k:.2f} ± "
                                     f"{step.policy.excursion_tolerance_k:g} K during {name}/{expno}; acquisition stopped")
            if ctx.should_stop():
                if step.policy.on_stop == "finish":  # the protocol asks to let a running 2D complete
                    if not watch.get("finishing"):
                        watch["finishing"] = True
                        ctx.note("stop_requested", expno=expno, policy="finish the running acquisition")
                    return
                self.spectrometer.stop_acquisition()
                raise StopRequested()

        try:
            # inside the try: a zg refused (spinning, disk full) fails and marks the dataset like a failed acquisition
            self.spectrometer.start_acquisition(name, expno)
            self.spectrometer.wait_acquisition(name, expno, step.estimate_s, overdue_factor=self.overdue_factor,
                                               poll_s=EXCURSION_POLL_S, on_poll=on_poll)
        except StopRequested:
            mark_dataset(path, "partial", "stopped by the user")
            self._record(ctx, step, expno, path, "partial", watch, note="stopped by the user")
            raise
        except SpinningFailure as exc:
            self._stop_quietly()
            mark_dataset(path, "failed", f"spinning failure: {exc}")
            self._record(ctx, step, expno, path, "failed", watch, note="spinning failure")
            raise StepFailed(f"MAS spinning failed during {name}/{expno}: acquisition stopped, temperature held",
                             detail={"expno": expno}) from exc
        except (JobFailed, AcquisitionOverdue) as exc:
            self._stop_quietly()
            mark_dataset(path, "failed", str(exc))
            self._record(ctx, step, expno, path, "failed", watch, note=str(exc))
            raise StepFailed(str(exc), detail={"expno": expno}) from exc
        sample_end_k = self.vt.read_sample_k()
        status = "flagged" if watch["flagged"] else "done"
        if watch["flagged"]:
            mark_dataset(path, "flagged", f"sample temperature left the band (max deviation "
                                          f"{watch['max_deviation_k']:.2f} K)")
        self._record(ctx, step, expno, path, status, {"sample_k": sample_end_k, "setpoint_k": setpoint_k},
                     note="; ".join(n for n in (note, f"max deviation {watch['max_deviation_k']:.2f} K") if n))
        return {"expno": expno, "path": str(path), "sample_start_k": sample_start_k, "sample_end_k": sample_end_k,
                "setpoint_k": setpoint_k, "flagged": watch["flagged"], "max_deviation_k": watch["max_deviation_k"],
                "vt_readings": watch["readings"]}

    def _stop_quietly(self) -> None:
        try:
            self.spectrometer.stop_acquisition()
        except SpectrometerError as exc:
            log.error("stopping the acquisition failed: %s", exc)
        self.make_safe()

    def _record(self, ctx: StepContext, step: AcquisitionStep, expno: int, path: Path, status: str,
                readings: dict[str, Any], note: str = "") -> None:
        ctx.journal.record_dataset(
            dataset=step.dataset, expno=expno, index=step.index, kind=step.kind, path=str(path),
            temperature_k=step.temperature_k, params=step.record_params(), status=status, at=ctx.clock.now(),
            sample_temperature_k=readings.get("sample_k"), setpoint_k=readings.get("setpoint_k"), note=note)
