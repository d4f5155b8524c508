"""Compiling protocols against a station into a plan: no instruments, no clocks (`load_plan` reads the files first)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence, assert_never

from .adaptive_exsy import AdaptiveExsyProtocol
from .adaptive_step import AdaptiveExsy
from .cycling import (
    CcCvStep,
    ConstantCurrent,
    ChargeStep,
    CurrentSpec,
    CvHoldStep,
    CyclingProtocol,
    DischargeStep,
    EndConditions,
    GittStep,
    LoopStep,
    RateTestStep,
    RestSpec,
    RestStep,
    ScheduleStep,
    Step as CyclingStepSpec,
)
from .errors import InputError
from .exsy import MAX_EXPNO, VtExsyProtocol
from .loader import Protocol, load_protocol, load_station
from .mas_calibration import MasCalibrationProtocol
from .nmr_steps import Acquisition1D, FitCalibration, Spectrum1D, T1Measurement
from .plan import (Acquire2D, CyclerStep, D1Rule, LoopExit, MoveTemperature, NmrAcquisition, Plan, PointPolicy, Stability, Step,
                   Template, WaitStable)
from .station import SpectrometerSpec, StationSpec, VtSpec, simulated_station
from .timing import exsy_acquisition_s, ramp_s, spectrum_1d_s, t1_series_s
from .vt_series import ExsyEntry, Spectrum1DEntry, T1Entry, VtSeriesProtocol

NMR_LANE = "nmr"
# planning assumption for a discharge that ends on voltage: it returns this share of the charge
PLANNED_COULOMBIC_EFFICIENCY = 0.996
HOLD_ESTIMATE_S = 3600.0  # planning assumption for a voltage hold that ends on its current only
# a calibration's thermometer line must stay in the window up to this much frictional heating above the set point
CALIBRATION_HEATING_MARGIN_K = 20.0


def cycler_lane(channel: str) -> str:
    return f"cycler:{channel}"


def compile_plan(
    protocols: Sequence[Protocol],
    station: StationSpec,
    sources: Sequence[str | Path | None] | None = None,
) -> Plan:
    """Turn protocols into one plan of steps on the station's instruments, checking station limits."""
    sources = list(sources) if sources is not None else [None] * len(protocols)
    steps: list[Step] = []
    used_lanes: dict[str, str] = {}
    for protocol, source in zip(protocols, sources):
        lane, new = _compile_one(protocol, station, source, start_index=len(steps))
        if lane in used_lanes:
            raise InputError(source, "cell.channel" if lane != NMR_LANE else "kind", lane,
                             f"the instrument is already used by protocol {used_lanes[lane]!r} in this run")
        used_lanes[lane] = protocol.name
        steps.extend(new)
    return Plan(protocols=[p.name for p in protocols], station=station.name, steps=steps)


def _compile_one(protocol: Protocol, station: StationSpec, source, start_index: int) -> tuple[str, list[Step]]:
    """(lane, steps) of one protocol; every protocol kind has its branch (checked by the type checker)."""
    if isinstance(protocol, VtExsyProtocol):
        return NMR_LANE, _compile_exsy(protocol, station, source, start_index)
    if isinstance(protocol, VtSeriesProtocol):
        return NMR_LANE, _compile_series(protocol, station, source, start_index)
    if isinstance(protocol, MasCalibrationProtocol):
        return NMR_LANE, _compile_calibration(protocol, station, source, start_index)
    if isinstance(protocol, AdaptiveExsyProtocol):
        return NMR_LANE, _compile_adaptive(protocol, station, source, start_index)
    if isinstance(protocol, CyclingProtocol):
        return cycler_lane(protocol.cell.channel), _compile_cycling(protocol, station, source, start_index)
    assert_never(protocol)


def order_temperatures(temperatures_k: list[float], policy: str, start_k: float) -> list[int]:
    """Indices of the temperatures in the order they will be visited."""
    indices = list(range(len(temperatures_k)))
    if policy == "ascending":
        return sorted(indices, key=lambda i: temperatures_k[i])
    if policy == "descending":
        return sorted(indices, key=lambda i: -temperatures_k[i])
    if policy == "shortest-ramp":
        lo, hi = min(temperatures_k), max(temperatures_k)
        up_first = abs(hi - start_k) + (hi - lo)
        down_first = abs(start_k - lo) + (hi - lo)
        ascending = sorted(indices, key=lambda i: temperatures_k[i])
        return ascending if down_first <= up_first else ascending[::-1]
    return indices


