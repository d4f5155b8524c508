"""The registries are the doors: a new cycler model is a driver, a simulator and one registry line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acquisition import api
from acquisition.bdf import find_cell_bdf
from acquisition.instruments import REGISTRY, DriverEntry
from acquisition.runner import Runner

CYCLING = """\
kind: cycling
name: one-charge
cell: {name: cellA, channel: ch1, active_mass: 1.5 mg, area: 0.785 cm2}
sample_interval: 60 s
steps:
  - charge: {current: 0.1 mA, until: {time: 10 min, voltage: 2.3 V}}
  - rest: {duration: 5 min}
limits: {voltage_min: 0.5 V, voltage_max: 3.5 V, current_max: 1 mA}
"""


def test_a_new_cycler_model_needs_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY["cycler"], "example-smu", DriverEntry(
        "example_cycler_dialect:open_from_station", "example_cycler_dialect:simulate_for_station"))
    (tmp_path / "cycling.yaml").write_text(CYCLING)
    (tmp_path / "station.yaml").write_text(
        "kind: station\nname: one new cycler\n"
        "cyclers:\n  ch1: {driver: example-smu, resource: 'sim://ch1', voltage_min: 0 V, voltage_max: 5 V,"
        " current_max: 10 mA}\n")
    folder, result = api.start_run([tmp_path / "cycling.yaml"], tmp_path / "station.yaml", tmp_path / "run",
                                   show_progress=False)
    assert result.ok
    metadata = json.loads(next(folder.cycler.glob("*.json")).read_text())
    assert "SCPI" in json.dumps(metadata)  # the new driver's preflight summary names the instrument
    bdf = find_cell_bdf(folder.cycler, "cellA")
    assert bdf is not None and bdf.name.startswith("exsylab__cellA__") and bdf.name.endswith("_001.bdf.csv")
    assert bdf.read_text().count("\n") > 5


def test_a_lane_that_cannot_run_a_step_kind_is_refused_before_the_run(tmp_path: Path) -> None:
    """Step kinds dispatch through each lane's table; a kind no lane declares stops the runner at once."""
    from protocols.plan import Plan, WaitStable, Stability

    class CyclerOnly:
        def kinds(self):  # noqa: ANN201 - a lane with one kind
            return {"cycler_step": lambda step, ctx: {}}

    plan = Plan(protocols=["p"], station="s", steps=[WaitStable(
        index=0, lane="nmr", protocol="p", label="wait", estimate_s=1.0, temperature_k=300.0,
        stability=Stability(tolerance_k=0.5, hold_s=1.0, timeout_s=10.0))])
    with pytest.raises(ValueError, match="cannot run step kinds \\['wait_stable'\\]"):
        Runner(plan, None, {"nmr": CyclerOnly()}, None, None, None)  # type: ignore[arg-type]
