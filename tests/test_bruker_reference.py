"""Our Bruker parameter reading, ser sizing and dataset writing checked against real TopSpin data
(/work/shared/reference-data/bruker: exam2d_HH TopSpin 2.1 2D COSY, CP/80 XWIN-NMR 3.5 1D
big-endian, relax/100 TopSpin 3.2 pseudo-2D with a vdlist)."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import nmrglue as ng
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.bruker_params import (
    BrukerParamError,
    dataset_complete,
    expected_ser_bytes,
    expno_has_data,
    raw_data_file,
    read_params,
)
from hardware_sim.nmr_dataset import (
    padded_points,
    ser_bytes,
    to_int32_interleaved,
    write_dataset_files,
    write_jcamp_params,
)

REFERENCE = Path("/work/shared/reference-data/bruker")
EXAM2D, CP80, RELAX = REFERENCE / "exam2d_HH" / "1", REFERENCE / "CP" / "80", REFERENCE / "relax" / "100"
WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def test_reads_topspin_dialect_2d() -> None:
    params = read_params(EXAM2D)
    assert set(params) == {"acqus", "acqu2s"}
    acqus = params["acqus"]
    assert acqus["_coreheader"][0].startswith("##TITLE= Parameter file, TOPSPIN")
    assert (acqus["TD"], acqus["NS"], acqus["DS"], acqus["BYTORDA"]) == (2048, 1, 8, 0)
    assert acqus["D"][1] == pytest.approx(1.486892) and acqus["D"][0] == pytest.approx(3e-6)
    assert acqus["GRPDLY"] == pytest.approx(67.9873504638672) and acqus["TE"] == pytest.approx(297.16)
    assert acqus["PULPROG"] == "cosygpqf" and acqus["LOCKED"] is True
    assert acqus["PROBHD"].startswith("5 mm PABBO")  # a string that runs over two lines
    assert params["acqu2s"]["TD"] == 128 and params["acqu2s"]["NS"] == 16


def test_reads_xwinnmr_dialect_big_endian() -> None:
    params = read_params(CP80)
    acqus = params["acqus"]
    assert set(params) == {"acqus"}
    assert acqus["_coreheader"][0].startswith("##TITLE= Parameter file, XWIN-NMR")
    assert (acqus["TD"], acqus["BYTORDA"], acqus["NS"]) == (4026, 1, 8192)
    assert len(acqus["AMP"]) == 32  # arrays with trailing blanks on each line
    dic, data = ng.bruker.read(str(CP80), read_pulseprogram=False)  # CP/80 ships no pulseprogram
    raw = np.fromfile(CP80 / "fid", dtype=">i4")[:4026]
    np.testing.assert_array_equal(data[:2013], raw[0::2] + 1j * raw[1::2])
    little = np.fromfile(CP80 / "fid", dtype="<i4")[:4026]
    assert np.abs(raw).max() < np.abs(little).max()  # read the wrong way round it is garbage


def test_reads_2d_ser_of_exam2d() -> None:
    dic, data = ng.bruker.read(str(EXAM2D))
    assert data.shape == (128, 1024)
    raw = np.fromfile(EXAM2D / "ser", dtype="<i4").reshape(128, 2048)
    np.testing.assert_array_equal(data, raw[:, 0::2] + 1j * raw[:, 1::2])


def test_reads_pseudo_2d_with_vdlist() -> None:
    params = read_params(RELAX)
    vdlist = ng.bruker.read_vdlist(str(RELAX))
    assert params["acqu2s"]["TD"] == len(vdlist) == 9
    assert vdlist[0] == pytest.approx(1.0) and vdlist[-1] == pytest.approx(50.0)
    dic, data = ng.bruker.read(str(RELAX))
    assert data.shape == (9, 2048)


@pytest.mark.parametrize("expno, name, size", [(EXAM2D, "ser", 1048576), (CP80, "fid", 16384),
                                               (RELAX, "ser", 147456)])
def test_expected_sizes_match_real_raw_data(expno: Path, name: str, size: int) -> None:
    assert raw_data_file(expno).name == name
    assert expected_ser_bytes(expno) == size == (expno / name).stat().st_size
    assert dataset_complete(expno) and expno_has_data(expno)


def test_cp80_td_is_padded_to_a_1024_byte_block() -> None:
    assert 4026 % 256 != 0
    assert expected_ser_bytes(CP80) == padded_points(4026) * 4 == 16384


def test_missing_or_broken_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BrukerParamError, match="no acqus"):
        read_params(tmp_path)
    assert not expno_has_data(tmp_path)
    write_jcamp_params(tmp_path / "acqus", {"NS": 1, "DTYPA": 1}, WHEN)
    with pytest.raises(BrukerParamError, match="TD"):
        expected_ser_bytes(tmp_path)
    write_jcamp_params(tmp_path / "acqus", {"TD": 256, "DTYPA": 1}, WHEN)
    with pytest.raises(BrukerParamError, match="DTYPA"):
        expected_ser_bytes(tmp_path)


def strip_bookkeeping(dic: dict) -> dict:
    """Parameters without nmrglue's header/comment lists."""
    return {k: v for k, v in dic.items() if not k.startswith("_")}


@pytest.mark.parametrize("expno", [EXAM2D, RELAX, CP80], ids=["exam2d", "relax", "cp80"])
def test_writer_round_trips_real_datasets(tmp_path: Path, expno: Path) -> None:
    dic, data = ng.bruker.read(str(expno), read_pulseprogram=expno != CP80)
    is_2d = "acqu2s" in dic
    td = dic["acqus"]["TD"]
    fids = to_int32_interleaved(np.atleast_2d(data))[:, :td]
    raw = write_dataset_files(tmp_path, dic["acqus"], dic["acqu2s"] if is_2d else None, fids, WHEN,
                              pulseprogram=(expno / "pulseprogram").read_text() if is_2d else None)
    name = raw_data_file(expno).name
    assert raw == (expno / name).read_bytes()  # byte for byte, padding and byte order included
    back_dic, back = ng.bruker.read(str(tmp_path), read_pulseprogram=is_2d)
    np.testing.assert_array_equal(back, data)
    for file in ("acqus", "acqu2s") if is_2d else ("acqus",):
        assert strip_bookkeeping(back_dic[file]) == strip_bookkeeping(dic[file])
    assert dataset_complete(tmp_path) and expected_ser_bytes(tmp_path) == expected_ser_bytes(expno)


@settings(max_examples=60, deadline=None)
@given(td=st.integers(2, 70000).map(lambda n: 2 * (n // 2) or 2), td1=st.integers(1, 40),
       dtypa=st.sampled_from([0, 2]))
def test_padding_arithmetic(td: int, td1: int, dtypa: int) -> None:
    per_point = 4 if dtypa == 0 else 8
    padded = padded_points(td, per_point)
    assert td <= padded < td + 1024 // per_point and (padded * per_point) % 1024 == 0
    with tempfile.TemporaryDirectory() as folder:
        expno = Path(folder)
        write_jcamp_params(expno / "acqus", {"TD": td, "DTYPA": dtypa}, WHEN)
        write_jcamp_params(expno / "acqu2s", {"TD": td1}, WHEN)
        assert expected_ser_bytes(expno) == td1 * padded * per_point
        if dtypa == 0:
            fids = np.ones((td1, td), dtype=np.int32)
            content = ser_bytes(fids)
            assert len(content) == expected_ser_bytes(expno)
            (expno / "ser").write_bytes(content)
            assert dataset_complete(expno)
            (expno / "ser").write_bytes(content[:-4])
            assert not dataset_complete(expno) and expno_has_data(expno)