def _nmr_station(kind: str, station: StationSpec, source, field: str,
                 temperatures_k: Sequence[tuple[str, float]]) -> tuple[SpectrometerSpec, VtSpec]:
    """The station's spectrometer and VT, refusing a station without them or a temperature outside the probe's range.

    `temperatures_k` holds (field, kelvin) pairs, e.g. ("temperatures[2]", 333.15); `field` names the list.
    """
    if station.spectrometer is None:
        raise InputError(source, "kind", kind, f"station {station.name!r} has no spectrometer")
    if station.vt is None:
        raise InputError(source, field, None, f"station {station.name!r} has no VT unit")
    vt = station.vt
    for where, temperature_k in temperatures_k:
        if not vt.limits.min_k <= temperature_k <= vt.limits.max_k:
            raise InputError(source, where, f"{temperature_k:g} K",
                             f"outside the probe's range {vt.limits.min_k:g}..{vt.limits.max_k:g} K (station {station.name!r})")
    return station.spectrometer, vt


def _compile_exsy(p: VtExsyProtocol, station: StationSpec, source, start_index: int) -> list[Step]:
    grid = p.grid()
    spectrometer, vt = _nmr_station(p.kind, station, source, "temperatures",
                                    [(f"points[{i}].temperature" if p.points is not None else f"temperatures[{i}]", t)
                                     for i, (t, _) in enumerate(grid)])
    acq = p.acquisition
    ramp = vt.planned_ramp_k_per_min
    eq = p.equilibration
    order = order_temperatures([t for t, _ in grid], p.temperature_order, vt.ambient_k)
    steps: list[Step] = []
    # at the start the VT holds ambient: the sample sits where the calibration puts that set point
    calibration = vt.calibration_for(acq.mas_rate_hz)
    current_k = calibration.sample_k(vt.ambient_k) if calibration else vt.ambient_k
    n_acq = 0
    stability = Stability(tolerance_k=eq.tolerance_k, hold_s=eq.hold_s, timeout_s=eq.timeout_s)
    nmr = NmrAcquisition(pulprog=acq.pulprog, ns=acq.ns, ds=acq.ds, td1=acq.td1, td2=acq.td2, d1_s=acq.d1_s,
                         in0_s=acq.t1_increment_s, sw_ppm=acq.sw_ppm, sfo1_mhz=acq.sfo1_mhz, fn_mode=acq.fn_mode,
                         mas_rate_hz=acq.mas_rate_hz)
    policy = PointPolicy(on_collision=p.expno.on_collision, on_vt_excursion=p.on_vt_excursion,
                         excursion_tolerance_k=p.excursion_tolerance_k, on_stop=p.on_stop)
    template = Template(name=p.template.name, expno=p.template.expno)

    def add(step_cls, **fields) -> None:
        steps.append(step_cls(index=start_index + len(steps), lane=NMR_LANE, protocol=p.name, **fields))

    for block, i_t in enumerate(order):
        temperature_k, mixing_times = grid[i_t]
        add(MoveTemperature, label=f"move to {temperature_k:.1f} K", temperature_k=temperature_k, from_k=current_k,
            ramp_k_per_min=ramp, estimate_s=ramp_s(current_k, temperature_k, ramp))
        settle_s = vt.settle_estimate_s if abs(temperature_k - current_k) > eq.tolerance_k else 0.0
        # ramps run on the set point; with an offset calibration that is the sample's change too
        add(WaitStable, label=f"stable at {temperature_k:.1f} K", temperature_k=temperature_k, stability=stability,
            estimate_s=eq.hold_s + settle_s)
        current_k = temperature_k
        for j, mixing_time_s in enumerate(mixing_times):
            if p.expno.per_temperature_block is not None:
                if j >= p.expno.per_temperature_block:
                    raise InputError(source, "expno.per_temperature_block", p.expno.per_temperature_block,
                                     f"{len(mixing_times)} mixing times at {temperature_k:g} K do not fit in a block")
                expno = p.expno.start + block * p.expno.per_temperature_block + j
            else:
                expno = p.expno.start + n_acq
            if expno > MAX_EXPNO:
                raise InputError(source, "expno.start", p.expno.start, f"the series needs expno {expno} > {MAX_EXPNO}")
            estimate_s = exsy_acquisition_s(
                ns=acq.ns, ds=acq.ds, td1=acq.td1, td2=acq.td2, d1_s=acq.d1_s, mixing_time_s=mixing_time_s,
                in0_s=acq.t1_increment_s, sw_ppm=acq.sw_ppm, sfo1_mhz=acq.sfo1_mhz, fn_mode=acq.fn_mode,
                overhead_s=spectrometer.acquisition_overhead_s,
            )
            title = p.title.format(name=p.name, dataset=p.dataset, temperature_k=temperature_k,
                                   mixing_time_s=mixing_time_s, expno=expno)
            add(Acquire2D, label=f"EXSY {temperature_k:.1f} K, tmix {mixing_time_s:g} s -> expno {expno}",
                estimate_s=estimate_s, dataset=p.dataset, expno=expno, title=title, temperature_k=temperature_k,
                mixing_time_s=mixing_time_s, template=template, acquisition=nmr, stability=stability, policy=policy)
            n_acq += 1
    expnos = [s.expno for s in steps if isinstance(s, Acquire2D)]
    if len(set(expnos)) != len(expnos):
        raise InputError(source, "expno", None, "the expno scheme gives two points the same expno")
    return steps


