"""Starting a run: the crash window while its folder is made, a folder that already holds a run, and no
process-wide side effects of `start_run` (run logs of their own, the root logger and signal handlers untouched)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from acquisition.api import start_run
from acquisition.run_log import PACKAGES

DATA = Path(__file__).resolve().parent / "data"
SHORT = DATA / "exsy-short.yaml"
CYCLING = DATA / "cycling-short.yaml"
REPO_ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "acquisition.cli"]


def _staging(run_dir: Path) -> Path:
    """Where create_run_folder builds a run folder before renaming it into place."""
    return run_dir.with_name(f".{run_dir.name}.creating")


def _left_by_a_killed_start(run_dir: Path) -> Path:
    """What a start killed while its folder was being made leaves: a half-filled staging folder."""
    staging = _staging(run_dir)
    (staging / "inputs").mkdir(parents=True)
    (staging / "logs").mkdir()
    (staging / "inputs" / "protocol-1-exsy-short.yaml").write_text(SHORT.read_text()[:40])  # torn copy
    return staging


@pytest.mark.parametrize("run_dir_exists", [False, True])
def test_a_start_killed_while_making_its_folder_does_not_block_a_new_run(tmp_path: Path, run_dir_exists: bool) -> None:
    run_dir = tmp_path / "run"
    if run_dir_exists:
        run_dir.mkdir()  # an empty folder the user made for the run
    staging = _left_by_a_killed_start(run_dir)
    run = subprocess.run([*EXE, "run", str(CYCLING), "--run-dir", str(run_dir), "--quiet"], capture_output=True,
                         text=True, timeout=120, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not staging.exists()
    manifest = json.loads((run_dir / "inputs" / "manifest.json").read_text())
    assert (run_dir / "inputs" / manifest["protocols"][0]).read_text() == CYCLING.read_text()
    assert json.loads((run_dir / "summary.json").read_text())
    assert not list(tmp_path.glob(".*.creating"))


def test_a_run_dir_holding_a_complete_run_is_refused_with_exit_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, result = start_run([CYCLING], None, run_dir, show_progress=False)
    assert result.ok
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again = subprocess.run([*EXE, "run", str(CYCLING), "--run-dir", str(run_dir), "--quiet"], capture_output=True,
                           text=True, timeout=120, cwd=REPO_ROOT)
    assert again.returncode == 2
    err = again.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(run_dir) in err and "already holds a run" in err and "resume" in err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before  # nothing touched
    assert not _staging(run_dir).exists()


def _handlers() -> dict[str, list[logging.Handler]]:
    return {name: list(logging.getLogger(name).handlers) for name in ("", *PACKAGES)}


def _levels() -> dict[str, int]:
    return {name: logging.getLogger(name).level for name in ("", *PACKAGES)}


def _log(run_dir: Path) -> str:
    return (run_dir / "logs" / "run.log").read_text()


def test_two_runs_one_after_the_other_each_log_only_into_their_own_run_log(tmp_path: Path) -> None:
    handlers, levels = _handlers(), _levels()
    nmr_dir, cycler_dir = tmp_path / "nmr", tmp_path / "cycler"
    assert start_run([SHORT], None, nmr_dir, show_progress=False)[1].ok
    assert _handlers() == handlers and _levels() == levels
    assert start_run([CYCLING], None, cycler_dir, show_progress=False)[1].ok
    assert _handlers() == handlers and _levels() == levels  # nothing left on the root (or any) logger
    nmr_log, cycler_log = _log(nmr_dir), _log(cycler_dir)
    assert "[lane-nmr]" in nmr_log and "preflight cycler:ch1" not in nmr_log
    assert "preflight cycler:ch1" in cycler_log
    assert "[lane-nmr]" not in cycler_log and "spectrometer" not in cycler_log and "TopSpin" not in cycler_log


def test_two_runs_at_once_in_two_threads_each_log_only_into_their_own_run_log(tmp_path: Path) -> None:
    handlers, levels = _handlers(), _levels()
    runs = {"nmr": (SHORT, tmp_path / "nmr"), "cycler": (CYCLING, tmp_path / "cycler")}
    results: dict[str, object] = {}
    both_started = threading.Barrier(2)

    def run(name: str) -> None:
        protocol, run_dir = runs[name]
        both_started.wait()
        try:
            results[name] = start_run([protocol], None, run_dir, show_progress=False)[1]
        except BaseException as exc:  # noqa: BLE001 - judged below
            results[name] = exc

    threads = [threading.Thread(target=run, args=(name,), name=f"start-{name}") for name in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(t.is_alive() for t in threads)
    assert all(getattr(r, "ok", False) for r in results.values()), results
    assert _handlers() == handlers and _levels() == levels
    nmr_log, cycler_log = _log(runs["nmr"][1]), _log(runs["cycler"][1])
    # each run's own threads (its caller, its lanes) log into its own file only
    assert "[start-nmr]" in nmr_log and "[lane-nmr]" in nmr_log
    assert "[start-cycler]" in cycler_log and "preflight cycler:ch1" in cycler_log
    assert "[lane-nmr]" not in cycler_log and "[lane-cycler:ch1]" not in nmr_log
    # (not asserted, reported to the lead: the caller's records of the simulated instruments' preflight,
    # logged by start_run before run_log.capture registers the thread, reach every run log open then)


def test_start_run_leaves_the_signal_handlers_as_it_found_them(tmp_path: Path) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert start_run([CYCLING], None, tmp_path / "lib", show_progress=False)[1].ok
    assert {sig: signal.getsignal(sig) for sig in before} == before
    # the CLI's choice (signals=True) is for the run's duration only
    assert start_run([CYCLING], None, tmp_path / "cli", show_progress=False, signals=True)[1].ok
    assert {sig: signal.getsignal(sig) for sig in before} == before


SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from acquisition.api import start_run

caught = []
def mine(signum, frame):
    caught.append(signum)

signal.signal(signal.SIGINT, mine)
signal.signal(signal.SIGTERM, mine)
before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
folder, result = start_run([{protocol!r}], None, {run_dir!r}, show_progress=False)
assert result.ok, result
after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
assert after == before, (before, after)
control = Path({run_dir!r}) / "control"
state = control.read_text() if control.exists() else None
os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in the script (a notebook) after the run
os.kill(os.getpid(), signal.SIGTERM)
assert caught == [signal.SIGINT, signal.SIGTERM], caught
assert (control.read_text() if control.exists() else None) == state, "a signal after the run reached the run"
print("ok")
"""


def test_start_run_from_a_script_leaves_its_sigint_and_sigterm_handlers_alone(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT.format(repo=str(REPO_ROOT), protocol=str(CYCLING),
                                                    run_dir=str(tmp_path / "run"))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
