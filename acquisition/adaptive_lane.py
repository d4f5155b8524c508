"""The adaptive VT-EXSY step on the NMR lane: choose, move, acquire, refit, decide, until target or budget.

Every decision is a journal event (`adaptive_decision`) written before the point it chose is
acquired; every point taken is recorded as an ordinary EXSY dataset (kind acquire_2d) and an
`adaptive_point` event. A resumed run re-reads both: decisions already taken are executed, never
taken again, and a new decision is a pure function of the datasets taken (in point order) and the
protocol, so a run killed and resumed makes the same choices as one that was not (docs/adaptive.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols.adaptive_step import AdaptiveExsy

from .adaptive_events import DECISION, POINT, PROGRESS, progress_text
from .runner import PAUSE_POLL_REAL_S, StepContext, StepFailed, StopRequested

if TYPE_CHECKING:
    from .nmr_lane import NmrLane

log = logging.getLogger(__name__)

STOP_TARGET, STOP_BUDGET, STOP_POINTS, STOP_NO_GAIN = ("target met", "budget spent", "max points reached",
                                                       "no candidate improves the target")
RUNNERS_UP = 3  # candidates after the chosen one written into each decision


def run_adaptive_exsy(step: AdaptiveExsy, ctx: StepContext, lane: "NmrLane") -> dict[str, Any]:
    """The whole closed loop of one adaptive protocol (the executor of kind adaptive_exsy)."""
    return _Campaign(step, ctx, lane).run()


class _Campaign:
    """One adaptive run's state, rebuilt from the journal whenever the step (re)starts."""

    def __init__(self, step: AdaptiveExsy, ctx: StepContext, lane: "NmrLane") -> None:
        self.step, self.ctx, self.lane = step, ctx, lane
        events = [e for e in ctx.journal.events(limit=10_000_000) if e["index"] == step.index]
        self.decisions = [e["detail"] for e in events if e["status"] == DECISION]
        self.taken = {int(e["detail"]["point"]) for e in events if e["status"] == POINT}
        self.last_analysis: dict[str, Any] | None = None

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._reconcile_interrupted()
        while True:
            self._hold_while_paused()
            taken = self.taken | set(self._done_points())
            pending = [d for d in self.decisions if d["action"] == "stop" or d["point"] not in taken]
            if pending:
                decision = pending[0]  # taken before a kill: executed as it was, not taken again
            else:
                decision = self._decide()
                self.ctx.note(DECISION, **decision)
                self.decisions.append(decision)
                if decision["action"] == "stop":
                    self.ctx.notifier.notify({"event": "adaptive EXSY stopped", "lane": self.step.lane,
                                              "reason": decision["stop_reason"], "hours_used": decision["hours_used"],
                                              "stderr": decision["stderr"]})
            if decision["action"] == "stop":
                return self._outcome(decision)
            self._take(decision)

    def _hold_while_paused(self) -> None:
        """Between points the run is at a safe point: `exsylab pause` holds it here (VT at temperature)."""
        announced = False
        while (state := self.ctx.control.state()) != "run":
            if state == "stop":
                raise StopRequested()
            if not announced:
                self.ctx.note("paused", reason="paused by the user between adaptive points")
                announced = True
            self.lane.wait_real_s(PAUSE_POLL_REAL_S)  # a pause is not run time
        if announced:
            self.ctx.note("resumed", reason="run requested")

    def _done_points(self) -> dict[int, dict[str, Any]]:
        """Point -> its complete dataset record (status done), from the journal."""
        return {int(d["params"]["point"]): d for d in self.ctx.journal.datasets()
                if d["idx"] == self.step.index and d["status"] == "done" and "point" in d["params"]}

    def _reconcile_interrupted(self) -> None:
        """A point found running (the runner was killed during it): complete -> done, else marked partial."""
        for record in self.ctx.journal.datasets():
            if record["idx"] != self.step.index or record["status"] != "running" or "point" not in record["params"]:
                continue
            point = self.step.point_step(int(record["params"]["point"]), float(record["temperature_k"]),
                                         float(record["params"]["mixing_time_s"]))
            verdict = self.lane.reconcile(point.model_copy(update={"expno": int(record["expno"])}),
                                          {"expno": int(record["expno"]), "started_at": record["at"]}, self.ctx)
            log.info("adaptive point %d found running on resume: %s", point.point, verdict)

    def _take(self, decision: dict[str, Any]) -> None:
        """Move the VT if the point is elsewhere, acquire the 2D, record what it cost."""
        step, ctx = self.step, self.ctx
        n, temperature_k, mixing_time_s = int(decision["point"]), float(decision["temperature_k"]), \
            float(decision["mixing_time_s"])
        started_s = ctx.clock.now()
        sample_k = self.lane.vt.read_sample_k()
        moved = None
        if abs(sample_k - temperature_k) > step.stability.tolerance_k or not self.lane.temperature_established:
            moved = self.lane.move_and_wait(temperature_k, step.ramp_k_per_min, step.stability, ctx)
        outcome = self.lane.acquire_point(step.point_step(n, temperature_k, mixing_time_s), ctx)
        ctx.note(POINT, point=n, expno=outcome["expno"], temperature_k=temperature_k, mixing_time_s=mixing_time_s,
                 elapsed_s=ctx.clock.now() - started_s, moved=moved is not None, flagged=outcome.get("flagged", False))
        self.taken.add(n)

    # ---- deciding --------------------------------------------------------------------------
    def _taken_points(self) -> list[tuple[int, float, float]]:
        """(point, temperature, mixing time) of every decided point taken, in point order."""
        taken = self.taken | set(self._done_points())
        return sorted((int(d["point"]), float(d["temperature_k"]), float(d["mixing_time_s"]))
                      for d in self.decisions if d["action"] == "acquire" and d["point"] in taken)

    def _planned_used_s(self, taken: list[tuple[int, float, float]]) -> float:
        """Spectrometer time of the points taken, planned (acquisition + VT moves): the budget's account."""
        at_k, used_s = self.step.start_k, 0.0
        for _, temperature_k, mixing_time_s in taken:
            used_s += self.step.move_s(at_k, temperature_k) + self.step.acquisition_s(mixing_time_s)
            at_k = temperature_k
        return used_s

    def _decide(self) -> dict[str, Any]:
        """The next decision, from the datasets taken so far (a pure function of them and the protocol)."""
        step = self.step
        taken = self._taken_points()
        n = len(self.decisions)
        used_s = self._planned_used_s(taken)
        at_k = taken[-1][1] if taken else step.start_k
        base = {"decision": n, "hours_used": used_s / 3600.0, "budget_h": step.budget_s / 3600.0}
        seeds = step.seed_points()
        if n < len(seeds):
            temperature_k, mixing_time_s = seeds[n]
            return {**base, "action": "acquire", "reason": "seed", "point": n, "expno": step.expno_start + n,
                    "temperature_k": temperature_k, "mixing_time_s": mixing_time_s}
        return self._design_decision(base, n, at_k, used_s)

    def _design_decision(self, base: dict[str, Any], n: int, at_k: float, used_s: float) -> dict[str, Any]:
        from analysis.api import analyze_paths
        from analysis.design import CandidateSource, DesignState, analysis_stderrs, models_from_analysis
        from analysis.errors import AnalysisFitError, AnalysisInputError

        step = self.step
        done = self._done_points()
        paths = [Path(done[p]["path"]) for p in sorted(done)]
        names = list(step.site_names)
        try:
            result = analyze_paths(paths, list(step.sites_ppm), names)
            models = models_from_analysis(result, names)
        except (AnalysisFitError, AnalysisInputError) as exc:
            raise StepFailed(f"adaptive EXSY: the fit after {len(paths)} points failed ({exc}); the points taken "
                             "are kept, `exsylab resume` tries again") from exc
        fitted_of = _fitted_temperatures(step.temperatures_k, models)
        missing = [t for t in step.temperatures_k if t not in fitted_of]
        if missing:
            raise StepFailed(f"adaptive EXSY: no exchange fit at {', '.join(f'{t:g} K' for t in missing)} after "
                             f"{len(paths)} points ({'; '.join(result['warnings'][:3]) or 'no warning'})")
        acquired: dict[float, list[float]] = {}
        for p in result["points"]:
            acquired.setdefault(_nearest(models, p["temperature_k"]), []).append(p["mixing_time_s"])
        state = DesignState.start(models, acquired, step.target_kind, step.target_value)
        reported = analysis_stderrs(result, names, step.target_kind)
        expected = set(state.variances())
        reported_all = {q: reported.get(q, float("inf")) for q in expected}
        state.calibrate(reported_all)
        # the design works at the fitted (measured) temperatures; decisions name the protocol's
        source = CandidateSource(list(fitted_of.values()), step.candidate_mixing_times_s,
                                 {m: step.acquisition_s(m) for m in step.candidate_mixing_times_s}, step.move_s)
        at_fitted = _nearest(models, at_k)
        stderr = self._named(reported_all)
        fit_summary = self._fit_summary(result)
        base = {**base, "stderr": stderr, "target": step.target_value, "target_kind": step.target_kind,
                "points_fitted": len(paths), "fit": fit_summary}
        remaining_s = step.budget_s - used_s
        stop = None
        if all(q in state.met for q in expected):
            stop = STOP_TARGET
        elif n >= step.max_points:
            stop = STOP_POINTS
        candidates = [c for c in source(at_fitted) if c.cost_s <= remaining_s]
        if stop is None and not candidates:
            stop = STOP_BUDGET
        ranked = state.rank(candidates) if stop is None else []
        if stop is None and ranked[0].gain_per_h <= 0:
            stop = STOP_NO_GAIN
        eta_h = None if stop else state.hours_to_target(source, at_fitted, remaining_s, step.max_points - n)
        self._progress(n, used_s, stderr, eta_h, stop)
        if stop is not None:
            return {**base, "action": "stop", "reason": "stop", "stop_reason": stop, "point": None,
                    "arrhenius": result["arrhenius"]}
        best = ranked[0]
        protocol_k = next(t for t, f in fitted_of.items() if f == best.candidate.temperature_k)
        return {**base, "action": "acquire", "reason": "design", "point": n, "expno": step.expno_start + n,
                "temperature_k": protocol_k, "mixing_time_s": best.candidate.mixing_time_s,
                "cost_s": best.candidate.cost_s, "move_s": best.candidate.cost_s - step.acquisition_s(
                    best.candidate.mixing_time_s),
                "objective": state.objective(), "objective_after": best.objective_after,
                "gain_per_h": best.gain_per_h, "eta_h": eta_h,
                "predicted_stderr": self._named(state.predicted_stderr(state.with_point(
                    best.candidate.temperature_k, best.candidate.mixing_time_s))),
                "runners_up": [{"temperature_k": s.candidate.temperature_k, "mixing_time_s": s.candidate.mixing_time_s,
                                "gain_per_h": s.gain_per_h} for s in ranked[1:1 + RUNNERS_UP]]}

    # ---- accounts ------------------------------------------------------------------------------
    def _named(self, values: dict[str, float]) -> dict[str, float]:
        """'0-1' -> 'Li2S-LPSC', '293.15/0-1' -> '293.15 K Li2S-LPSC' (JSON-safe: inf becomes None)."""
        names = self.step.site_names
        out: dict[str, Any] = {}
        for key, value in values.items():
            where, _, pair = key.rpartition("/")
            i, j = (int(x) for x in pair.split("-"))
            label = f"{names[i]}-{names[j]}" if not where else f"{where} K {names[i]}-{names[j]}"
            out[label] = float(value) if value == value and abs(value) != float("inf") else None
        return out

    @staticmethod
    def _fit_summary(result: dict[str, Any]) -> list[dict[str, Any]]:
        """Per temperature the forward rates with their stderr and the residual: the fit a decision came from."""
        summary = []
        for fit in result["fits"]:
            seen: set[frozenset[str]] = set()
            rates = []
            for r in fit["rates"]:
                if frozenset((r["from"], r["to"])) not in seen:
                    seen.add(frozenset((r["from"], r["to"])))
                    rates.append({"pair": f"{r['from']}-{r['to']}", "k_per_s": r["k_per_s"],
                                  "k_stderr_per_s": r["k_stderr_per_s"]})
            summary.append({"temperature_k": fit["temperature_k"], "rates": rates, "rms_residual": fit["rms_residual"]})
        return summary

    def _progress(self, n: int, used_s: float, stderr: dict[str, float], eta_h: float | None, stop: str | None) -> None:
        """The live account: current stderrs against the target, hours used, the estimated hours still needed."""
        detail = {"points": n, "hours_used": used_s / 3600.0, "budget_h": self.step.budget_s / 3600.0, "stderr": stderr,
                  "target": self.step.target_value, "eta_h": eta_h, "stop_reason": stop}
        self.ctx.note(PROGRESS, **detail)
        log.info("%s", progress_text(detail))

    def _outcome(self, decision: dict[str, Any]) -> dict[str, Any]:
        """The step's outcome: why it stopped, what it used, what it reached."""
        taken = self._taken_points()
        return {"stop_reason": decision["stop_reason"], "points": len(taken), "decisions": len(self.decisions),
                "hours_used": decision["hours_used"], "budget_h": decision["budget_h"], "stderr": decision["stderr"],
                "target": decision["target"], "target_kind": decision["target_kind"],
                "arrhenius": decision.get("arrhenius", []), "fit": decision.get("fit", [])}


def _nearest(models: dict[float, Any], temperature_k: float) -> float:
    """The fitted temperature nearest a protocol temperature."""
    return min(models, key=lambda t: abs(t - temperature_k))


def _fitted_temperatures(temperatures_k: tuple[float, ...], models: dict[float, Any]) -> dict[float, float]:
    """Protocol temperature -> the fitted one nearest it, if within half the protocol's closest spacing."""
    ordered = sorted(temperatures_k)
    reach_k = min(b - a for a, b in zip(ordered, ordered[1:])) / 2
    return {t: f for t in temperatures_k if models and abs((f := _nearest(models, t)) - t) < reach_k}