def _compile_series(p: VtSeriesProtocol, station: StationSpec, source, start_index: int) -> list[Step]:
    """Per temperature: move, wait, then the experiments block in order (1D, T1, EXSY points with a D1 rule)."""
    spectrometer, vt = _nmr_station(p.kind, station, source, "temperatures",
                                    [(f"temperatures[{i}]", t) for i, t in enumerate(p.temperatures_k)])
    overhead_s = spectrometer.acquisition_overhead_s
    eq = p.equilibration
    calibration = vt.calibration_for(p.mas_rate_hz_of(p.experiments[0]))
    current_k = calibration.sample_k(vt.ambient_k) if calibration else vt.ambient_k
    stability = Stability(tolerance_k=eq.tolerance_k, hold_s=eq.hold_s, timeout_s=eq.timeout_s)
    policy = PointPolicy(on_collision=p.expno.on_collision, on_vt_excursion=p.on_vt_excursion,
                         excursion_tolerance_k=p.excursion_tolerance_k, on_stop=p.on_stop)
    block_size = p.block_size()
    if p.expno.per_temperature_block is not None and block_size > p.expno.per_temperature_block:
        raise InputError(source, "expno.per_temperature_block", p.expno.per_temperature_block,
                         f"{block_size} acquisitions per temperature do not fit in a block")
    rule = p.recycle_delay
    rule_sites = p.rule_sites_ppm()
    fit_names = tuple(p.sites) if p.sites else None
    fit_ppm = tuple(p.sites.values()) if p.sites else rule_sites
    steps: list[Step] = []
    n_acq = 0

    def add(step_cls, **fields) -> Step:
        step = step_cls(index=start_index + len(steps), lane=NMR_LANE, protocol=p.name, **fields)
        steps.append(step)
        return step

    for block, i_t in enumerate(order_temperatures(list(p.temperatures_k), p.temperature_order, vt.ambient_k)):
        temperature_k = p.temperatures_k[i_t]
        add(MoveTemperature, label=f"move to {temperature_k:.1f} K", temperature_k=temperature_k, from_k=current_k,
            ramp_k_per_min=vt.planned_ramp_k_per_min,
            estimate_s=ramp_s(current_k, temperature_k, vt.planned_ramp_k_per_min))
        settle_s = vt.settle_estimate_s if abs(temperature_k - current_k) > eq.tolerance_k else 0.0
        add(WaitStable, label=f"stable at {temperature_k:.1f} K", temperature_k=temperature_k, stability=stability,
            estimate_s=eq.hold_s + settle_s)
        current_k = temperature_k
        last_rule: D1Rule | None = None  # the rule fed by the latest T1 of this block
        j = 0

        def next_expno() -> int:
            if p.expno.per_temperature_block is not None:
                expno = p.expno.start + block * p.expno.per_temperature_block + j
            else:
                expno = p.expno.start + n_acq
            if expno > MAX_EXPNO:
                raise InputError(source, "expno.start", p.expno.start, f"the series needs expno {expno} > {MAX_EXPNO}")
            return expno

        common = dict(dataset=p.dataset, temperature_k=temperature_k, stability=stability, policy=policy)
        for entry in p.experiments:
            if isinstance(entry, Spectrum1DEntry):
                s1 = entry.spectrum_1d
                acq = _acquisition_1d(s1, s1.pulprog)
                expno = next_expno()
                add(Spectrum1D, label=f"1D {temperature_k:.1f} K -> expno {expno}", expno=expno,
                    title=f"{p.name}: 1D, T = {temperature_k:.1f} K", template=_template(s1.template, "1d"),
                    acquisition=acq, **common,
                    estimate_s=spectrum_1d_s(ns=acq.ns, ds=acq.ds, d1_s=acq.d1_s, aq_s=acq.aq_s, overhead_s=overhead_s))
                j, n_acq = j + 1, n_acq + 1
            elif isinstance(entry, T1Entry):
                t1 = entry.t1
                acq = _acquisition_1d(t1, t1.pulse_program)
                expno = next_expno()
                last_rule = None if rule is None else D1Rule(factor=rule.factor, min_s=rule.min_s, max_s=rule.max_s,
                                                             sites_ppm=rule_sites, t1_step=start_index + len(steps))
                add(T1Measurement, label=f"T1 ({t1.method}) {temperature_k:.1f} K -> expno {expno}",
                              expno=expno, title=f"{p.name}: T1 ({t1.method} recovery), T = {temperature_k:.1f} K",
                              template=_template(t1.template, "satrect" if t1.method == "saturation" else "t1ir"), method=t1.method, delays_s=tuple(t1.delays_s),
                              sites_ppm=fit_ppm, site_names=fit_names if fit_ppm is not None and fit_names else None,
                              d1_rule=last_rule, acquisition=acq, **common,
                              estimate_s=t1_series_s(ns=acq.ns, ds=acq.ds, d1_s=acq.d1_s, aq_s=acq.aq_s,
                                                     delays_s=t1.delays_s, overhead_s=overhead_s))
                j, n_acq = j + 1, n_acq + 1
            elif isinstance(entry, ExsyEntry):
                ex = entry.exsy
                a = ex.acquisition
                d1_rule = last_rule
                d1_s = a.d1_s if d1_rule is None else d1_rule.max_s  # planned with the maximum until T1 is measured
                nmr = NmrAcquisition(pulprog=a.pulprog, ns=a.ns, ds=a.ds, td1=a.td1, td2=a.td2, d1_s=d1_s,
                                     in0_s=a.t1_increment_s, sw_ppm=a.sw_ppm, sfo1_mhz=a.sfo1_mhz, fn_mode=a.fn_mode,
                                     mas_rate_hz=a.mas_rate_hz)
                for mixing_time_s in ex.mixing_times_s:
                    expno = next_expno()
                    add(Acquire2D, label=f"EXSY {temperature_k:.1f} K, tmix {mixing_time_s:g} s -> expno {expno}",
                        expno=expno, title=f"{p.name}: T = {temperature_k:.1f} K, tmix = {mixing_time_s:g} s",
                        mixing_time_s=mixing_time_s, template=_template(ex.template, "exsy"), acquisition=nmr,
                        d1_rule=d1_rule, **common,
                        estimate_s=exsy_acquisition_s(
                            ns=a.ns, ds=a.ds, td1=a.td1, td2=a.td2, d1_s=d1_s, mixing_time_s=mixing_time_s,
                            in0_s=a.t1_increment_s, sw_ppm=a.sw_ppm, sfo1_mhz=a.sfo1_mhz, fn_mode=a.fn_mode,
                            overhead_s=overhead_s))
                    j, n_acq = j + 1, n_acq + 1
            else:
                assert_never(entry)
    expnos = [s.expno for s in steps if isinstance(s, (Acquire2D, Spectrum1D, T1Measurement))]
    if len(set(expnos)) != len(expnos):
        raise InputError(source, "expno", None, "the expno scheme gives two acquisitions the same expno")
    return steps


