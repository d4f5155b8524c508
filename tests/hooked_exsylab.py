"""Test-only launcher: `python tests/hooked_exsylab.py <exsylab arguments>`, with a hook that fires at a chosen point.

The point is chosen by the test in the environment variable EXSYLAB_TEST_HOOK (JSON), never by a
real-time guess:

- {"after_transitions": N}: after the run's N-th committed journal transaction (Journal.transitions);
- {"at_virtual_s": T}: when the virtual clock passes T seconds after it was created;
- {"step_running": I, "after_virtual_s": T}: T virtual seconds after step I was committed running (T = 0: at once);
- {"after_event": STATUS, "count": N}: right after the N-th journal event with that status is committed
  (e.g. an adaptive run's N-th "adaptive_decision", before the point it chose is acquired).

and "action" says what happens there:

- "kill" (default): os.kill(own pid, SIGKILL), as a power cut would;
- "sigint": Ctrl-C (SIGINT to itself), then the hooked thread waits (real time, bounded) until the
  run's control file says "pause", so that nothing moves before the CLI's handler has run;
- "pause_cli": `exsylab pause RUN_DIR` in another process, waited for by the hooked thread.

Without EXSYLAB_TEST_HOOK it is plain `exsylab`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition import cli  # noqa: E402
from acquisition.journal import Journal  # noqa: E402
from drivers.clock import VirtualClock  # noqa: E402

SIGINT_WAIT_REAL_S = 30.0


class _Hook:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.action = spec.get("action", "kill")
        self.transitions = 0
        self.events = 0
        self.clock_start: float | None = None
        self.deadline: float | None = None  # virtual time at which to fire
        self.fired = False
        self.lock = threading.Lock()
        self.control: Path | None = None
        if "at_virtual_s" in spec:
            self.relative_s = float(spec["at_virtual_s"])

    def fire(self) -> None:
        with self.lock:
            if self.fired:
                return
            self.fired = True
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # never reached: SIGKILL is not delivered later than this
        elif self.action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + SIGINT_WAIT_REAL_S
            while time.monotonic() < deadline:  # hold this lane until the handler wrote "pause"
                if self.control is not None and self.control.exists() and self.control.read_text().strip() != "run":
                    return
                time.sleep(0.01)
            raise RuntimeError("the SIGINT handler did not write the control file")
        elif self.action == "pause_cli":
            assert self.control is not None
            subprocess.run([sys.executable, "-m", "acquisition.cli", "pause", str(self.control.parent)], check=True,
                           cwd=Path(__file__).resolve().parents[1], timeout=SIGINT_WAIT_REAL_S)
        else:
            raise ValueError(f"unknown hook action {self.action!r}")

    def on_transitions(self, journal: Journal, changes, at: float) -> None:
        self.control = journal.path.parent / "control"
        if not changes:  # the runner's flush of nothing: not a transaction
            return
        self.transitions += 1
        if "after_transitions" in self.spec and self.transitions >= int(self.spec["after_transitions"]):
            self.fire()
        target = self.spec.get("step_running")
        if target is not None and self.deadline is None and any(
                change[0] == target and change[1] == "running" for change in changes):
            self.deadline = at + float(self.spec.get("after_virtual_s", 0.0))
            if self.deadline <= at:
                self.fire()

    def on_event(self, status: str) -> None:
        if status == self.spec.get("after_event"):
            self.events += 1
            if self.events >= int(self.spec.get("count", 1)):
                self.fire()

    def on_clock(self, clock: VirtualClock) -> None:
        if self.deadline is not None and clock.now() >= self.deadline:
            self.fire()


def install(spec: dict) -> None:
    hook = _Hook(spec)
    original_transitions = Journal.transitions
    original_init = VirtualClock.__init__
    original_sleep = VirtualClock.sleep
    original_event = Journal.event

    def transitions(self, changes, *args, **kwargs):
        result = original_transitions(self, changes, *args, **kwargs)
        hook.on_transitions(self, list(changes), kwargs.get("at", args[0] if args else 0.0))
        return result

    def event(self, index, status, *args, **kwargs):
        original_event(self, index, status, *args, **kwargs)
        hook.on_event(status)

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if "at_virtual_s" in spec:
            hook.deadline = self.now() + hook.relative_s

    def sleep(self, seconds):
        original_sleep(self, seconds)
        hook.on_clock(self)

    Journal.transitions = transitions  # type: ignore[method-assign]
    Journal.event = event  # type: ignore[method-assign]
    VirtualClock.__init__ = init  # type: ignore[method-assign]
    VirtualClock.sleep = sleep  # type: ignore[method-assign]


if __name__ == "__main__":
    raw = os.environ.get("EXSYLAB_TEST_HOOK")
    if raw:
        install(json.loads(raw))
    sys.exit(cli.main(sys.argv[1:]))
