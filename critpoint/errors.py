"""The one exception family of critpoint.

Every error the library raises on purpose is a :class:`CritpointError`; its
message names the input at fault and what would fix it. The command line turns
these into one line and exit code 1.
"""

from __future__ import annotations

from typing import Any


class CritpointError(Exception):
    """Base class of every error critpoint raises on purpose."""


class InputError(CritpointError, ValueError):
    """An argument, a model, a data set or a file is not what critpoint needs."""


class OutputError(CritpointError, OSError):
    """An output could not be written (full disk, read-only folder...); it names the path."""


class NonFiniteError(CritpointError, FloatingPointError):
    """A loss, gradient or Hessian-vector product contains NaN or Inf."""


class NonDeterministicError(CritpointError):
    """The Hessian-vector product is random or not symmetric (dropout left on?)."""


class SecondDerivativeError(CritpointError):
    """A layer of the model has no second derivative in torch, so no Hessian goes through it."""


class DenseTooLargeError(CritpointError, MemoryError):
    """``dense()`` was asked for a matrix too large to allocate safely."""


class MemoryBudgetError(CritpointError, MemoryError):
    """The work cannot fit its memory budget even at its smallest; said before it starts."""


class ConvergenceError(CritpointError):
    """A solver did not reach its tolerance; ``partial`` holds what it found."""

    def __init__(self, message: str, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial


class CheckpointError(CritpointError):
    """A checkpoint file cannot be read, or does not match its model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs code to unpickle and ``trust=True`` was not given."""


__all__ = [
    "CheckpointError",
    "ConvergenceError",
    "CritpointError",
    "DenseTooLargeError",
    "InputError",
    "MemoryBudgetError",
    "NonDeterministicError",
    "NonFiniteError",
    "OutputError",
    "SecondDerivativeError",
    "UnsafeCheckpointError",
]
