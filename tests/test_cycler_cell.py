"""Li2S cell physics (pure): plateau, overpotential, discharge to 0.8 V, coulombic efficiency."""

from __future__ import annotations

import pytest

from hardware_sim.cell import Li2SCell

AREA_CM2 = 0.785
CURRENT_A = 0.132e-3 * AREA_CM2  # 0.132 mA/cm2


def charge_to(cell: Li2SCell, mah_g: float, dt_s: float = 60.0) -> list[float]:
    """Charge at CURRENT_A until `mah_g` has passed; returns the terminal voltages."""
    volts, passed = [], 0.0
    step = CURRENT_A * dt_s / 3.6 / cell.active_mass_g
    while passed < mah_g:
        chunk_s = dt_s * min(1.0, (mah_g - passed) / step)
        cell.advance(chunk_s, CURRENT_A)
        passed += step * chunk_s / dt_s
        volts.append(cell.terminal_voltage_v(CURRENT_A))
    return volts


def discharge_to(cell: Li2SCell, cutoff_v: float, dt_s: float = 10.0) -> float:
    """Discharge at CURRENT_A to `cutoff_v`; returns the discharged mAh/g."""
    passed = 0.0
    while cell.terminal_voltage_v(-CURRENT_A) > cutoff_v:
        cell.advance(dt_s, -CURRENT_A)
        passed += CURRENT_A * dt_s / 3.6 / cell.active_mass_g
        assert passed < 2000, "discharge never reached the cut-off"
    return passed


def test_first_charge_plateau_near_1_69_v_with_about_100_mv_overpotential() -> None:
    cell = Li2SCell()
    volts = charge_to(cell, 150.0)
    plateau = sorted(volts)[len(volts) // 2]
    assert 1.66 <= plateau <= 1.72  # activation plateau near 1.69 V vs In-Li
    ohmic_rc = cell.terminal_voltage_v(CURRENT_A) - cell.ocv_v() - cell.activation_eta_v_now(CURRENT_A)
    assert 0.08 <= ohmic_rc <= 0.12


def test_voltage_rises_steeply_towards_full_charge() -> None:
    cell = Li2SCell()
    volts: list[float] = []
    while not volts or volts[-1] < 2.2:  # into the LiI / LPSC oxidation region
        volts += charge_to(cell, 10.0)
        assert len(volts) < 2000, "charge never rose above 2.2 V"
    charged_mah_g = cell.charge_throughput_mah_g
    assert charged_mah_g < cell.theoretical_mah_g
    # the last 10 % of the charge carries most of the rise from the plateau
    tail = volts[int(0.9 * len(volts))]
    assert volts[-1] - tail > tail - volts[len(volts) // 2]


def test_discharge_reaches_0_8_v_and_efficiency_settles_near_99_6_pct() -> None:
    cell = Li2SCell()
    efficiencies = []
    for _ in range(40):
        before = cell.stored_mah_g
        charge_to(cell, 300.0)
        charged = 300.0
        discharged = discharge_to(cell, 0.8)
        efficiencies.append(discharged / charged)
        assert cell.stored_mah_g < before + 10  # the discharge empties the cell again
    assert efficiencies[0] < efficiencies[-1]  # first cycles lower
    assert efficiencies[-1] == pytest.approx(0.996, abs=0.002)


def test_rest_relaxes_towards_open_circuit() -> None:
    cell = Li2SCell()
    charge_to(cell, 100.0)
    loaded = cell.terminal_voltage_v(CURRENT_A)
    cell.advance(3600.0, 0.0)
    rested = cell.terminal_voltage_v(0.0)
    assert loaded - rested > 0.08
    assert abs(rested - cell.ocv_v()) < 1e-3
