# -*- coding: utf-8 -*-
"""exsylab automation: executes job files that the exsylab host writes into an automation folder.

Runs inside TopSpin's Jython (2.7, shipped with TopSpin >= 3.5) and under CPython 3 (the exsylab
simulator). It refuses older Jython (TopSpin <= 3.2 ships Jython 2.5) with a line in the heartbeat
file; to get that far, the file is written in a grammar Python 2.5 parses (no `except ... as`, no
__future__ imports, no `with`, no set or dict comprehensions) and imports json only after the check.

Install it into <topspin>/exp/stan/nmr/py/user/ and start it from TopSpin (see INSTALL.md). The host
writes <automation>/jobs/<id>.json atomically; this script executes each job with TopSpin's scripting
calls and writes <automation>/results/<id>.json atomically. A heartbeat thread rewrites
<automation>/heartbeat.json about once a second with a new sequence number (also while a job runs),
the TopSpin and Jython versions. A file <automation>/stop ends the loop.

Acquisitions run in TopSpin's own command context: each zg is started with EXEC_PYSCRIPT, a small
script in its own command thread that opens (RE) the intended dataset, runs XCMD("zg",
WAIT_TILL_DONE) and records the command's result (getResult()) in <automation>/acquisitions/.
Completion is TopSpin's word (that result), never a file size.

Every TopSpin call goes through one small object (`api`): inside TopSpin it wraps the TopCmds
functions the interpreter provides (RE, CURDATA, GETPAR, GETPARSTAT, PUTPAR, XCMD, EXEC_PYSCRIPT);
under the exsylab simulator it is an injected object with the same methods. main() decides which.
"""

import os
import re
import shutil
import sys
import threading
import time

try:  # in Jython, errors thrown by TopSpin's Java side are not Python Exceptions
    from java.lang import Throwable, ThreadDeath
    JAVA_ERRORS = (Throwable,)
    KILL_ERRORS = (ThreadDeath,)  # TopSpin's `kill` stops a script with ThreadDeath: never swallow it
except ImportError:
    JAVA_ERRORS = ()  # type: ignore[assignment]
    KILL_ERRORS = ()  # type: ignore[assignment]
CAUGHT_ERRORS = (Exception,) + JAVA_ERRORS

MIN_PYTHON = (2, 7)
JOBS_DIR = "jobs"
RESULTS_DIR = "results"
ACQ_DIR = "acquisitions"
HEARTBEAT_FILE = "heartbeat.json"
STOP_FILE = "stop"
DEFAULT_AUTOMATION_DIR = os.path.join(os.path.expanduser("~"), "exsylab_automation")
HEARTBEAT_PERIOD_S = 1.0
ZG_START_TIMEOUT_S = 60.0
PROBE_DATASET = "exsylab_probe"  # where teget/masg write their status parameters (never a measured dataset)
# Parameter files a new dataset takes from its template: parameters only, never fid/ser/pulseprogram/audit.
PARAM_FILES = ("acqu", "acqu2", "acqu3")
PROC_FILES = ("proc", "proc2", "proc3")
# Arrays whose elements TopSpin names "D 8", "P 1", "PLdB 1", ...; exsylab may name them "D8", "P1", "PLDB1".
ARRAY_PARAMS = {"D": "D", "P": "P", "PL": "PL", "PLW": "PLW", "PLDB": "PLdB", "CNST": "CNST", "L": "L",
                "IN": "IN", "INP": "INP", "SP": "SP", "SPW": "SPW", "SPDB": "SPdB", "GPZ": "GPZ"}
# F1 (indirect dimension) parameters: exsylab "TD1" is TopSpin's "1 TD".
F1_PARAMS = {"TD1": "1 TD", "SW1": "1 SW"}

