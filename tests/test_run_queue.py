"""The queue of a station on disk: order, moves, removal, the hold after a failure, reload after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from acquisition.run_queue import RunQueue, safe_file_name
from protocols import InputError
from protocols.errors import MISSING


def _accept(paths: list[Path]) -> None:
    assert all(p.exists() for p in paths)


def _ids(queue: RunQueue, state: str = "queued") -> list[str]:
    return [e.id for e in queue.entries() if e.state == state]


def test_entries_keep_copies_and_survive_a_restart(tmp_path: Path) -> None:
    queue = RunQueue(tmp_path / "q")
    first = queue.add([("series.yaml", b"kind: a\n"), ("cycling.yaml", b"kind: b\n")], _accept)
    assert first.id == "q1" and first.names == ["series.yaml", "cycling.yaml"]
    assert [Path(p).read_bytes() for p in first.protocols] == [b"kind: a\n", b"kind: b\n"]
    queue.add([("x.yaml", b"x")], _accept)
    queue.update("q1", state="running", run_dir=str(tmp_path / "run"))
    again = RunQueue(tmp_path / "q")  # what a restarted serve reads
    assert [(e.id, e.state) for e in again.entries()] == [("q1", "running"), ("q2", "queued")]
    assert again.interrupted() is not None and again.interrupted().run_dir == str(tmp_path / "run")
    assert again.add([("y.yaml", b"y")], _accept).id == "q3"  # numbers are never reused


def test_move_reorders_only_the_waiting(tmp_path: Path) -> None:
    queue = RunQueue(tmp_path / "q")
    for name in "abcd":
        queue.add([(f"{name}.yaml", b"")], _accept)
    queue.update("q1", state="done")
    queue.move("q4", 0)
    assert _ids(queue) == ["q4", "q2", "q3"]
    queue.move("q4", 99)
    assert _ids(queue) == ["q2", "q3", "q4"]
    assert [e.id for e in queue.entries()] == ["q1", "q2", "q3", "q4"]  # the finished entry kept its place
    with pytest.raises(ValueError, match="only a queued entry can be moved"):
        queue.move("q1", 0)
    assert queue.next_waiting(timeout_s=0).id == "q2"


def test_remove_and_the_hold_after_a_failure(tmp_path: Path) -> None:
    queue = RunQueue(tmp_path / "q")
    queue.add([("a.yaml", b"")], _accept)
    queue.add([("b.yaml", b"")], _accept)
    queue.update("q1", state="running")
    with pytest.raises(ValueError, match="stop the run instead"):
        queue.remove("q1")
    queue.update("q1", state="failed", message="VT timeout")
    assert queue.held and queue.next_waiting(timeout_s=0) is None
    assert RunQueue(tmp_path / "q").held  # the hold survives a restart
    queue.set_held(False)
    assert queue.next_waiting(timeout_s=0).id == "q2"
    assert queue.remove("q2").state == "removed"
    assert queue.next_waiting(timeout_s=0) is None


def test_a_refused_protocol_is_not_queued_and_its_error_names_the_submitted_file(tmp_path: Path) -> None:
    queue = RunQueue(tmp_path / "q")

    def refuse(paths: list[Path]) -> None:
        raise InputError(paths[1], "temperatures[0]", 900.0, "above the probe limit")

    with pytest.raises(InputError) as caught:
        queue.add([("ok.yaml", b""), ("my series.yaml", b"")], refuse)
    assert caught.value.message().startswith("my series.yaml: temperatures[0] = 900.0")
    assert queue.entries() == [] and not any((tmp_path / "q" / "queued").iterdir())
    with pytest.raises(InputError, match="no protocol given"):
        queue.add([], _accept)


def test_a_corrupt_queue_file_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "queue.json").write_text("{not json")
    with pytest.raises(InputError) as caught:
        RunQueue(tmp_path / "q")
    assert "queue file cannot be read" in caught.value.message() and "\n" not in caught.value.message()
    assert caught.value.value is MISSING


@pytest.mark.parametrize("name, expected", [("../../etc/passwd", "passwd"), ("C:\\x\\run.yaml", "run.yaml"),
                                            ("..", "protocol.yaml"), ("a b;c.yaml", "a-b-c.yaml")])
def test_submitted_names_become_one_harmless_file_name(name: str, expected: str) -> None:
    assert safe_file_name(name) == expected


def test_a_stopped_entry_queued_again_runs_next_and_lifts_the_hold(tmp_path: Path) -> None:
    queue = RunQueue(tmp_path / "q")
    for name in "abc":
        queue.add([(f"{name}.yaml", b"")], _accept)
    queue.update("q1", state="stopped", run_dir=str(tmp_path / "run-1"))
    assert queue.held
    with pytest.raises(ValueError, match="only a failed, stopped or refused entry"):
        queue.requeue("q2")
    again = queue.requeue("q1")
    assert again.state == "queued" and again.run_dir == str(tmp_path / "run-1") and "was stopped" in again.message
    assert not queue.held and _ids(queue) == ["q1", "q2", "q3"]
    queue.update("q2", state="failed")
    assert queue.requeue("q2").state == "queued" and _ids(queue) == ["q2", "q1", "q3"]
