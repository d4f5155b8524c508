"""Instrument locks: one holder per instrument, all or nothing, stale locks taken over, foreign ones refused."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from hashlib import sha256
from pathlib import Path

import psutil
import pytest

from acquisition.control import RunLock, runner_alive
from acquisition.instrument_locks import (
    InstrumentInUse,
    LockFile,
    LockRecord,
    default_lock_dir,
    hold_instruments,
    lock_file_name,
)
from acquisition.run_folder import RunFolder

VT = "/dev/ttyUSB0"
SMU = "TCPIP::192.168.1.50::5025::SOCKET"
TOPSPIN = "topspin:/opt/topspin/automation"
REPO = Path(__file__).resolve().parents[1]


def _write_lock(path: Path, *, holder: str, pid: int, host: str | None = None,
                process_started: float | None = None, since_boot: float | None = None) -> bytes:
    """A lock file as another process would have left it."""
    raw = json.dumps({"holder": holder, "pid": pid, "host": host or socket.gethostname(),
                      "started_unix_s": 1_700_000_000.0, "process_started_unix_s": process_started,
                      "process_started_since_boot_s": since_boot}).encode()
    path.write_bytes(raw)
    return raw


def _dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = psutil.Process(proc.pid).create_time()
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    return proc.pid, started


def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    with hold_instruments([VT, SMU], "runs/night-1", lock_dir=tmp_path):
        with pytest.raises(InstrumentInUse) as refused:
            hold_instruments([SMU], "exsylab selftest", lock_dir=tmp_path)
        message = str(refused.value)
        assert SMU in message and "runs/night-1" in message and f"pid {os.getpid()}" in message
        assert "held" in message and "\n" not in message
    with hold_instruments([SMU], "exsylab selftest", lock_dir=tmp_path):  # released at the end of the block
        pass


def test_all_or_nothing(tmp_path: Path) -> None:
    first = hold_instruments([SMU], "runs/a", lock_dir=tmp_path)
    with pytest.raises(InstrumentInUse, match="runs/a"):
        hold_instruments([VT, TOPSPIN, SMU], "runs/b", lock_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock_file_name(SMU)]
    first.release()
    assert list(tmp_path.iterdir()) == []


def test_extra_lock_file_in_a_shared_folder(tmp_path: Path) -> None:
    shared = tmp_path / "automation" / "exsylab.lock"
    shared.parent.mkdir()
    locks = hold_instruments([TOPSPIN], "runs/a", lock_dir=tmp_path / "locks", extra_lock_files=[shared])
    assert json.loads(shared.read_text())["holder"] == "runs/a"
    with pytest.raises(InstrumentInUse, match=f"lock file {shared} is held by runs/a"):
        hold_instruments([], "runs/b", lock_dir=tmp_path / "locks", extra_lock_files=[shared])
    assert (tmp_path / "locks" / lock_file_name(TOPSPIN)).exists()  # the refusal took nothing of ours
    locks.release()
    assert not shared.exists()


def test_without_hard_links_the_lock_is_still_exclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    with hold_instruments([VT], "runs/a", lock_dir=tmp_path):
        with pytest.raises(InstrumentInUse, match="runs/a"):
            hold_instruments([VT], "runs/b", lock_dir=tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == [lock_file_name(VT)]
    assert list(tmp_path.iterdir()) == []


def test_file_names_are_safe_and_distinct() -> None:
    names = {lock_file_name(a) for a in (VT, SMU, TOPSPIN, "socket://host:7777", "COM3", "com3")}
    assert len(names) == 6
    assert all(n.endswith(".lock") and all(c.isalnum() or c in "-." for c in n) for n in names)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid, started = _dead_pid()
    _write_lock(tmp_path / lock_file_name(VT), holder="runs/crashed", pid=pid, process_started=started)
    with caplog.at_level(logging.WARNING), hold_instruments([VT], "runs/next", lock_dir=tmp_path) as locks:
        assert locks.takeovers == [f"took over the lock of runs/crashed (pid {pid}, dead): {tmp_path / lock_file_name(VT)}"]
        assert f"took over the lock of runs/crashed (pid {pid}, dead)" in caplog.text
        assert json.loads((tmp_path / lock_file_name(VT)).read_text())["holder"] == "runs/next"


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="waiting without reaping is POSIX")
def test_lock_of_an_exited_but_unreaped_process_is_taken_over(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited; a zombie until wait()
    try:
        _write_lock(tmp_path / lock_file_name(VT), holder="runs/zombie", pid=proc.pid, process_started=started)
        with hold_instruments([VT], "runs/next", lock_dir=tmp_path) as locks:
            assert locks.takeovers and f"pid {proc.pid}, dead" in locks.takeovers[0]
    finally:
        proc.wait()


def test_lock_of_a_reused_pid_is_taken_over(tmp_path: Path) -> None:
    me = psutil.Process()
    _write_lock(tmp_path / lock_file_name(VT), holder="runs/old", pid=me.pid, process_started=me.create_time() - 3600,
                since_boot=me.create_time() - psutil.boot_time() - 3600)
    with hold_instruments([VT], "runs/new", lock_dir=tmp_path) as locks:
        assert locks.takeovers and "pid reused" in locks.takeovers[0]


def test_lock_of_a_live_process_is_kept(tmp_path: Path) -> None:
    me = psutil.Process()
    _write_lock(tmp_path / lock_file_name(VT), holder="runs/live", pid=me.pid, process_started=me.create_time())
    with pytest.raises(InstrumentInUse, match="runs/live"):
        hold_instruments([VT], "runs/other", lock_dir=tmp_path)


def test_a_clock_step_does_not_make_a_live_holder_look_reused(tmp_path: Path) -> None:
    """psutil's start dates move with the clock on Linux; the time since boot does not."""
    me = psutil.Process()
    since_boot = me.create_time() - psutil.boot_time()
    _write_lock(tmp_path / lock_file_name(VT), holder="runs/live", pid=me.pid,
                process_started=me.create_time() - 3600, since_boot=since_boot)
    with pytest.raises(InstrumentInUse, match="runs/live"):
        hold_instruments([VT], "runs/other", lock_dir=tmp_path)