# The script EXEC_PYSCRIPT runs for one zg, in its own TopSpin command thread. It is filled in with
# repr()s of checked values only. Result file: first line the XCMD result code (or "error"), then the text.
ZG_SCRIPT = '''
import os, sys
_dataset = %(dataset)r
_result_path = %(result_path)r
_taken_path = %(taken_path)r
_session = %(session)r
def _write(path, text):
    handle = open(path + ".tmp", "w")
    try:
        handle.write(text)
    finally:
        handle.close()
    if os.path.exists(path):
        os.remove(path)
    os.rename(path + ".tmp", path)
try:
    RE(_dataset, "n")
    _write(_taken_path, _session)
    _result = XCMD("zg", WAIT_TILL_DONE)
    _code = getattr(_result, "getResult", None)
    _code = _code() if _code is not None else _result
    _write(_result_path, "%%s\\n%%s" %% (_code, _result))
except:
    _write(_result_path, "error\\n%%s: %%s" %% (sys.exc_info()[0].__name__, sys.exc_info()[1]))
    if %(kill_check)s:
        raise
'''


def python_version_text(version_info):
    """'2.7.3' from sys.version_info."""
    return "%d.%d.%d" % tuple(version_info[:3])


def too_old(version_info):
    """The refusal line for an interpreter older than MIN_PYTHON, or None."""
    if tuple(version_info[:2]) >= MIN_PYTHON:
        return None
    return ("exsylab_automation needs Jython %d.%d (TopSpin >= 3.5); this interpreter is Python %s: "
            "upgrade TopSpin" % (MIN_PYTHON[0], MIN_PYTHON[1], python_version_text(version_info)))


def json_string(text):
    """A JSON string literal without the json module (for the refusal, written before json is imported)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 32:
            out.append("\\u%04x" % ord(char))
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def write_refusal(automation_dir, message, version_info, topspin_version):
    """Write a heartbeat the host reads as 'refused: <message>' (no json module needed)."""
    if not os.path.isdir(automation_dir):
        os.makedirs(automation_dir)
    text = ('{"seq": 1, "stopped": true, "refused": %s, "python_version": %s, "topspin_version": %s}'
            % (json_string(message), json_string(python_version_text(version_info)), json_string(topspin_version)))
    write_text_atomic(os.path.join(automation_dir, HEARTBEAT_FILE), text)


def topspin_name(name):
    """Translate an exsylab parameter name (D8, TD1, PLDB1) into TopSpin's form; TopSpin's own
    spelling ("D 8", "1 TD", "PLdB 1", "1 FnMODE") passes unchanged."""
    if " " in name:
        return name
    upper = name.upper()
    if upper in F1_PARAMS:
        return F1_PARAMS[upper]
    head = upper.rstrip("0123456789")
    tail = upper[len(head):]
    if tail and head in ARRAY_PARAMS:
        return "%s %s" % (ARRAY_PARAMS[head], tail)
    return name


# The host's rule (common/topspin_names.py), repeated here because this script runs inside TopSpin
# without exsylab installed; tests/test_topspin_script.py checks that the two agree.
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")


def check_dataset_name(name):
    """Refuse dataset names that could escape the data folder (letters, digits, _ . + -; no '..')."""
    if not name or not DATASET_NAME.match(name) or ".." in name:
        raise ValueError("refused dataset name %r (letters, digits, _ . + - only; no '/', no '..')" % (name,))


def vdlist_text(values_s):
    """A TopSpin vd list: one delay per line in seconds, fixed point with the s suffix (e.g. 0.01s); refuses bad
    delays."""
    if not values_s:
        raise ValueError("refused an empty delay list")
    lines = []
    for value in values_s:
        value = float(value)
        if not value >= 0 or value == float("inf"):
            raise ValueError("refused delay %r s (must be a finite number >= 0)" % (value,))
        text = ("%.9f" % value).rstrip("0").rstrip(".")  # fixed point (no exponent), down to 1 ns
        lines.append((text or "0") + "s\n")
    return "".join(lines)


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
    if "spinning" in message.lower():
        return "spinning_failure"
    return "acq_error"


def is_kill(exc):
    """True for TopSpin's `kill` (java.lang.ThreadDeath): it must end the script, not become a job error."""
    return bool(KILL_ERRORS) and isinstance(exc, KILL_ERRORS)


def write_text_atomic(path, text):
    """Write text to path.tmp, then rename it over path, so readers never see a partial file.
    Not fsynced: a result lost in a crash is a job the host times out on."""
    tmp = path + ".tmp"
    handle = open(tmp, "w")
    try:
        handle.write(text)
    finally:
        handle.close()
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)  # Windows (and Jython there) does not rename over an existing file
        os.rename(tmp, path)


