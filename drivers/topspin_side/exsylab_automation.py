# -*- coding: utf-8 -*-
"""exsylab automation: executes job files that the exsylab host writes into an automation folder.

Runs inside TopSpin's Jython 2.7 interpreter (valid Python 2.7 and Python 3). Install it into
<topspin>/exp/stan/nmr/py/user/ and start it from TopSpin (see INSTALL.md). The host writes
<automation>/jobs/<id>.json atomically; this script executes each job with TopSpin's scripting
calls and writes <automation>/results/<id>.json atomically; it touches <automation>/heartbeat.json
about every second with the time of its own clock. A file <automation>/stop ends the loop.

Every TopSpin call goes through one small object (`api`): inside TopSpin it wraps the builtins
the interpreter provides (RE, GETPAR, PUTPAR, XCMD, CURDATA); under the exsylab simulator it is
an injected object with the same methods. main() decides which.
"""
from __future__ import print_function

import json
import os
import sys
import threading
import time

try:  # in Jython, errors thrown by TopSpin's Java side are not Python Exceptions
    from java.lang import Throwable
    CAUGHT_ERRORS = (Exception, Throwable)
except ImportError:
    CAUGHT_ERRORS = (Exception,)

JOBS_DIR = "jobs"
RESULTS_DIR = "results"
HEARTBEAT_FILE = "heartbeat.json"
STOP_FILE = "stop"
DEFAULT_AUTOMATION_DIR = os.path.join(os.path.expanduser("~"), "exsylab_automation")
HEARTBEAT_PERIOD_S = 1.0
ZG_START_TIMEOUT_S = 60.0
# Arrays whose elements TopSpin names "D 8", "P 1", ...; exsylab names them "D8", "P1".
ARRAY_PARAMS = ("D", "P", "PL", "PLW", "PLDB", "CNST", "L", "IN", "INP", "SP", "SPW", "GPZ")
# F1 (indirect dimension) parameters: exsylab "TD1" is TopSpin's "1 TD".
F1_PARAMS = {"TD1": "1 TD", "SW1": "1 SW"}
BYTES_PER_POINT = 4      # DTYPA 0: int32
POINTS_PER_BLOCK = 256   # TopSpin pads each FID in ser to 256 points (1024 bytes)


def topspin_name(name):
    """Translate an exsylab parameter name (D8, TD1, NS) into TopSpin's GETPAR/PUTPAR form."""
    upper = name.upper()
    if upper in F1_PARAMS:
        return F1_PARAMS[upper]
    head = upper.rstrip("0123456789")
    tail = upper[len(head):]
    if tail and head in ARRAY_PARAMS:
        return "%s %s" % (head, tail)
    return name


def check_dataset_name(name):
    """Refuse dataset names that could escape the data folder."""
    if not name or "/" in name or "\\" in name or ".." in name or name.startswith("~") \
            or "\x00" in name or os.path.isabs(name) or name.strip() != name:
        raise ValueError("refused dataset name %r (path separators, '..' or absolute)" % (name,))


def check_expno(expno):
    """Refuse experiment numbers outside TopSpin's 1..99999."""
    expno = int(expno)
    if expno < 1 or expno > 99999:
        raise ValueError("expno %d outside 1..99999" % expno)
    return expno


def has_data(expno_path):
    """True when the expno holds acquired data (a non-empty ser or fid)."""
    for name in ("ser", "fid"):
        raw = os.path.join(expno_path, name)
        if os.path.isfile(raw) and os.path.getsize(raw) > 0:
            return True
    return False


def failure_kind(message):
    """Classify TopSpin's error message: "spinning_failure" or "acq_error"."""
    return "spinning_failure" if "spinning" in message.lower() else "acq_error"


def write_json_atomic(path, obj):
    """Write JSON to path.tmp, then rename it over path, so readers never see a partial file.
    Not fsynced: a result lost in a crash is a job the host times out on, and an fsync per
    result would dominate the round trip."""
    tmp = path + ".tmp"
    handle = open(tmp, "w")
    try:
        handle.write(json.dumps(obj, sort_keys=True))
    finally:
        handle.close()
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)  # Windows (and Jython there) does not rename over an existing file
        os.rename(tmp, path)


