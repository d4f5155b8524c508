"""Battery Data Format column names and file names exsylab writes and reads (as the format spells them).

Labels are the BDF ontology 1.3.0 preferred labels (battery-data-alliance/battery-data-format
README.md, "Required / Recommended / Optional quantities"); see docs/cycler.md.
"""

TEST_TIME = "Test Time / s"
VOLTAGE = "Voltage / V"
CURRENT = "Current / A"
CYCLE = "Cycle Count / 1"
STEP_COUNT = "Step Count / 1"
STEP_INDEX = "Step ID"
"""The program step a row belongs to (exsylab's plan step index; Neware Step_ID, BioLogic Ns)."""
CHARGE_AH = "Charging Capacity / Ah"
DISCHARGE_AH = "Discharging Capacity / Ah"
UNIX_TIME = "Unix Time / s"
AMBIENT_TEMPERATURE = "Ambient Temperature / degC"
APPLIED_PRESSURE = "Applied Pressure / Pa"
COLUMNS = [TEST_TIME, VOLTAGE, CURRENT, CYCLE, STEP_COUNT, STEP_INDEX, CHARGE_AH, DISCHARGE_AH, UNIX_TIME]
"""The columns every exsylab cycler file has, in this order; the constant columns below follow when known."""
CONSTANT_COLUMNS = [AMBIENT_TEMPERATURE, APPLIED_PRESSURE]
"""Columns whose value is fixed for a cell's test (from the station and the cell description)."""

LEGACY_LABELS = {"Step Index / 1": STEP_INDEX}
"""Labels older exsylab files carry -> today's label (BDF 1.3.0 deprecated 'Step Index / 1': it now names
a within-step record counter, while exsylab wrote the program step there)."""

NOTATIONS = {
    "test_time_second": TEST_TIME, "voltage_volt": VOLTAGE, "current_ampere": CURRENT, "cycle_count": CYCLE,
    "step_count": STEP_COUNT, "step_id": STEP_INDEX, "charging_capacity_ah": CHARGE_AH,
    "discharging_capacity_ah": DISCHARGE_AH, "unix_time_second": UNIX_TIME,
    "ambient_temperature_celsius": AMBIENT_TEMPERATURE, "applied_pressure_pa": APPLIED_PRESSURE,
}
"""BDF machine-readable names (the headers of the format's reference examples) -> preferred labels."""

INT_COLUMNS = {CYCLE, STEP_COUNT, STEP_INDEX}
BDF_SUFFIX = ".bdf.csv"


def canonical_label(header: str) -> str:
    """The preferred label for a header written as a label, a legacy exsylab label or a BDF notation."""
    name = header.strip()
    return LEGACY_LABELS.get(name) or NOTATIONS.get(name) or name


def bdf_file_name(institution: str, cell: str, date_yyyymmdd: str, serial: int = 1) -> str:
    """`InstitutionCode__CellName__YYYYMMDD_XXX.bdf.csv`, the BDF README's recommended file name."""
    for label, part in (("institution", institution), ("cell", cell)):
        if not part or "__" in part or "/" in part:
            raise ValueError(f"{label} {part!r} cannot be part of a BDF file name (empty, '__' or '/')")
    if len(date_yyyymmdd) != 8 or not date_yyyymmdd.isdigit():
        raise ValueError(f"date {date_yyyymmdd!r} is not YYYYMMDD")
    return f"{institution}__{cell}__{date_yyyymmdd}_{serial:03d}{BDF_SUFFIX}"
