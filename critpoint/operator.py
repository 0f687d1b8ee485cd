"""The Hessian as a matrix-free linear operator.

:class:`HessianOperator` is what the solvers see: ``v ↦ Hv`` and
``V ↦ HV`` at a fixed point θ, with a count of the products spent. It never
allocates the ``n × n`` matrix, except in :meth:`HessianOperator.dense`, which
is meant for small models (tests, ground truth).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from critpoint import _autodiff
from critpoint.errors import (
    DenseTooLargeError,
    InputError,
    NonDeterministicError,
    SecondDerivativeError,
)
from critpoint.linalg._random import make_generator, randn

if TYPE_CHECKING:
    from critpoint.objective import Objective

#: Largest ``n`` for which :meth:`HessianOperator.dense` builds the matrix by default.
DENSE_LIMIT = 10_000


class HessianOperator:
    """The Hessian of an :class:`~critpoint.Objective` at a fixed θ, matrix-free.

    Build it with :meth:`critpoint.Objective.hessian`. ``H @ v`` accepts a
    vector of shape ``(n,)`` or a block ``(n, k)``; a block is computed in one
    batched pass over the data.

    Parameters
    ----------
    objective : Objective
        The objective whose Hessian this is.
    theta : torch.Tensor
        The point, shape ``(n,)``.

    Attributes
    ----------
    num_matvecs : int
        Hessian-vector products computed so far (a block of ``k`` counts ``k``).
    num_passes : int
        Passes over the data so far (a block counts one).

    Notes
    -----
    On its first product the operator linearises every batch at θ and keeps
    the graphs when they fit the objective's ``hvp_cache`` budget; later
    products then run the second backward pass only. :attr:`cached` says
    whether it did; :meth:`release_cache` frees the memory.
    """

    def __init__(self, objective: Objective, theta: torch.Tensor) -> None:
        self.objective = objective
        self.theta = theta
        self.num_matvecs = 0
        self.num_passes = 0
        self._pieces: list[Any] | None = None
        self._cache_tried = False

    @property
    def cached(self) -> bool:
        """Whether products run from the kept linearisations of the batches."""
        return self._pieces is not None

    def release_cache(self) -> None:
        """Free the kept linearisations; later products recompute each pass in full."""
        self._pieces = None
        self._cache_tried = True

    def _products(self, V: torch.Tensor) -> torch.Tensor:
        if not self._cache_tried:
            self._cache_tried = True
            self._pieces = self.objective._linearize(self.theta)
        if self._pieces is not None:
            return self.objective._hvp_linearized(self._pieces, V)
        return self.objective.hvp(V, self.theta)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)`` with ``n`` the number of selected parameters."""
        n = self.objective.num_params
        return (n, n)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the products."""
        return self.objective.dtype

    @property
    def device(self) -> torch.device:
        """Device of the products."""
        return self.objective.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return ``H v`` for ``v`` of shape ``(n,)``."""
        if not isinstance(v, torch.Tensor) or v.ndim != 1:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            msg = f"matvec takes a vector of shape ({self.shape[0]},), got {got}; use matmat for blocks"
            raise InputError(msg)
        out = self._products(v)
        self.num_matvecs += 1
        self.num_passes += 1
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``H V`` for a block ``V`` of shape ``(n, k)``, in one batched pass."""
        if not isinstance(V, torch.Tensor) or V.ndim != 2:
            got = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
            msg = f"matmat takes a block of shape ({self.shape[0]}, k), got {got}"
            raise InputError(msg)
        out = self._products(V)
        self.num_matvecs += V.shape[1]
        self.num_passes += 1
        return out

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if isinstance(v, torch.Tensor) and v.ndim == 2:
            return self.matmat(v)
        return self.matvec(v)

    def dense(self, max_size: int = DENSE_LIMIT, block: int = 64) -> torch.Tensor:
        """The full ``(n, n)`` matrix, built column block by column block.

        Parameters
        ----------
        max_size : int
            Refuse when ``n`` exceeds this (an ``n × n`` matrix of a real model
            does not fit in memory). Raise it knowingly for larger models.
        block : int
            Columns computed per batched pass.

        Returns
        -------
        torch.Tensor
            Shape ``(n, n)``, symmetrised as ``(H + Hᵀ)/2`` against rounding.
        """
        n = self.shape[0]
        if n > max_size:
            gib = n * n * torch.finfo(self.dtype).bits / 8 / 2**30
            msg = (
                f"dense() would build a {n} x {n} matrix ({gib:.1f} GiB) for a model with "
                f"{n} parameters, over the limit max_size={max_size}; use the matrix-free "
                "solvers (eigsh, spectral_density, trace), select fewer parameters with "
                "params=, or pass a larger max_size knowingly"
            )
            raise DenseTooLargeError(msg)
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        columns = [
            self.matmat(eye[:, start : start + block]) for start in range(0, n, block)
        ]
        full = torch.cat(columns, dim=1)
        return (full + full.T) / 2

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy in and out).

        Lets scipy's solvers (``eigsh``, ``lobpcg``, ``cg``) drive the Hessian;
        each call converts to the operator's dtype and device and back.
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

    def _probe(self, V: torch.Tensor) -> torch.Tensor:
        out = self.objective.hvp(V, self.theta)
        self.num_matvecs += 1 if V.ndim == 1 else V.shape[1]
        self.num_passes += 1
        return out

    def check_symmetric(self, seed: int = 12345) -> float:
        """Probe that the product is deterministic and symmetric (3 HVPs; 4 in ``fwd-rev``).

        Computes ``[Hu, Hv]`` in one pass and ``Hu`` again alone; a random
        product (dropout left on) differs between the two ``Hu``, a
        non-symmetric one has ``uᵀHv ≠ vᵀHu``. Rounding differences, e.g. from
        a shuffled DataLoader, stay far below the threshold ``10·√eps``.

        With ``hvp_mode="fwd-rev"`` a fourth product computes ``Hu`` by
        reverse-over-reverse: where the two modes disagree (a torch
        forward-mode bug in some layer), the objective falls back to
        ``"rev-rev"`` for good, says so (log and ``hvp_fallback``), and the
        probe runs again.

        The first pass is the operator's own first product: it keeps the
        batches' linearisations when they fit (``hvp_cache``), so the probe
        costs the solvers nothing extra. The second is always recomputed from
        scratch, with a fresh forward pass, so randomness still shows.

        Returns
        -------
        float
            The larger of the two relative discrepancies.
        """
        gen = make_generator(seed)
        n = self.shape[0]
        U = randn((n, 2), gen, self.dtype, self.device)
        try:
            HU = self.matmat(U)
        except RuntimeError as exc:
            if "randomness" in str(exc) or "random" in str(exc).lower():
                msg = (
                    "the loss is random: the forward pass draws random numbers (dropout in "
                    "train mode?), so the Hessian is not a fixed matrix; use train_mode=False "
                    "or remove the randomness from the forward pass"
                )
                raise NonDeterministicError(msg) from exc
            raise
        Hu_again = self._probe(U[:, 0])
        u, v = U[:, 0].double(), U[:, 1].double()
        Hu, Hv = HU[:, 0].double(), HU[:, 1].double()
        scale = float(
            torch.linalg.vector_norm(Hu) * torch.linalg.vector_norm(u)
        ) + float(torch.linalg.vector_norm(Hv) * torch.linalg.vector_norm(v))
        if scale == 0.0:
            return 0.0  # H is zero on the probes: symmetric and deterministic
        asym = abs(float(u @ Hv - v @ Hu)) / scale
        norm_Hu = float(torch.linalg.vector_norm(Hu)) + 1e-300
        drift = float(torch.linalg.vector_norm(Hu - Hu_again.double())) / norm_Hu
        threshold = 10 * math.sqrt(torch.finfo(self.dtype).eps)
        if drift > threshold:
            msg = (
                f"the Hessian-vector product is not deterministic (two products with the "
                f"same vector differ by {drift:.2e} relative): dropout or another random "
                "layer is active, or the data change between passes (augmentation, or a "
                "shuffling DataLoader with drop_last=True, which leaves out other samples "
                "each pass); use train_mode=False, disable the randomness, fix the data "
                "augmentation, or pass drop_last=False"
            )
            raise NonDeterministicError(msg)
        if self.objective.hvp_mode == "fwd-rev":
            Hu_rev = self._reverse_product(U[:, 0])
            if Hu_rev is not None:
                gap = float(torch.linalg.vector_norm(Hu - Hu_rev.double())) / norm_Hu
                if gap > threshold:
                    self.objective._fall_back(
                        f"its products disagree with reverse-over-reverse by {gap:.2e} "
                        f"relative on this model ({self.objective._why_modes_differ()})"
                    )
                    self._pieces = None
                    self._cache_tried = (
                        False  # reverse-over-reverse may keep its graphs
                    )
                    return self.check_symmetric(seed)
        if asym > threshold:
            self._refuse_asymmetric(asym)
        return max(asym, drift)

    def _reverse_product(self, u: torch.Tensor) -> torch.Tensor | None:
        """``H u`` by reverse-over-reverse (counted), or ``None`` where that mode fails."""
        try:
            out = self.objective._products(u, self.theta, "rev-rev")
        except (RuntimeError, NotImplementedError) as exc:
            if _autodiff.missing_derivative(exc) is None:
                raise
            return None  # no double backward: forward mode is all there is
        self.num_matvecs += 1
        self.num_passes += 1
        return out

    def _refuse_asymmetric(self, asym: float) -> None:
        """Raise for a non-symmetric product, naming custom Functions if there are any."""
        try:
            culprits = self.objective._culprits(None)
        except Exception:  # the refusal below must still happen
            culprits = []
        if culprits:
            msg = (
                f"the Hessian-vector product is not symmetric (uᵀHv and vᵀHu differ by "
                f"{asym:.2e} relative): " + self.objective._blame(None, None, culprits)
            )
            raise SecondDerivativeError(msg)
        msg = (
            f"the Hessian-vector product is not symmetric (uᵀHv and vᵀHu differ by "
            f"{asym:.2e} relative): the loss is not a fixed twice-differentiable function "
            "of the parameters (a stateful or random layer?)"
        )
        raise NonDeterministicError(msg)

    def __repr__(self) -> str:
        n = self.shape[0]
        return f"HessianOperator(n={n}, dtype={self.dtype}, device={self.device}, num_matvecs={self.num_matvecs})"
