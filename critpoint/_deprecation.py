"""Renamed arguments: the old name keeps working for one release, with a warning."""

from __future__ import annotations

import warnings
from typing import Any

from critpoint.errors import InputError

__all__ = ["UNSET", "renamed"]


class _Unset:
    """The default of a deprecated argument: "not given" (``None`` may be a value)."""

    def __repr__(self) -> str:
        return "<not given>"


#: Default of every deprecated argument.
UNSET: Any = _Unset()


def renamed(
    function: str, old: str, new: str, old_value: Any, new_value: Any, default: Any
) -> Any:
    """The value of an argument renamed from ``old`` to ``new``.

    Parameters
    ----------
    function : str
        Name of the function, for messages.
    old, new : str
        The argument's old and new names.
    old_value : object
        What was passed under the old name (:data:`UNSET` when nothing).
    new_value : object
        What was passed under the new name (its default when nothing).
    default : object
        The new name's default.

    Returns
    -------
    object
        ``new_value``, or ``old_value`` (with a ``DeprecationWarning``) when
        only the old name was given.

    Raises
    ------
    InputError
        Both names were given.
    """
    if old_value is UNSET:
        return new_value
    if new_value is not default and new_value != default:
        msg = f"{function}: give {new}= only ({old}= is its old name), not both"
        raise InputError(msg)
    warnings.warn(
        f"{function}({old}=...) is deprecated and will be removed in the next release; "
        f"use {new}=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
