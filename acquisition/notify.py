"""Telling the user: run a command with the event as JSON on stdin, and/or POST it to a webhook.

Both come only from the station file. Events are sent by one sender thread, so a slow webhook
never stalls an acquisition lane; `close()` lets the queue drain (bounded) at the end of a run.
A failing notification is logged, never fatal; the webhook token is sent in a header and never
written to logs or the journal.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import subprocess
import threading
import urllib.request
from typing import Any

from protocols.station import NotificationSpec

log = logging.getLogger(__name__)

RECENT_EVENTS = 100  # how many events `sent` keeps (the journal keeps them all)


class Notifier:
    """Sends run events (failure, completion, faults) to where the station file says, off the caller's thread."""

    def __init__(self, spec: NotificationSpec, *, timeout_s: float = 10.0) -> None:
        self._spec = spec
        self._timeout_s = timeout_s
        self.sent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, event: dict[str, Any]) -> None:
        """Queue an event; returns at once."""
        self.sent.append(event)
        if not (self._spec.command or self._spec.webhook_url):
            return
        with self._lock:
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_all, name="notifier", daemon=True)
                self._sender.start()
        self._queue.put(event)

    def close(self, drain_timeout_s: float = 30.0) -> None:
        """Send what is queued (waiting at most `drain_timeout_s` real seconds), then stop the sender."""
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is None:
            return
        self._queue.put(None)
        sender.join(timeout=drain_timeout_s)
        if sender.is_alive():
            log.warning("notifications still being sent after %.0f s; giving up on the rest", drain_timeout_s)

    def _send_all(self) -> None:
        while (event := self._queue.get()) is not None:
            self._send(event)

    def _send(self, event: dict[str, Any]) -> None:
        body = json.dumps(event, default=str)
        if self._spec.command:
            try:
                subprocess.run(self._spec.command, input=body, text=True, timeout=self._timeout_s,
                               check=True, capture_output=True)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("notification command %s failed: %s", self._spec.command[0], type(exc).__name__)
        if self._spec.webhook_url:
            headers = {"Content-Type": "application/json"}
            if self._spec.webhook_token:
                headers["Authorization"] = f"Bearer {self._spec.webhook_token}"
            request = urllib.request.Request(self._spec.webhook_url, data=body.encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310 (station-file URL)
                    response.read()
            except OSError as exc:
                log.warning("webhook POST failed: %s", type(exc).__name__)
