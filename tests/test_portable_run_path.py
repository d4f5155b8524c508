"""The run path where TopSpin runs (often Windows): nothing on it imports a POSIX-only module.

A child interpreter makes the POSIX-only modules unavailable, then imports the run path and runs
`exsylab plan`, `status`, `pause`, `resume` and `stop` on an existing run folder whose runner (this
test process) is alive, and takes instrument and run locks. Third-party packages that pick their
platform's backend themselves (pyserial, psutil) are imported before the modules are withdrawn,
as they would load their Windows backends on Windows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from acquisition.control import RunLock
from acquisition.journal import Journal
from acquisition.run_folder import create_run_folder
from protocols import load_plan

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "tests" / "data" / "exsy-short.yaml"
POSIX_ONLY = ("fcntl", "termios", "pty", "tty", "resource", "pwd", "grp")
RUN_PATH = ("acquisition.cli", "acquisition.api", "acquisition.control", "acquisition.instrument_locks",
            "acquisition.run_folder", "acquisition.journal", "acquisition.runner", "acquisition.station_runtime",
            "protocols")

CHILD = """
import contextlib, io, importlib, json, signal, sys
from pathlib import Path
import serial, psutil  # third-party: each imports its own platform's backend
POSIX_ONLY, RUN_PATH, protocol, run_dir, scratch = json.loads(sys.argv[1])
for name in POSIX_ONLY:
    sys.modules.pop(name, None)
    sys.modules[name] = None  # import now raises ImportError, as on Windows
for name in RUN_PATH:
    importlib.import_module(name)
from acquisition.cli import main
from acquisition.control import Control, RunLock, handle_signals
from acquisition.instrument_locks import hold_instruments
from acquisition.run_folder import RunFolder

def cli(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return {"code": code, "out": out.getvalue()}

control_file = Path(run_dir) / "control"
result = {"plan": cli("plan", protocol, "--json")}
result["status"] = cli("status", run_dir, "--json")
result["pause"] = cli("pause", run_dir) | {"control": control_file.read_text().strip()}
result["paused"] = cli("status", run_dir, "--json")
result["resume"] = cli("resume", run_dir) | {"control": control_file.read_text().strip()}
result["stop"] = cli("stop", run_dir) | {"control": control_file.read_text().strip()}
with hold_instruments(["COM3", "TCPIP::192.168.1.50::5025::SOCKET"], "portable test",
                      lock_dir=Path(scratch) / "locks"):
    result["locks"] = sorted(p.name for p in (Path(scratch) / "locks").iterdir())
folder = RunFolder(Path(scratch))
lock = RunLock(folder)
result["run_lock"] = lock.acquire()
before = signal.getsignal(signal.SIGINT)
with handle_signals(Control(folder)):
    signal.raise_signal(signal.SIGINT)
    result["ctrl_c"] = (Path(scratch) / "control").read_text().strip()
result["handlers_restored"] = signal.getsignal(signal.SIGINT) is before
lock.release()
result["posix_modules"] = {name: sys.modules.get(name, "absent") is None for name in POSIX_ONLY}
print(json.dumps(result))
"""


def test_run_path_without_posix_modules(tmp_path: Path) -> None:
    plan, _ = load_plan([PROTOCOL])
    folder = create_run_folder(tmp_path / "run", [PROTOCOL], None)
    folder.write_json("plan.json", plan.to_json_dict())
    journal = Journal(folder.journal)
    journal.add_steps(plan.steps)
    journal.set_meta(state="running", started_at=time.time())
    journal.transition(0, "running", at=time.time())
    journal.close()
    runner = RunLock(folder)  # this process plays the live runner
    assert runner.acquire()
    try:
        args = json.dumps([POSIX_ONLY, RUN_PATH, str(PROTOCOL), str(folder.root), str(tmp_path / "scratch")])
        (tmp_path / "scratch").mkdir()
        done = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, cwd=REPO,
                              timeout=120)
    finally:
        runner.release()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["plan"]["code"] == 0 and len(json.loads(result["plan"]["out"])["steps"]) == len(plan.steps)
    status = json.loads(result["status"]["out"])
    assert result["status"]["code"] == 0 and status["runner_alive"] and status["steps"]["running"] == 1
    assert result["pause"]["code"] == 0 and result["pause"]["control"] == "pause"
    assert json.loads(result["paused"]["out"])["state"] == "paused"
    assert result["resume"]["code"] == 0 and result["resume"]["control"] == "run"
    assert result["stop"]["code"] == 0 and result["stop"]["control"] == "stop"
    assert len(result["locks"]) == 2 and result["run_lock"]
    assert result["ctrl_c"] == "pause" and result["handlers_restored"]
    assert all(result["posix_modules"].values()), result["posix_modules"]
