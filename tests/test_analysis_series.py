"""Expno lists, site lists and a run folder's datasets.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.errors import AnalysisInputError
from analysis.series import parse_expnos, parse_sites, series_datasets
from analysis.synthetic import write_synthetic_exsy


@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20)), min_size=1, max_size=5))
def test_expno_ranges_round_trip(ranges):
    expected, parts = [], []
    for start, length in ranges:
        block = list(range(start, start + length + 1))
        if set(block) & set(expected):
            return
        expected += block
        parts.append(f"{start}-{start + length}" if length else str(start))
    assert parse_expnos(",".join(parts)) == expected


@pytest.mark.parametrize("text", ["", "a", "10-", "19-10", "1,1", "3.5", "10--12"])
def test_bad_expno_lists_are_refused(text):
    with pytest.raises(AnalysisInputError, match="--expnos"):
        parse_expnos(text)


def test_site_lists():
    assert parse_sites("auto") == "auto" and parse_sites(None) == "auto"
    assert parse_sites("2.31,1.29,-4.56") == [2.31, 1.29, -4.56]
    for bad in ("2.31,x", "2.31", "1,1"):
        with pytest.raises(AnalysisInputError, match="--sites"):
            parse_sites(bad)


def test_run_folder_uses_done_entries_only(tmp_path):
    data = tmp_path / "nmr"
    for expno in (10, 11):
        write_synthetic_exsy(data / "exsy" / str(expno), np.eye(2), [2.31, 1.29], mixing_time_s=0.1, temperature_k=300)
    entries = [{"dataset_dir": str(data), "name": "exsy", "expno": 10, "temperature_k": 300, "mixing_time_s": 0.1,
                "status": "done"},
               {"dataset_dir": str(data), "name": "exsy", "expno": 11, "temperature_k": 300, "mixing_time_s": 0.1,
                "status": "failed"}]
    (tmp_path / "datasets.json").write_text(json.dumps(entries))
    assert series_datasets(tmp_path) == [data / "exsy" / "10"]
    entries[0]["expno"] = 99
    (tmp_path / "datasets.json").write_text(json.dumps(entries))
    with pytest.raises(AnalysisInputError, match="entry 0"):
        series_datasets(tmp_path)
    with pytest.raises(AnalysisInputError, match="datasets.json"):
        series_datasets(data)