def read_text(path):
    """A small file's text, or None when it does not exist."""
    if not os.path.isfile(path):
        return None
    handle = open(path)
    try:
        return handle.read()
    finally:
        handle.close()


def thread_alive(thread):
    """Thread.is_alive under Python 3 and Jython 2.7, isAlive under Jython 2.5."""
    probe = getattr(thread, "is_alive", None) or getattr(thread, "isAlive")
    return probe()


class TopSpinBuiltins(object):
    """The TopSpin API as TopSpin's Jython interpreter provides it (TopCmds names in the script's globals)."""

    def __init__(self, namespace):
        self.ns = namespace

    def RE(self, dataset):
        """Make `dataset` ([name, expno, procno, dir]) the current dataset of this command thread, without display."""
        return self.ns["RE"](dataset, "n")

    def CURDATA(self):
        """TopSpin's current dataset [name, expno, procno, dir, ...]."""
        return self.ns["CURDATA"]()

    def GETPAR(self, name):
        """A current (acqu) parameter of the current dataset, as text."""
        return self.ns["GETPAR"](name)

    def GETPARSTAT(self, name):
        """A status (acqus) parameter of the current dataset, as text."""
        return self.ns["GETPARSTAT"](name)

    def PUTPAR(self, name, value):
        """Set a current (acqu) parameter of the current dataset."""
        return self.ns["PUTPAR"](name, value)

    def XCMD(self, command, wait):
        """Run a TopSpin command (WAIT_TILL_DONE when `wait`); returns TopSpin's result object."""
        flag = self.ns["WAIT_TILL_DONE"]
        if not wait:
            flag = self.ns["NO_WAIT_TILL_DONE"]
        return self.ns["XCMD"](command, flag)

    def EXEC_PYSCRIPT(self, text):
        """Run a Python script text in its own TopSpin command thread."""
        return self.ns["EXEC_PYSCRIPT"](text)

    def topspin_version(self):
        """TopSpin's version from its installation folder name (e.g. /opt/topspin4.1.4), else 'unknown'."""
        home = None
        registry = getattr(sys, "registry", None)
        if registry is not None:
            home = registry.get("XWINNMRHOME")  # TopSpin >= 3.1
        if home is None:
            home = os.environ.get("XWINNMRHOME", "")
        match = re.search(r"topspin[^0-9]*([0-9][0-9.]*[0-9])", str(home), re.I)
        if match:
            return match.group(1)
        return "unknown"

    def now(self):
        """Seconds since the epoch on this side's clock (informational only; the host never compares it)."""
        return time.time()

    def should_stop(self):
        """Inside TopSpin only the stop file (or TopSpin's kill) ends the loop."""
        return False


