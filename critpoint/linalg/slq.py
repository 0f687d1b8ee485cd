"""Stochastic Lanczos quadrature: the eigenvalue density of a symmetric operator.

For a unit probe ``v``, ``m`` Lanczos steps build a tridiagonal matrix ``T``
whose eigenvalues ``θ_i`` (Ritz values) and squared first eigenvector
components ``τ_i`` form the Gauss quadrature rule of the spectral measure
``μ_v = Σ_j (q_jᵀ v)² δ(λ_j)`` of ``H`` seen from ``v``. Averaged over random
probes, ``E μ_v = (1/n) Σ_j δ(λ_j)``, the empirical spectral distribution.

References
----------
.. [1] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic
   Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
.. [2] L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large
   matrices", SIAM Review 58(1), 2016.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from critpoint import _checks
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._operator import as_operator
from critpoint.linalg._random import make_generator, rademacher, seed_record

#: Reorthogonalise a second time where one pass left less than this share of
#: the vector's norm (Daniel, Gragg, Kaufman & Stewart, Math. Comp. 30, 1976).
DGKS = 1 / math.sqrt(2)


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """Gauss quadrature rules of the spectral measure, one per random probe.

    Attributes
    ----------
    nodes : torch.Tensor
        Ritz values, float64 on the CPU, shape ``(num_probes, m)``, each row
        ascending over its used entries. A probe whose Lanczos run stopped
        early (an invariant subspace was found) has fewer than ``m`` nodes; its
        row is padded with node ``0.0`` and weight ``0.0``.
    weights : torch.Tensor
        Quadrature weights, same shape; each row sums to 1.
    num_matvecs : int
        Hessian-vector products spent (columns passed to ``matmat``).
    seed : int or None
        The seed of the probes (``None`` if a generator or no seed was given).
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    num_matvecs: int
    seed: int | None

    def __post_init__(self) -> None:
        nodes = torch.as_tensor(self.nodes, dtype=torch.float64).cpu()
        weights = torch.as_tensor(self.weights, dtype=torch.float64).cpu()
        if nodes.ndim != 2 or nodes.shape != weights.shape or nodes.shape[0] < 1:
            msg = (
                f"nodes and weights must both have shape (num_probes, m) with num_probes >= 1, "
                f"got {tuple(nodes.shape)} and {tuple(weights.shape)}"
            )
            raise InputError(msg)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "weights", weights)

    @property
    def num_probes(self) -> int:
        """Number of probe vectors (rows of ``nodes``)."""
        return int(self.nodes.shape[0])

    @property
    def num_steps(self) -> int:
        """Lanczos steps per probe (columns of ``nodes``)."""
        return int(self.nodes.shape[1])

    @property
    def support(self) -> tuple[float, float]:
        """``(lo, hi)``: smallest and largest node with nonzero weight."""
        used = self.nodes[self.weights > 0]
        if used.numel() == 0:
            return (0.0, 0.0)
        return (float(used.min()), float(used.max()))

    def pdf(
        self, grid: np.ndarray | torch.Tensor | list[float], sigma: float | None = None
    ) -> np.ndarray:
        """Gaussian-smoothed eigenvalue density on ``grid``, averaged over probes.

        Parameters
        ----------
        grid : array_like
            Points at which to evaluate, shape ``(g,)``, in eigenvalue units.
        sigma : float, optional
            Standard deviation of the Gaussian kernel, in eigenvalue units.
            Default: 1% of the support width, or ``1e-3 · max(1, |λ|)`` when
            the support is a single point.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(g,)``; it integrates to 1 over a grid that
            covers the support plus a few ``sigma``.
        """
        if isinstance(grid, torch.Tensor):
            grid = grid.detach().cpu().numpy()
        x = np.asarray(grid, dtype=np.float64)
        if x.ndim != 1:
            msg = f"grid must be one-dimensional, got shape {x.shape}; flatten it or use np.linspace"
            raise InputError(msg)
        if sigma is None:
            lo, hi = self.support
            width = hi - lo
            sigma = 0.01 * width if width > 0 else 1e-3 * max(1.0, abs(lo))
        sigma = _checks.finite_float(
            sigma,
            "sigma",
            minimum=0.0,
            strict=True,
            hint="leave it as None for 1% of the support width",
        )
        nodes = self.nodes.numpy().reshape(-1)
        weights = self.weights.numpy().reshape(-1) / self.num_probes
        keep = weights > 0
        nodes, weights = nodes[keep], weights[keep]
        out = np.zeros_like(x)
        norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
        chunk = 4096  # bounds the (chunk, nodes) temporary
        for start in range(0, x.size, chunk):
            z = (x[start : start + chunk, None] - nodes[None, :]) / sigma
            out[start : start + chunk] = norm * (np.exp(-0.5 * z * z) @ weights)
        return out

    def fraction_positive(self, tol: float = 0.0) -> float:
        """Mass of the density strictly above ``tol`` (mean over probes).

        Parameters
        ----------
        tol : float
            Non-negative threshold, in eigenvalue units.

        Returns
        -------
        float
            In ``[0, 1]``.
        """
        tol = _checks.finite_float(tol, "tol", minimum=0.0)
        return float((self.weights * (self.nodes > tol)).sum(dim=1).mean())

    def fraction_negative(self, tol: float = 0.0) -> float:
        """Mass of the density strictly below ``-tol`` (mean over probes).

        Parameters
        ----------
        tol : float
            Non-negative threshold, in eigenvalue units.

        Returns
        -------
        float
            In ``[0, 1]``.
        """
        tol = _checks.finite_float(tol, "tol", minimum=0.0)
        return float((self.weights * (self.nodes < -tol)).sum(dim=1).mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (nested lists of floats)."""
        return {
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "num_matvecs": int(self.num_matvecs),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectralDensity:
        """Rebuild a density written by :meth:`to_dict`."""
        try:
            return cls(
                nodes=torch.tensor(data["nodes"], dtype=torch.float64),
                weights=torch.tensor(data["weights"], dtype=torch.float64),
                num_matvecs=int(data["num_matvecs"]),
                seed=data.get("seed"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"not a SpectralDensity dictionary ({exc}); it needs 'nodes', 'weights' and 'num_matvecs'"
            raise InputError(msg) from exc


def spectral_density(
    H: object,
    num_probes: int = 8,
    num_steps: int = 80,
    seed: int | torch.Generator | None = 0,
    reorthogonalize: bool = True,
    progress: ProgressArg = False,
    *,
    max_matvecs: int | None = None,
) -> SpectralDensity:
    """Estimate the eigenvalue density of ``H`` by stochastic Lanczos quadrature.

    Every probe runs its own Lanczos recurrence (this is not block Lanczos),
    but all probes advance together: each step makes one ``matmat`` call on an
    ``(n, num_probes)`` block, i.e. one batched Hessian-vector pass. A probe
    whose recurrence breaks down (an invariant subspace was found: ``β`` below
    ``10·√n·eps`` times the spectrum scale seen so far) stops there with a
    shorter quadrature rule; the others continue, and later blocks hold only
    the running probes.

    Parameters
    ----------
    H : HessianOperator, SymmetricOperator or torch.Tensor
        Symmetric operator of shape ``(n, n)`` (see
        :func:`critpoint.linalg._operator.as_operator`).
    num_probes : int
        Number of random probes ``p``. Probes are the columns of an
        ``(n, p)`` Rademacher draw from ``seed``, divided by ``√n``.
    num_steps : int
        Lanczos steps per probe ``m`` (capped at ``n``); the cost is ``m``
        batched products, ``m · p`` Hessian-vector products in all.
    seed : int, torch.Generator or None
        Seed of the probes, drawn on the CPU (same numbers on any device).
    reorthogonalize : bool
        Full reorthogonalisation of each probe's new Lanczos vector against
        its own previous ones, by classical Gram–Schmidt applied twice. This
        keeps ghost Ritz values out of the density but stores the whole
        basis: ``n × m × p`` numbers in the operator's dtype. With ``False``
        only three blocks of ``n × p`` are kept.
    progress : bool, callable or None
        ``True`` shows a progress bar (``tqdm.auto``); a callable is called as
        ``progress(step, num_steps)`` after each step; ``False`` or ``None``:
        silent.
    max_matvecs : int, optional
        Most Hessian-vector products to spend. The run costs ``num_probes``
        products per step, so a smaller budget shortens every probe to
        ``max_matvecs // num_probes`` steps (all probes keep the same length:
        their quadrature rules are averaged). Default: no cap beyond
        ``num_probes · num_steps``.

    Returns
    -------
    SpectralDensity
        Nodes and weights of shape ``(p, m')``, ``m' <= m`` the longest run.

    Raises
    ------
    InputError
        If an argument is invalid or ``H`` is not square.
    NonFiniteError
        If a Hessian-vector product contains NaN or Inf.

    Notes
    -----
    Vectors stay in the operator's dtype and device; the recurrence scalars
    ``α``, ``β`` are accumulated in float64, and the small tridiagonal
    eigenproblems are solved in float64 on the CPU.

    References
    ----------
    .. [1] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via
       stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
    .. [2] L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of
       large matrices", SIAM Review 58(1), 2016.
    """
    num_probes = _checks.positive_int(
        num_probes, "num_probes", "use e.g. num_probes=8 (more probes, less noise)"
    )
    num_steps = _checks.positive_int(
        num_steps, "num_steps", "use e.g. num_steps=80 (more steps, finer resolution)"
    )
    check_progress(progress)
    if max_matvecs is not None:
        max_matvecs = _checks.positive_int(max_matvecs, "max_matvecs", "or None")
        if max_matvecs < num_probes:
            msg = (
                f"max_matvecs={max_matvecs} cannot give each of the {num_probes} probes "
                f"one step; lower num_probes or raise max_matvecs"
            )
            raise InputError(msg)
        num_steps = min(num_steps, max_matvecs // num_probes)
    op = as_operator(H)
    n = int(op.shape[0])
    if n < 1:
        msg = "the operator has size 0; there is no spectrum to estimate"
        raise InputError(msg)
    dtype, device = op.dtype, op.device
    m, p = min(num_steps, n), num_probes
    gen = make_generator(seed)
    breakdown_tol = 10.0 * math.sqrt(n) * torch.finfo(dtype).eps

    V = rademacher((n, p), gen, dtype, device) / math.sqrt(n)  # current Lanczos block
    V_prev = torch.zeros_like(V)
    # basis[k, j] is probe k's j-th Lanczos vector: batch-first for bmm.
    basis = (
        torch.empty((p, m, n), dtype=dtype, device=device) if reorthogonalize else None
    )
    alpha = torch.zeros((m, p), dtype=torch.float64)
    beta = torch.zeros((m, p), dtype=torch.float64)  # beta[j] couples steps j, j+1
    length = torch.full((p,), m, dtype=torch.long)  # tridiagonal size per probe
    active = torch.ones(p, dtype=torch.bool)
    scale = 0.0  # running max of |α|, β: the spectrum scale seen so far
    num_matvecs = 0
    bar = Progress(progress, m, "spectral density", unit="step")
    try:
        for j in range(m):
            if basis is not None:
                basis[:, j, :] = V.T
            if bool(active.all()):
                W = op.matmat(V)
                num_matvecs += p
            else:
                idx = active.nonzero().squeeze(1).to(device)
                W = torch.zeros_like(V)
                W[:, idx] = op.matmat(V[:, idx])
                num_matvecs += int(idx.numel())
            if W.shape != V.shape:
                msg = f"the operator's matmat returned shape {tuple(W.shape)} for input {tuple(V.shape)}"
                raise InputError(msg)
            W = W.to(dtype)
            a = torch.sum(V * W, dim=0, dtype=torch.float64)
            # Any NaN/Inf in a column of W makes that column's α non-finite.
            a_cpu = a.cpu()
            if not bool(torch.isfinite(a_cpu).all()):
                bad = int((~torch.isfinite(a_cpu)).nonzero()[0, 0])
                msg = (
                    f"a Hessian-vector product contains NaN or Inf (Lanczos step {j}, probe {bad}); "
                    "the loss is not finite or not twice differentiable near these parameters: "
                    "check obj.loss(), or try dtype=torch.float64"
                )
                raise NonFiniteError(msg)
            alpha[j] = torch.where(active, a_cpu, 0.0)
            scale = max(scale, float(a_cpu.abs().max()))
            if j == m - 1:
                bar.update(j + 1)
                break
            # Three-term recurrence, then reorthogonalise each column against
            # its own basis by classical Gram-Schmidt, a second time only where
            # the first removed much (the DGKS criterion, ‖w‖ fell below 1/√2):
            # after the recurrence it rarely does, and each pass reads the
            # whole basis.
            W = W - V * a.to(dtype)
            if j > 0:
                W = W - V_prev * beta[j - 1].to(dtype=dtype, device=device)
            if basis is not None:
                B = basis[:, : j + 1, :]  # (p, j+1, n)
                for _ in range(2):
                    before = torch.linalg.vector_norm(W, dim=0)
                    coef = torch.bmm(B, W.T.unsqueeze(2))  # (p, j+1, 1)
                    W = W - torch.bmm(B.transpose(1, 2), coef).squeeze(2).T
                    after = torch.linalg.vector_norm(W, dim=0)
                    if not bool((after < DGKS * before).any()):
                        break
            b = torch.linalg.vector_norm(W, dim=0, dtype=torch.float64).cpu()
            if not bool(torch.isfinite(b).all()):
                msg = (
                    f"the Lanczos recurrence produced NaN or Inf at step {j}; "
                    "the operator's values overflow: rescale the loss or use dtype=torch.float64"
                )
                raise NonFiniteError(msg)
            scale = max(scale, float(b.max()))
            stop = active & (b <= breakdown_tol * scale)
            length[stop] = j + 1
            active = active & ~stop
            beta[j] = torch.where(active, b, 0.0)
            V_prev = V
            safe = torch.where(active, b, 1.0).to(dtype=dtype, device=device)
            V = W / safe * active.to(dtype=dtype, device=device)
            bar.update(j + 1)
            if not bool(active.any()):
                break
    finally:
        bar.close()

    nodes, weights = _gauss_rules(alpha, beta, length)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        num_matvecs=num_matvecs,
        seed=seed_record(seed),
    )


def _gauss_rules(
    alpha: torch.Tensor, beta: torch.Tensor, length: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decompose each probe's tridiagonal matrix (float64, CPU).

    Parameters
    ----------
    alpha, beta : torch.Tensor
        Diagonals and off-diagonals, shape ``(m, p)``.
    length : torch.Tensor
        Tridiagonal size of each probe, shape ``(p,)``.

    Returns
    -------
    nodes, weights : torch.Tensor
        Shape ``(p, max(length))``, zero-padded.
    """
    p = alpha.shape[1]
    width = int(length.max())
    nodes = torch.zeros((p, width), dtype=torch.float64)
    weights = torch.zeros((p, width), dtype=torch.float64)
    for k in range(p):
        size = int(length[k])
        T = torch.diag(alpha[:size, k])
        if size > 1:
            off = beta[: size - 1, k]
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        tau = S[0] ** 2
        nodes[k, :size] = theta
        weights[k, :size] = tau / tau.sum()
    return nodes, weights


__all__ = ["SpectralDensity", "spectral_density"]
