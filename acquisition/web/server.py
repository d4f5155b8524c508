"""Running the app on uvicorn over a socket bound beforehand (so the URL is known and printed first)."""

from __future__ import annotations

import signal
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI


class _ClosingServer(uvicorn.Server):
    """uvicorn's server, telling the app when it is asked to exit (the event streams then end at once)."""

    def __init__(self, config: uvicorn.Config, closing: threading.Event) -> None:
        super().__init__(config)
        self._closing = closing

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._closing.set()
        super().handle_exit(sig, frame)


def serve_until_signal(app: FastAPI, sock: socket.socket, closing: threading.Event) -> None:
    """Serve until Ctrl-C or SIGTERM, then return (the caller stops the run and releases the station)."""
    server = _ClosingServer(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, access_log=False),
                            closing)
    # uvicorn raises the signal that stopped it again once it is done; these handlers take it, so
    # that the caller's clean-up runs instead of the process dying there
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    server.run(sockets=[sock])
