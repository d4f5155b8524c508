"""The TopSpin-side script: Python 2.7 grammar, name mapping, its own refusals, and its job handling."""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import topspin
from drivers.bruker_params import expected_ser_bytes
from drivers.clock import VirtualClock
from drivers.topspin_side import exsylab_automation as script
from hardware_sim import topspin_api_client
from hardware_sim.nmr_dataset import acquisition_duration_s
from hardware_sim.topspin_params import DEFAULT_EXSY_PARAMS, exsylab_name
from hardware_sim.topspin_sim import TEMPLATE_NAME, SimulatedTopSpin

PY2_SOURCES = [Path(script.__file__), Path(topspin_api_client.__file__)]


class Py3OnlySyntax(ast.NodeVisitor):
    """Collects constructs Jython 2.7 cannot parse."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def note(self, node: ast.AST, what: str) -> None:
        self.found.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    def visit_JoinedStr(self, node):  # f-string
        self.note(node, "f-string")

    def visit_AnnAssign(self, node):
        self.note(node, "annotated assignment")

    def visit_arguments(self, node):
        if node.kwonlyargs:
            self.note(node, "keyword-only arguments")
        if node.posonlyargs:
            self.note(node, "positional-only arguments")
        for arg in node.args + node.kwonlyargs + [a for a in (node.vararg, node.kwarg) if a]:
            if arg.annotation is not None:
                self.note(arg, f"annotation on {arg.arg}")
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        if node.returns is not None:
            self.note(node, f"return annotation on {node.name}")
        self.generic_visit(node)

    def visit_Nonlocal(self, node):
        self.note(node, "nonlocal")

    def visit_NamedExpr(self, node):
        self.note(node, "walrus")

    def visit_YieldFrom(self, node):
        self.note(node, "yield from")

    def visit_AsyncFunctionDef(self, node):
        self.note(node, "async def")


@pytest.mark.parametrize("source", PY2_SOURCES, ids=lambda p: p.name)
def test_script_and_shim_use_python27_grammar_and_compile_under_cpython3(source: Path):
    text = source.read_text()
    tree = ast.parse(text)
    compile(tree, str(source), "exec")
    visitor = Py3OnlySyntax()
    visitor.visit(tree)
    assert visitor.found == []
    assert not re.search(r"\bprint [^(=]", text)


class Py26PlusSyntax(ast.NodeVisitor):
    """Constructs Python 2.5 (TopSpin <= 3.2's Jython) cannot parse: the script must reach its version check."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_ExceptHandler(self, node):
        if node.name is not None:
            self.found.append(f"line {node.lineno}: except ... as")
        self.generic_visit(node)

    def visit_With(self, node):
        self.found.append(f"line {node.lineno}: with")

    def visit_SetComp(self, node):
        self.found.append(f"line {node.lineno}: set comprehension")

    def visit_DictComp(self, node):
        self.found.append(f"line {node.lineno}: dict comprehension")

    def visit_Set(self, node):
        self.found.append(f"line {node.lineno}: set literal")

    def visit_ImportFrom(self, node):
        if node.module == "__future__":
            self.found.append(f"line {node.lineno}: __future__ import")
        self.generic_visit(node)


def test_script_uses_python25_grammar_so_an_old_jython_reaches_the_refusal():
    text = Path(script.__file__).read_text()
    visitor = Py26PlusSyntax()
    visitor.visit(ast.parse(text))
    assert visitor.found == []
    assert not re.search(r"^import json", text, re.M)   # Jython 2.5 has no json: imported after the check


@pytest.mark.parametrize("ours, theirs", [("D8", "D 8"), ("D1", "D 1"), ("P1", "P 1"), ("IN0", "IN 0"),
                                          ("TD1", "1 TD"), ("NS", "NS"), ("TE", "TE"), ("TITLE", "TITLE"),
                                          ("PLDB1", "PLdB 1"), ("CNST20", "CNST 20")])
def test_parameter_names_map_to_topspins_spelling(ours, theirs):
    assert script.topspin_name(ours) == theirs
    assert exsylab_name(theirs).upper() == ours.upper()


@pytest.mark.parametrize("theirs", ["D 8", "1 TD", "PLdB 1", "1 FnMODE", "FnMODE"])
def test_topspins_own_spelling_passes_unchanged(theirs):
    assert script.topspin_name(theirs) == theirs
    topspin.check_param_name(theirs)   # the host accepts it too


def test_f1_and_f2_fnmode_are_different_parameters():
    assert exsylab_name("1 FnMODE") == "FnMODE"        # the simulator's F1 quadrature mode (acqu2)
    assert exsylab_name("FnMODE") != exsylab_name("1 FnMODE")


@given(st.sampled_from(sorted(script.ARRAY_PARAMS)), st.integers(min_value=0, max_value=63))
def test_array_parameter_names_round_trip(head, index):
    name = f"{head}{index}"
    assert exsylab_name(script.topspin_name(name)).upper() == name


@given(st.text(min_size=0, max_size=12))
def test_host_and_topspin_side_agree_on_dataset_names(name):
    try:
        script.check_dataset_name(name)
        script_ok = True
    except ValueError:
        script_ok = False
    try:
        topspin.check_dataset_name(name)
        host_ok = True
    except topspin.InvalidDataset:
        host_ok = False
    assert script_ok == host_ok
    if host_ok:
        assert "/" not in name and ".." not in name and name


def test_parse_args_refuses_unknown_options():
    assert script.parse_args(["--automation", "/x", "--poll", "0.1"])["poll"] == "0.1"
    with pytest.raises(ValueError, match="unknown or incomplete"):
        script.parse_args(["--bogus", "1"])
    with pytest.raises(ValueError, match="unknown or incomplete"):
        script.parse_args(["--automation"])


@pytest.fixture
def served(tmp_path: Path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock)
    sim.start()
    driver = topspin.TopSpinDriver(tmp_path / "automation", tmp_path / "data", clock)
    assert driver.is_alive()
    yield sim, driver, tmp_path / "automation"
    sim.stop()


def raw_job(automation: Path, job_id: str, op: str, args: dict) -> dict:
    """Write a job file by hand (as a foreign or malicious host might) and wait for its result."""
    (automation / "jobs" / f"{job_id}.json").write_text(json.dumps({"id": job_id, "op": op, "args": args}))
    result = automation / "results" / f"{job_id}.json"
    deadline = time.monotonic() + 5.0
    while not result.exists():
        assert time.monotonic() < deadline, f"no result for {job_id}"
        time.sleep(0.002)
    return json.loads(result.read_text())


@pytest.mark.parametrize("name", ["../outside", "/etc", "a/../../b"])
def test_topspin_side_refuses_escaping_names_itself(served, name):
    sim, driver, automation = served
    result = raw_job(automation, "escape", "create", {"name": name, "expno": 1, "template": None})
    assert result["ok"] is False and "refused dataset name" in result["error"]
    assert not (automation.parent / "outside").exists()


def test_unknown_op_and_half_written_jobs(served):
    sim, driver, automation = served
    (automation / "jobs" / "partial.json.tmp").write_text('{"id": "partial", "op": "sto')
    result = raw_job(automation, "bogus", "format_disk", {})
    assert result["ok"] is False and "unknown job op" in result["error"]
    assert (automation / "jobs" / "partial.json.tmp").exists()          # never touched
    assert not (automation / "results" / "partial.json").exists()


def test_scripts_complete_ser_size_matches_the_dataset_reader(served):
    sim, driver, automation = served
    params = {"NS": 1, "DS": 0, "TD": 700, "TD1": 6, "D1": 0.2, "D8": 0.01}   # TD not a block multiple
    path = driver.create_dataset("exsy", 1, (TEMPLATE_NAME, 1))
    driver.set_params("exsy", 1, params)
    driver.start_acquisition("exsy", 1)
    expected_s = acquisition_duration_s(params)
    status = driver.wait_acquisition("exsy", 1, expected_s, poll_s=expected_s)
    assert status.state == "done" and "XCMD result 0" in status.message   # TopSpin's word, not a file size
    assert expected_ser_bytes(path) == (path / "ser").stat().st_size == 6 * 768 * 8   # float64, 1 KiB blocks


def test_kernel_serves_the_api_over_loopback_and_reports_errors(tmp_path: Path):
    clock = VirtualClock()
    sim = SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock)
    port = sim.serve_kernel()
    try:
        client: Any = topspin_api_client.KernelClient("127.0.0.1", port)   # methods made from METHODS
        client.RE([TEMPLATE_NAME, "1", "1", str(tmp_path / "data")])
        assert client.GETPAR("1 TD") == str(DEFAULT_EXSY_PARAMS["TD1"])
        assert client.now() == clock.now()
        with pytest.raises(topspin_api_client.KernelError, match="unknown parameter"):
            client.GETPAR("NOSUCH")
        with pytest.raises(topspin_api_client.KernelError, match="unknown TopSpin API call"):
            client.call("os_system", "true")
        assert client.should_stop() is False
    finally:
        sim.stop()
    with pytest.raises(ValueError, match="loopback only"):
        topspin_api_client.KernelClient("192.0.2.1", port)


def test_simulator_as_context_manager_serves_and_stops(tmp_path: Path):
    clock = VirtualClock()
    with SimulatedTopSpin(tmp_path / "automation", tmp_path / "data", clock):
        driver = topspin.TopSpinDriver(tmp_path / "automation", tmp_path / "data", clock)
        assert driver.is_alive()
    assert not driver.is_alive()


def test_vdlist_text_is_one_delay_a_line_in_seconds_with_the_s_suffix() -> None:
    assert script.vdlist_text([0.01, 1, 2.5e-5, 120.0, 0]) == "0.01s\n1s\n0.000025s\n120s\n0s\n"
    for bad in ([], [-1.0], [float("nan")], [float("inf")]):
        with pytest.raises(ValueError, match="refused"):
            script.vdlist_text(bad)
