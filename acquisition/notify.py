"""Telling the user: run a command with the event as JSON on stdin, and/or POST it to a webhook.

Both come only from the station file. A failing notification is logged, never fatal; the
webhook token is sent in a header and never written to logs or the journal.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.request
from typing import Any

from protocols.station import NotificationSpec

log = logging.getLogger(__name__)


class Notifier:
    """Sends run events (failure, completion, faults) to where the station file says."""

    def __init__(self, spec: NotificationSpec, *, timeout_s: float = 10.0) -> None:
        self._spec = spec
        self._timeout_s = timeout_s
        self.sent: list[dict[str, Any]] = []

    def notify(self, event: dict[str, Any]) -> None:
        self.sent.append(event)
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
