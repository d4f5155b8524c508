"""Starting `exsylab serve` for tests: its own process, a free loopback port, a private runs folder, optional gates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
GATED = [sys.executable, str(TESTS / "gated_exsylab.py")]
EXE = [sys.executable, "-m", "acquisition.cli"]
START_REAL_S = 60.0  # importing fastapi, matplotlib and nmrglue on a loaded machine


@dataclass
class Served:
    """A running `exsylab serve`: its process, URL and control token, its runs folder and gates folder."""

    process: subprocess.Popen
    url: str
    token: str
    runs: Path
    gates: Path
    station: Path
    output: list[str]

    def request(self, method: str, path: str, body: Any = None, token: str | None = "") -> tuple[int, Any]:
        """(status, JSON) of one request; token "" means the server's own, None means no Authorization header."""
        headers = {"Content-Type": "application/json"}
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def queue(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/queue")[1]["entries"]

    def wait_for(self, what: str, condition: Callable[[], Any], timeout_s: float = 90.0) -> Any:
        """Poll a condition (real time, bounded) until it holds; fails the test naming what was awaited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited ({self.process.returncode}) while waiting for {what}")
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_gate(self, k: int, timeout_s: float = 90.0) -> str:
        """Wait until the k-th complete dataset was recorded; its NAME/EXPNO."""
        path = self.gates / f"at-{k}"
        return self.wait_for(f"dataset {k}", lambda: path.exists() and path.read_text().strip(), timeout_s)

    def release(self, k: int) -> None:
        (self.gates / f"hold-{k}").unlink()

    def stop(self) -> int:
        """SIGTERM and wait (the server stops its run safely); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_serve(station: Path, runs: Path, gates: Path, holds: tuple[int, ...] = (), *,
                token: str | None = None, extra: tuple[str, ...] = ()) -> Served:
    """`exsylab serve --port 0` under the gated launcher, holding at the datasets in `holds`.

    `token`: the station file's server.token, if it has one (else the token the server prints is used).
    """
    gates.mkdir(parents=True, exist_ok=True)
    for k in holds:
        (gates / f"hold-{k}").write_text("")
    env = {**os.environ, "EXSYLAB_TEST_GATES": str(gates)}
    process = subprocess.Popen([*GATED, "serve", "--station", str(station), "--port", "0", "--runs-dir", str(runs),
                                *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    token_line = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise AssertionError(f"serve did not print its URL first: {url!r} {process.stderr.read() if process.stderr else ''}")
    token = token or token_line.rsplit(" ", 1)[-1]
    output = [url, token_line]
    _drain(process, output)
    return Served(process, url, token, runs, gates, station, output)


def _drain(process: subprocess.Popen, output: list[str]) -> None:
    """Keep reading the server's output (kept for failure messages) so it never blocks on a full pipe."""
    def read(stream: Any) -> None:
        for line in stream:
            output.append(line.rstrip("\n"))

    for stream in (process.stdout, process.stderr):
        threading.Thread(target=read, args=(stream,), daemon=True).start()
