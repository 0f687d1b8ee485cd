"""Argument validators shared by every public function: one message per fault."""

from __future__ import annotations

import math
import numbers
from typing import Any

from critpoint.errors import InputError

__all__ = ["finite_float", "integer", "positive_int", "probability"]


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def integer(value: Any, name: str, minimum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` (NumPy integers too, never ``bool``), at least ``minimum``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (minimum is not None and value < minimum):
        if minimum == 1:
            kind = "a positive integer"
        elif minimum is None:
            kind = "an integer"
        else:
            kind = f"an integer >= {minimum}"
        msg = f"{name} must be {kind}, got {value!r}{_hint(hint)}"
        raise InputError(msg)
    return int(value)


def positive_int(value: Any, name: str, hint: str = "") -> int:
    """``value`` as an ``int`` ≥ 1."""
    return integer(value, name, minimum=1, hint=hint)


def finite_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    strict: bool = False,
    hint: str = "",
) -> float:
    """``value`` as a finite ``float`` (not ``bool``), ``≥ minimum`` (``>`` if ``strict``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    if ok and math.isfinite(number) and minimum is not None:
        ok = number > minimum if strict else number >= minimum
    if not (ok and math.isfinite(number)):
        bound = ""
        if minimum is not None:
            bound = f" {'>' if strict else '>='} {minimum:g}"
        msg = f"{name} must be a finite number{bound}, got {value!r}{_hint(hint)}"
        raise InputError(msg)
    return number


def probability(value: Any, name: str, hint: str = "") -> float:
    """``value`` as a ``float`` strictly between 0 and 1."""
    number = finite_float(value, name, minimum=0.0, strict=True, hint=hint)
    if number >= 1:
        msg = f"{name} must lie strictly between 0 and 1, got {value!r}{_hint(hint)}"
        raise InputError(msg)
    return number