class TopSpinBuiltins(object):
    """The TopSpin API as TopSpin's Jython interpreter provides it (names in the script's globals)."""

    def __init__(self, namespace):
        self.ns = namespace

    def RE(self, dataset):
        """Make `dataset` ([name, expno, procno, dir]) TopSpin's current dataset, without display."""
        return self.ns["RE"](dataset, "n")

    def CURDATA(self):
        """TopSpin's current dataset [name, expno, procno, dir, ...]."""
        return self.ns["CURDATA"]()

    def GETPAR(self, name):
        """A parameter of the current dataset, as text."""
        return self.ns["GETPAR"](name)

    def PUTPAR(self, name, value):
        """Set a parameter of the current dataset."""
        return self.ns["PUTPAR"](name, value)

    def XCMD(self, command, wait):
        """Run a TopSpin command, waiting for it when `wait`."""
        return self.ns["XCMD"](command, self.wait_flag(wait))

    def wait_flag(self, wait):
        """TopSpin's WAIT_TILL_DONE / NO_WAIT_TILL_DONE constant for a bool."""
        return self.ns["WAIT_TILL_DONE"] if wait else self.ns["NO_WAIT_TILL_DONE"]

    def TESET(self, temperature_k):
        """Set the VT target through TopSpin."""
        return self.XCMD("teset %.2f" % temperature_k, True)

    def TEGET(self):
        """The VT unit's sample temperature in K."""
        # 'teget' stores the sensor reading in the current dataset's TE (site check: INSTALL.md)
        self.XCMD("teget", True)
        return float(self.GETPAR("TE"))

    def MASR(self):
        """The MAS rate the MAS unit reports, in Hz."""
        self.XCMD("masg", True)
        return float(self.GETPAR("MASR"))

    def now(self):
        """Seconds since the epoch on this side's clock (for the heartbeat)."""
        return time.time()

    def should_stop(self):
        """Inside TopSpin only the stop file ends the loop."""
        return False


