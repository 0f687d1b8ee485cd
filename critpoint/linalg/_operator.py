"""What the solvers need of an operator, and how plain matrices become one.

The solvers in :mod:`critpoint.linalg` touch a symmetric operator only through
``matmat``: any object with ``shape`` ``(n, n)``, ``dtype``, ``device`` and
``matmat(V) -> H @ V`` for ``V`` of shape ``(n, k)`` will do. A
:class:`critpoint.HessianOperator` is one; a dense symmetric tensor is wrapped
by :func:`as_operator`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from critpoint.errors import InputError


@runtime_checkable
class SymmetricOperator(Protocol):
    """A symmetric linear operator known only through block products."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the vectors it acts on."""
        ...

    @property
    def device(self) -> torch.device:
        """Device of the vectors it acts on."""
        ...

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``H @ V`` for ``V`` of shape ``(n, k)``."""
        ...


class DenseOperator:
    """A dense symmetric matrix seen as an operator (for tests and small problems).

    Parameters
    ----------
    matrix : torch.Tensor
        Symmetric matrix of shape ``(n, n)``.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            msg = f"a dense operator must be a square matrix, got shape {tuple(matrix.shape)}"
            raise InputError(msg)
        if not matrix.is_floating_point():
            msg = f"a dense operator must have a floating dtype, got {matrix.dtype}; convert it with .double()"
            raise InputError(msg)
        self.matrix = matrix
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.matrix.shape[0], self.matrix.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the matrix."""
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        """Device of the matrix."""
        return self.matrix.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``matrix @ V``; counts one product per column."""
        self.num_matvecs += V.shape[1]
        return self.matrix @ V


def as_operator(H: object) -> SymmetricOperator:
    """Return ``H`` as an object the solvers accept.

    Parameters
    ----------
    H : SymmetricOperator or torch.Tensor
        A :class:`critpoint.HessianOperator`, any object with ``shape``,
        ``dtype``, ``device`` and ``matmat``, or a dense ``(n, n)`` tensor.

    Returns
    -------
    SymmetricOperator
    """
    if isinstance(H, torch.Tensor):
        return DenseOperator(H)
    if isinstance(H, SymmetricOperator):
        shape = tuple(H.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            msg = f"the operator must be square, got shape {shape}"
            raise InputError(msg)
        return H
    msg = (
        f"expected a HessianOperator, an object with shape/dtype/device/matmat, "
        f"or a square torch.Tensor, got {type(H).__name__}; build one with objective.hessian()"
    )
    raise InputError(msg)
