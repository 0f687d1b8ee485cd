"""Thick-restart Lanczos for a few extreme eigenpairs of a symmetric operator.

The operator is touched only through products ``H v``. Each product is fully
reorthogonalised (classical Gram–Schmidt, twice) against the basis, so Ritz
values do not duplicate ("ghosts") and the Lanczos residual estimate
``|β_m s_{m,i}|`` equals the true residual ``‖Hu − θu‖`` to rounding. The basis
costs ``n × ncv`` numbers of memory (``ncv`` defaults to ``max(2k + 1, 160)``,
lowered to keep the basis within an eighth of the free memory where it lives,
or 256 MiB if that is more; see :func:`default_ncv`).

When the Krylov space is full (``ncv`` vectors) and fewer than ``k`` wanted
pairs meet the tolerance, the method restarts from the best Ritz vectors
(thick restart: Wu & Simon 2000), which keeps what it learnt and costs no
extra products. The wanted end of the spectrum only changes which Ritz values
are kept, so the most negative eigenvalues (``which="SA"``) cost the same as
the largest (``"LA"``).

References
----------
C. Lanczos, "An iteration method for the solution of the eigenvalue problem of
linear differential and integral operators", J. Res. Nat. Bur. Standards 45, 1950.
K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric
eigenvalue problems", SIAM J. Matrix Anal. Appl. 22(2), 2000.
B. N. Parlett, "The Symmetric Eigenvalue Problem", SIAM, 1998 (residual bounds).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from critpoint._memory import free_memory
from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._operator import as_operator
from critpoint.linalg._random import make_generator, randn

logger = logging.getLogger("critpoint")

Which = Literal["LA", "SA", "BE", "LM"]
ProgressArg = bool | Callable[[int, int], None]


@dataclass(frozen=True)
class EigenResult:
    """Extreme eigenpairs of a symmetric operator, with residual-based error bounds.

    Attributes
    ----------
    eigenvalues : torch.Tensor
        Ritz values, float64 on the CPU, shape ``(k,)``, ascending.
    eigenvectors : torch.Tensor or None
        Unit Ritz vectors as columns, shape ``(n, k)``, on the operator's
        device and dtype, in the order of ``eigenvalues``.
    residuals : torch.Tensor
        ``‖Hu − θu‖`` for each pair, float64, shape ``(k,)``, floored at
        ``4·eps·‖H‖`` of the operator's dtype (the rounding of the products
        themselves). For a symmetric operator some true eigenvalue lies within
        this distance of each Ritz value, so it is an error bound. Within a
        tight cluster it does not certify *which* eigenvalue that is: the
        ``k``-th reported value may be a neighbour of the true ``k``-th.
    converged : torch.Tensor
        Bool, shape ``(k,)``: whether the pair met the tolerance.
    num_matvecs : int
        Hessian-vector products spent.
    num_restarts : int
        Thick restarts performed.
    which : str
        The end of the spectrum asked for.
    tol : float
        Relative tolerance used: a pair converged when
        ``residual ≤ tol · max|θ|``.
    spectral_scale : float
        ``max|θ|`` over all Ritz values seen: the scale the tolerance refers to.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    residuals: torch.Tensor
    converged: torch.Tensor
    num_matvecs: int
    num_restarts: int
    which: str
    tol: float
    spectral_scale: float
    seed: Any = field(default=None, compare=False)

    @property
    def all_converged(self) -> bool:
        """Whether every returned pair met the tolerance."""
        return bool(self.converged.all())

    @property
    def error_bounds(self) -> torch.Tensor:
        """Rigorous bounds on ``|λ − θ|``: the residual norms, shape ``(k,)``."""
        return self.residuals

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (eigenvectors left out)."""
        return {
            "eigenvalues": [float(x) for x in self.eigenvalues],
            "residuals": [float(x) for x in self.residuals],
            "converged": [bool(x) for x in self.converged],
            "num_matvecs": self.num_matvecs,
            "num_restarts": self.num_restarts,
            "which": self.which,
            "tol": self.tol,
            "spectral_scale": self.spectral_scale,
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
        }


def _priority(theta: np.ndarray, which: str) -> np.ndarray:
    """Return the indices of Ritz values ``theta`` (ascending), most wanted first."""
    ascending = np.arange(theta.shape[0])
    if which == "LA":
        return ascending[::-1].copy()
    if which == "SA":
        return ascending
    if which == "LM":
        return np.argsort(-np.abs(theta), kind="stable")
    # BE: alternate from the top and the bottom, the top first (as scipy's BE).
    m = theta.shape[0]
    order = np.empty(m, dtype=np.int64)
    order[0::2] = ascending[::-1][: (m + 1) // 2]
    order[1::2] = ascending[: m // 2]
    return order


def _orthogonalise(
    w: torch.Tensor, Q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove from ``w`` (n,) its components along the columns of ``Q`` (n, j), twice."""
    h = Q.T @ w
    w = w - Q @ h
    h2 = Q.T @ w
    w = w - Q @ h2
    return w, h + h2


