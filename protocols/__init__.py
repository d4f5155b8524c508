"""What to run: protocol and station files (pydantic models) and their compilation into plans. No I/O to instruments, no clocks."""

from .compiler import compile_plan, load_plan
from .cycling import CyclingProtocol
from .errors import InputError
from .exsy import VtExsyProtocol
from .loader import load_protocol, load_station, parse_protocol, parse_station
from .plan import Acquire2D, CyclerStep, MoveTemperature, Plan, WaitStable
from .station import StationSpec, simulated_station

__all__ = [
    "Acquire2D", "CyclerStep", "CyclingProtocol", "InputError", "MoveTemperature", "Plan", "StationSpec",
    "VtExsyProtocol", "WaitStable", "compile_plan", "load_plan", "load_protocol", "load_station", "parse_protocol",
    "parse_station", "simulated_station",
]