class Automation(object):
    """The job loop: read job files, execute them through `api`, write results, touch the heartbeat."""

    def __init__(self, api, automation_dir, data_dir, poll_s=0.05):
        self.api = api
        self.automation_dir = automation_dir
        self.data_dir = data_dir
        self.poll_s = poll_s
        self.jobs_dir = os.path.join(automation_dir, JOBS_DIR)
        self.results_dir = os.path.join(automation_dir, RESULTS_DIR)
        self.heartbeat_path = os.path.join(automation_dir, HEARTBEAT_FILE)
        self.acquisitions = {}  # expno path -> {"thread": Thread, "error": str or None}
        self.heartbeat_seq = 0
        self.last_beat_clock = None
        self.last_beat_real = 0.0
        for folder in (self.jobs_dir, self.results_dir):
            try:
                os.makedirs(folder)
            except OSError:
                if not os.path.isdir(folder):  # else the host made it first
                    raise

    # ---- loop -------------------------------------------------------------------------
    def serve(self):
        """Run until a stop file appears or the API asks to stop."""
        stop_path = os.path.join(self.automation_dir, STOP_FILE)
        while not self.api.should_stop() and not os.path.exists(stop_path):
            self.beat(False)
            if not self.run_pending():
                time.sleep(self.poll_s)
        self.beat(True, stopped=True)

    def beat(self, force, stopped=False):
        """Touch the heartbeat every HEARTBEAT_PERIOD_S of real time or of the API's clock;
        the last beat of a stopped loop says so, and the host treats it as not running."""
        now_clock = self.api.now()
        now_real = time.time()
        clock_moved = self.last_beat_clock is None or now_clock - self.last_beat_clock >= HEARTBEAT_PERIOD_S
        if force or clock_moved or now_real - self.last_beat_real >= HEARTBEAT_PERIOD_S:
            self.heartbeat_seq += 1
            write_json_atomic(self.heartbeat_path, {"time": now_clock, "seq": self.heartbeat_seq,
                                                    "stopped": stopped})
            self.last_beat_clock = now_clock
            self.last_beat_real = now_real

    def run_pending(self):
        """Execute every job file present; return True when at least one ran."""
        names = sorted(n for n in os.listdir(self.jobs_dir) if n.endswith(".json"))
        for name in names:
            path = os.path.join(self.jobs_dir, name)
            try:
                handle = open(path)
                try:
                    job = json.loads(handle.read())
                finally:
                    handle.close()
                os.remove(path)
            except (IOError, OSError, ValueError):
                continue  # withdrawn by the host or half-visible; the host retries or times out
            result = self.execute(job)
            write_json_atomic(os.path.join(self.results_dir, name), result)
            self.beat(False)
        return bool(names)

    def execute(self, job):
        """Run one job and turn its outcome (or TopSpin's error message) into a result dict."""
        result = {"id": job.get("id"), "op": job.get("op")}
        handler = getattr(self, "op_" + str(job.get("op")), None)
        if handler is None:
            result.update(ok=False, error="unknown job op %r" % (job.get("op"),))
            return result
        try:
            result.update(ok=True, value=handler(job.get("args") or {}))
        except CAUGHT_ERRORS as exc:  # the host needs TopSpin's message, whatever raised it
            message = "%s: %s" % (type(exc).__name__, exc)
            result.update(ok=False, error=message, kind=failure_kind(message))
        return result

    # ---- helpers ----------------------------------------------------------------------
    def dataset(self, args):
        """The TopSpin dataset list for a job's name/expno, after refusing unsafe ones."""
        name = args["name"]
        check_dataset_name(name)
        return [name, str(check_expno(args["expno"])), "1", self.data_dir]

    def expno_path(self, dataset):
        """<dir>/<name>/<expno> of a dataset list."""
        return os.path.join(dataset[3], dataset[0], dataset[1])

    def open_dataset(self, args):
        """RE the job's dataset and return its list."""
        dataset = self.dataset(args)
        self.api.RE(dataset)
        return dataset

    def ser_state(self, path):
        """Return (bytes present, bytes a complete ser needs) from acqus/acqu2s TD and TD1."""
        ser = os.path.join(path, "ser")
        present = os.path.getsize(ser) if os.path.exists(ser) else 0
        td = int(float(self.api.GETPAR("TD")))
        td1 = int(float(self.api.GETPAR("1 TD")))
        blocks = (td + POINTS_PER_BLOCK - 1) // POINTS_PER_BLOCK
        return present, td1 * blocks * POINTS_PER_BLOCK * BYTES_PER_POINT

    # ---- ops --------------------------------------------------------------------------
    def op_ping(self, args):
        """Answer with this side's clock time."""
        return {"time": self.api.now()}

    def op_create(self, args):
        """Create name/expno with the template's (or the current dataset's) parameters via wrpa."""
        dataset = self.dataset(args)
        path = self.expno_path(dataset)
        if has_data(path):
            raise RuntimeError("expno %s already holds data; refusing to overwrite" % path)
        template = args.get("template")
        if template:
            self.api.RE(self.dataset({"name": template[0], "expno": template[1]}))
        command = "wrpa %s %s %s %s" % (dataset[0], dataset[1], dataset[2], dataset[3])
        self.api.XCMD(command, True)
        self.api.RE(dataset)
        return path

    def op_set_params(self, args):
        """PUTPAR every given parameter into name/expno."""
        self.open_dataset(args)
        for key in sorted(args["params"]):
            self.api.PUTPAR(topspin_name(key), str(args["params"][key]))
        return None

    def op_get_param(self, args):
        """GETPAR one parameter of name/expno."""
        self.open_dataset(args)
        return str(self.api.GETPAR(topspin_name(args["key"])))

    def op_start(self, args):
        """Start zg on name/expno in a background thread; return once it has taken the dataset."""
        dataset = self.open_dataset(args)
        path = self.expno_path(dataset)
        running = self.acquisitions.get(path)
        if running is not None and running["thread"].is_alive():
            raise RuntimeError("acquisition already running in %s" % path)
        if has_data(path):
            raise RuntimeError("expno %s already holds data; refusing to overwrite" % path)
        record = {"error": None}

        def run_zg():
            # XCMD("zg", WAIT_TILL_DONE) may return before the end on some TopSpin versions:
            # the status op therefore also checks that ser is complete.
            try:
                self.api.XCMD("zg", True)
            except CAUGHT_ERRORS as exc:
                record["error"] = "%s" % (exc,)

        record["thread"] = threading.Thread(target=run_zg, name="exsylab-zg")
        record["thread"].daemon = True
        self.acquisitions[path] = record
        record["thread"].start()
        # Only return once zg has taken this dataset (TopSpin creates ser at the start), so that
        # the next job's RE cannot change the dataset under a zg that has not begun yet.
        ser = os.path.join(path, "ser")
        deadline = time.time() + ZG_START_TIMEOUT_S
        while record["thread"].is_alive() and not os.path.exists(ser):
            if time.time() > deadline:
                raise RuntimeError("zg did not start in %s within %.0f s" % (path, ZG_START_TIMEOUT_S))
            time.sleep(0.001)
        if record["error"]:
            raise RuntimeError(record["error"])
        return path

    def op_status(self, args):
        """Report idle/running/done/failed for name/expno (done means ser is complete)."""
        dataset = self.open_dataset(args)
        path = self.expno_path(dataset)
        present, needed = self.ser_state(path)
        record = self.acquisitions.get(path)
        state = {"path": path, "kind": None, "scans_done": None}
        if record is not None and record["error"]:
            state.update(state="failed", message=record["error"], kind=failure_kind(record["error"]))
        elif present == needed and needed > 0:
            state.update(state="done", message="ser complete (%d bytes)" % present)
        elif record is not None:
            state.update(state="running", message="ser %d of %d bytes" % (present, needed))
        elif present > 0:
            state.update(state="failed", kind="acq_error",
                         message="incomplete ser (%d of %d bytes) from an earlier session" % (present, needed))
        else:
            state.update(state="idle", message="no acquisition started in this session")
        return state

    def op_stop(self, args):
        """Halt the running acquisition; TopSpin keeps the rows acquired so far."""
        self.api.XCMD("halt", True)
        return None

    def op_mas_rate(self, args):
        """The MAS rate in Hz."""
        return float(self.api.MASR())

    def op_teset(self, args):
        """Set the VT target in K."""
        self.api.TESET(float(args["temperature_k"]))
        return None

    def op_teget(self, args):
        """The sample temperature in K."""
        return float(self.api.TEGET())