class Automation(object):
    """The job loop: read job files, execute them through `api`, write results; a thread keeps the heartbeat."""

    def __init__(self, api, automation_dir, data_dir, poll_s=0.05, heartbeat_s=HEARTBEAT_PERIOD_S,
                 version_info=None):
        import json  # here, not at the top: Jython 2.5 has no json module and must reach the refusal
        self.json = json
        self.api = api
        self.automation_dir = automation_dir
        self.data_dir = data_dir
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.python_version = python_version_text(version_info or sys.version_info)
        self.topspin_version = str(api.topspin_version())
        self.session = "%.6f-%d" % (time.time(), id(self))  # marks the zgs this run of the script started
        self.start_dataset = list(api.CURDATA())  # the dataset open when the script started: the default template
        self.jobs_dir = os.path.join(automation_dir, JOBS_DIR)
        self.results_dir = os.path.join(automation_dir, RESULTS_DIR)
        self.acq_dir = os.path.join(automation_dir, ACQ_DIR)
        self.heartbeat_path = os.path.join(automation_dir, HEARTBEAT_FILE)
        self.heartbeat_seq = 0
        self.beat_lock = threading.Lock()
        self.serving = False
        for folder in (self.jobs_dir, self.results_dir, self.acq_dir):
            try:
                os.makedirs(folder)
            except OSError:
                if not os.path.isdir(folder):  # else the host made it first
                    raise

    # ---- loop -------------------------------------------------------------------------
    def serve(self):
        """Run until a stop file appears, the API asks to stop, or TopSpin kills the script."""
        stop_path = os.path.join(self.automation_dir, STOP_FILE)
        self.serving = True
        self.beat(False)
        current = getattr(threading, "current_thread", None) or getattr(threading, "currentThread")
        beater = threading.Thread(target=self.beat_loop, args=(current(),), name="exsylab-heartbeat")
        if hasattr(beater, "daemon"):
            beater.daemon = True
        else:  # Jython 2.5
            beater.setDaemon(True)
        beater.start()
        try:
            while not self.api.should_stop() and not os.path.exists(stop_path):
                if not self.run_pending():
                    time.sleep(self.poll_s)
        finally:
            self.beat_lock.acquire()
            try:
                self.serving = False
            finally:
                self.beat_lock.release()
            self.beat(True)

    def beat_loop(self, server):
        """Rewrite the heartbeat every heartbeat_s of real time while the serving thread lives (also during jobs)."""
        while self.serving and thread_alive(server):
            time.sleep(self.heartbeat_s)
            self.beat(False)

    def beat(self, stopped):
        """Write the heartbeat with a new sequence number; once stopped, no live beat follows."""
        now = self.api.now()  # (hangs while a simulated TopSpin is frozen: then no beat, as in a frozen TopSpin)
        self.beat_lock.acquire()
        try:
            if not stopped and not self.serving:
                return
            self.heartbeat_seq += 1
            write_text_atomic(self.heartbeat_path, self.json.dumps({
                "seq": self.heartbeat_seq, "time": now, "stopped": bool(stopped),
                "topspin_version": self.topspin_version, "python_version": self.python_version,
                "interpreter": sys.platform.startswith("java") and "Jython" or "CPython"}, sort_keys=True))
        finally:
            self.beat_lock.release()

    def run_pending(self):
        """Execute every job file present; return True when at least one ran."""
        names = sorted([n for n in os.listdir(self.jobs_dir) if n.endswith(".json")])
        for name in names:
            path = os.path.join(self.jobs_dir, name)
            try:
                job = self.json.loads(read_text(path) or "")
                os.remove(path)
            except (IOError, OSError, ValueError):
                continue  # withdrawn by the host or half-visible; the host retries or times out
            result = self.execute(job)
            write_text_atomic(os.path.join(self.results_dir, name), self.json.dumps(result, sort_keys=True))
        return bool(names)

    def execute(self, job):
        """Run one job and turn its outcome (or TopSpin's error message) into a result dict; a kill propagates."""
        result = {"id": job.get("id"), "op": job.get("op")}
        handler = getattr(self, "op_" + str(job.get("op")), None)
        if handler is None:
            result.update(ok=False, error="unknown job op %r" % (job.get("op"),))
            return result
        try:
            result.update(ok=True, value=handler(job.get("args") or {}))
        except CAUGHT_ERRORS:  # the host needs TopSpin's message, whatever raised it (Python or Java)
            exc = sys.exc_info()[1]
            if is_kill(exc):
                raise
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

    def acq_paths(self, dataset):
        """(result, taken) files recording the zg of one dataset, in the automation folder."""
        stem = os.path.join(self.acq_dir, "%s.%s" % (dataset[0], dataset[1]))
        return stem + ".result", stem + ".taken"

    def copy_parameters(self, source, target):
        """Copy a dataset's parameter files (acqu*, proc*) into target; the status files (acqu*s) start as a
        copy of the parameters; fid, ser, pulseprogram, audit trail and title are never copied."""
        made = not os.path.isdir(target)
        if made:
            os.makedirs(target)
        for name in PARAM_FILES:
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
                shutil.copyfile(os.path.join(source, name), os.path.join(target, name + "s"))
        if not os.path.isfile(os.path.join(target, "acqu")):
            if made:
                shutil.rmtree(target)
            raise RuntimeError("template %s has no acqu parameter file" % source)
        pdata_source = os.path.join(source, "pdata", "1")
        pdata_target = os.path.join(target, "pdata", "1")
        if not os.path.isdir(pdata_target):
            os.makedirs(pdata_target)
        for name in PROC_FILES:
            if os.path.isfile(os.path.join(pdata_source, name)):
                shutil.copyfile(os.path.join(pdata_source, name), os.path.join(pdata_target, name))
                shutil.copyfile(os.path.join(pdata_source, name), os.path.join(pdata_target, name + "s"))

    def probe(self):
        """RE the probe dataset (created from the current dataset's parameters on first use) and return it."""
        dataset = [PROBE_DATASET, "1", "1", self.data_dir]
        path = self.expno_path(dataset)
        if not os.path.isfile(os.path.join(path, "acqu")):
            start = self.start_dataset
            self.copy_parameters(os.path.join(start[3], start[0], start[1]), path)
        self.api.RE(dataset)
        return dataset

    # ---- ops --------------------------------------------------------------------------
    def op_ping(self, args):
        """Answer with this side's clock time and versions."""
        return {"time": self.api.now(), "topspin_version": self.topspin_version,
                "python_version": self.python_version}

    def op_create(self, args):
        """Create name/expno with the parameters of the template (or of the dataset open when the script was
        started); never its fid/ser (TopSpin's wrpa would copy the raw data too)."""
        dataset = self.dataset(args)
        path = self.expno_path(dataset)
        if has_data(path):
            raise RuntimeError("expno %s already holds data; refusing to overwrite" % path)
        template = args.get("template")
        if template:
            source = self.expno_path(self.dataset({"name": template[0], "expno": template[1]}))
        else:
            start = self.start_dataset
            source = os.path.join(start[3], start[0], start[1])
        if os.path.abspath(source) == os.path.abspath(path):
            raise RuntimeError("cannot create %s from itself" % path)
        self.copy_parameters(source, path)
        self.api.RE(dataset)
        return path

    def op_set_params(self, args):
        """PUTPAR every given parameter into name/expno (acqu: the current parameters)."""
        self.open_dataset(args)
        for key in sorted(args["params"]):
            self.api.PUTPAR(topspin_name(key), str(args["params"][key]))
        return None

    def op_set_title(self, args):
        """Write name/expno/pdata/1/title, the file TopSpin's setti edits."""
        dataset = self.open_dataset(args)
        folder = os.path.join(self.expno_path(dataset), "pdata", "1")
        if not os.path.isdir(folder):
            os.makedirs(folder)
        write_text_atomic(os.path.join(folder, "title"), args["title"].rstrip("\n") + "\n")
        return None

    def op_write_list(self, args):
        """Write the delay list <expno>/<list_name> (vdlist_text), PUTPAR VDLIST to its name and "1 TD" to its
        length (a pseudo-2D T1 takes one row per delay)."""
        check_dataset_name(args["list_name"])  # a list file name follows the dataset-name rule
        text = vdlist_text(args["values_s"])
        dataset = self.open_dataset(args)
        path = self.expno_path(dataset)
        if has_data(path):
            raise RuntimeError("expno %s already holds data; refusing to change its list" % path)
        write_text_atomic(os.path.join(path, args["list_name"]), text)
        self.api.PUTPAR("VDLIST", args["list_name"])
        self.api.PUTPAR("1 TD", str(len(args["values_s"])))
        return os.path.join(path, args["list_name"])

    def op_get_param(self, args):
        """GETPAR one current (acqu) parameter of name/expno."""
        self.open_dataset(args)
        return str(self.api.GETPAR(topspin_name(args["key"])))

    def op_get_param_status(self, args):
        """GETPARSTAT one status (acqus) parameter of name/expno."""
        self.open_dataset(args)
        return str(self.api.GETPARSTAT(topspin_name(args["key"])))

    def op_start(self, args):
        """Start zg on name/expno in its own TopSpin command thread (EXEC_PYSCRIPT); return once that thread
        has opened the dataset (or failed)."""
        dataset = self.open_dataset(args)
        path = self.expno_path(dataset)
        result_path, taken_path = self.acq_paths(dataset)
        if read_text(taken_path) == self.session and not os.path.exists(result_path):
            raise RuntimeError("acquisition already running in %s" % path)
        if has_data(path):
            raise RuntimeError("expno %s already holds data; refusing to overwrite" % path)
        for stale in (result_path, taken_path):
            if os.path.exists(stale):
                os.remove(stale)
        kill_check = "False"
        if KILL_ERRORS:
            kill_check = "isinstance(sys.exc_info()[1], __import__('java.lang').lang.ThreadDeath)"
        self.api.EXEC_PYSCRIPT(ZG_SCRIPT % {"dataset": dataset, "result_path": result_path,
                                            "taken_path": taken_path, "session": self.session,
                                            "kill_check": kill_check})
        deadline = time.time() + ZG_START_TIMEOUT_S
        while not os.path.exists(taken_path) and not os.path.exists(result_path):
            if time.time() > deadline:
                raise RuntimeError("zg did not start in %s within %.0f s" % (path, ZG_START_TIMEOUT_S))
            time.sleep(0.001)
        return path

    def op_status(self, args):
        """Report idle/running/done/failed for name/expno from zg's own result (XCMD getResult())."""
        dataset = self.open_dataset(args)
        path = self.expno_path(dataset)
        result_path, taken_path = self.acq_paths(dataset)
        state = {"path": path, "kind": None, "scans_done": None}
        text = read_text(result_path)
        if text is not None:
            code, _, message = text.partition("\n")
            failed = code == "error"
            if not failed and code not in ("None", ""):
                try:
                    failed = int(float(code)) < 0
                except ValueError:
                    failed = True
            if failed:
                message = "zg failed in %s (XCMD result %s): %s" % (path, code, message)
                state.update(state="failed", message=message, kind=failure_kind(message))
            else:
                state.update(state="done", message="zg finished (XCMD result %s)" % code)
        elif read_text(taken_path) == self.session:
            state.update(state="running", message="zg running in %s" % path)
        elif os.path.exists(taken_path):
            state.update(state="failed", kind="acq_error",
                         message="zg in %s was started by an earlier run of exsylab_automation and left no result "
                                 "(TopSpin or the script restarted during the acquisition)" % path)
        else:
            state.update(state="idle", message="no acquisition started in %s by exsylab" % path)
        return state

    def op_stop(self, args):
        """Halt the running acquisition; TopSpin keeps the rows acquired so far."""
        self.api.XCMD("halt", True)
        return None

    def op_mas_rate(self, args):
        """The MAS rate measured now: masg, then the status parameter MASR, in Hz."""
        self.probe()
        self.api.XCMD("masg", True)
        return float(self.api.GETPARSTAT("MASR"))

    def op_teset(self, args):
        """Set the VT target in K."""
        self.probe()
        self.api.XCMD("teset %.2f" % float(args["temperature_k"]), True)
        return None

    def op_teget(self, args):
        """The temperature the VT unit measures now: teget, then the status parameter TE, in K."""
        self.probe()
        self.api.XCMD("teget", True)
        return float(self.api.GETPARSTAT("TE"))


