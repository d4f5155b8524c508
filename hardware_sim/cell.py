"""A lumped model of a Li2S(LiI)-LPSC-C | LPSC | In-Li solid-state cell (voltages vs In-Li).

Pure physics, no I/O or clock: the simulator calls `advance(dt_s, current_a)` with the
elapsed time and reads `terminal_voltage_v(current_a)`. Positive current charges (oxidises
Li2S). The state is the stored (dischargeable) specific charge y in mAh/g, the total charge
throughput (which drives activation and fade), a hysteresis variable and an RC overpotential.
"""

from __future__ import annotations

import math
import random


class Li2SCell:
    """Li2S cathode against In-Li with an activation plateau, hysteresis, ohmic + RC losses."""

    def __init__(
        self,
        *,
        active_mass_g: float = 1.5e-3,
        area_cm2: float = 0.785,
        theoretical_mah_g: float = 1166.0,
        seed: int = 0,
        ocv_mid_v: float = 1.55,
        hysteresis_v: float = 0.04,
        r_ohm_cm2: float = 450.0,
        r_ct_ohm_cm2: float = 300.0,
        tau_rc_s: float = 120.0,
        activation_eta_v: float = 0.02,
        activation_mah_g: float = 300.0,
        accessible_initial_mah_g: float = 350.0,
        accessible_final_mah_g: float = 900.0,
        accessible_growth_mah_g: float = 800.0,
        fade_per_mah_g: float = 2e-6,
        ce_final: float = 0.996,
        ce_initial_deficit: float = 0.03,
        ce_settle_mah_g: float = 1000.0,
        voltage_noise_v: float = 20e-6,
        current_noise_rel: float = 1e-5,
    ) -> None:
        if active_mass_g <= 0 or area_cm2 <= 0:
            raise ValueError("active_mass_g and area_cm2 must be > 0")
        self.active_mass_g = active_mass_g
        self.area_cm2 = area_cm2
        self.theoretical_mah_g = theoretical_mah_g
        self.ocv_mid_v = ocv_mid_v
        self.hysteresis_v = hysteresis_v
        self.r_ohm = r_ohm_cm2 / area_cm2
        self.r_ct = r_ct_ohm_cm2 / area_cm2
        self.tau_rc_s = tau_rc_s
        self.activation_eta_v = activation_eta_v
        self.activation_mah_g = activation_mah_g
        self.accessible_initial_mah_g = accessible_initial_mah_g
        self.accessible_final_mah_g = min(accessible_final_mah_g, theoretical_mah_g)
        self.accessible_growth_mah_g = accessible_growth_mah_g
        self.fade_per_mah_g = fade_per_mah_g
        self.ce_final = ce_final
        self.ce_initial_deficit = ce_initial_deficit
        self.ce_settle_mah_g = ce_settle_mah_g
        self.voltage_noise_v = voltage_noise_v
        self.current_noise_rel = current_noise_rel
        self._rng = random.Random(seed)
        # state: a Li2S cathode starts discharged
        self.stored_mah_g = 0.0
        self.charge_throughput_mah_g = 0.0
        self.hysteresis = -1.0  # -1 discharge branch ... +1 charge branch
        self.eta_rc_v = 0.0
        self._ocv_cache: float | None = None

    # --- derived quantities ----------------------------------------------------------------

    def accessible_mah_g(self) -> float:
        """Capacity reachable before the steep end-of-charge rise; grows with activation, fades slowly."""
        grown = self.accessible_final_mah_g - (self.accessible_final_mah_g - self.accessible_initial_mah_g) * math.exp(
            -self.charge_throughput_mah_g / self.accessible_growth_mah_g
        )
        return grown * max(0.5, 1.0 - self.fade_per_mah_g * self.charge_throughput_mah_g)

    def coulombic_efficiency(self) -> float:
        """Fraction of charge stored reversibly now (lower in the first cycles)."""
        return self.ce_final - self.ce_initial_deficit * math.exp(-self.charge_throughput_mah_g / self.ce_settle_mah_g)

    def ocv_v(self) -> float:
        """Open-circuit voltage vs In-Li on the present hysteresis branch (cached until the state moves)."""
        if self._ocv_cache is None:
            self._ocv_cache = self._ocv_now()
        return self._ocv_cache

    def _ocv_now(self) -> float:
        y = self.stored_mah_g
        fill = min(y / self.accessible_mah_g(), 0.9999)
        v = self.ocv_mid_v + 0.5 * self.hysteresis_v * self.hysteresis
        v += 0.03 * (fill - 0.5)  # gentle slope of the plateau
        v -= 0.8 * math.exp(-max(y, 0.0) / 12.0)  # end-of-discharge drop
        if y < 0.0:
            v += 0.05 * y  # over-discharge: keeps falling
        if fill > 0.0:
            v += 0.1 * -math.log1p(-fill)  # steep rise towards full charge
        if fill >= 0.9999:
            v += 0.01 * (y - 0.9999 * self.accessible_mah_g())  # LiI / LPSC oxidation beyond
        return v

    def activation_eta_v_now(self, current_a: float) -> float:
        """Extra charge overpotential of a not yet activated Li2S electrode (fades with throughput)."""
        if current_a <= 0:
            return 0.0
        return self.activation_eta_v * math.exp(-self.charge_throughput_mah_g / self.activation_mah_g)

    def terminal_voltage_v(self, current_a: float) -> float:
        """Terminal voltage at `current_a` (noise-free): OCV + RC + ohmic + activation overpotential."""
        return self.ocv_v() + self.eta_rc_v + current_a * self.r_ohm + self.activation_eta_v_now(current_a)

    def current_at_voltage_a(self, voltage_v: float, current_max_a: float) -> float:
        """The current (clamped to [min(0, I), max(0, I)]) that holds the terminal at `voltage_v`."""
        base = self.ocv_v() + self.eta_rc_v + (self.activation_eta_v_now(current_max_a))
        current = (voltage_v - base) / self.r_ohm
        low, high = sorted((0.0, current_max_a))
        return min(max(current, low), high)

    def measured(self, current_a: float) -> tuple[float, float]:
        """A noisy (voltage_v, current_a) reading as a source-meter would report it."""
        v = self.terminal_voltage_v(current_a) + self._rng.gauss(0.0, self.voltage_noise_v)
        i = current_a * (1.0 + self._rng.gauss(0.0, self.current_noise_rel))
        return v, i

    # --- time evolution --------------------------------------------------------------------

    def snapshot(self) -> tuple[float, float, float, float]:
        """The state, to go back to (a simulator finding the moment a cut-off was crossed)."""
        return self.stored_mah_g, self.charge_throughput_mah_g, self.hysteresis, self.eta_rc_v

    def restore(self, state: tuple[float, float, float, float]) -> None:
        """Return to a state from `snapshot()`."""
        self.stored_mah_g, self.charge_throughput_mah_g, self.hysteresis, self.eta_rc_v = state
        self._ocv_cache = None

    def advance(self, dt_s: float, current_a: float) -> None:
        """Integrate `dt_s` seconds at constant `current_a` (exact for the linear parts)."""
        if dt_s <= 0:
            return
        self._ocv_cache = None
        passed_mah_g = current_a * dt_s / 3.6 / self.active_mass_g  # A*s -> mAh is /3.6
        if passed_mah_g > 0:
            self.stored_mah_g += passed_mah_g * self.coulombic_efficiency()
            self.charge_throughput_mah_g += passed_mah_g
        else:
            self.stored_mah_g += passed_mah_g
        if passed_mah_g != 0.0:
            target = 1.0 if passed_mah_g > 0 else -1.0
            self.hysteresis = target + (self.hysteresis - target) * math.exp(-abs(passed_mah_g) / 5.0)
        eta_ss = current_a * self.r_ct
        self.eta_rc_v = eta_ss + (self.eta_rc_v - eta_ss) * math.exp(-dt_s / self.tau_rc_s)