def _compile_calibration(p: MasCalibrationProtocol, station: StationSpec, source, start_index: int) -> list[Step]:
    """Per set point (ascending): move, wait, the thermometer's 1D; then the fit that writes the station file."""
    spectrometer, vt = _nmr_station(p.kind, station, source, "setpoints",
                                    [(f"setpoints[{i}]", t) for i, t in enumerate(p.setpoints_k)])
    meter, spectrum = p.thermometer, p.spectrum
    if spectrum.o1p_ppm is not None:  # the line, from the set point to CALIBRATION_HEATING_MARGIN_K above it, in the window
        for i, setpoint_k in enumerate(p.setpoints_k):
            for sample_k in (setpoint_k, setpoint_k + CALIBRATION_HEATING_MARGIN_K):
                shift_ppm = meter.reference_shift_ppm + meter.slope_ppm_per_k * (sample_k - meter.reference_temperature_k)
                if abs(shift_ppm - spectrum.o1p_ppm) > 0.45 * spectrum.sw_ppm:
                    raise InputError(source, f"setpoints[{i}]", f"{setpoint_k:g} K",
                                     f"puts the {meter.nucleus} line at {shift_ppm:.1f} ppm at {sample_k:g} K, outside "
                                     f"the spectral window (o1p {spectrum.o1p_ppm:g} ± sw/2 = {spectrum.sw_ppm / 2:g} ppm)")
    overhead_s = spectrometer.acquisition_overhead_s
    eq = p.equilibration
    stability = Stability(tolerance_k=eq.tolerance_k, hold_s=eq.hold_s, timeout_s=eq.timeout_s)
    policy = PointPolicy(on_collision=p.expno.on_collision, on_vt_excursion="reacquire", excursion_tolerance_k=2.0)
    acq = _acquisition_1d(p.spectrum, p.spectrum.pulprog)
    steps: list[Step] = []

    def add(step_cls, **fields) -> Step:
        step = step_cls(index=start_index + len(steps), lane=NMR_LANE, protocol=p.name, **fields)
        steps.append(step)
        return step

    current_k = vt.ambient_k
    spectra: list[int] = []
    for n, setpoint_k in enumerate(sorted(p.setpoints_k)):
        expno = p.expno.start + n
        if expno > MAX_EXPNO:
            raise InputError(source, "expno.start", p.expno.start, f"the calibration needs expno {expno} > {MAX_EXPNO}")
        add(MoveTemperature, label=f"move to set point {setpoint_k:.1f} K", temperature_k=setpoint_k, from_k=current_k,
            ramp_k_per_min=vt.planned_ramp_k_per_min, temperature_is_setpoint=True,
            estimate_s=ramp_s(current_k, setpoint_k, vt.planned_ramp_k_per_min))
        settle_s = vt.settle_estimate_s if abs(setpoint_k - current_k) > eq.tolerance_k else 0.0
        add(WaitStable, label=f"stable at set point {setpoint_k:.1f} K", temperature_k=setpoint_k, stability=stability,
            estimate_s=eq.hold_s + settle_s)
        current_k = setpoint_k
        spectra.append(add(Spectrum1D, label=f"{p.thermometer.name} 1D at set point {setpoint_k:.1f} K -> expno {expno}",
                           dataset=p.dataset, expno=expno, temperature_k=setpoint_k, stability=stability, policy=policy,
                           title=f"{p.name}: {p.thermometer.name} thermometer, VT set point {setpoint_k:.1f} K",
                           template=_template(p.spectrum.template, "1d"), acquisition=acq,
                           estimate_s=spectrum_1d_s(ns=acq.ns, ds=acq.ds, d1_s=acq.d1_s, aq_s=acq.aq_s,
                                                    overhead_s=overhead_s)).index)
    add(FitCalibration, label=f"fit the calibration at {acq.mas_rate_hz:g} Hz MAS -> {p.station_out}",
        thermometer=p.thermometer.model_dump(), mas_rate_hz=acq.mas_rate_hz, spectrum_steps=tuple(spectra),
        station_out=p.station_out, estimate_s=1.0)
    return steps