def parse_args(argv):
    """Options: --automation DIR, --data DIR, --poll S, --heartbeat S, --announce yes|no,
    --sim-kernel HOST:PORT (simulator only)."""
    options = {"automation": DEFAULT_AUTOMATION_DIR, "data": None, "poll": "0.05", "heartbeat": str(HEARTBEAT_PERIOD_S),
               "announce": "yes", "sim-kernel": None}
    index = 0
    while index < len(argv):
        key = argv[index].lstrip("-")
        if key not in options or index + 1 >= len(argv):
            raise ValueError("unknown or incomplete option %r" % argv[index])
        options[key] = argv[index + 1]
        index += 2
    return options


def main(argv=None, namespace=None, api=None, version_info=None):
    """Refuse a too-old interpreter; pick the API (an injected simulator object, the simulator kernel when
    --sim-kernel is given, else TopSpin's builtins) and serve until stopped."""
    options = parse_args(argv is None and sys.argv[1:] or argv or [])
    version_info = version_info or sys.version_info
    if namespace is None:
        namespace = globals()
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
    refusal = too_old(version_info)
    if refusal is not None:
        write_refusal(options["automation"], refusal, version_info, str(api.topspin_version()))
        sys.stdout.write("exsylab automation: %s\n" % refusal)
        return
    data_dir = options["data"]
    if data_dir is None:
        data_dir = api.CURDATA()[3]
    if options["announce"] != "no":  # on TopSpin's console; the in-process simulator stays quiet
        sys.stdout.write("exsylab automation: serving %s (data %s)\n" % (options["automation"], data_dir))
    Automation(api, options["automation"], data_dir, float(options["poll"]), float(options["heartbeat"]),
               version_info).serve()


if __name__ == "__main__":
    main()
