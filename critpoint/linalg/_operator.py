"""What the solvers need of an operator, and what every operator offers.

The solvers in :mod:`critpoint.linalg` touch a symmetric operator only through
``matmat``: any object with ``shape`` ``(n, n)``, ``dtype``, ``device`` and
``matmat(V) -> H @ V`` for ``V`` of shape ``(n, k)`` will do
(:class:`SymmetricOperator`). critpoint's own operators —
:class:`critpoint.HessianOperator` and :class:`DenseOperator` (a dense
symmetric tensor, wrapped by :func:`as_operator`) — share :class:`Operator`:
one check of the vectors at the boundary, ``matvec``, ``@``, ``dense()`` and
``to_scipy()``, and a count of the products (``num_matvecs``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
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


class Operator:
    """What every critpoint operator offers, built on ``matmat``.

    A subclass gives ``shape``, ``dtype``, ``device`` and ``matmat`` (which
    checks its block with :meth:`_vector` and adds to ``num_matvecs``), and
    gets ``matvec``, ``@``, :meth:`dense` and :meth:`to_scipy`.

    Attributes
    ----------
    num_matvecs : int
        Products computed so far (a block of ``k`` columns counts ``k``).
    """

    num_matvecs: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the products."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Device of the products."""
        raise NotImplementedError

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``H V`` for a block ``V`` of shape ``(n, k)``."""
        raise NotImplementedError

    def _vector(self, v: Any, block: bool) -> torch.Tensor:
        """``v`` checked (shape, floating) and put in the operator's dtype and device."""
        n = self.shape[0]
        ndim = 2 if block else 1
        if not isinstance(v, torch.Tensor) or v.ndim != ndim or v.shape[0] != n:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            if block:
                msg = f"matmat takes a block of shape ({n}, k), got {got}"
            else:
                msg = f"matvec takes a vector of shape ({n},), got {got}; use matmat for blocks"
            raise InputError(msg)
        if not v.is_floating_point():
            msg = f"the operator takes floating vectors, got {v.dtype}"
            raise InputError(msg)
        return v.to(device=self.device, dtype=self.dtype)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return ``H v`` for ``v`` of shape ``(n,)`` (one product)."""
        return self.matmat(self._vector(v, block=False)[:, None])[:, 0]

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if isinstance(v, torch.Tensor) and v.ndim == 2:
            return self.matmat(v)
        return self.matvec(v)

    def dense(self) -> torch.Tensor:
        """The ``(n, n)`` matrix, from the products with the identity (``n`` of them)."""
        n = self.shape[0]
        return self.matmat(torch.eye(n, dtype=self.dtype, device=self.device))

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy in and out).

        Lets scipy's solvers (``eigsh``, ``lobpcg``, ``cg``) drive the operator;
        each call converts to the operator's dtype and device and back, and
        counts in ``num_matvecs``.
        """
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(
                np.asarray(x).reshape(-1), dtype=self.dtype, device=self.device
            )
            return self.matvec(v).detach().cpu().double().numpy()

        def mm(X: np.ndarray) -> np.ndarray:
            V = torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)
            return self.matmat(V).detach().cpu().double().numpy()

        return LinearOperator(
            self.shape, matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64
        )


class DenseOperator(Operator):
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
        V = self._vector(V, block=True)
        self.num_matvecs += V.shape[1]
        return self.matrix @ V

    def dense(self) -> torch.Tensor:
        """A copy of the matrix (no product)."""
        return self.matrix.clone()


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
