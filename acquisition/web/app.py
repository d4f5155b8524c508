"""The FastAPI app of `exsylab serve`: the page, the JSON API (OpenAPI at /openapi.json), live updates by SSE.

Reading needs no token; every route that changes something (the queue, pause/resume/stop)
needs `Authorization: Bearer <token>`: none gives 401, a wrong one 403, compared in constant
time. Runs are named by their queue id, never by a path; the one route that serves files
resolves the requested path and refuses anything outside that run's folder and data folder.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware
from pydantic import BaseModel, Field

from protocols import InputError, load_plan
from protocols.station import StationSpec

from .. import control as control_mod
from ..queue_worker import QueueWorker
from ..run_folder import open_run_folder
from ..run_queue import QueueEntry, RunQueue
from .plots import FIGURES, FigureCache, NothingToPlot
from .views import cycling_data, instrument_state, run_snapshot

STATIC = Path(__file__).resolve().parent / "static"
EVENT_POLL_S = 0.5  # how often the event stream looks for a change (real seconds)
KEEPALIVE_S = 15.0
MAX_UPLOAD_BYTES = 1_000_000


@dataclass
class Station:
    """What the app serves: the station, its queue and the worker running it, the token."""

    station_path: Path
    station: StationSpec
    queue: RunQueue
    worker: QueueWorker
    token: str
    protocol_dirs: tuple[Path, ...]  # protocol files may be queued by path only from inside these
    figures: FigureCache = field(default_factory=FigureCache)
    closing: threading.Event = field(default_factory=threading.Event)  # set when the server is asked to exit

    def data_root(self, run_dir: Path) -> Path | None:
        """The TopSpin data folder a run writes into (inside the run folder for a simulated TopSpin)."""
        spec = self.station.spectrometer
        return spec.folders(run_dir)[1].resolve() if spec is not None else None


class ProtocolUpload(BaseModel):
    """A protocol file's content, as uploaded from the page."""

    name: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=MAX_UPLOAD_BYTES)


class QueueAdd(BaseModel):
    """Protocols to queue as one run: paths on the station PC and/or uploaded files (run together)."""

    paths: list[str] = Field(default_factory=list, max_length=20)
    uploads: list[ProtocolUpload] = Field(default_factory=list, max_length=20)


class QueueMove(BaseModel):
    position: int = Field(ge=0, description="0 = next to run")


def _entry_json(entry: QueueEntry) -> dict[str, Any]:
    data = asdict(entry)
    data.pop("protocols")  # where the server keeps its copies is its own business
    return data


