"""Fuzzing the loader: random malformed files are always refused cleanly (InputError), never crash.

Hypothesis runs derandomized (the "ci" profile of tests/conftest.py); inputs it once found failing
are kept below as @example, so they are tried on every run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols import InputError, compile_plan, load_protocol, simulated_station

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASES = [yaml.safe_load((EXAMPLES / n).read_text()) for n in ("vt-exsy-paper.yaml", "cycling-fixed-capacity.yaml")]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["-5 K", "1e9 s", "0 ms", "nan s", "inf K", "3 furlongs", "10 mA/cm2", "..", "/etc"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    base = copy.deepcopy(draw(st.sampled_from(BASES)))
    paths = [p for p in _paths(base) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = base
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "typo"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[str(path[-1]) + "x"] = parent.pop(path[-1])
        except (KeyError, IndexError, TypeError):
            continue
    return base


# found by hypothesis: a key holding a newline made the message span two lines
KEY_WITH_NEWLINE = {**BASES[0], "temperature\norder": "ascending"}
NESTED_KEY_WITH_NEWLINE = {**BASES[0], "acquisition": {**BASES[0]["acquisition"], "n\rs\n": 1}}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
@example(data=KEY_WITH_NEWLINE)
@example(data=NESTED_KEY_WITH_NEWLINE)
def test_mutated_protocols_are_accepted_or_refused_cleanly(tmp_path_factory, data) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        protocol = load_protocol(path)
        compile_plan([protocol], simulated_station(), sources=[path])
    except InputError as exc:
        message = exc.message()
        assert str(path) in message and "\n" not in message and "\r" not in message


def test_a_yaml_key_holding_a_newline_is_refused_in_one_line(tmp_path) -> None:
    for data in (KEY_WITH_NEWLINE, NESTED_KEY_WITH_NEWLINE):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(data))
        try:
            load_protocol(path)
        except InputError as exc:
            message = exc.message()
        else:
            raise AssertionError("an unknown key was accepted")
        assert "unknown key" in message and "\n" not in message and "\r" not in message, message


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
@example(text='kind: vt-exsy\n"a\\nb": 1\n')
def test_arbitrary_text_never_crashes_the_loader(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "t.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_protocol(path)
    except InputError as exc:
        message = exc.message()
        assert str(path) in message and "\n" not in message
