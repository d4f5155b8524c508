"""Signals belong to the CLI: handle_signals installs Ctrl-C and SIGTERM handling for a run and restores the previous handlers."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from acquisition.control import Control, handle_signals
from acquisition.run_folder import RunFolder


def test_ctrl_c_once_pauses_twice_stops_then_handlers_are_restored(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    control = Control(folder)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with handle_signals(control):
        signal.raise_signal(signal.SIGINT)
        assert control.state() == "pause" and folder.control.read_text() == "pause\n"
        signal.raise_signal(signal.SIGINT)
        assert control.state() == "stop" and folder.control.read_text() == "stop\n"
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sigterm_stops(tmp_path: Path) -> None:
    control = Control(RunFolder(tmp_path))
    with handle_signals(control):
        signal.raise_signal(signal.SIGTERM)
    assert control.state() == "stop"


def test_a_second_ctrl_c_is_seen_by_another_control_of_the_folder(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    cli_side, runner_side = Control(folder), Control(folder)
    with handle_signals(cli_side):
        signal.raise_signal(signal.SIGINT)
        assert runner_side.state() == "pause"
        signal.raise_signal(signal.SIGINT)
        assert runner_side.state() == "stop"


def test_handlers_are_restored_when_the_run_raises(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), handle_signals(Control(RunFolder(tmp_path))):
        raise RuntimeError("lane failed")
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_nothing_is_installed(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    seen: list[object] = []

    def body() -> None:
        with handle_signals(Control(RunFolder(tmp_path))):
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [before]