def _compile_adaptive(p: AdaptiveExsyProtocol, station: StationSpec, source, start_index: int) -> list[Step]:
    """One step holding the whole closed loop; its estimate is the budget (the run stops by then)."""
    spectrometer, vt = _nmr_station(p.kind, station, source, "temperatures",
                                    [(f"temperatures[{i}]", t) for i, t in enumerate(p.temperatures_k)])
    a, eq = p.acquisition, p.equilibration
    calibration = vt.calibration_for(a.mas_rate_hz)
    step = AdaptiveExsy(
        index=start_index, lane=NMR_LANE, protocol=p.name, estimate_s=p.budget_s,
        label=f"adaptive EXSY: {len(p.temperatures_k)} temperatures, budget {p.budget_s / 3600:g} h, target "
              + (f"Ea stderr {p.target.value:g} eV" if p.target.kind == "ea_stderr_ev" else
                 f"rate stderr {100 * p.target.value:g} %"),
        dataset=p.dataset, template=_template(p.template, "exsy"),
        acquisition=NmrAcquisition(pulprog=a.pulprog, ns=a.ns, ds=a.ds, td1=a.td1, td2=a.td2, d1_s=a.d1_s,
                                   in0_s=a.t1_increment_s, sw_ppm=a.sw_ppm, sfo1_mhz=a.sfo1_mhz, fn_mode=a.fn_mode,
                                   mas_rate_hz=a.mas_rate_hz),
        stability=Stability(tolerance_k=eq.tolerance_k, hold_s=eq.hold_s, timeout_s=eq.timeout_s),
        policy=PointPolicy(on_collision=p.expno.on_collision, on_vt_excursion=p.on_vt_excursion,
                           excursion_tolerance_k=p.excursion_tolerance_k, on_stop=p.on_stop),
        temperatures_k=tuple(p.temperatures_k), candidate_mixing_times_s=p.mixing_times.values_s(),
        seed_mixing_times_s=tuple(p.seed_mixing_times_s), site_names=tuple(p.sites),
        sites_ppm=tuple(p.sites.values()), target_kind=p.target.kind, target_value=p.target.value,
        budget_s=p.budget_s, max_points=p.max_points, expno_start=p.expno.start,
        start_k=calibration.sample_k(vt.ambient_k) if calibration else vt.ambient_k,
        ramp_k_per_min=vt.planned_ramp_k_per_min, settle_estimate_s=vt.settle_estimate_s,
        overhead_s=spectrometer.acquisition_overhead_s)
    seeds_s, at_k = 0.0, step.start_k
    for temperature_k, mixing_time_s in step.seed_points():
        seeds_s += step.move_s(at_k, temperature_k) + step.acquisition_s(mixing_time_s)
        at_k = temperature_k
    if seeds_s > p.budget_s:
        raise InputError(source, "budget", f"{p.budget_s / 3600:g} h",
                         f"less than the {seeds_s / 3600:.3g} h the seed points take")
    return [step]