def create_app(station: Station, allowed_hosts: list[str]) -> FastAPI:
    """The app for one station (its queue worker is started and stopped by the caller).

    `allowed_hosts`: Host headers accepted (others get 400), so that a web page whose name was
    rebound to 127.0.0.1 cannot read the station's data.
    """
    app = FastAPI(title="exsylab station server", version="1", docs_url=None, redoc_url=None,  # those load from a CDN
                  description="Watch and steer one exsylab station: its queue of runs, the current run, its data.")
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    bearer = HTTPBearer(auto_error=False)

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        """Control needs the token: missing 401, wrong 403 (constant-time comparison)."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "control needs a token (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), station.token.encode()):
            raise HTTPException(403, "wrong token")

    def entry_or_404(entry_id: str) -> QueueEntry:
        try:
            return station.queue.get(entry_id)
        except KeyError:
            raise HTTPException(404, f"no queue entry {entry_id}") from None

    def run_dir_of(entry_id: str) -> Path:
        entry = entry_or_404(entry_id)
        if not entry.run_dir:
            raise HTTPException(404, f"{entry_id} has not started")
        return Path(entry.run_dir)

    def snapshot() -> dict[str, Any]:
        current = station.worker.current
        entries = station.queue.entries()
        shown = current or max((e for e in entries if e.run_dir), key=lambda e: e.started_at or 0.0, default=None)
        run = None
        if shown is not None and shown.run_dir:
            run_dir = Path(shown.run_dir)
            run = {"id": shown.id, "entry": _entry_json(shown), **run_snapshot(run_dir),
                   "instruments": instrument_state(run_dir)}
        return {"station": {"name": station.station.name, "file": str(station.station_path),
                            "instruments": station.station.addresses()},
                "queue": {"held": station.queue.held, "entries": [_entry_json(e) for e in entries]},
                "current": current.id if current else None, "run": run}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        """The station, the queue and the current (or latest) run with its instruments as recorded."""
        return snapshot()

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: a `state` event (the /api/state JSON) whenever it changes."""
        async def stream() -> AsyncIterator[str]:
            last, quiet_s = "", 0.0
            while not station.closing.is_set() and not await request.is_disconnected():
                text = json.dumps(await asyncio.to_thread(snapshot), default=str)
                if text != last:
                    last, quiet_s = text, 0.0
                    yield f"event: state\ndata: {text}\n\n"
                elif quiet_s >= KEEPALIVE_S:
                    quiet_s = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(EVENT_POLL_S)
                quiet_s += EVENT_POLL_S
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.get("/api/queue")
    def queue_list() -> dict[str, Any]:
        return {"held": station.queue.held, "entries": [_entry_json(e) for e in station.queue.entries()]}

    @app.post("/api/queue", dependencies=[Depends(require_token)], status_code=201)
    def queue_add(body: QueueAdd) -> dict[str, Any]:
        """Queue protocols (paths on the station PC, uploads, or both) to run together; checked before queued."""
        files: list[tuple[str, bytes]] = []
        for raw in body.paths:
            path = Path(raw).resolve() if Path(raw).is_absolute() else (station.protocol_dirs[0] / raw).resolve()
            if not any(path.is_relative_to(d) for d in station.protocol_dirs) or path.suffix not in (".yaml", ".yml"):
                raise HTTPException(403, f"{raw}: only .yaml files inside the protocol folders "
                                         f"({', '.join(map(str, station.protocol_dirs))}) may be queued by path")
            try:
                files.append((str(path), path.read_bytes()))
            except OSError as exc:
                raise HTTPException(400, f"{raw}: cannot read ({exc.strerror or type(exc).__name__})") from None
        files += [(u.name, u.text.encode("utf-8")) for u in body.uploads]

        def validate(paths: list[Path]) -> None:
            load_plan(paths, station.station_path)

        try:
            entry = station.queue.add(files, validate)
        except InputError as exc:
            raise HTTPException(400, exc.message()) from None
        return _entry_json(entry)

    @app.delete("/api/queue/{entry_id}", dependencies=[Depends(require_token)])
    def queue_remove(entry_id: str) -> dict[str, Any]:
        entry_or_404(entry_id)
        try:
            return _entry_json(station.queue.remove(entry_id))
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/queue/{entry_id}/move", dependencies=[Depends(require_token)])
    def queue_move(entry_id: str, body: QueueMove) -> dict[str, Any]:
        entry_or_404(entry_id)
        try:
            station.queue.move(entry_id, body.position)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return queue_list()

    @app.post("/api/queue/{entry_id}/requeue", dependencies=[Depends(require_token)])
    def queue_requeue(entry_id: str) -> dict[str, Any]:
        """Run a failed, stopped or refused entry again, next (its run resumes in its own folder)."""
        entry_or_404(entry_id)
        try:
            return _entry_json(station.queue.requeue(entry_id))
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/queue/continue", dependencies=[Depends(require_token)])
    def queue_continue() -> dict[str, Any]:
        """Lift the hold a failed, stopped or refused run put on the queue."""
        station.queue.set_held(False)
        return queue_list()

    @app.post("/api/run/{command}", dependencies=[Depends(require_token)])
    def run_control(command: str) -> dict[str, Any]:
        """pause, resume or stop the current run (at its next safe point, as `exsylab pause` does)."""
        wanted = {"pause": "pause", "resume": "run", "stop": "stop"}.get(command)
        if wanted is None:
            raise HTTPException(404, f"unknown command {command} (pause, resume, stop)")
        current = station.worker.current
        if current is None or not current.run_dir:
            raise HTTPException(409, "no run is running")
        try:
            folder = open_run_folder(Path(current.run_dir))
        except InputError:
            raise HTTPException(409, f"{current.id} is still starting; try again in a moment") from None
        control_mod.request(folder, wanted)  # type: ignore[arg-type]
        return {"id": current.id, "requested": command}

    @app.get("/api/runs/{entry_id}")
    def run_json(entry_id: str) -> dict[str, Any]:
        """One run's state, lanes, datasets and instruments as recorded."""
        run_dir = run_dir_of(entry_id)
        return {"id": entry_id, "entry": _entry_json(entry_or_404(entry_id)), **run_snapshot(run_dir),
                "instruments": instrument_state(run_dir)}

    @app.get("/api/runs/{entry_id}/report", response_class=PlainTextResponse)
    def run_report(entry_id: str) -> PlainTextResponse:
        """The run's report.md (written when the run ends)."""
        report = run_dir_of(entry_id) / "report.md"
        if not report.is_file():
            raise HTTPException(404, "no report yet: it is written when the run ends")
        return PlainTextResponse(report.read_text(encoding="utf-8"), media_type="text/markdown")

    @app.get("/api/runs/{entry_id}/cycling/{cell}")
    def run_cycling(entry_id: str, cell: str) -> dict[str, Any]:
        """Voltage against time and capacity / CE per cycle of one cell."""
        run_dir = run_dir_of(entry_id)
        data = cycling_data(run_dir / "cycler" / f"{Path(cell).name}.csv")
        if data is None:
            raise HTTPException(404, f"no cycling data for {cell} yet")
        return data

    @app.get("/api/runs/{entry_id}/plots/{name}.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def run_plot(entry_id: str, name: str, v: str = "", cell: str | None = None) -> Response:
        """A figure of the run as PNG: contour, buildup, temperature or cycling (with cell=)."""
        if name not in FIGURES:
            raise HTTPException(404, f"no figure {name} ({', '.join(FIGURES)})")
        try:
            png = station.figures.png(run_dir_of(entry_id), name, v, cell)
        except NothingToPlot as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600" if v else "no-store"})

    def inside(root: Path | None, path: str) -> FileResponse:
        """The file at `path` under `root`, refused (403) when it resolves outside it (.., symlinks, absolute)."""
        if root is None:
            raise HTTPException(404, "this station has no such folder")
        wanted = (root / path).resolve()
        if not wanted.is_relative_to(root):
            raise HTTPException(403, "outside the run and data folders")
        if not wanted.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(wanted)

    @app.get("/api/runs/{entry_id}/files/{path:path}")
    def run_file(entry_id: str, path: str) -> FileResponse:
        """A file of the run folder (report.md, cycler/CELL.csv, logs/run.log); nothing outside it."""
        return inside(run_dir_of(entry_id).resolve(), path)

    @app.get("/api/runs/{entry_id}/data/{path:path}")
    def data_file(entry_id: str, path: str) -> FileResponse:
        """A file of the TopSpin data folder the run writes into (NAME/EXPNO/acqus, ser); nothing outside it."""
        return inside(station.data_root(run_dir_of(entry_id).resolve()), path)

    return app
