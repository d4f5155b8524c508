"""The one family of instrument errors: every driver raises a subclass of `InstrumentError`.

A lane or the preflight catches `InstrumentError` (never bare `Exception`) to mark a step
failed, make the instruments safe and tell the user. `InstrumentConfigurationError` is the
instrument answering but set up so that a run cannot use it (wrong units, wrong language,
output not in closed loop): preflight reports it in one line and the run is refused (exit 2).
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Any failure of an instrument or of the wire to it."""


class InstrumentConfigurationError(InstrumentError):
    """The instrument answers but is configured so that a run cannot use it; the message says how to fix it."""


class InstrumentUnreachable(InstrumentError):
    """The instrument's address cannot be opened or does not answer (missing port, refused connection)."""