def _fresh_direction(Q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random unit vector orthogonal to the columns of ``Q`` (n, j)."""
    w = randn((Q.shape[0],), gen, Q.dtype, Q.device)
    w, _ = _orthogonalise(w, Q)
    return w / torch.linalg.vector_norm(w)


#: The Krylov basis may always take this much memory, whatever is free.
BASIS_FLOOR_BYTES = 256 * 2**20
#: ... or this share of the free memory where it lives, if that is more.
BASIS_FREE_SHARE = 1 / 8
#: The default basis size when memory allows.
DEFAULT_NCV = 160


def default_ncv(k: int, n: int, dtype: torch.dtype, device: torch.device) -> int:
    """The Krylov basis size ``eigsh`` uses when ``ncv`` is not given.

    A larger basis means fewer restarts, and each restart throws information
    away: the bottom of a trained network's spectrum is a tight cluster next to
    the bulk (bottom-5 of the trained 85k-parameter digits MLP at tol 1e-4:
    307 HVPs at ncv=40, 193 at 80, 112 at 160, unrestarted, and less time too;
    the trained 2.2M-parameter MLP: 292 HVPs at the 29 vectors that 256 MiB
    holds, 63 at 160). So the default is ``max(2k + 1, 160)`` vectors, lowered
    only where the basis (``n × (ncv + 1)`` numbers) would exceed both 256 MiB
    and an eighth of the free memory on ``device``.

    Parameters
    ----------
    k : int
        Eigenpairs wanted.
    n : int
        Dimension of the operator.
    dtype : torch.dtype
        Precision of the basis vectors.
    device : torch.device
        Where the basis lives (host memory for the CPU, device memory for a GPU).

    Returns
    -------
    int
        ``ncv``, at least ``2k + 1`` (``eigsh`` caps it at ``n``).
    """
    itemsize = torch.finfo(dtype).bits // 8
    budget = max(BASIS_FLOOR_BYTES, int(free_memory(device) * BASIS_FREE_SHARE))
    cap = budget // max(1, n * itemsize) - 1
    return max(2 * k + 1, min(DEFAULT_NCV, cap))


def _progress_fn(
    progress: ProgressArg, total: int, desc: str
) -> tuple[Callable[[int], None], Callable[[], None]]:
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="HVP", leave=False)

        def update(done: int) -> None:
            bar.update(done - bar.n)

        return update, bar.close
    return (lambda done: None), (lambda: None)


def eigsh(
    H: Any,
    k: int = 6,
    which: Which = "BE",
    tol: float = 1e-5,
    maxiter: int | None = None,
    seed: int | torch.Generator | None = 0,
    return_eigenvectors: bool = True,
    *,
    ncv: int | None = None,
    v0: torch.Tensor | None = None,
    progress: ProgressArg = False,
) -> EigenResult:
    """``k`` extreme eigenpairs of a symmetric operator by thick-restart Lanczos.

    Parameters
    ----------
    H : HessianOperator, operator-like or torch.Tensor
        Symmetric operator of shape ``(n, n)``: anything with ``shape``,
        ``dtype``, ``device`` and ``matmat``, or a dense tensor.
    k : int
        Number of eigenpairs, ``1 ≤ k ≤ n``.
    which : {"LA", "SA", "BE", "LM"}
        Largest algebraic, smallest algebraic (most negative), both ends
        (``k // 2`` from the bottom, the rest from the top), or largest in
        magnitude.
    tol : float
        Relative tolerance: a pair converged when its residual
        ``‖Hu − θu‖ ≤ tol · max|θ|``. Values below ``50·eps`` of the
        operator's dtype are raised to it (rounding makes them unreachable).
    maxiter : int, optional
        Most Hessian-vector products to spend; default ``max(1000, 30·ncv)``.
        When reached, the best pairs are returned with ``converged`` False.
    seed : int, torch.Generator or None
        Seed of the random start vector (drawn on the CPU).
    return_eigenvectors : bool
        Whether to return the Ritz vectors (memory ``n × k``).
    ncv : int, optional
        Size of the Krylov basis, ``k < ncv ≤ n``; default ``max(2k + 1, 160)``,
        lowered only where the basis would exceed both 256 MiB and an eighth
        of the free memory (:func:`default_ncv`). Memory is
        ``n × (ncv + 1)`` numbers; a larger basis restarts less often.
    v0 : torch.Tensor, optional
        Start vector of shape ``(n,)`` instead of a random one.
    progress : bool or callable
        ``True`` shows a progress bar (in HVPs); a callable gets
        ``(num_matvecs, maxiter)``.

    Returns
    -------
    EigenResult
        Eigenvalues ascending, with residuals, convergence flags and the
        number of products spent.

    Examples
    --------
    >>> import torch, critpoint as cp
    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> r = cp.eigsh(A, k=2, which="LA", tol=1e-10)
    >>> [round(float(x), 6) for x in r.eigenvalues]
    [99.0, 100.0]
    """
    op = as_operator(H)
    n = int(op.shape[0])
    if which not in ("LA", "SA", "BE", "LM"):
        msg = f"which must be one of 'LA', 'SA', 'BE', 'LM', got {which!r}"
        raise InputError(msg)
    if not isinstance(k, int) or k < 1 or k > n:
        msg = f"k must be an int with 1 <= k <= n={n}, got {k!r}"
        raise InputError(msg)
    if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
        msg = f"tol must be a finite number >= 0, got {tol!r}"
        raise InputError(msg)
    dtype, device = op.dtype, op.device
    if dtype not in (torch.float32, torch.float64):
        msg = f"eigsh needs a float32 or float64 operator, got {dtype}; build the objective with dtype=torch.float32 or torch.float64"
        raise InputError(msg)
    eff_tol = max(float(tol), 50 * torch.finfo(dtype).eps)
    floor_eps = 4 * torch.finfo(dtype).eps
    if ncv is None:
        ncv = default_ncv(k, n, dtype, device)
    m = min(int(ncv), n)
    if m <= k and m < n:
        msg = f"ncv must satisfy k < ncv <= n (k={k}, n={n}), got {ncv}"
        raise InputError(msg)
    if maxiter is None:
        maxiter = max(1000, 30 * m)
    if maxiter < m:
        # A budget smaller than the basis: shrink the basis to fit it.
        m = max(min(m, maxiter), min(k + 1, n))
        maxiter = max(maxiter, m)
    gen = make_generator(seed)
    if v0 is None:
        q = randn((n,), gen, dtype, device)
    else:
        if not isinstance(v0, torch.Tensor) or v0.shape != (n,):
            msg = f"v0 must be a tensor of shape ({n},), got {getattr(v0, 'shape', type(v0))}"
            raise InputError(msg)
        q = v0.to(device=device, dtype=dtype).clone()
    q_norm = torch.linalg.vector_norm(q)
    if q_norm == 0:
        msg = "v0 must be non-zero"
        raise InputError(msg)
    q = q / q_norm

    Q = torch.zeros((n, m + 1), dtype=dtype, device=device)
    Q[:, 0] = q
    # The small projected problem is solved on the host in float64 (NumPy),
    # whatever the device of the basis.
    T = np.zeros((m, m))
    start = 0  # index of the first column to expand (the kept vectors come before)
    num_matvecs = 0
    restarts = 0
    scale = 0.0
    # Keep the wanted pairs plus a quarter of the rest (measured better than a half
    # for large bases); small bases keep half, to retain enough of the space.
    keep_count = min(m - 1, k + (m - k) // (4 if m >= 40 else 2))
    update, close = _progress_fn(progress, maxiter, f"Lanczos ({which})")
    try:
        while True:
            for j in range(start, m):
                w = op.matmat(Q[:, j : j + 1])[:, 0]
                num_matvecs += 1
                w, h = _orthogonalise(w, Q[:, : j + 1])
                # One host transfer per step: α and β for the tridiagonal. NaN/Inf
                # anywhere in Hq reaches both (Inf − Inf is NaN), so they carry the check.
                alpha, beta = torch.stack(
                    [h[j].double(), torch.linalg.vector_norm(w).double()]
                ).tolist()
                if not (math.isfinite(alpha) and math.isfinite(beta)):
                    msg = "the operator returned NaN/Inf inside Lanczos; check the model and data, or use float64"
                    raise NonFiniteError(msg)
                T[j, j] = alpha
                scale = max(scale, abs(alpha), beta)
                size = j + 1
                # An invariant subspace (β ≈ 0): its Ritz pairs are exact, but
                # eigenvalues outside it are unreachable from this basis, so the
                # run goes on with a fresh direction orthogonal to it.
                breakdown = beta <= 1e3 * torch.finfo(dtype).eps * max(scale, 1e-300)
                if breakdown:
                    beta = 0.0
                # Ritz pairs of the current basis: the small problem is cheap, so
                # convergence is checked after every product, not once per cycle.
                theta, S = np.linalg.eigh(T[:size, :size])
                scale = max(scale, abs(theta[0]), abs(theta[-1]))
                # β|s| is the residual in exact arithmetic; the products themselves
                # carry rounding of about eps·‖H‖, so the bound is floored there.
                residuals = np.maximum(np.abs(beta * S[size - 1, :]), floor_eps * scale)
                tol_abs = eff_tol * max(scale, 1e-300)
                order = _priority(theta, which)
                wanted = order[:k]
                done = (
                    size >= k
                    and not breakdown
                    and bool((residuals[wanted] <= tol_abs).all())
                )
                if done or size in (m, n) or num_matvecs >= maxiter:
                    break
                if breakdown:
                    Q[:, j + 1] = _fresh_direction(Q[:, : j + 1], gen)
                else:
                    Q[:, j + 1] = w / beta
                T[j + 1, j] = T[j, j + 1] = beta
            update(num_matvecs)
            if done or size == n or num_matvecs + (m - keep_count) > maxiter:
                break
            # Thick restart: keep the best Ritz vectors and the residual direction.
            resid_vec = w / beta if beta > 0 else _fresh_direction(Q[:, :m], gen)
            keep = order[:keep_count]
            Sk = torch.from_numpy(S[:, keep]).to(dtype=dtype, device=device)
            Q[:, :keep_count] = Q[:, :m] @ Sk
            Q[:, keep_count] = resid_vec
            Q[:, keep_count + 1 :] = 0
            T = np.zeros((m, m))
            T[:keep_count, :keep_count] = np.diag(theta[keep])
            coupling = beta * S[m - 1, keep]
            T[keep_count, :keep_count] = coupling
            T[:keep_count, keep_count] = coupling
            start = keep_count
            restarts += 1
    finally:
        close()

    # Wanted pairs, returned in ascending order of eigenvalue.
    wanted = wanted[np.argsort(theta[wanted], kind="stable")]
    vectors = None
    if return_eigenvectors:
        Sw = torch.from_numpy(S[:, wanted]).to(dtype=dtype, device=device)
        vectors = Q[:, :size] @ Sw
        vectors = vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
    res = torch.from_numpy(residuals[wanted].copy())
    converged = res <= tol_abs
    if not bool(converged.all()):
        logger.warning(
            "eigsh(which=%s, k=%d): %d of %d pairs converged to tol=%.1e after %d HVPs",
            which,
            k,
            int(converged.sum()),
            k,
            eff_tol,
            num_matvecs,
        )
    return EigenResult(
        eigenvalues=torch.from_numpy(theta[wanted].copy()),
        eigenvectors=vectors,
        residuals=res,
        converged=converged,
        num_matvecs=num_matvecs,
        num_restarts=restarts,
        which=which,
        tol=eff_tol,
        spectral_scale=scale,
        seed=seed if isinstance(seed, int) else None,
    )