def _acquisition_1d(spec, pulprog: str) -> Acquisition1D:
    return Acquisition1D(pulprog=pulprog, ns=spec.ns, ds=spec.ds, td=spec.td, d1_s=spec.d1_s, sw_ppm=spec.sw_ppm,
                         sfo1_mhz=spec.sfo1_mhz, mas_rate_hz=spec.mas_rate_hz, o1p_ppm=spec.o1p_ppm)


def _template(t, experiment: Literal["exsy", "1d", "satrect", "t1ir"]) -> Template:
    """The plan's template record: where it is and what experiment it must be set up for."""
    return Template(name=t.name, expno=t.expno, experiment=experiment)


class _CellState:
    """What the planner assumes about the cell between steps (for estimates only)."""

    def __init__(self) -> None:
        self.cycle = 0
        self.charged_ah = 0.0


def _compile_cycling(p: CyclingProtocol, station: StationSpec, source, start_index: int) -> list[Step]:
    channel = p.cell.channel
    cycler = station.cyclers.get(channel)
    if cycler is None:
        raise InputError(source, "cell.channel", channel,
                         f"station {station.name!r} has no cycler channel of that name (has: {', '.join(station.cyclers) or 'none'})")
    limits = p.limits
    if limits.current_max_a > cycler.current_max_a:
        raise InputError(source, "limits.current_max", f"{limits.current_max_a * 1e3:g} mA",
                         f"above the instrument's range {cycler.current_max_a * 1e3:g} mA (station {station.name!r})")
    if limits.voltage_min_v < cycler.voltage_min_v or limits.voltage_max_v > cycler.voltage_max_v:
        raise InputError(source, "limits", f"{limits.voltage_min_v:g}..{limits.voltage_max_v:g} V",
                         f"outside the instrument's range {cycler.voltage_min_v:g}..{cycler.voltage_max_v:g} V")
    mass_g = p.cell.active_mass_g
    theoretical_ah = p.cell.theoretical_capacity_mah_g * mass_g * 1e-3
    capacity_max_ah = limits.capacity_max_mah_g * mass_g * 1e-3 if limits.capacity_max_mah_g is not None else None
    state = _CellState()
    steps: list[CyclerStep] = []

    def add(mode: Literal["charge", "discharge", "rest"], current: CurrentSpec | None, label: str, *, capacity_ah: float | None = None,
            voltage_v: float | None = None, time_s: float | None = None, new_cycle: bool | None = None,
            **extra: object) -> CyclerStep:
        current_a = current.current_a_for(p.cell) if current is not None else 0.0
        if current_a > cycler.current_max_a:
            raise InputError(source, "steps", label,
                             f"current {current_a * 1e3:.4g} mA is above the instrument's range {cycler.current_max_a * 1e3:g} mA")
        if extra.get("control") == "voltage":  # a hold after a constant-current part: the current decays from current_a
            planned_ah = 0.0
            estimate_s = time_s if time_s is not None else HOLD_ESTIMATE_S
        elif mode == "charge" and (new_cycle is None or new_cycle):
            state.cycle += 1
            planned_ah = min(x for x in (capacity_ah, theoretical_ah - state.charged_ah) if x is not None)
            planned_ah = max(planned_ah, 0.0)
            state.charged_ah = planned_ah
        elif mode == "charge":  # a GITT pulse: part of the cycle already begun
            planned_ah = current_a * (time_s or 0.0) / 3600.0
            state.charged_ah += planned_ah
        elif mode == "discharge":
            planned_ah = capacity_ah if capacity_ah is not None else state.charged_ah * PLANNED_COULOMBIC_EFFICIENCY
            if time_s is not None and current_a > 0:
                planned_ah = min(planned_ah, current_a * time_s / 3600.0)
            state.charged_ah = max(state.charged_ah - planned_ah, 0.0) if new_cycle is False else 0.0
        else:
            planned_ah = 0.0
        if extra.get("control") != "voltage":
            estimate_s = planned_ah / current_a * 3600.0 if current_a > 0 else 0.0
            if time_s is not None:
                estimate_s = min(estimate_s, time_s) if current_a > 0 else time_s
        step = CyclerStep(
            index=start_index + len(steps), lane=cycler_lane(channel), protocol=p.name,
            label=f"cycle {max(state.cycle, 1)}: {label}", estimate_s=estimate_s, channel=channel, cell=p.cell.name,
            cycle=max(state.cycle, 1), mode=mode, current_a=current_a, end_capacity_ah=capacity_ah,
            end_voltage_v=voltage_v, end_time_s=time_s, sample_interval_s=p.sample_interval_s,
            voltage_min_v=limits.voltage_min_v, voltage_max_v=limits.voltage_max_v,
            current_max_a=limits.current_max_a, capacity_max_ah=capacity_max_ah,
            temperature_max_k=limits.temperature_max_k, on_resume=p.on_resume, **extra,  # type: ignore[arg-type]
        )
        steps.append(step)
        return step

    def rest(spec: RestSpec) -> CyclerStep:
        if spec.until_dvdt_v_per_s is None:
            return add("rest", None, f"rest {spec.duration_s:g} s", time_s=spec.duration_s)
        return add("rest", None, f"rest until |dV/dt| < {spec.until_dvdt_v_per_s * 3.6e6:g} mV/h (at most "
                                 f"{spec.duration_s:g} s)", time_s=spec.duration_s,
                   end_dvdt_v_per_s=spec.until_dvdt_v_per_s, dvdt_window_s=spec.window_s)

    def hold(mode: Literal["charge", "discharge"], voltage_v: float, limit: CurrentSpec, end_current_a: float | None,
             time_s: float | None, label: str) -> CyclerStep:
        return add(mode, limit, label, time_s=time_s, new_cycle=False, control="voltage", hold_voltage_v=voltage_v,
                   end_current_a=end_current_a)

    def ends_text(end_current_a: float | None, time_s: float | None) -> str:
        return " or ".join(t for t in ((f"|I| < {end_current_a * 1e3:g} mA" if end_current_a else ""),
                                       (f"{time_s:g} s" if time_s else "")) if t)

    def cc(mode: Literal["charge", "discharge"], spec, what: str) -> None:
        until = spec.until
        capacities = [c for c in (until.capacity_ah,
                                  until.specific_capacity_mah_g * mass_g * 1e-3 if until.specific_capacity_mah_g else None)
                      if c is not None]
        capacity_ah = min(capacities) if capacities else None
        ends = []
        if until.specific_capacity_mah_g:
            ends.append(f"{until.specific_capacity_mah_g:g} mAh/g")
        if until.capacity_ah:
            ends.append(f"{until.capacity_ah * 1e3:g} mAh")
        if until.voltage_v is not None:
            ends.append(f"{until.voltage_v:g} V")
        if until.time_s:
            ends.append(f"{until.time_s:g} s")
        add(mode, spec, f"{what} to {' or '.join(ends)}", capacity_ah=capacity_ah, voltage_v=until.voltage_v,
            time_s=until.time_s)

    def walk(items: list[CyclingStepSpec]) -> None:
        for item in items:
            if isinstance(item, ChargeStep):
                cc("charge", item.charge, "charge")
            elif isinstance(item, DischargeStep):
                cc("discharge", item.discharge, "discharge")
            elif isinstance(item, RestStep):
                rest(item.rest)
            elif isinstance(item, CvHoldStep):
                h = item.cv_hold
                hold(h.direction, h.voltage_v, h.current_limit, h.until.current_a, h.until.time_s,
                     f"{h.direction} hold at {h.voltage_v:g} V until {ends_text(h.until.current_a, h.until.time_s)}")
            elif isinstance(item, CcCvStep):
                c = item.cccv
                cc_ends = (c.cc_until or EndConditions(voltage_v=c.voltage_v)).model_copy(update={"voltage_v": c.voltage_v})
                cc(c.direction, c.model_copy(update={"until": cc_ends}), f"CC-CV {c.direction}: CC")
                hold(c.direction, c.voltage_v, c, c.until.current_a, c.until.time_s,
                     f"CC-CV {c.direction}: hold {c.voltage_v:g} V until {ends_text(c.until.current_a, c.until.time_s)}")
            elif isinstance(item, GittStep):
                g = item.gitt
                first = len(steps)
                train: list[CyclerStep] = []
                for k in range(g.pulses):
                    train.append(add(g.direction, g.pulse, f"GITT pulse {k + 1}/{g.pulses}: {g.pulse.time_s:g} s or "
                                     f"{g.until_voltage_v:g} V", voltage_v=g.until_voltage_v, time_s=g.pulse.time_s,
                                     new_cycle=(k == 0) if g.direction == "charge" else False))
                    train.append(rest(g.rest))
                last = start_index + len(steps) - 1
                for k, pulse in enumerate(train[0::2]):  # a pulse at its cut-off ends the train after its rest
                    steps[first + 2 * k] = pulse.model_copy(update={"loop_exit": LoopExit(
                        first_index=pulse.index + 2, last_index=last, on_voltage_end=True)})
            elif isinstance(item, RateTestStep):
                r = item.rate_test
                for density in r.current_densities_ma_cm2:
                    spec = CurrentSpec(current_density_ma_cm2=density)
                    for _ in range(r.cycles_each):
                        cc("charge", _with_until(spec, r.charge.until), f"rate {density:g} mA/cm2: charge")
                        if r.rest_s:
                            add("rest", None, f"rest {r.rest_s:g} s", time_s=r.rest_s)
                        cc("discharge", _with_until(spec, r.discharge.until), f"rate {density:g} mA/cm2: discharge")
                        if r.rest_s:
                            add("rest", None, f"rest {r.rest_s:g} s", time_s=r.rest_s)
            elif isinstance(item, ScheduleStep):
                s = item.fixed_capacity_schedule
                for capacity_mah_g in s.capacities_mah_g:
                    add("charge", s.charge, f"charge to {capacity_mah_g:g} mAh/g",
                        capacity_ah=capacity_mah_g * mass_g * 1e-3, voltage_v=s.charge_cutoff_v)
                    if s.rest_s:
                        add("rest", None, f"rest {s.rest_s:g} s", time_s=s.rest_s)
                    add("discharge", s.discharge, f"discharge to {s.discharge_to_v:g} V", voltage_v=s.discharge_to_v)
                    if s.rest_s:
                        add("rest", None, f"rest {s.rest_s:g} s", time_s=s.rest_s)
            elif isinstance(item, LoopStep):
                loop_first = len(steps)
                iteration_ends: list[int] = []
                cycles: list[int] = []
                for _ in range(item.loop.count):
                    walk(item.loop.steps)
                    iteration_ends.append(len(steps) - 1)
                    cycles.append(steps[-1].cycle if steps else 1)  # the cycle each iteration ended in
                ends = item.loop.stop_when
                if ends is not None and len(steps) > loop_first:
                    last = start_index + len(steps) - 1
                    fade = ends.discharge_capacity_below
                    if fade is not None and fade.of_cycle > item.loop.count:
                        raise InputError(source, "steps", "stop_when.discharge_capacity_below.of_cycle",
                                         f"cycle {fade.of_cycle} of a loop of {item.loop.count}")
                    for k, end in enumerate(iteration_ends[:-1]):
                        ending = steps[end]
                        steps[end] = ending.model_copy(update={"loop_exit": LoopExit(
                            first_index=ending.index + 1, last_index=last,
                            coulombic_efficiency_below_pct=ends.coulombic_efficiency_below_pct,
                            discharge_capacity_below_pct=fade.percent if fade else None,
                            reference_cycle=cycles[fade.of_cycle - 1] if fade and k + 1 >= fade.of_cycle else None)})
            else:
                assert_never(item)
            if len(steps) > 200_000:
                raise InputError(source, "steps", None, "the protocol expands to more than 200000 steps")

    walk(p.steps)
    return list(steps)


def _with_until(current: CurrentSpec, until: EndConditions) -> ConstantCurrent:
    """A constant-current half-cycle from a current and its ends (the rate test's shape)."""
    return ConstantCurrent(**{k: v for k, v in current.model_dump().items() if v is not None}, until=until)


def load_plan(protocol_paths: Sequence[str | Path], station_path: str | Path | None = None) -> tuple[Plan, StationSpec]:
    """Load protocol files and a station file (or the built-in simulated station) and compile the plan."""
    station = load_station(station_path) if station_path else simulated_station()
    protocols = [load_protocol(p) for p in protocol_paths]
    return compile_plan(protocols, station, sources=[str(p) for p in protocol_paths]), station
