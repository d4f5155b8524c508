"""exsylab's BDF files against the Battery Data Format itself: its validator (batterydf), its ontology's
preferred labels (tests/data/bdf), its file-name and sidecar conventions, its reference examples; old files still read."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from acquisition.bdf import BdfRecorder, BdfWriter, cell_bdf_path, file_header, find_cell_bdf, metadata_path, read_bdf
from acquisition.convert_cmd import convert_to_bdf
from analysis.cycling import summarize_cycling
from analysis.readers import detect_format, read_cycling_file
from common.bdf_columns import AMBIENT_TEMPERATURE, APPLIED_PRESSURE, STEP_INDEX, TEST_TIME, VOLTAGE
from drivers.cycler import CyclerSample

DATA = Path(__file__).parent / "data"
FILE_NAME = re.compile(r"^[A-Za-z0-9-]+__[A-Za-z0-9.+-]+__\d{8}_\d{3}\.bdf\.csv$")  # BDF README, "File naming"


def _ontology() -> dict[str, str]:
    """BDF ontology 1.3.0: preferred label -> 'current' or 'deprecated'."""
    with open(DATA / "bdf" / "ontology-1.3.0-labels.tsv", encoding="utf-8") as handle:
        rows = [r for r in csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t")]
    return {label: status for label, _notation, status in rows[1:]}


def _cell_file(folder: Path, *, start_unix_s: float = 1_790_000_000.0) -> Path:
    """Two cycles of a cell written the way the cycler lane writes them, with ambient temperature and pressure."""
    path = cell_bdf_path(folder, "Li2S-LiI-cell1", "exsylab", start_unix_s)
    meta = {"cell": "Li2S-LiI-cell1", "active_mass_g": 1.5e-3, "ambient_temperature_degc": 19.85,
            "applied_pressure_pa": 2e6}
    t = 0.0
    with BdfWriter(path, meta) as writer:
        recorder = BdfRecorder(writer)
        for step_index, (mode, current_a) in enumerate([("charge", 1e-4), ("discharge", -1e-4)] * 2):
            on_sample = recorder.begin_step(mode, step_index)
            for k in range(1, 31):
                t += 60.0
                on_sample(CyclerSample(t, start_unix_s + t, 1.6 + 0.01 * k * np.sign(current_a), current_a),
                          abs(current_a) * 60.0 * k / 3600.0, 60.0 * k)
    return path


def test_an_exsylab_cell_file_passes_the_bdf_validator_and_uses_current_ontology_labels(tmp_path: Path) -> None:
    import bdf  # batterydf, the Battery Data Alliance's package

    path = _cell_file(tmp_path)
    assert FILE_NAME.match(path.name) and path.name == "exsylab__Li2S-LiI-cell1__20260921_001.bdf.csv"
    assert metadata_path(path) == path.with_suffix(".json")  # the sidecar BDF's JSON parser looks for
    frame = pd.read_csv(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a legacy label or non-monotonic time warns: make it fail
        report = bdf.validate_df(frame, report=False, raise_on_error=True)
    assert report["ok"] and report["missing"] == [] and report["time_stats"]["monotonic"]
    assert report["legacy_labels"] == []
    assert report["extras"] == [STEP_INDEX]  # 'Step ID' is new in ontology 1.3.0, after batterydf 0.1.0
    ontology = _ontology()
    assert all(ontology.get(label) == "current" for label in frame.columns), frame.columns
    assert ontology["Step Index / 1"] == "deprecated"  # why exsylab no longer writes it
    assert frame[AMBIENT_TEMPERATURE].eq(19.85).all() and frame[APPLIED_PRESSURE].eq(2e6).all()
    for column in ("Charging Capacity / Ah", "Discharging Capacity / Ah"):  # cumulative: never reset
        assert frame[column].is_monotonic_increasing


def test_a_resumed_run_finds_its_file_and_an_old_exsylab_file_still_reads_and_appends(tmp_path: Path) -> None:
    path = _cell_file(tmp_path)
    assert cell_bdf_path(tmp_path, "Li2S-LiI-cell1", "other", 1_900_000_000.0) == path  # not a second file
    old = tmp_path / "old" / "cellA.csv"  # exsylab before BDF 1.3.0: `CELL.csv`, 'Step Index / 1'
    old.parent.mkdir()
    lines = path.read_text().splitlines()
    header = [h for h in lines[0].split(",") if h not in (AMBIENT_TEMPERATURE, APPLIED_PRESSURE)]
    keep = [lines[0].split(",").index(h) for h in header]
    old.write_text("\n".join([",".join("Step Index / 1" if h == STEP_INDEX else h for h in header)]
                             + [",".join(r.split(",")[k] for k in keep) for r in lines[1:]]) + "\n")
    assert find_cell_bdf(old.parent, "cellA") == old
    assert STEP_INDEX in read_bdf(old) and STEP_INDEX in read_cycling_file(old).columns
    summary, _ = summarize_cycling(old, 1.5e-3)
    assert summary["n_cycles"] == 2
    with BdfWriter(old, {"applied_pressure_pa": 2e6}, append=True) as writer:
        writer.write(CyclerSample(9999.0, 1_790_009_999.0, 1.5, 0.0), 2, 5, 4, 1.0, 1.0)
    assert file_header(old)[5] == STEP_INDEX and old.read_text().splitlines()[0].count(",") == 8  # header kept
    assert old.read_text().splitlines()[-1].startswith("9999.0,1.5,0.0,2,5,4,")


def test_the_formats_reference_example_reads_with_its_machine_readable_headers() -> None:
    example = DATA / "bdf" / "DLR__LiLNMOHydra0b__20221125__POCV__25degC__Basytec.head200.bdf.csv"
    assert detect_format(example).name == "bdf-csv"
    columns = read_cycling_file(example).columns
    assert {TEST_TIME, VOLTAGE, "Current / A", AMBIENT_TEMPERATURE} <= set(columns)
    assert len(columns[TEST_TIME]) == 199 and 3.7 < columns[VOLTAGE][0] < 3.9


@pytest.mark.parametrize("name", ["v1150_GCPL.mpr", "new_nda_file.nda"])
def test_a_converted_vendor_file_is_valid_bdf_and_analyses_the_same(tmp_path: Path, name: str) -> None:
    import bdf

    source = DATA / "vendor" / name
    target = convert_to_bdf(source, tmp_path, active_mass_g=1.0)
    assert FILE_NAME.match(target.name) and metadata_path(target).is_file()
    frame = pd.read_csv(target)
    report = bdf.validate_df(frame, report=False, raise_on_error=True)
    assert report["ok"] and report["time_stats"]["monotonic"] and set(report["extras"]) <= {STEP_INDEX}
    meta = read_cycling_file(target).metadata
    assert meta["source_format"] == detect_format(source).name and len(meta["source_sha256"]) == 64
    direct, _ = summarize_cycling(source, 1.0)
    converted, _ = summarize_cycling(target)  # the mass comes from the written metadata
    assert [c["cycle"] for c in converted["cycles"]] == [c["cycle"] for c in direct["cycles"]]
    for a, b in zip(direct["cycles"], converted["cycles"]):
        assert b["charge_mah_per_g"] == pytest.approx(a["charge_mah_per_g"], rel=1e-9, abs=1e-12)
        assert b["discharge_mah_per_g"] == pytest.approx(a["discharge_mah_per_g"], rel=1e-9, abs=1e-12)
    with pytest.raises(Exception, match="exists; refusing to overwrite"):
        convert_to_bdf(source, tmp_path)


def test_a_cell_name_that_would_break_the_bdf_file_name_is_refused_and_pressure_takes_units() -> None:
    from protocols import InputError, parse_protocol

    protocol = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "cycling-fixed-capacity.yaml")
                              .read_text())
    assert parse_protocol(protocol, "p.yaml").cell.pressure_pa == 2e6  # the seed's 2 MPa, in Pa inside
    protocol["cell"]["pressure"] = "20 bar"
    assert parse_protocol(protocol, "p.yaml").cell.pressure_pa == 2e6
    protocol["cell"]["name"] = "cell__1"
    with pytest.raises(InputError) as refused:
        parse_protocol(protocol, "p.yaml")
    assert refused.value.field == "cell.name" and "'__' separates" in refused.value.reason
