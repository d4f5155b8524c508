"""MacNet framing, as Maccor's "Remote Control - MacNet" help describes it (docs/dialects/maccor-macnet.md).

JSON (TCP, default port 57570): JSON-RPC 2.0 objects `{"jsonrpc": "2.0", "method": "MacNet",
"params": {"FClass": .., "FNum": .., ...}, "id": ..}`; the tester's replies end with CR LF. A
client's message carries no terminator (pymacnet sends a bare object), so a reader splits the
stream at the end of each complete top-level object.

Binary (TCP, default port 57560): every message is Function Class, Function No, Chan, Len as
little-endian WORDs, then Len bytes of data. Files move in 500-byte blocks in a TFTP-like
exchange (functions (1, 6) send file to tester and (1, 7) get file from tester), which JSON
does not offer.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct("<HHHH")
"""Function Class, Function No, Chan, Len: the binary message header."""
FILE_HEADER = struct.Struct("<BBH")
"""File type, OpCode, then a WORD (block number, error code or file name length) of (1, 6) and (1, 7) data."""
BLOCK_BYTES = 500
OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR = 1, 2, 3, 4, 5
FILE_ACTIVE, FILE_ARCHIVE, FILE_PROCEDURE = 1, 2, 3
JSON_PORT, BINARY_PORT = 57570, 57560
TERMINATOR = b"\r\n"
JSON_ID = 1987
"""The request id of every example in the MacNet help; replies echo it."""


def request(fclass: int, fnum: int, **params: Any) -> dict[str, Any]:
    """A MacNet JSON-RPC request object."""
    return {"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": fclass, "FNum": fnum, **params},
            "id": JSON_ID}


def object_end(buffer: bytes) -> int | None:
    """The length of the first complete top-level JSON object in `buffer` (after whitespace), or None if incomplete.

    Raises ValueError when the buffer does not start with an object.
    """
    depth = 0
    in_string = escaped = False
    start = len(buffer) - len(buffer.lstrip())
    if start == len(buffer):
        return None
    if buffer[start:start + 1] != b"{":
        raise ValueError(f"not a JSON object: {buffer[start:start + 40]!r}")
    for i in range(start, len(buffer)):
        c = buffer[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def encode_json(message: dict[str, Any]) -> bytes:
    """One compact JSON message."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def binary_message(fclass: int, fnum: int, chan: int, data: bytes) -> bytes:
    """A binary MacNet message: header then data."""
    return HEADER.pack(fclass, fnum, chan, len(data)) + data
