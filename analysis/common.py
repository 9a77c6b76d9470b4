"""Small helpers shared by the analysis modules: warnings, sort keys, value comparison."""

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

Report = Callable[[str], None]


def warn(message: str) -> None:
    """Print one warning line to stderr (the default `report` of every loader)."""
    print(f"warning: {message}", file=sys.stderr)


def natural_key(text: object) -> list:
    """Sort key that puts 'len40' before 'len120' and 'job/9' before 'job/10'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text))]


def display_path(path: Path | str) -> str:
    """path relative to the working directory when it lies below it (shorter messages), else as is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def as_number(value: object) -> float | None:
    """value as a float when it is a number or a numeric string; None otherwise (bools are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def same_value(a: object, b: object) -> bool:
    """True when a and b denote the same setting, e.g. 64 and '64', 1e-4 and '0.0001', True and 'true'."""
    number_a, number_b = as_number(a), as_number(b)
    if number_a is not None and number_b is not None:
        return number_a == number_b or math.isclose(number_a, number_b, rel_tol=1e-9)
    return _as_text(a) == _as_text(b)


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value).strip().strip("'\"")


def is_missing(value) -> bool:
    """None, NaN or pandas' NA: a cell with no value."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