def test_lock_from_another_host_is_refused_with_how_to_clear_it(tmp_path: Path) -> None:
    path = tmp_path / lock_file_name(TOPSPIN)
    _write_lock(path, holder="runs/on-the-spectrometer-pc", pid=1, host="nmr-pc-2")
    with pytest.raises(InstrumentInUse) as refused:
        hold_instruments([TOPSPIN], "runs/here", lock_dir=tmp_path)
    message = str(refused.value)
    assert "runs/on-the-spectrometer-pc" in message and "nmr-pc-2" in message
    assert f"delete {path}" in message and "\n" not in message
    assert path.exists()


def test_unreadable_lock_is_refused_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / lock_file_name(VT)
    path.write_bytes(b"")
    with pytest.raises(InstrumentInUse, match="cannot be read"):
        hold_instruments([VT], "runs/a", lock_dir=tmp_path)


def test_release_is_idempotent_and_leaves_a_later_holder_alone(tmp_path: Path) -> None:
    locks = hold_instruments([VT], "runs/a", lock_dir=tmp_path)
    locks.release()
    later = hold_instruments([VT], "runs/b", lock_dir=tmp_path)
    locks.release()
    assert json.loads((tmp_path / lock_file_name(VT)).read_text())["holder"] == "runs/b"
    later.release()
    later.release()
    assert list(tmp_path.iterdir()) == []


