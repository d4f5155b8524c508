"""The vt-series protocol: per-temperature 1D, T1 and EXSY blocks, their estimates, the D1 rule, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from acquisition.cli import main
from protocols import InputError, compile_plan, load_protocol, simulated_station
from protocols.loader import parse_protocol
from protocols.nmr_steps import Spectrum1D, T1Measurement
from protocols.plan import Acquire2D, D1Rule
from protocols.timing import exsy_acquisition_s

SERIES = Path(__file__).resolve().parents[1] / "examples" / "vt-series-paper.yaml"


def _paper() -> dict[str, Any]:
    return yaml.safe_load(SERIES.read_text())


def _compile(data: dict[str, Any]):
    return compile_plan([parse_protocol(data, "test.yaml")], simulated_station(), sources=["test.yaml"])


def test_paper_series_plans_a_1d_a_t1_and_8_exsy_points_at_each_of_five_temperatures() -> None:
    plan = compile_plan([load_protocol(SERIES)], simulated_station())
    kinds = [s.kind for s in plan.steps]
    block = ["move_temperature", "wait_stable", "spectrum_1d", "t1"] + ["acquire_2d"] * 8
    assert kinds == block * 5
    temperatures = [s.temperature_k for s in plan.steps if isinstance(s, Spectrum1D)]
    assert temperatures == pytest.approx([293.15, 313.15, 333.15, 353.15, 373.15])
    expnos = [getattr(s, "expno") for s in plan.steps if hasattr(s, "expno")]
    assert expnos[:10] == list(range(100, 110)) and expnos[-10:] == list(range(180, 190))
    # every EXSY point's rule points at the T1 of its own temperature; planned with the maximum D1
    for step in plan.steps:
        if isinstance(step, Acquire2D):
            assert step.d1_rule is not None and step.acquisition.d1_s == 5.0
            t1 = plan.steps[step.d1_rule.t1_step]
            assert isinstance(t1, T1Measurement) and t1.temperature_k == step.temperature_k
            assert step.d1_rule.factor == 3.0 and (step.d1_rule.min_s, step.d1_rule.max_s) == (1.0, 5.0)
            assert step.d1_rule.sites_ppm == pytest.approx((2.31, 1.29, -4.56))


def test_1d_and_t1_estimates_follow_the_pulse_sequence() -> None:
    plan = compile_plan([load_protocol(SERIES)], simulated_station())
    overhead_s = simulated_station().spectrometer.acquisition_overhead_s
    aq_s = 2048 / (2 * 100 * 73.578)
    one_d = next(s for s in plan.steps if isinstance(s, Spectrum1D))
    assert one_d.estimate_s == pytest.approx(overhead_s + 16 * (5.0 + aq_s))
    t1 = next(s for s in plan.steps if isinstance(s, T1Measurement))
    delays = [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30]
    assert t1.delays_s == pytest.approx(tuple(delays)) and t1.acquisition.pulprog == "satrect"
    assert t1.estimate_s == pytest.approx(overhead_s + 4 * sum(1.0 + vd + aq_s for vd in delays))
    exsy = next(s for s in plan.steps if isinstance(s, Acquire2D))
    assert exsy.estimate_s == pytest.approx(exsy_acquisition_s(
        ns=16, ds=4, td1=32, td2=2048, d1_s=5.0, mixing_time_s=0.01, in0_s=1e-3, sw_ppm=100, sfo1_mhz=73.578,
        fn_mode=5, overhead_s=overhead_s))
    # a measured D1 changes the point's estimate exactly as the formula does
    shorter = exsy.with_d1(1.8)
    assert shorter.acquisition.d1_s == 1.8 and shorter.estimate_s == pytest.approx(exsy_acquisition_s(
        ns=16, ds=4, td1=32, td2=2048, d1_s=1.8, mixing_time_s=0.01, in0_s=1e-3, sw_ppm=100, sfo1_mhz=73.578,
        fn_mode=5, overhead_s=overhead_s))
    assert shorter.record_params() == {"mixing_time_s": 0.01, "d1_s": 1.8}
    assert 40 * 3600 < plan.total_estimate_s < 48 * 3600


def test_inversion_recovery_uses_t1ir_and_a_series_without_rule_keeps_its_d1() -> None:
    data = _paper()
    data.pop("recycle_delay")
    data["experiments"][1]["t1"]["method"] = "inversion"
    data["experiments"][2]["exsy"]["acquisition"]["d1"] = "2 s"
    plan = _compile(data)
    assert next(s for s in plan.steps if isinstance(s, T1Measurement)).acquisition.pulprog == "t1ir"
    exsy = [s for s in plan.steps if isinstance(s, Acquire2D)]
    assert all(s.d1_rule is None and s.acquisition.d1_s == 2.0 for s in exsy)


@pytest.mark.parametrize("factor, t1s, expected", [
    (3.0, [0.4, 0.6, 0.5], 1.8),     # 3 x the longest
    (3.0, [0.1, 0.2, 0.3], 1.0),     # clamped up to min
    (3.0, [2.0, 20.0, 0.5], 5.0),    # clamped down to max
])
def test_d1_rule_is_factor_times_the_longest_t1_clamped(factor: float, t1s: list[float], expected: float) -> None:
    rule = D1Rule(factor=factor, min_s=1.0, max_s=5.0, sites_ppm=(2.31, 1.29, -4.56), t1_step=3)
    fitted = [(2.3, t1s[0], True), (1.3, t1s[1], True), (-4.5, t1s[2], True)]
    choice = rule.choose(fitted)
    assert (choice.d1_s, choice.fallback) == (pytest.approx(expected), "")
    assert choice.wanted_s == pytest.approx(factor * max(t1s))
    assert choice.clamped == (expected != pytest.approx(factor * max(t1s)))


def test_d1_rule_falls_back_to_max_when_a_site_failed_or_is_missing() -> None:
    rule = D1Rule(factor=3.0, min_s=1.0, max_s=5.0, sites_ppm=(2.31, -4.56), t1_step=3)
    d1_s, reason, _ = rule.choose([(2.31, 0.4, True), (-4.56, None, False)])
    assert d1_s == 5.0 and "failed at -4.56 ppm" in reason
    d1_s, reason, _ = rule.choose([(2.31, 0.4, True), (1.29, 0.5, True)])
    assert d1_s == 5.0 and "no T1 fitted at the site -4.56 ppm" in reason
    # a site the rule does not name does not count, even when its fit failed
    assert D1Rule(factor=3.0, min_s=1.0, max_s=5.0, sites_ppm=(2.31,), t1_step=3).choose(
        [(2.31, 0.4, True), (1.29, None, False)])[:2] == (pytest.approx(1.2), "")
    # no sites named: every fitted site counts
    every = D1Rule(factor=3.0, min_s=1.0, max_s=5.0, sites_ppm=None, t1_step=3)
    assert every.choose([(2.31, 0.4, True), (1.29, 1.1, True)])[:2] == (pytest.approx(3.3), "")
    assert every.choose([])[0] == 5.0


@pytest.mark.parametrize("change, field, message", [
    (lambda d: d["experiments"].pop(1), "", "needs a t1 experiment before the exsy"),
    (lambda d: d["recycle_delay"].update(sites=["Li2S", "LiBr"]), "", "unknown site 'LiBr'"),
    (lambda d: d["recycle_delay"].update({"min": "6 s"}), "recycle_delay", "above max"),
    (lambda d: d["experiments"][0]["spectrum_1d"].update(mas_rate="12 kHz"), "", "same MAS rate"),
    (lambda d: d["experiments"][1]["t1"].update(delays=["10 ms"]), "delays", "at least 2"),
    (lambda d: d["experiments"][1]["t1"].update(method="progressive"), "method", "saturation"),
    (lambda d: d["experiments"].append({"cosy": {}}), "experiments", ""),
    (lambda d: d.update(temperatures=["20 degC", "20 degC"]), "", "listed twice"),
    (lambda d: d["expno"].update(per_temperature_block=5), "per_temperature_block", "do not fit in a block"),
    (lambda d: d.update(temperatures=["500 K"]), "temperatures[0]", "outside the probe's range"),
])
def test_bad_series_is_refused_with_field_and_reason(change, field: str, message: str) -> None:
    data = _paper()
    change(data)
    with pytest.raises(InputError) as excinfo:
        _compile(data)
    text = str(excinfo.value)
    assert field in text and message in text and "\n" not in text


def test_cli_plan_shows_the_blocks_and_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(SERIES), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    kinds = {s["kind"] for s in plan["steps"]}
    assert {"spectrum_1d", "t1", "acquire_2d"} <= kinds
    assert plan["steps"][3]["delays_s"][0] == pytest.approx(0.01) and plan["steps"][4]["d1_rule"]["t1_step"] == 3
    assert main(["plan", str(SERIES)]) == 0
    out = capsys.readouterr().out
    blocks = [line for line in out.splitlines() if line.startswith("block ")]
    assert len(blocks) == 5 and blocks[0].startswith("block 293.1 K: wait 00:10:45, 1D 00:01:24, T1 00:03:36, EXSY x8 ")
    assert "EXSY D1 = 3 x T1 within 1..5 s (estimated with 5 s until measured)" in blocks[-1]
    assert "total estimate 1 d 20:29:42 (44.50 h)" in out
