"""An aurora-unicycler protocol (JSON, read with aurora-unicycler itself) as an exsylab cycling protocol file.

What translates: constant-current steps (current_mA or rate_C with the sample's capacity_mAh;
+ charges, - discharges) ending on time and/or voltage, open-circuit rests, tags and loops
(properly nested, cycle_count = total passes, as in exsylab), the record interval and the
voltage, current and capacity limits. Everything else (constant-voltage holds, impedance,
voltage scans, a limit delay, a missing limit) is refused, naming the step or field and why.
"""

from __future__ import annotations

from typing import Any

from .errors import MISSING, InputError


class _Refused(Exception):
    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.field, self.value, self.reason = field, value, reason


def _current_ma(step: Any, where: str, capacity_mah: float | None) -> float:
    """Signed current in mA (+ charge) of a unicycler constant-current step."""
    if step.rate_C:
        if capacity_mah is None:
            raise _Refused(f"{where}.rate_C", step.rate_C, "a C-rate needs sample.capacity_mAh to become a current")
        return float(step.rate_C) * capacity_mah
    return float(step.current_mA)


def _cc_step(step: Any, where: str, capacity_mah: float | None) -> dict[str, Any]:
    current = _current_ma(step, where, capacity_mah)
    until: dict[str, str] = {}
    if step.until_voltage_V:
        until["voltage"] = f"{step.until_voltage_V:g} V"
    if step.until_time_s:
        until["time"] = f"{step.until_time_s:g} s"
    return {"charge" if current > 0 else "discharge": {"current": f"{abs(current):.6g} mA", "until": until}}


def _steps(method: list[Any], capacity_mah: float | None) -> list[dict[str, Any]]:
    """exsylab steps from a unicycler method; a loop wraps the steps since its tag (or 1-indexed step)."""
    items: list[tuple[int, int, dict[str, Any]]] = []  # (first, last method index the item covers, exsylab step)
    tags: dict[str, int] = {}
    for i, step in enumerate(method):
        where = f"method[{i}]"
        kind = step.step
        if kind == "tag":
            tags[step.tag] = i
        elif kind == "open_circuit_voltage":
            items.append((i, i, {"rest": {"duration": f"{step.until_time_s:g} s"}}))
        elif kind == "constant_current":
            items.append((i, i, _cc_step(step, where, capacity_mah)))
        elif kind == "loop":
            start = tags[step.loop_to] if isinstance(step.loop_to, str) else int(step.loop_to) - 1
            inside = [k for k, (first, _, _) in enumerate(items) if first >= start]
            if not inside or any(first < start <= last for first, last, _ in items):
                raise _Refused(f"{where}.loop_to", step.loop_to, "an empty loop, or one that crosses another loop, "
                               "does not nest as exsylab loops")
            body = [s for _, _, s in items[inside[0]:]]
            items[inside[0]:] = [(items[inside[0]][0], i, {"loop": {"count": int(step.cycle_count), "steps": body}})]
        else:
            hint = {"constant_voltage": "not translated yet: write it as an exsylab cv_hold or cccv step",
                    "impedance_spectroscopy": "exsylab's cyclers run no impedance spectroscopy",
                    "voltage_scan": "exsylab's cyclers run no voltage scans"}.get(kind, "no exsylab equivalent")
            raise _Refused(f"{where}.step", kind, f"does not translate: {hint}")
    return [s for _, _, s in items]


def _limits(safety: Any, mass_g: float | None) -> dict[str, str]:
    if safety.delay_s:
        raise _Refused("safety.delay_s", safety.delay_s, "exsylab stops a channel on the first sample beyond a limit; "
                       "a delay does not translate")
    for name in ("max_voltage_V", "min_voltage_V"):
        if getattr(safety, name) is None:
            raise _Refused(f"safety.{name}", MISSING, "exsylab needs voltage limits; add them to the unicycler file")
    currents = [abs(c) for c in (safety.max_current_mA, safety.min_current_mA) if c is not None]
    if not currents:
        raise _Refused("safety.max_current_mA", MISSING, "exsylab needs a current limit; add it to the unicycler file")
    out = {"voltage_min": f"{safety.min_voltage_V:g} V", "voltage_max": f"{safety.max_voltage_V:g} V",
           "current_max": f"{max(currents):.6g} mA"}
    if safety.max_capacity_mAh and mass_g:
        out["capacity_max"] = f"{safety.max_capacity_mAh / mass_g:.6g} mAh/g"
    return out


def from_unicycler(data: dict[str, Any], source: str, *, active_mass_g: float, area_cm2: float,
                   channel: str = "ch1", name: str | None = None) -> dict[str, Any]:
    """The exsylab cycling protocol file (as a mapping, units written out) for a unicycler protocol mapping."""
    from aurora_unicycler import CyclingProtocol
    from pydantic import ValidationError

    try:
        unicycler = CyclingProtocol.from_dict(dict(data))
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in problem.get("loc", ())) or "(top level)"
        raise InputError(source, field, MISSING, f"not a valid aurora-unicycler protocol: {problem['msg']}") from None
    sample = unicycler.sample
    cell_name = name or (sample.name if sample.name and not sample.name.startswith("$") else "unicycler-cell")
    try:
        protocol = {
            "kind": "cycling", "name": f"{cell_name} (from aurora-unicycler)",
            "cell": {"name": cell_name, "channel": channel, "active_mass": f"{active_mass_g * 1e3:.6g} mg",
                     "area": f"{area_cm2:.6g} cm2"},
            "sample_interval": f"{unicycler.record.time_s:g} s",
            "steps": _steps(list(unicycler.method), sample.capacity_mAh),
            "limits": _limits(unicycler.safety, active_mass_g),
        }
    except _Refused as refused:
        raise InputError(source, refused.field, refused.value, refused.reason) from None
    return protocol
