"""`exsylab serve` (one process that owns a station, runs its queue and serves the page) and `exsylab queue`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from protocols import InputError
from protocols.errors import MISSING
from protocols.loader import load_station

from .run_queue import RunQueue
from .server_state import ServerState, read_state, remove_state, server_lock, write_state

DEFAULT_PORT = 8765
CLIENT_TIMEOUT_S = 30.0


def add_serve_parsers(sub: Any) -> None:
    """The `serve` and `queue` subcommands' arguments."""
    p = sub.add_parser("serve", help="own a station: run its queue of runs, serve a web page and a JSON API")
    p.add_argument("--station", required=True, help="station file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs server.token in the station file)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--runs-dir", default="runs", help="folder for the runs and the queue (default: runs)")
    p.add_argument("--protocols-dir", action="append", default=None, metavar="DIR",
                   help="folder whose protocol files may be queued by path (repeatable; default: the current folder)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host header to accept besides the listening address (a reverse proxy's name)")
    p.set_defaults(func=cmd_serve)

    q = sub.add_parser("queue", help="the queue of the `exsylab serve` that owns a station")
    qsub = q.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    a = qsub.add_parser("add", help="queue protocol file(s) to run together, after what is queued")
    a.add_argument("protocol", nargs="+")
    ls = qsub.add_parser("list", help="the queue, with what became of each entry")
    ls.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    r = qsub.add_parser("remove", help="take a waiting entry out of the queue")
    r.add_argument("id")
    m = qsub.add_parser("move", help="put a waiting entry at a position among the waiting (0 = next)")
    m.add_argument("id")
    m.add_argument("position", type=int)
    qsub.add_parser("continue", help="let the queue go on after a run failed, was stopped or refused")
    again = qsub.add_parser("requeue", help="run a failed, stopped or refused entry again, next (it resumes)")
    again.add_argument("id")
    for parser in (a, ls, r, m, again, qsub.choices["continue"]):
        parser.add_argument("--station", required=True, help="station file of the server")
        parser.set_defaults(func=cmd_queue)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError("--port", "port", port, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    station_path = Path(args.station).resolve()
    station = load_station(station_path)
    token = station.server.token
    if not is_loopback(args.host) and not token:
        raise InputError(station_path, "server.token", MISSING,
                         f"listening on {args.host} (beyond this computer) needs a token in the station file")
    lock = server_lock(station_path, station)
    holder = lock.acquire()
    if holder is not None:
        raise InputError(station_path, "--station", MISSING, f"this station is already served by {holder.describe()}")
    instruments = None
    try:
        from .queue_worker import QueueWorker  # the run path and the web app load only once the station is ours
        from .station_runtime import PreflightRefused, hold_station
        from .web.app import Station, create_app
        from .web.server import serve_until_signal

        try:  # between runs too: nobody else starts on the station while it serves a queue
            instruments = hold_station(station, f"exsylab serve --station {station_path}")
        except PreflightRefused as exc:
            raise InputError(station_path, exc.field, exc.address, exc.reason) from None
        runs_dir = Path(args.runs_dir).resolve()
        queue = RunQueue(runs_dir / f"queue-{station_path.stem}")
        sock = _bind(args.host, args.port)
        port = sock.getsockname()[1]
        shown_host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{shown_host}:{port}/"
        shown_token = f"server.token of {station_path}" if token else None
        token = token or secrets.token_urlsafe(24)
        # written before the URL is printed: whoever reads the URL can reach the server with `exsylab queue`
        write_state(station_path, station, ServerState(url=url, token=token, pid=os.getpid(), station=str(station_path)))
        print(url, flush=True)  # the socket listens already: connections wait in its backlog until uvicorn runs
        print(f"control token: {shown_token}" if shown_token else f"control token (generated for this session): {token}",
              flush=True)
        worker = QueueWorker(queue, station_path, runs_dir, say=lambda line: print(line, flush=True))
        protocol_dirs = tuple(Path(d).resolve() for d in (args.protocols_dir or ["."]))
        served = Station(station_path, station, queue, worker, token, protocol_dirs)
        worker.start()
        try:
            hosts = ["127.0.0.1", "localhost", "[::1]", "::1", args.host, *args.allowed_host]
            serve_until_signal(create_app(served, allowed_hosts=hosts), sock, served.closing)
        finally:
            print("shutting down: stopping the current run safely (resumed at the next start; "
                  "Ctrl-C again leaves it as a kill would)", flush=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            worker.shutdown()
            sock.close()
    finally:
        remove_state(station_path, station)
        if instruments is not None:
            instruments.release()
        lock.release()
    return 0


def _request(state: ServerState, method: str, path: str, body: Any = None) -> Any:
    """One JSON request to the server with its token; HTTP refusals become InputError (exit 2)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(state.url.rstrip("/") + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {state.token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise InputError(state.url, path, MISSING, f"{exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(state.url, "url", MISSING, f"server not reachable ({exc})") from None


def cmd_queue(args: argparse.Namespace) -> int:
    station_path = Path(args.station).resolve()
    state = read_state(station_path, load_station(station_path))
    action = args.queue_command
    if action == "add":
        uploads = []
        for raw in args.protocol:
            try:
                uploads.append({"name": Path(raw).name, "text": Path(raw).read_text(encoding="utf-8")})
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(raw, "PROTOCOL", MISSING, f"cannot read: {exc}") from None
        entry = _request(state, "POST", "/api/queue", {"uploads": uploads})
        print(f"queued {entry['id']}: {', '.join(entry['names'])}")
    elif action == "list":
        listing = _request(state, "GET", "/api/queue")
        if args.json:
            print(json.dumps(listing, indent=1))
            return 0
        if listing["held"]:
            print("queue held after a failed, stopped or refused run: `exsylab queue continue` goes on")
        for e in listing["entries"]:
            where = f"  {e['run_dir']}" if e["run_dir"] else ""
            message = f"  ({e['message']})" if e["message"] else ""
            print(f"{e['id']:>5}  {e['state']:<8} {', '.join(e['names'])}{where}{message}")
    elif action == "remove":
        entry = _request(state, "DELETE", f"/api/queue/{args.id}")
        print(f"removed {entry['id']} from the queue")
    elif action == "move":
        _request(state, "POST", f"/api/queue/{args.id}/move", {"position": args.position})
        print(f"moved {args.id} to position {args.position}")
    elif action == "requeue":
        entry = _request(state, "POST", f"/api/queue/{args.id}/requeue")
        print(f"{entry['id']} queued again, next")
    else:
        _request(state, "POST", "/api/queue/continue")
        print("the queue goes on")
    return 0