def test_lock_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXSYLAB_LOCK_DIR", str(tmp_path / "site-locks"))
    assert default_lock_dir() == tmp_path / "site-locks"
    monkeypatch.delenv("EXSYLAB_LOCK_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    expected = tmp_path / "cache" / "exsylab" / "locks" if sys.platform != "win32" else default_lock_dir()
    assert default_lock_dir() == expected


def test_a_slow_taker_of_a_stale_lock_finds_it_already_taken(tmp_path: Path) -> None:
    """Two takers read the same stale lock; the first takes it over; the second must not steal it."""
    path = tmp_path / lock_file_name(VT)
    pid, started = _dead_pid()
    stale_raw = _write_lock(path, holder="runs/crashed", pid=pid, process_started=started)
    stale = LockRecord.parse(stale_raw)
    assert stale is not None
    first, slow = LockFile(path, "runs/first"), LockFile(path, "runs/slow")
    assert first.acquire() is None and first.takeover
    blocker = slow._take_over(stale_raw, stale, "dead", LockRecord.of_this_process("runs/slow").to_bytes())
    assert blocker is not None and blocker.record is not None and blocker.record.holder == "runs/first"
    assert json.loads(path.read_text())["holder"] == "runs/first"
    first.release()


def test_a_ticket_left_by_a_dead_taker_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / lock_file_name(VT)
    pid, started = _dead_pid()
    stale_raw = _write_lock(path, holder="runs/crashed", pid=pid, process_started=started)
    ticket = path.with_name(f"{path.name}.takeover-{sha256(stale_raw).hexdigest()[:12]}")
    _write_lock(ticket, holder="runs/died-while-taking-over", pid=pid, process_started=started)
    with hold_instruments([VT], "runs/next", lock_dir=tmp_path) as locks:
        assert locks.takeovers and "runs/crashed" in locks.takeovers[0]
    assert list(tmp_path.iterdir()) == []


_TAKER = """
import sys
from pathlib import Path
from acquisition.instrument_locks import InstrumentInUse, hold_instruments
sys.stdin.readline()  # everyone starts together
try:
    locks = hold_instruments([sys.argv[2]], sys.argv[3], lock_dir=Path(sys.argv[1]))
    print("won", flush=True)
except InstrumentInUse as exc:
    print("refused", exc, flush=True)
sys.stdin.readline()  # hold until every taker has tried
"""


def test_racing_takers_of_one_stale_lock_exactly_one_wins(tmp_path: Path) -> None:
    for round_ in range(3):
        lock_dir = tmp_path / f"round{round_}"
        lock_dir.mkdir()
        pid, started = _dead_pid()
        _write_lock(lock_dir / lock_file_name(VT), holder="runs/crashed", pid=pid, process_started=started)
        takers = [subprocess.Popen([sys.executable, "-c", _TAKER, str(lock_dir), VT, f"runs/taker{i}"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
                  for i in range(4)]
        for proc in takers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in takers:
            assert proc.stdout is not None
            results.append(proc.stdout.readline())
        for proc in takers:
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait() == 0
        assert sum(r.startswith("won") for r in results) == 1, results
        assert all(r.startswith("refused") and "runs/taker" in r for r in results if not r.startswith("won"))


def test_run_lock_is_portable_and_says_who_holds_it(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert not runner_alive(folder)
    lock = RunLock(folder)
    assert lock.acquire() and runner_alive(folder) and lock.takeover is None
    other = RunLock(folder)
    assert not other.acquire()
    holder = other.holder()
    assert holder is not None and f"the runner of {tmp_path}" in holder and f"pid {os.getpid()}" in holder
    lock.release()
    assert not runner_alive(folder) and other.holder() is None


def test_run_lock_of_a_killed_runner_is_taken_over(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    pid, started = _dead_pid()
    _write_lock(folder.lock, holder=f"the runner of {tmp_path}", pid=pid, process_started=started)
    assert not runner_alive(folder)
    lock = RunLock(folder)
    assert lock.acquire() and lock.takeover is not None and f"pid {pid}, dead" in lock.takeover
    lock.release()


def test_lock_records_the_process_start_time() -> None:
    record = LockRecord.of_this_process("runs/a\nwith a newline")
    assert record.holder == "runs/a with a newline"
    assert record.process_started_unix_s == pytest.approx(psutil.Process().create_time())
    assert record.process_started_since_boot_s == pytest.approx(psutil.Process().create_time() - psutil.boot_time())
    assert record.started_unix_s <= time.time()
    assert LockRecord.parse(record.to_bytes()) == record
