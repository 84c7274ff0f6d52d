"""Checks of whole-number arguments, shared by the library's entry points."""

from __future__ import annotations

import numbers


def is_whole_number(value) -> bool:
    """Whether ``value`` is an integer (Python's or numpy's); a bool is not, though Python
    counts it as an int."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_count(name: str, value, minimum: int = 1) -> None:
    """Raises a ValueError naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if not (is_whole_number(value) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
