"""`exsylab serve` over a real uvicorn on a loopback port: access, the queue, files, kill -9 and restart.

Runs are simulated (sim:// station, virtual time); the gated launcher (tests/gated_exsylab.py)
holds a run at a chosen dataset so that the test acts while it stands at a known point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from acquisition.journal import Journal
from serve_support import EXE, REPO, start_serve

EXAMPLES = REPO / "examples"
DATA = REPO / "tests" / "data"
SHORT = DATA / "exsy-short.yaml"
CYCLING = DATA / "cycling-short.yaml"
TOKEN = "a-token-of-the-station-file-0123"


def _station(tmp_path: Path, token: str | None = None) -> Path:
    data = yaml.safe_load((EXAMPLES / "station-sim.yaml").read_text())
    if token:
        data["server"] = {"token": token}
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.fixture
def served(tmp_path: Path):
    server = start_serve(_station(tmp_path, TOKEN), tmp_path / "runs", tmp_path / "gates", holds=(1,), token=TOKEN)
    yield server
    server.stop()


def test_listens_on_loopback_only_and_describes_its_api(served) -> None:
    port = int(served.url.rsplit(":", 1)[1].strip("/"))
    listening = [c.laddr for c in psutil.Process(served.process.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
    assert served.url == f"http://127.0.0.1:{port}/"
    status, spec = served.request("GET", "/openapi.json", token=None)
    assert status == 200
    for path in ("/api/state", "/api/queue", "/api/queue/{entry_id}", "/api/run/{command}", "/api/events"):
        assert path in spec["paths"], path
    assert served.output[1] == f"control token: server.token of {served.station}"  # the token is not printed


def test_beyond_loopback_needs_a_token_in_the_station_file(tmp_path: Path) -> None:
    result = _cli("serve", "--station", str(_station(tmp_path)), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "server.token" in lines[0] and "0.0.0.0" in lines[0], result.stderr


def test_a_second_server_of_the_station_is_refused(served) -> None:
    result = _cli("serve", "--station", str(served.station), "--port", "0", "--runs-dir", str(served.runs))
    assert result.returncode == 2
    assert "already served by exsylab serve" in result.stderr and f"pid {served.process.pid}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_queue_control_needs_the_token_and_reading_does_not(served) -> None:
    body = {"uploads": [{"name": "short.yaml", "text": SHORT.read_text()}]}
    assert served.request("POST", "/api/queue", body, token=None)[0] == 401
    assert served.request("POST", "/api/queue", body, token="wrong-token-wrong-token")[0] == 403
    assert served.queue() == []
    status, first = served.request("POST", "/api/queue", body)
    assert status == 201 and first["state"] == "queued" and first["names"] == ["short.yaml"]
    served.wait_gate(1)  # the first entry runs and stands at its first dataset
    _, second = served.request("POST", "/api/queue", body)
    assert served.request("DELETE", f"/api/queue/{second['id']}", token=None)[0] == 401
    assert served.request("DELETE", f"/api/queue/{second['id']}", token="nope-nope-nope-nope")[0] == 403
    assert [e["state"] for e in served.queue()] == ["running", "queued"]
    assert served.request("DELETE", f"/api/queue/{first['id']}")[0] == 409  # running: stop it instead
    assert served.request("DELETE", f"/api/queue/{second['id']}")[0] == 200
    assert [e["state"] for e in served.queue()] == ["running", "removed"]
    assert served.request("POST", "/api/run/pause", token=None)[0] == 401
    assert served.request("POST", "/api/run/pause", token="nope-nope-nope-nope")[0] == 403
    run_dir = Path(served.queue()[0]["run_dir"])
    assert (run_dir / "control").read_text().strip() == "run"
    assert served.request("GET", "/api/state", token=None)[0] == 200
    served.release(1)
    served.wait_for("the first run to end", lambda: served.queue()[0]["state"] == "done")
    # the queue file on disk says the same (it is what a restart reads)
    on_disk = json.loads((served.runs / "queue-station" / "queue.json").read_text())
    assert [e["state"] for e in on_disk["entries"]] == ["done", "removed"]
    station_copy = next((run_dir / "inputs").glob("station-*"))
    assert TOKEN not in station_copy.read_text()  # the control token never lands in a run folder


def test_a_stopped_run_holds_the_queue_and_queued_again_resumes_in_its_folder(served) -> None:
    body = {"uploads": [{"name": "short.yaml", "text": SHORT.read_text()}]}
    served.request("POST", "/api/queue", body)
    served.request("POST", "/api/queue", body)
    served.wait_gate(1)
    assert served.request("POST", "/api/run/stop")[0] == 200
    served.release(1)
    served.wait_for("q1 to stop", lambda: served.queue()[0]["state"] == "stopped")
    listing = served.request("GET", "/api/queue")[1]
    assert listing["held"] and [e["state"] for e in listing["entries"]] == ["stopped", "queued"]  # q2 waits
    run_dir = served.queue()[0]["run_dir"]
    assert served.request("POST", "/api/queue/q1/requeue", token=None)[0] == 401
    assert served.request("POST", "/api/queue/q2/requeue")[0] == 409
    assert served.request("POST", "/api/queue/q1/requeue")[0] == 200
    served.wait_for("both to end", lambda: [e["state"] for e in served.queue()] == ["done", "done"])
    q1 = served.queue()[0]
    assert q1["run_dir"] == run_dir
    journal = Journal(Path(run_dir) / "journal.sqlite")
    try:
        done = [(d["dataset"], d["expno"]) for d in journal.datasets() if d["status"] == "done"]
        assert len(done) == 6 and len(set(done)) == 6
    finally:
        journal.close()


def test_a_protocol_with_a_wrong_value_is_refused_naming_the_file(served, tmp_path: Path) -> None:
    bad = tmp_path / "bad-series.yaml"
    bad.write_text(SHORT.read_text().replace("temperatures: [20 degC, 40 degC]", "temperatures: [20 degC, 900 degC]"))
    status, reply = served.request("POST", "/api/queue", {"uploads": [{"name": "bad-series.yaml", "text": bad.read_text()}]})
    assert status == 400 and reply["detail"].startswith("bad-series.yaml: ")
    assert served.queue() == []
    assert not any((served.runs / "queue-station" / "queued").iterdir())  # no copy kept of a refused file
    result = _cli("queue", "add", str(bad), "--station", str(served.station))
    assert result.returncode == 2 and "bad-series.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_queue_from_the_command_line(served) -> None:
    station = str(served.station)
    added = _cli("queue", "add", str(SHORT), str(CYCLING), "--station", station)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "queued q1: exsy-short.yaml, cycling-short.yaml"
    served.wait_gate(1)
    assert _cli("queue", "add", str(SHORT), "--station", station).returncode == 0
    listing = _cli("queue", "list", "--station", station, "--json")
    assert [(e["id"], e["state"]) for e in json.loads(listing.stdout)["entries"]] == [("q1", "running"), ("q2", "queued")]
    removed = _cli("queue", "remove", "q2", "--station", station)
    assert removed.returncode == 0 and "removed q2" in removed.stdout
    refused = _cli("queue", "remove", "q1", "--station", station)
    assert refused.returncode == 2 and "only a queued entry can be removed" in refused.stderr
    served.release(1)
    served.wait_for("q1 to end", lambda: served.queue()[0]["state"] == "done")
    text = _cli("queue", "list", "--station", station).stdout
    assert "q1  done" in text and "q2  removed" in text


def test_the_command_line_without_a_server_says_so(tmp_path: Path) -> None:
    result = _cli("queue", "list", "--station", str(_station(tmp_path)))
    assert result.returncode == 2 and "no `exsylab serve` is running for this station" in result.stderr


def test_no_route_serves_a_file_outside_the_run_and_data_folders(served, tmp_path: Path) -> None:
    served.request("POST", "/api/queue", {"uploads": [{"name": "short.yaml", "text": SHORT.read_text()}]})
    expno = served.wait_gate(1)
    run_dir = Path(served.queue()[0]["run_dir"])
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    (run_dir / "link-out").symlink_to(secret)
    ok, acqus = served.request("GET", f"/api/runs/q1/data/{expno}/acqus")
    assert ok == 200 and b"##$D=" in acqus
    assert served.request("GET", "/api/runs/q1/files/inputs/manifest.json")[0] == 200
    for path in ("/api/runs/q1/files/..%2F..%2Fstation.yaml", "/api/runs/q1/files/%2E%2E/%2E%2E/station.yaml",
                 "/api/runs/q1/files/link-out", "/api/runs/q1/data/..%2F..%2F..%2Fstation.yaml",
                 "/api/runs/q1/files/%2Fetc%2Fpasswd"):
        status, body = served.request("GET", path, token=None)
        assert status in (403, 404), path
        assert b"not for the web" not in (body if isinstance(body, bytes) else json.dumps(body).encode())
        assert b"root:" not in (body if isinstance(body, bytes) else b"")
    assert served.request("GET", "/api/runs/q1/files/..%2F..%2Fstation.yaml")[0] == 403
    assert served.request("GET", "/api/runs/q1/files/link-out")[0] == 403
    # protocols queued by path: only .yaml files inside the protocol folders (default: where serve started)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(SHORT.read_text())
    for path in (str(outside), "../../../../etc/passwd", str(REPO / "pyproject.toml")):
        status, reply = served.request("POST", "/api/queue", {"paths": [path]})
        assert status == 403 and "protocol folders" in reply["detail"], path
    assert served.request("POST", "/api/queue", {"paths": ["tests/data/exsy-short.yaml"]})[0] == 201
    assert len(served.queue()) == 2
    served.release(1)


def test_only_the_listening_address_is_accepted_as_host(served) -> None:
    """A page whose name is rebound to 127.0.0.1 (DNS rebinding) gets nothing."""
    import http.client

    port = int(served.url.rsplit(":", 1)[1].strip("/"))
    for host, expected in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), ("evil.example", 400)):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/state", headers={"Host": host})
        response = connection.getresponse()
        assert response.status == expected, host
        assert (b"simulated station" in response.read()) == (expected == 200)
        connection.close()


def test_kill_9_during_the_first_run_then_restart_resumes_it_and_runs_the_second(tmp_path: Path) -> None:
    station = _station(tmp_path)
    runs, gates = tmp_path / "runs", tmp_path / "gates"
    first = start_serve(station, runs, gates, holds=(2,))
    try:
        body = {"uploads": [{"name": "short.yaml", "text": SHORT.read_text()}]}
        assert first.request("POST", "/api/queue", body)[0] == 201
        assert first.request("POST", "/api/queue", {"uploads": [{"name": "cycling.yaml", "text": CYCLING.read_text()}]})[0] == 201
        first.wait_gate(2)  # the first run stands at its second dataset
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=30)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    on_disk = json.loads((runs / "queue-station" / "queue.json").read_text())
    assert [e["state"] for e in on_disk["entries"]] == ["running", "queued"]
    run_dir = Path(on_disk["entries"][0]["run_dir"])
    (gates / "hold-2").unlink()
    second = start_serve(station, runs, tmp_path / "gates-2")
    try:
        second.wait_for("both entries to end", lambda: [e["state"] for e in second.queue()] == ["done", "done"],
                        timeout_s=180)
        q1, q2 = second.queue()
        assert q1["run_dir"] == str(run_dir)  # resumed in its own folder, not started again
        assert q2["started_at"] >= q1["ended_at"]
        assert any("q1: resuming" in line for line in second.output)
        journal = Journal(run_dir / "journal.sqlite")
        try:
            done = [(d["dataset"], d["expno"]) for d in journal.datasets() if d["status"] == "done"]
            assert len(done) == 6 and len(set(done)) == 6  # every point once, none lost, none twice
            assert all(s.status == "done" for s in journal.steps())
        finally:
            journal.close()
        assert len(list((Path(q2["run_dir"]) / "cycler").glob("*__test-cell__*.bdf.csv"))) == 1
    finally:
        assert second.stop() == 0


@pytest.mark.hardware
def test_serve_holds_the_real_instruments_between_runs_and_lends_them_to_its_own(hil_station: Path,
                                                                                  tmp_path: Path) -> None:
    served = start_serve(hil_station, tmp_path / "runs", tmp_path / "gates", holds=(1,))
    try:
        for command in (["selftest", "--station", str(hil_station)],
                        ["run", str(EXAMPLES / "vt-exsy-short.yaml"), "--station", str(hil_station),
                         "--run-dir", str(tmp_path / "other-run")]):
            result = _cli(*command)
            assert result.returncode == 2, result.stderr
            assert "held by exsylab serve --station" in result.stderr, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "other-run").exists()
        body = {"uploads": [{"name": "vt-exsy-short.yaml", "text": (EXAMPLES / "vt-exsy-short.yaml").read_text()}]}
        assert served.request("POST", "/api/queue", body)[0] == 201
        served.wait_gate(1, timeout_s=120)  # its own queued run got the instruments and acquired
        assert served.queue()[0]["state"] == "running"
        served.process.send_signal(signal.SIGTERM)  # asks the run to stop, then lets it go on from the dataset
        served.release(1)
    finally:
        assert served.stop() == 0
    entry = json.loads((served.runs / f"queue-{hil_station.stem}" / "queue.json").read_text())["entries"][0]
    assert entry["state"] == "running" and "interrupted by the shutdown" in entry["message"]  # resumed next start
    journal = Journal(Path(entry["run_dir"]) / "journal.sqlite")
    try:
        assert journal.meta()["state"] == "stopped"
    finally:
        journal.close()