def parse_args(argv):
    """Options: --automation DIR, --data DIR, --poll S, --announce yes|no, --sim-kernel HOST:PORT (simulator only)."""
    options = {"automation": DEFAULT_AUTOMATION_DIR, "data": None, "poll": "0.05", "announce": "yes", "sim-kernel": None}
    index = 0
    while index < len(argv):
        key = argv[index].lstrip("-")
        if key not in options or index + 1 >= len(argv):
            raise ValueError("unknown or incomplete option %r" % argv[index])
        options[key] = argv[index + 1]
        index += 2
    return options


def main(argv=None, namespace=None, api=None):
    """Pick the API (an injected simulator object, the simulator kernel when --sim-kernel is
    given, else TopSpin's builtins) and serve until stopped."""
    options = parse_args(sys.argv[1:] if argv is None else argv)
    namespace = globals() if namespace is None else namespace
    if api is not None:
        pass
    elif options["sim-kernel"]:
        import topspin_api_client
        host, port = options["sim-kernel"].rsplit(":", 1)
        api = topspin_api_client.KernelClient(host, int(port))
    elif "XCMD" in namespace:
        api = TopSpinBuiltins(namespace)
    else:
        raise RuntimeError("no TopSpin API: run inside TopSpin or give --sim-kernel HOST:PORT")
    data_dir = options["data"]
    if data_dir is None:
        data_dir = api.CURDATA()[3]
    if options["announce"] != "no":  # on TopSpin's console; the in-process simulator stays quiet
        print("exsylab automation: serving %s (data %s)" % (options["automation"], data_dir))
    Automation(api, options["automation"], data_dir, float(options["poll"])).serve()


if __name__ == "__main__":
    main()
