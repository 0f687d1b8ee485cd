"""The Hessian as a matrix-free linear operator.

:class:`HessianOperator` is what the solvers see: ``v ↦ Hv`` and
``V ↦ HV`` at a fixed point θ, with a count of the products spent. It never
allocates the ``n × n`` matrix, except in :meth:`HessianOperator.dense`, which
is meant for small models (tests, ground truth).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import torch

from critpoint._memory import free_memory
from critpoint.errors import DenseTooLargeError, NonDeterministicError
from critpoint.linalg._operator import Operator
from critpoint.linalg._random import make_generator, randn

if TYPE_CHECKING:
    from critpoint.objective import Linearization

#: Largest ``n`` for which :meth:`HessianOperator.dense` builds the matrix by default.
DENSE_LIMIT = 10_000
#: With ``hvp_cache="auto"``, the share of free memory an operator may fill
#: with the linearisations of the batches (device memory on a GPU).
AUTO_CACHE_SHARE = {"cuda": 0.5, "cpu": 0.25}


class Linearizable(Protocol):
    """What the operator needs of an objective (:class:`critpoint.Objective` is one)."""

    num_params: int
    dtype: torch.dtype
    device: torch.device
    hvp_mode: str
    hvp_cache: int | str | None

    def linearize(
        self, theta: torch.Tensor | None = None, *, max_bytes: float = 0
    ) -> Linearization:
        """The gradient linearised at θ (see :meth:`critpoint.Objective.linearize`)."""
        ...


class HessianOperator(Operator):
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
    cache_limit : int, optional
        Most bytes the linearisations may take, below the objective's
        ``hvp_cache`` (a memory plan's share for them).

    Attributes
    ----------
    num_matvecs : int
        Hessian-vector products computed so far (a block of ``k`` counts ``k``).
    num_passes : int
        Passes over the data so far (a block counts one).

    Notes
    -----
    The operator owns its linearisation cache. On its first product it
    linearises the objective at θ (:meth:`critpoint.Objective.linearize`),
    once, with a memory budget (:meth:`cache_budget`): the graphs of every
    batch are kept when they fit, and later products run the second backward
    pass only. :attr:`cached` says whether it did; :meth:`release_cache`
    frees the memory for good; a fall-back from forward-over-reverse drops the
    linearisation and builds a new one at the next product. θ and each
    product's vectors are checked here, at the boundary, and nowhere below.
    """

    def __init__(
        self,
        objective: Linearizable,
        theta: torch.Tensor,
        cache_limit: int | None = None,
    ) -> None:
        self.objective = objective
        self.theta = theta
        self.cache_limit = cache_limit
        self.num_matvecs = 0
        self.num_passes = 0
        self._linearization: Linearization | None = None
        self._released = False
        self._probe: _Probe | None = None
        #: Products the symmetry/determinism probe spent (in ``num_matvecs`` too).
        self.probe_matvecs = 0
        #: The probe's largest relative discrepancy, once it has run (else ``None``).
        self.probe_discrepancy: float | None = None

    # -------------------------------------------------- the linearisation cache
    def cache_budget(self) -> int:
        """Bytes the batches' linearisations may take (the objective's ``hvp_cache``).

        ``None`` or ``0``: nothing; a number: that many bytes; ``"auto"``:
        :data:`AUTO_CACHE_SHARE` of the free memory of the device (half on a
        GPU, a quarter of the host's, which respects a container's limit).
        Only reverse-over-reverse products have graphs to keep. A
        ``cache_limit`` caps it.
        """
        setting = self.objective.hvp_cache
        if setting is None or self.objective.hvp_mode != "rev-rev":
            return 0
        if isinstance(setting, int):
            budget = setting
        else:
            device = self.objective.device
            share = AUTO_CACHE_SHARE.get(device.type, 0.0)
            budget = int(free_memory(device) * share)
        return budget if self.cache_limit is None else min(budget, self.cache_limit)

    @property
    def cache_bytes(self) -> int:
        """Estimated bytes the kept linearisations take (0 before the first product or without)."""
        lin = self._linearization
        return lin.nbytes if lin is not None else 0

    @property
    def cached(self) -> bool:
        """Whether products run from the kept linearisations of the batches."""
        return self._linearization is not None and self._linearization.cached

    def release_cache(self) -> None:
        """Free the kept linearisations; later products recompute each pass in full."""
        if self._linearization is not None:
            self._linearization.release()
        self._released = True

    def _linearized(self) -> Linearization:
        """The linearisation at θ, built at the first product within the budget."""
        if self._linearization is None:
            budget = 0 if self._released else self.cache_budget()
            self._linearization = self.objective.linearize(self.theta, max_bytes=budget)
            self.theta = self._linearization.theta
        return self._linearization

    def _counted(self, V: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        if self._probe is None or fresh:
            out = self._linearized().hvp(V, fresh=fresh)
        else:
            try:
                out = self._linearized().hvp(V)
            except RuntimeError as exc:
                _refuse_random(exc)
                raise
        self.num_matvecs += 1 if V.ndim == 1 else V.shape[1]
        self.num_passes += 1
        if self._probe is not None and not fresh:
            out = self._probe_products(V, out)
        return out

    # ------------------------------------------ the probe on the first products
    def defer_check(self) -> None:
        """Check symmetry and determinism on the operator's own first products.

        What :meth:`critpoint.Objective.hessian` does by default: instead of
        separate products (:meth:`check_symmetric`), the solver's first two
        independent columns ``x₁, x₂`` and their products give the symmetry
        test ``x₁ᵀ(Hx₂) = x₂ᵀ(Hx₁)`` for free, and the loss of one fresh
        forward pass against the kept linearisation's the determinism test
        (:meth:`~critpoint.objective.Linearization.loss_drift`: no product;
        randomness enters a model through its forward pass). In ``fwd-rev``
        mode one product more, by reverse-over-reverse, checks the mode, and
        where the two modes disagree the first block is recomputed by
        reverse-over-reverse before the solver sees it. A failed test raises
        at that product, before any result is returned. Every product the
        probe spends counts in ``num_matvecs`` (and in :attr:`probe_matvecs`).
        """
        self._probe = _Probe()

    @property
    def probe_pending(self) -> int:
        """Products the pending probe (:meth:`defer_check`) will still spend: 0, 1 in ``fwd-rev``."""
        if self._probe is None or self._probe.x is not None:
            return 0  # none pending, or only its symmetry test, which costs nothing
        return 1 if self.objective.hvp_mode == "fwd-rev" else 0

    def _spend(self, count: int = 1) -> None:
        self.num_matvecs += count
        self.num_passes += 1
        self.probe_matvecs += count

    def _probe_products(self, V: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Run the pending probe on the block ``V`` and its products ``out``; return ``out``."""
        probe = self._probe
        assert probe is not None
        X = V[:, None] if V.ndim == 1 else V
        Y = out[:, None] if out.ndim == 1 else out
        threshold = 10 * math.sqrt(torch.finfo(self.dtype).eps)
        first = 0
        if probe.x is None:
            x, y = X[:, 0], Y[:, 0]
            lin = self._linearized()
            # Determinism: the loss of a fresh forward pass against the kept one.
            drift = lin.loss_drift()
            if drift > threshold:
                raise NonDeterministicError(_drift_message(drift))
            norm = float(torch.linalg.vector_norm(y.double())) + 1e-300
            if self.objective.hvp_mode == "fwd-rev":
                rev = lin.reverse_hvp(x)
                if rev is not None:
                    self._spend()
                    gap = float(torch.linalg.vector_norm(y.double() - rev.double()))
                    if gap / norm > threshold:
                        lin.abandon_forward_mode(gap / norm)
                        # The block was computed in the wrong mode: again, by
                        # reverse-over-reverse, which may keep its graphs.
                        self._linearization = None
                        redone = self._linearized().hvp(V)
                        self._spend(X.shape[1])
                        self.probe_matvecs -= X.shape[1]  # the solver's own products
                        return self._probe_products(V, redone)
            probe.x, probe.y = x.detach().clone(), y.detach().clone()
            probe.drift = drift
            first = 1
        # The last independent column: in a batch of block-masked vectors
        # (critpoint.block_spectra) it lies in another block than the first,
        # so the coupling between blocks is tested too.
        for j in reversed(range(first, X.shape[1])):
            asym = probe.asymmetry(X[:, j], Y[:, j])
            if asym is None:
                continue  # too close to x₁ to test anything
            self._probe = None
            self.probe_discrepancy = max(asym, probe.drift)
            if asym > threshold:
                self._linearized().refuse_asymmetric(asym)
            break
        return out

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
        return self._counted(self._vector(v, block=False))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``H V`` for a block ``V`` of shape ``(n, k)``, in one batched pass."""
        return self._counted(self._vector(V, block=True))

    def batch_terms(
        self, U: torch.Tensor, direction: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Each batch's part of ``uᵀHu`` (columns of ``U``, ``(n, k)``) and of ``dᵀg``.

        See :meth:`critpoint.Objective.batch_terms`. From the kept
        linearisations when there are (``k`` second backward passes per
        batch, no forward pass), else one fresh pass; counted as ``k``
        products either way.
        """
        U = self._vector(U, block=True)
        out = self._linearized().batch_terms(U, direction)
        self.num_matvecs += U.shape[1]
        self.num_passes += 1
        return out

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

    def check_symmetric(self, seed: int | torch.Generator | None = 12345) -> float:
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
        self._probe = None  # this probe replaces a deferred one
        gen = make_generator(seed)
        n = self.shape[0]
        U = randn((n, 2), gen, self.dtype, self.device)
        try:
            HU = self.matmat(U)
        except RuntimeError as exc:
            _refuse_random(exc)
            raise
        Hu_again = self._counted(U[:, 0], fresh=True)
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
                "each pass); use bn='eval', disable the randomness, fix the data "
                "augmentation, or pass drop_last=False"
            )
            raise NonDeterministicError(msg)
        lin = self._linearized()
        if self.objective.hvp_mode == "fwd-rev":
            Hu_rev = lin.reverse_hvp(U[:, 0])
            if Hu_rev is not None:
                self.num_matvecs += 1
                self.num_passes += 1
                gap = float(torch.linalg.vector_norm(Hu - Hu_rev.double())) / norm_Hu
                if gap > threshold:
                    lin.abandon_forward_mode(gap)
                    # A new linearisation at the next product: reverse-over-
                    # reverse may keep its graphs.
                    self._linearization = None
                    return self.check_symmetric(seed)
        if asym > threshold:
            lin.refuse_asymmetric(asym)
        return max(asym, drift)

    def __repr__(self) -> str:
        n = self.shape[0]
        return f"HessianOperator(n={n}, dtype={self.dtype}, device={self.device}, num_matvecs={self.num_matvecs})"


class _Probe:
    """The first product column the deferred probe kept, and its determinism result."""

    #: A second column counts as independent of the first when the part of it
    #: orthogonal to the first keeps at least this share of its norm.
    INDEPENDENT = 0.1

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.drift = 0.0

    def asymmetry(self, x2: torch.Tensor, y2: torch.Tensor) -> float | None:
        """``|x₁ᵀHx₂ − x₂ᵀHx₁|`` relative to its scale; ``None`` if ``x₂ ∥ x₁``."""
        assert self.x is not None
        assert self.y is not None
        x1, y1 = self.x.double(), self.y.double()
        x2, y2 = x2.double(), y2.double()
        n1 = float(torch.linalg.vector_norm(x1))
        n2 = float(torch.linalg.vector_norm(x2))
        if n1 == 0.0 or n2 == 0.0:
            return None
        along = float(x1 @ x2) / n1
        if math.sqrt(max(n2 * n2 - along * along, 0.0)) < self.INDEPENDENT * n2:
            return None
        scale = (
            float(torch.linalg.vector_norm(y1)) * n2
            + float(torch.linalg.vector_norm(y2)) * n1
        )
        if scale == 0.0:
            return 0.0  # H is zero on both: symmetric there
        return abs(float(x1 @ y2 - x2 @ y1)) / scale


def _refuse_random(exc: RuntimeError) -> None:
    """Raise :class:`NonDeterministicError` for torch's "random in vmap" error."""
    if "randomness" in str(exc) or "random" in str(exc).lower():
        msg = (
            "the loss is random: the forward pass draws random numbers (dropout in "
            "train mode?), so the Hessian is not a fixed matrix; use bn='eval' (--bn eval) "
            "or remove the randomness from the forward pass"
        )
        raise NonDeterministicError(msg) from exc


def _drift_message(drift: float) -> str:
    return (
        f"the loss is not deterministic (two forward passes at the same parameters "
        f"differ by {drift:.2e} relative), so neither is its Hessian: dropout or another random "
        "layer is active, or the data change between passes (augmentation, or a "
        "shuffling DataLoader with drop_last=True, which leaves out other samples "
        "each pass); use bn='eval' (--bn eval), disable the randomness, fix the data "
        "augmentation, or pass drop_last=False"
    )
