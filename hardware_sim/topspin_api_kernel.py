"""Loopback "TopSpin kernel": serves SimTopSpinAPI as JSON lines so a Jython-hosted script can use it.

Listens on 127.0.0.1 only; one thread per connection (the client shim opens one per thread),
so a blocking XCMD("zg", wait) does not hold up other calls.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading

from hardware_sim.topspin_api_client import METHODS

log = logging.getLogger(__name__)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        api = self.server.api  # type: ignore[attr-defined]
        for line in self.rfile:
            try:
                request = json.loads(line)
                method = request["method"]
                if method not in METHODS:
                    raise KeyError(f"unknown TopSpin API call {method!r}")
                value = getattr(api, method)(*request.get("args", []))
                reply = {"ok": True, "value": value.to_wire() if hasattr(value, "to_wire") else value}
            except Exception as exc:  # every error goes back to the script, as TopSpin's would
                reply = {"ok": False, "error": str(exc)}
            self.wfile.write((json.dumps(reply) + "\n").encode("utf-8"))
            self.wfile.flush()


class KernelServer(socketserver.ThreadingTCPServer):
    """A threading TCP server bound to loopback that carries the API object."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


def start_kernel(api) -> KernelServer:
    """Start serving `api` on an ephemeral loopback port in a daemon thread."""
    server = KernelServer(api)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     name="sim-topspin-kernel", daemon=True).start()
    log.info("simulated TopSpin kernel on 127.0.0.1:%d", server.server_address[1])
    return server
