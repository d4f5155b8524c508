# -*- coding: utf-8 -*-
"""Client shim for the simulated TopSpin kernel: the TopSpin API over JSON lines on loopback.

Imported by drivers/topspin_side/exsylab_automation.py when it runs under real Jython 2.7 against
SimulatedTopSpin (option --sim-kernel HOST:PORT). Valid Python 2.7 and 3; standard library only.
Each thread gets its own connection, so a blocking XCMD("zg") does not hold up other calls.
"""
from __future__ import print_function

import json
import socket
import threading

METHODS = ("RE", "CURDATA", "GETPAR", "GETPARSTAT", "PUTPAR", "XCMD", "EXEC_PYSCRIPT", "topspin_version", "now",
           "should_stop")


class KernelError(Exception):
    """An error the simulated TopSpin raised, with its message."""


class XcmdResult(object):
    """What XCMD returns in the simulated TopSpin: getResult() (negative for a failed command) and, as its
    text, TopSpin's message."""

    def __init__(self, code, message):
        self.code = code
        self.message = message

    def getResult(self):
        return self.code

    def __str__(self):
        return self.message

    def to_wire(self):
        return {"xcmd_result": self.code, "message": self.message}


class KernelClient(object):
    """Calls the simulated TopSpin API methods on the kernel at host:port (127.0.0.1 only)."""

    def __init__(self, host, port, timeout_s=120.0):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the simulated TopSpin kernel is reachable on loopback only, not %r" % host)
        self.address = ("127.0.0.1", int(port))
        self.timeout_s = timeout_s
        self.local = threading.local()

    def _stream(self):
        stream = getattr(self.local, "stream", None)
        if stream is None:
            sock = socket.create_connection(self.address, self.timeout_s)
            self.local.sock = sock
            stream = self.local.stream = sock.makefile("rwb")
        return stream

    def call(self, method, *args):
        """Send one request line, return the value or raise KernelError with the kernel's message."""
        stream = self._stream()
        line = json.dumps({"method": method, "args": list(args)}) + "\n"
        stream.write(line.encode("utf-8"))
        stream.flush()
        reply = stream.readline()
        if not reply:
            self.local.stream = None
            raise KernelError("simulated TopSpin kernel closed the connection during %s" % method)
        answer = json.loads(reply.decode("utf-8"))
        if not answer.get("ok"):
            raise KernelError(answer.get("error"))
        value = answer.get("value")
        if isinstance(value, dict) and "xcmd_result" in value:
            return XcmdResult(value["xcmd_result"], value.get("message", ""))
        return value

    def should_stop(self):
        try:
            return bool(self.call("should_stop"))
        except (KernelError, socket.error):
            return True  # kernel gone: stop serving like TopSpin would on exit


def _make_method(name):
    def method(self, *args):
        return self.call(name, *args)
    method.__name__ = name
    return method


for _name in METHODS:
    if _name != "should_stop":
        setattr(KernelClient, _name, _make_method(_name))
