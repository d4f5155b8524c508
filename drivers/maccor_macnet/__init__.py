"""Maccor testers over MacNet (JSON port 57570, binary port 57560): one channel as a ProgramCycler.

`open_from_station` is the registry's way in; the station entry's `resource` is `host:port` (the
JSON port, default 57570) and its settings are `channel` (1-based, required) and `binary_port`
(default: the JSON port - 10, Maccor's own default pair 57570/57560).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from drivers.program_cycler import ChannelProgram
from drivers.source_meter import CyclerConfigurationError

from .channel import MacNetRefused, MaccorChannel
from .procedure import check_steps
from .wire import JSON_PORT

__all__ = ["MacNetRefused", "MaccorChannel", "check_program", "open_from_station", "parse_address"]


def check_program(program: ChannelProgram) -> None:
    """The registry's plan-time check: ProgramRefused for what a Maccor procedure cannot express (no wire; the
    channel's current range is checked again at start, once preflight has read it)."""
    check_steps(program.steps, math.inf)


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` or `host` (port 57570) -> (host, port); ValueError saying what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        host, port_text = address, str(JSON_PORT)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Maccor address {address!r} must be host:port (port 1..65535, default {JSON_PORT})")
    return host, int(port_text)


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, *, timeout_s: float | None = None,
                      **_context: Any) -> MaccorChannel:
    """A Maccor channel at `address` (host:port) from its station entry's settings `channel` and `binary_port`."""
    settings = dict(entry.get("settings") or {})
    channel = settings.pop("channel", None)
    binary_port = settings.pop("binary_port", None)
    if settings:
        raise CyclerConfigurationError(f"Maccor {address}: unknown setting(s) {', '.join(sorted(settings))} "
                                       "(known: channel, binary_port)")
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 1:
        raise CyclerConfigurationError(f"Maccor {address}: setting channel must be the tester's channel number "
                                       f"(1, 2, ...), got {channel!r}")
    if binary_port is not None and (isinstance(binary_port, bool) or not isinstance(binary_port, int)
                                    or not 0 < binary_port < 65536):
        raise CyclerConfigurationError(f"Maccor {address}: setting binary_port must be a port number, "
                                       f"got {binary_port!r}")
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise CyclerConfigurationError(str(exc)) from None
    options: dict[str, Any] = {"timeout_s": timeout_s, "retries": 1} if timeout_s is not None else {}
    return MaccorChannel(host, port, channel, clock=clock, binary_port=binary_port, **options)
