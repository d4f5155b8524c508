"""What TopSpin accepts as a dataset name and an experiment number, checked the same way in every layer."""

from __future__ import annotations

import re

MAX_EXPNO = 99999
"""TopSpin's experiment numbers run 1..99999."""
MAX_DATASET_NAME_CHARS = 64
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")  # \Z: no trailing newline either


def dataset_name_problem(name: object) -> str | None:
    """Why `name` is not a safe TopSpin dataset name (cannot leave the data folder), or None when it is."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name) or ".." in name:
        return (f"{name!r} is not a safe TopSpin dataset name (letters, digits, _ . + -; no '/', no '..', "
                f"at most {MAX_DATASET_NAME_CHARS} characters)")
    return None


def expno_problem(expno: object) -> str | None:
    """Why `expno` is not a TopSpin experiment number, or None when it is."""
    if isinstance(expno, bool) or not isinstance(expno, int) or not 1 <= expno <= MAX_EXPNO:
        return f"expno {expno!r} outside 1..{MAX_EXPNO}"
    return None
