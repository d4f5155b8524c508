"""Battery Data Format column names exsylab writes and reads (quantity / unit, as the format spells them)."""

TEST_TIME = "Test Time / s"
VOLTAGE = "Voltage / V"
CURRENT = "Current / A"
CYCLE = "Cycle Count / 1"
STEP_COUNT = "Step Count / 1"
STEP_INDEX = "Step Index / 1"
CHARGE_AH = "Charging Capacity / Ah"
DISCHARGE_AH = "Discharging Capacity / Ah"
UNIX_TIME = "Unix Time / s"
COLUMNS = [TEST_TIME, VOLTAGE, CURRENT, CYCLE, STEP_COUNT, STEP_INDEX, CHARGE_AH, DISCHARGE_AH, UNIX_TIME]
