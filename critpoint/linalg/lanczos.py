"""Block Lanczos with deflation for the extreme eigenpairs of a symmetric operator.

The operator is touched only through block products ``H V`` (one ``matmat``
call per block step: on a GPU a block costs far less per vector than single
products). Every product is fully reorthogonalised (classical Gram–Schmidt,
a second pass where the first cancelled) against the basis, so Ritz values
do not duplicate ("ghosts") and the residual estimates equal the true
residuals ``‖Hu − θu‖`` to rounding. The recurrence itself is
:class:`critpoint.linalg._tridiag.BlockLanczos`.

**Multiplicities.** A Krylov space grown from ``p`` start vectors holds at
most ``p`` directions of any eigenspace, so a single-vector Lanczos run sees
an eigenvalue of multiplicity 3 once. ``eigsh`` therefore runs in
*generations*: when a run has found its wanted pairs (or its Krylov space is
exhausted), they are locked and, if a copy could still be missing, a new
run starts from fresh random vectors orthogonal to everything found, on the
operator deflated by the locked vectors. A copy can be missing only where a
run found as many converged pairs whose error intervals overlap as it had
start vectors, and only if that value is more extreme than the last one
returned; a new generation then has to converge its own most extreme Ritz
value before the answer stands. So the ``k`` returned values are the ``k``
extreme eigenvalues *counted with multiplicity*, for any block size.

**Exhausted spaces.** When a block product leaves nothing beyond rounding
(a residual direction below ``1000·eps`` times the spectrum's scale), the
space is invariant and its Ritz pairs are exact: they are locked at once and
the run goes on from fresh vectors only if something is still wanted. A zero
Hessian costs about ``k`` products, a Hessian of rank ``r`` about ``r + k``.

**Restarts.** When the basis is full the method restarts from the best Ritz
vectors (thick restart: Wu & Simon 2000), which keeps what it learnt and costs
no products. ``which`` only changes which Ritz values are wanted, so the most
negative eigenvalues (``"SA"``) cost the same as the largest (``"LA"``).

**Certificate.** Beside the residual bounds (distance from each Ritz value to
*some* eigenvalue), :meth:`EigenResult.extreme_bounds` bounds the whole
spectrum in probability over the random start (:mod:`critpoint.linalg._bounds`).

References
----------
C. Lanczos, "An iteration method for the solution of the eigenvalue problem of
linear differential and integral operators", J. Res. Nat. Bur. Standards 45, 1950.
G. H. Golub and R. Underwood, "The block Lanczos method for computing
eigenvalues", Mathematical Software III, 1977.
K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric
eigenvalue problems", SIAM J. Matrix Anal. Appl. 22(2), 2000.
B. N. Parlett, "The Symmetric Eigenvalue Problem", SIAM, 1998 (residual
bounds; deflation by locking, §13).
J. Kuczyński and H. Woźniakowski, "Estimating the largest eigenvalue by the
power and Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl.
13(4), 1992.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from critpoint import _checks
from critpoint._deprecation import UNSET, renamed
from critpoint._memory import free_memory
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.errors import InputError
from critpoint.linalg._bounds import (
    Certificate,
    StartRule,
    component_quantile,
    polynomial_top,
    start_rules,
)
from critpoint.linalg._convergence import ConvergencePlan, expected_products
from critpoint.linalg._operator import as_operator
from critpoint.linalg._random import make_generator, randn
from critpoint.linalg._tridiag import BlockLanczos, projected_eigh, storage_bytes

logger = logging.getLogger("critpoint")

Which = Literal["LA", "SA", "BE", "LM"]

#: Start vectors per block when ``block_size`` is not given and some end of
#: the spectrum wants more than one value (see benchmarks/README.md, "Block
#: size": of 1–4, the fewest products on every workload once multiplicities are
#: accounted for; a block of 1 must then start a second Krylov space to look
#: for copies). Where each end wants one value, a copy changes nothing and a
#: single vector is cheapest: see :func:`default_block_size`.
DEFAULT_BLOCK_SIZE = 2


def default_block_size(which: str, k: int) -> int:
    """The block size ``eigsh`` uses when ``block_size`` is not given.

    One vector when every end asks for one value (``k = 1``, or ``"BE"`` with
    ``k = 2``): another copy of that value would not change the answer, so
    nothing needs checking. :data:`DEFAULT_BLOCK_SIZE` otherwise.

    Parameters
    ----------
    which : {"LA", "SA", "BE", "LM"}
    k : int

    Returns
    -------
    int
    """
    if k == 1 or (which == "BE" and k == 2):
        return 1
    return DEFAULT_BLOCK_SIZE


@dataclass(frozen=True)
class EigenResult:
    """Extreme eigenpairs of a symmetric operator, with error bounds and a certificate.

    Attributes
    ----------
    eigenvalues : torch.Tensor
        Ritz values, float64 on the CPU, shape ``(k,)``, ascending: the ``k``
        wanted eigenvalues counted with multiplicity.
    eigenvectors : torch.Tensor or None
        Orthonormal Ritz vectors as columns, shape ``(n, k)``, on the
        operator's device and dtype, in the order of ``eigenvalues``.
    residuals : torch.Tensor
        ``‖Hu − θu‖`` for each pair, float64, shape ``(k,)``, floored at
        ``4·eps·‖H‖`` of the operator's dtype (the rounding of the products
        themselves). For a symmetric operator some true eigenvalue lies within
        this distance of each Ritz value, so it is an error bound.
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
        ``residual ≤ tol · spectral_scale``.
    spectral_scale : float
        The largest magnitude seen in the projected problem (Ritz values and
        recurrence coefficients, all at most ``‖H‖``): the scale the tolerance
        refers to.
    seed : int or None
        The seed, when an int was given.
    block_size : int
        Start vectors per Krylov space (columns per block product).
    num_starts : int
        Krylov spaces started: 1, plus one per deflation restart from fresh
        random vectors.
    n : int
        Dimension of the operator.
    krylov_steps : int
        Block steps of the first Krylov space before any restart: the degree
        every random start reached, which the certificate uses.
    ritz_min, ritz_max : float
        The smallest and largest Ritz values seen (Rayleigh quotients, so
        always inside ``[λ_min, λ_max]``).
    certificate : Certificate or None
        What :meth:`extreme_bounds` needs from the first Krylov space (each
        random start's Lanczos tridiagonal, ``n``, the block size, whether the
        space was exhausted); ``None`` without a random start.
    stop : {"residual", "eigenvalue"}
        The stopping rule (see :func:`eigsh`).
    eigenvalue_errors : torch.Tensor or None
        With ``stop="eigenvalue"``: each value's error estimate
        ``min(‖r‖, ‖r‖²/gap)`` (:func:`eigenvalue_errors`), what ``converged``
        was judged on; ``None`` otherwise. ``residuals`` stay the rigorous
        bounds.
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
    block_size: int = 1
    num_starts: int = 1
    n: int = 0
    krylov_steps: int = 0
    ritz_min: float = math.nan
    ritz_max: float = math.nan
    certificate: Certificate | None = field(default=None, repr=False, compare=False)
    stop: str = "residual"
    eigenvalue_errors: torch.Tensor | None = None

    @property
    def all_converged(self) -> bool:
        """Whether every returned pair met the tolerance."""
        return bool(self.converged.all())

    @property
    def error_bounds(self) -> torch.Tensor:
        """Rigorous bounds on ``|λ − θ|``: the residual norms, shape ``(k,)``."""
        return self.residuals

    def extreme_bounds(self, delta: float = 0.01) -> tuple[float, float]:
        """``(lo, hi)`` such that every eigenvalue of ``H`` lies in ``[lo, hi]`` w.p. ≥ ``1 − delta``.

        The probability is over the random start vectors of the first Krylov
        space (its ``block_size`` Gaussian columns, each run ``krylov_steps``
        block steps). Always ``lo ≤ ritz_min`` and ``hi ≥ ritz_max``. Two
        bounds share ``delta`` (a quarter per end each) and the tighter one is
        given:

        * Kuczyński & Woźniakowski (1992), Theorem 4.2: ``d`` Lanczos steps
          from a uniformly random unit start miss ``λ_max`` by more than
          ``ε (λ_max − λ_min)`` with probability at most
          ``1.648 √n e^{−√ε (2d−1)}``; a block of ``p`` independent starts
          fails only if all do, so the probability is its ``p``-th power.
        * van Dorsselaer, Hochstenbach & van der Vorst (2000): the Lanczos
          polynomial ``p_d`` of each start ``b`` satisfies
          ``|p_d(λ_max)|·|u_maxᵀb| ≤ ‖p_d(H) b‖ = β_1⋯β_d``, and
          ``(u_maxᵀb)² ~ Beta(½, (n−1)/2)``; this bound tightens as the Ritz
          values converge.

        An exhausted first space (an invariant subspace) gives its Ritz
        extremes themselves (almost surely the extreme eigenvalues).

        Parameters
        ----------
        delta : float
            Failure probability, ``0 < delta < 1``.

        Returns
        -------
        (float, float)

        Raises
        ------
        InputError
            If ``delta`` is outside ``(0, 1)``, or the run had no random start
            (a single start vector ``v0`` was given).
        """
        if not (isinstance(delta, (int, float)) and 0 < delta < 1):
            msg = f"delta must lie strictly between 0 and 1, got {delta!r}"
            raise InputError(msg)
        if self.certificate is None:
            msg = (
                "this run has no random start vector to give a probability over "
                "(v0 was given with block_size=1); run eigsh without v0, or with block_size >= 2"
            )
            raise InputError(msg)
        return self.certificate.bounds(self.ritz_min, self.ritz_max, float(delta))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (eigenvectors left out)."""
        out = {
            "eigenvalues": [float(x) for x in self.eigenvalues],
            "residuals": [float(x) for x in self.residuals],
            "converged": [bool(x) for x in self.converged],
            "num_matvecs": self.num_matvecs,
            "num_restarts": self.num_restarts,
            "which": self.which,
            "tol": self.tol,
            "spectral_scale": self.spectral_scale,
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            "block_size": self.block_size,
            "num_starts": self.num_starts,
            "krylov_steps": self.krylov_steps,
            "ritz_min": self.ritz_min,
            "ritz_max": self.ritz_max,
            "stop": self.stop,
        }
        if self.eigenvalue_errors is not None:
            out["eigenvalue_errors"] = [float(x) for x in self.eigenvalue_errors]
        if self.certificate is not None:
            lo, hi = self.extreme_bounds(0.01)
            out["extreme_bounds"] = {"delta": 0.01, "lo": lo, "hi": hi}
        return out


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


@dataclass(frozen=True)
class _End:
    """One end of the spectrum and how many values it wants.

    ``side`` is ``"top"`` (largest first), ``"bottom"`` (smallest first) or
    ``"magnitude"`` (largest ``|λ|`` first).
    """

    side: str
    slots: int

    def key(self, values: np.ndarray) -> np.ndarray:
        """Smaller key = more wanted."""
        if self.side == "top":
            return -values
        if self.side == "bottom":
            return values
        return -np.abs(values)

    def beyond(self, lo: float, hi: float, value: float, error: float) -> bool:
        """Whether ``[lo, hi]`` may hold a value more wanted than ``value ± error``."""
        if self.side == "top":
            return hi > value + error
        if self.side == "bottom":
            return lo < value - error
        return max(abs(lo), abs(hi)) > abs(value) + error


def _ends(which: str, k: int) -> list[_End]:
    """The ends ``which`` asks for; ``BE`` takes ``k − k//2`` from the top first."""
    if which == "LA":
        return [_End("top", k)]
    if which == "SA":
        return [_End("bottom", k)]
    if which == "LM":
        return [_End("magnitude", k)]
    ends = [_End("top", k - k // 2), _End("bottom", k // 2)]
    return [e for e in ends if e.slots > 0]


def _select(
    ends: list[_End], values: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per end, ``(wanted, order)``: its most wanted indices and all unclaimed ones in order.

    Ties keep the input order (found pairs come first, so a new copy of a
    value already held does not displace it).
    """
    claimed = np.zeros(values.shape[0], dtype=bool)
    out = []
    for end in ends:
        order = np.argsort(end.key(values), kind="stable")
        order = order[~claimed[order]]
        wanted = order[: end.slots]
        claimed[wanted] = True
        out.append((wanted, order))
    return out


@dataclass
class _Found:
    """Locked pairs: values, error bounds and the Krylov space that found them."""

    values: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    reducible: list[float] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    judged: list[float] = field(default_factory=list)

    def add(
        self,
        values: np.ndarray,
        errors: np.ndarray,
        reducible: np.ndarray,
        start: int,
        judged: np.ndarray | None = None,
    ) -> None:
        self.values.extend(float(x) for x in values)
        self.errors.extend(float(x) for x in errors)
        self.reducible.extend(float(x) for x in reducible)
        self.start.extend([start] * len(values))
        self.judged.extend(float(x) for x in (errors if judged is None else judged))

    def copy(self) -> _Found:
        return _Found(
            list(self.values),
            list(self.errors),
            list(self.reducible),
            list(self.start),
            list(self.judged),
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.array(self.values, dtype=np.float64),
            np.array(self.errors, dtype=np.float64),
            np.array(self.start, dtype=np.int64),
        )


@dataclass
class _Needs:
    """What the current Krylov space must still deliver (see :func:`_requirements`)."""

    wanted: np.ndarray  # its Ritz values that would be returned
    checks: list[
        tuple[int, int, float, float]
    ]  # (end, next Ritz index, last value, its error)
    complete: bool  # enough Ritz values to fill every slot and check every end


def _requirements(
    ends: list[_End],
    found: _Found,
    theta: np.ndarray,
    residuals: np.ndarray,
    verify: list[bool],
) -> _Needs:
    """Which Ritz values of the current space must converge before it is done.

    Every Ritz value that would be returned (among the ``k`` most wanted of
    the locked values and the current ones); and, for an end still to be
    checked, also the current space's most wanted value that would *not* be
    returned: until it has converged (or a bound rules out anything beyond
    the last returned value), it may still move past that value (a missed
    copy, or an eigenvalue beyond).
    """
    nf = len(found.values)
    values = np.concatenate([np.array(found.values), theta])
    errors = np.concatenate([np.array(found.errors), residuals])
    wanted_all: list[int] = []
    checks = []
    complete = True
    for e, (end, check, (wanted, order)) in enumerate(
        zip(ends, verify, _select(ends, values), strict=True)
    ):
        current = [int(i) - nf for i in wanted if i >= nf]
        wanted_all.extend(current)
        if wanted.shape[0] < end.slots:
            complete = False
        if check and len(current) < end.slots and wanted.shape[0]:
            rest = [int(i) - nf for i in order[end.slots :] if i >= nf]
            last = int(wanted[-1])
            if rest:
                checks.append((e, rest[0], float(values[last]), float(errors[last])))
            else:
                complete = False
    return _Needs(np.array(sorted(set(wanted_all)), dtype=np.int64), checks, complete)


def _copies_may_be_missing(
    ends: list[_End], found: _Found, start: int, width: int, floor: float
) -> list[bool]:
    """Per end: may the Krylov space ``start`` (of ``width`` start vectors) have missed a copy.

    A Krylov space of ``width`` start vectors holds at most ``width``
    directions of an eigenspace. If it locked that many pairs whose error
    intervals overlap, more copies may exist; that matters only for a value
    more extreme than the last one returned (another copy of the last value
    would not change the values). An end whose slots are not all filled
    needs more in any case.
    """
    values, errors, starts = found.arrays()
    need = []
    for end, (wanted, _) in zip(ends, _select(ends, values), strict=True):
        if wanted.shape[0] < end.slots:
            need.append(True)
            continue
        last = int(wanted[-1])

        def overlap(i: int, j: int) -> bool:
            return abs(values[i] - values[j]) <= errors[i] + errors[j] + floor

        mine = np.flatnonzero(starts == start)
        more = False
        for i in wanted:
            if starts[i] != start or overlap(int(i), last):
                continue
            if sum(overlap(int(i), int(j)) for j in mine) >= width:
                more = True
                break
        need.append(more)
    return need


#: The Krylov basis may always take this much memory, whatever is free.
BASIS_FLOOR_BYTES = 256 * 2**20
#: ... or this share of the free memory where it lives, if that is more.
BASIS_FREE_SHARE = 1 / 8
#: The default basis size when memory allows.
DEFAULT_NCV = 160


def default_ncv(
    k: int, n: int, dtype: torch.dtype, device: torch.device, block_size: int = 1
) -> int:
    """The Krylov basis size ``eigsh`` uses when ``ncv`` is not given.

    A larger basis means fewer restarts, and each restart throws information
    away: the bottom of a trained network's spectrum is a tight cluster next to
    the bulk (bottom-5 of the trained 85k-parameter digits MLP at tol 1e-4:
    307 HVPs at ncv=40, 193 at 80, 112 at 160, unrestarted, and less time too;
    the trained 2.2M-parameter MLP: 292 HVPs at the 29 vectors that 256 MiB
    holds, 63 at 160). So the default is ``max(2k + 1, 160)`` vectors, lowered
    only where the storage (``n × (ncv + block_size)`` numbers) would exceed
    both 256 MiB and an eighth of the free memory on ``device``.

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
    block_size : int
        Columns per block: the storage holds ``ncv`` basis vectors and one block more.

    Returns
    -------
    int
        ``ncv``, at least ``2k + 1`` (``eigsh`` caps it at ``n``).
    """
    itemsize = torch.finfo(dtype).bits // 8
    budget = max(BASIS_FLOOR_BYTES, int(free_memory(device) * BASIS_FREE_SHARE))
    cap = budget // max(1, n * itemsize) - block_size
    return max(2 * k + 1, min(DEFAULT_NCV, cap))


def _check_block_size(block_size: object, n: int, which: str, k: int) -> int:
    if block_size is None:
        return min(default_block_size(which, k), n)
    size = _checks.positive_int(block_size, "block_size", "or None for the default")
    return min(size, n)


def eigsh(
    H: Any,
    k: int = 6,
    which: Which = "BE",
    tol: float = 1e-5,
    max_matvecs: int | None = None,
    seed: int | torch.Generator | None = 0,
    return_eigenvectors: bool = True,
    *,
    ncv: int | None = None,
    v0: torch.Tensor | None = None,
    block_size: int | None = None,
    progress: ProgressArg = False,
    stop: str = "residual",
    maxiter: Any = UNSET,
    basis: str | torch.device | None = None,
) -> EigenResult:
    """The ``k`` extreme eigenvalues, counted with multiplicity, by block Lanczos with deflation.

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
        ``‖Hu − θu‖ ≤ tol · spectral_scale``. Values below ``50·eps`` of the
        operator's dtype are raised to it (rounding makes them unreachable).
    max_matvecs : int, optional
        Most Hessian-vector products to spend (the final Rayleigh–Ritz
        refinement included); default ``max(1000, 30·ncv)``. When reached, the
        best pairs are returned with ``converged`` False.
    seed : int, torch.Generator or None
        Seed of the random start vectors (drawn on the CPU, so the same on
        every device).
    return_eigenvectors : bool
        Whether to return the Ritz vectors (memory ``n × k``).
    ncv : int, optional
        Size of the Krylov basis, ``k < ncv ≤ n``; default ``max(2k + 1, 160)``,
        lowered only where the storage would exceed both 256 MiB and an
        eighth of the free memory (:func:`default_ncv`). Memory is
        ``n × (ncv + block_size)`` numbers, locked vectors included; a larger
        basis restarts less often.
    v0 : torch.Tensor, optional
        Start vector of shape ``(n,)`` instead of the first random one. With
        ``block_size=1`` the run has no random start, and no
        :meth:`EigenResult.extreme_bounds`.
    block_size : int, optional
        Start vectors per Krylov space: each step is one ``matmat`` call on a
        block of this many columns. Default :func:`default_block_size`: 1
        when every end wants one value (``k = 1``, or ``"BE"`` with ``k = 2``),
        else 2.
        Any block size gives the same eigenvalues (multiplicities beyond the
        block are found by deflation); it changes the cost.
    progress : bool, callable or None
        ``True`` shows a progress bar (in HVPs); a callable gets
        ``(num_matvecs, max_matvecs)``; ``False`` or ``None``: silent.
    stop : {"residual", "eigenvalue"}
        ``"residual"`` (default): a pair converged when its residual is at
        most ``tol · spectral_scale``. ``"eigenvalue"``: when its eigenvalue's
        own error estimate is (:func:`eigenvalue_errors`: ``‖r‖²/gap``,
        Kato–Temple, where the gap to the neighbouring Ritz values is
        reliable; the residual otherwise, never looser). The residual
        overstates the eigenvalue error quadratically, so this stops sooner
        for the same accuracy of the *values*; the eigenvectors and the
        reported ``residuals`` are looser, and the rule cannot see an
        eigenvalue the Krylov space has not found (neither can the residual
        rule).
    maxiter : int, optional
        Deprecated name of ``max_matvecs`` (a ``DeprecationWarning``; removed
        in the next release). Unlike scipy's ``maxiter`` it never counted
        restarts.
    basis : str or torch.device, optional
        Where the Krylov basis lives; default the operator's device. ``"cpu"``
        for an operator on a GPU keeps it in host memory (the same numbers;
        only the blocks the operator multiplies cross to the GPU).

    Returns
    -------
    EigenResult
        Eigenvalues ascending, with residuals, convergence flags, the number
        of products spent and a certificate on the whole spectrum.

    Examples
    --------
    >>> import torch, critpoint as cp
    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> r = cp.eigsh(A, k=2, which="LA", tol=1e-10)
    >>> [round(float(x), 6) for x in r.eigenvalues]
    [99.0, 100.0]
    >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 3.0, 3.0], dtype=torch.float64))
    >>> [round(float(x), 6) for x in cp.eigsh(A, k=3, which="LA", tol=1e-10).eigenvalues]
    [3.0, 3.0, 3.0]
    """
    max_matvecs = renamed("eigsh", "maxiter", "max_matvecs", maxiter, max_matvecs, None)
    op = as_operator(H)
    n = int(op.shape[0])
    if which not in ("LA", "SA", "BE", "LM"):
        msg = f"which must be one of 'LA', 'SA', 'BE', 'LM', got {which!r}"
        raise InputError(msg)
    if not isinstance(k, int) or k < 1 or k > n:
        msg = f"k must be an int with 1 <= k <= n={n}, got {k!r}"
        raise InputError(msg)
    tol = _checks.finite_float(tol, "tol", minimum=0.0)
    check_progress(progress)
    if stop not in STOPS:
        msg = f"stop must be one of {STOPS}, got {stop!r}"
        raise InputError(msg)
    dtype, device = op.dtype, op.device
    if dtype not in (torch.float32, torch.float64):
        msg = f"eigsh needs a float32 or float64 operator, got {dtype}; build the objective with dtype=torch.float32 or torch.float64"
        raise InputError(msg)
    p = _check_block_size(block_size, n, which, k)
    eff_tol = max(float(tol), 50 * torch.finfo(dtype).eps)
    floor_eps = 4 * torch.finfo(dtype).eps
    if ncv is None:
        ncv = default_ncv(k, n, dtype, device, p)
    ncv = _checks.positive_int(ncv, "ncv", "or None for the default")
    m = min(int(ncv), n)
    if m <= k and m < n:
        msg = f"ncv must satisfy k < ncv <= n (k={k}, n={n}), got {ncv}"
        raise InputError(msg)
    if max_matvecs is None:
        max_matvecs = max(1000, 30 * m)
    max_matvecs = _checks.positive_int(
        max_matvecs, "max_matvecs", "or None for the default"
    )
    if max_matvecs < m:
        # A budget smaller than the basis: shrink the basis to fit it.
        m = max(min(m, max_matvecs), min(k + 1, n))
    gen = make_generator(seed)
    if v0 is not None:
        if not isinstance(v0, torch.Tensor) or v0.shape != (n,):
            msg = f"v0 must be a tensor of shape ({n},), got {getattr(v0, 'shape', type(v0))}"
            raise InputError(msg)
        if not bool(torch.any(v0 != 0)):
            msg = "v0 must be non-zero"
            raise InputError(msg)

    # The storage holds the basis, one block beyond it, and the locked vectors.
    kry = BlockLanczos(op, capacity=min(n, m + p), storage=basis)
    ends = _ends(which, k)
    found = _Found()
    verify = [True] * len(ends)
    certificate: Certificate | None = None
    krylov_steps = 0
    ritz_lo, ritz_hi = math.inf, -math.inf
    restarts = 0
    starts = 0
    out_of_budget = False
    theta = np.zeros(0)
    S = np.zeros((0, 0))
    residuals = reducible = np.zeros(0)
    bar = Progress(progress, max_matvecs, f"Lanczos ({which})")
    # The bar counts the products planned, revised as the residuals fall.
    plan = ConvergencePlan(bar, expected_products(n, k, p, max_matvecs), max_matvecs)
    try:
        while True:
            # ---- a new Krylov space from fresh random vectors ⊥ all found
            starts += 1
            if starts > 1:
                plan.new_space(kry.num_matvecs)
            kry.reset()
            Z = randn((n, p), gen, dtype, device)
            random_cols = list(range(p))
            if starts == 1 and v0 is not None:
                Z[:, 0] = v0.to(device=device, dtype=dtype)
                random_cols = random_cols[1:]
            B0 = kry.add_block(Z)
            width = kry.width
            if width == 0:
                break  # the locked vectors span everything that is left
            first_cycle = True
            exhausted = False
            tight = False  # converging the pairs to lock below the tolerance
            while True:
                if kry.num_matvecs + kry.width > max_matvecs:
                    out_of_budget = True
                    break
                if (
                    kry.num_done > 0
                    and kry.used + kry.width > kry.capacity
                    and kry.capacity < n
                ):
                    if first_cycle and starts == 1:
                        certificate, krylov_steps = _certify(kry, B0, random_cols, p)
                    first_cycle = False
                    keep = _keep(theta, which, k, kry, p)
                    kry.restart(theta, S, keep)
                    restarts += 1
                kry.step()
                bar.update(kry.num_matvecs)
                theta, S = kry.ritz()
                total, reducible = kry.residual_norms(S)
                residuals = np.maximum(total, floor_eps * kry.scale)
                reducible = np.maximum(reducible, floor_eps * kry.scale)
                ritz_lo = min(ritz_lo, float(theta[0]))
                ritz_hi = max(ritz_hi, float(theta[-1]))
                exhausted = kry.width == 0
                if exhausted:
                    break
                tol_abs = eff_tol * max(kry.scale, 1e-300)
                lock_tol = max(LOCK_SHARE * tol_abs, 25 * floor_eps * kry.scale / 4)
                needs = _requirements(ends, found, theta, residuals, verify)
                # Convergence is judged on what more steps can reduce; the
                # reported bound (``residuals``) keeps the locked coupling too.
                target = lock_tol if tight else tol_abs
                judged = (
                    reducible
                    if stop == "residual"
                    else eigenvalue_errors(theta, reducible)
                )
                plan.observe(kry.num_matvecs, kry.width, _worst(needs, judged, target))
                if not (
                    needs.complete and bool((judged[needs.wanted] <= target).all())
                ):
                    continue
                open_checks = [c for c in needs.checks if reducible[c[1]] > tol_abs]
                if open_checks and first_cycle:
                    # An unconverged value may still pass the last returned
                    # one, unless a bound over this space's random start rules
                    # out anything beyond it.
                    lo, hi = _space_bounds(kry, B0, width, CHECK_DELTA)
                    open_checks = [
                        c for c in open_checks if ends[c[0]].beyond(lo, hi, c[2], c[3])
                    ]
                if open_checks:
                    continue
                if tight or bool((judged[needs.wanted] <= lock_tol).all()):
                    break
                # Done at the tolerance. If another space will follow, the pairs
                # to lock converge further first: a later space sees their
                # residuals as a floor on its own (through its coupling to them).
                lock = _lock_set(
                    ends, found, theta, reducible, lock_tol, kry, k, p, which
                )
                trial = found.copy()
                trial.add(theta[lock], residuals[lock], reducible[lock], starts)
                if not any(
                    _copies_may_be_missing(
                        ends, trial, starts, width, floor_eps * kry.scale
                    )
                ):
                    break
                tight = True
            if first_cycle and starts == 1:
                certificate, krylov_steps = _certify(kry, B0, random_cols, p)
            if out_of_budget:
                break
            # ---- lock what this space found: the wanted pairs and, room
            # permitting, every other one converged well below the tolerance
            # (all of them, exact, when the space is exhausted)
            tol_abs = eff_tol * max(kry.scale, 1e-300)
            lock_tol = max(LOCK_SHARE * tol_abs, 25 * floor_eps * kry.scale / 4)
            lock = _lock_set(
                ends,
                found,
                theta,
                np.zeros_like(reducible) if exhausted else reducible,
                lock_tol,
                kry,
                k,
                p,
                which,
            )
            if lock.size:
                judged_all = (
                    residuals
                    if stop == "residual"
                    else np.minimum(residuals, eigenvalue_errors(theta, reducible))
                )
                found.add(
                    theta[lock],
                    residuals[lock],
                    reducible[lock],
                    starts,
                    judged_all[lock],
                )
                kry.lock(S[:, lock])
            theta, S = np.zeros(0), np.zeros((0, 0))
            residuals = reducible = np.zeros(0)
            if kry.num_locked >= n:
                break
            verify = _copies_may_be_missing(
                ends, found, starts, width, floor_eps * kry.scale
            )
            logger.debug(
                "eigsh: Krylov space %d locked %d pairs after %d HVPs; check again: %s",
                starts,
                lock.size,
                kry.num_matvecs,
                verify,
            )
            if not any(verify):
                break
            if lock.size == 0 and not exhausted:
                break  # nothing new came of this space: nothing is missing
    finally:
        bar.close()

    # ---- the answer: the k most wanted of the locked pairs and the current ones
    nf = len(found.values)
    values = np.concatenate([np.array(found.values), theta])
    errors = np.concatenate([np.array(found.errors), residuals])
    picked = np.concatenate([wanted for wanted, _ in _select(ends, values)])
    picked = picked[np.argsort(values[picked], kind="stable")]
    scale = kry.scale
    tol_abs = eff_tol * max(scale, 1e-300)
    cols = [
        kry.locked[:, int(i)] if i < nf else kry.vectors(S[:, [int(i) - nf]])[:, 0]
        for i in picked
    ]
    vectors = torch.stack(cols, dim=1)
    del cols  # one copy of the returned vectors, not three (eigsh_memory)
    vectors /= torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
    chosen, bounds = values[picked], errors[picked]
    reducible_found = np.array(found.reducible + [math.inf] * theta.size)[picked]
    if (
        bool(((bounds > tol_abs) & (reducible_found <= tol_abs)).any())
        and kry.num_matvecs + picked.size <= max_matvecs
    ):
        # A pair found after deflation is bounded through its coupling to the
        # locked vectors (their residuals), which no step reduces. One block
        # product measures the returned pairs' residuals directly instead,
        # after a Rayleigh–Ritz step on their span.
        chosen, vectors, bounds = _refine(op, vectors, floor_eps * scale)
        kry.num_matvecs += picked.size
    res = torch.from_numpy(np.ascontiguousarray(bounds))
    estimates = None
    if stop == "eigenvalue":
        current = (
            np.minimum(residuals, eigenvalue_errors(theta, reducible))
            if theta.size
            else theta
        )
        judged_picked = np.concatenate([np.array(found.judged), current])[picked]
        estimates = torch.from_numpy(
            np.ascontiguousarray(np.minimum(judged_picked, bounds))
        )
        converged = estimates <= tol_abs
    else:
        converged = res <= tol_abs
    if not return_eigenvectors:
        vectors = None
    if not bool(converged.all()):
        logger.warning(
            "eigsh(which=%s, k=%d): %d of %d pairs converged to tol=%.1e after %d HVPs",
            which,
            k,
            int(converged.sum()),
            k,
            eff_tol,
            kry.num_matvecs,
        )
    return EigenResult(
        eigenvalues=torch.from_numpy(np.ascontiguousarray(chosen)),
        eigenvectors=vectors,
        residuals=res,
        converged=converged,
        num_matvecs=kry.num_matvecs,
        num_restarts=restarts,
        which=which,
        tol=eff_tol,
        spectral_scale=scale,
        seed=seed if isinstance(seed, int) else None,
        block_size=p,
        num_starts=starts,
        n=n,
        krylov_steps=krylov_steps,
        ritz_min=ritz_lo if math.isfinite(ritz_lo) else 0.0,
        ritz_max=ritz_hi if math.isfinite(ritz_hi) else 0.0,
        certificate=certificate,
        stop=stop,
        eigenvalue_errors=estimates,
    )


def _worst(needs: _Needs, reducible: np.ndarray, target: float) -> float | None:
    """The largest residual of the wanted Ritz pairs over ``target`` (for the plan)."""
    if not needs.complete or needs.wanted.size == 0:
        return None
    return float(reducible[needs.wanted].max()) / target


#: The stopping rules of :func:`eigsh`.
STOPS = ("residual", "eigenvalue")
#: A gap counts only when the neighbouring Ritz values' residuals, and the
#: value's own, are at most this share of it: both in the asymptotic regime
#: (measured on planted spectra: 0.5 stopped on a wrong eigenvalue in 8 of
#: 120 runs at tol 1e-2, 0.1 in 2, as many as the residual rule).
GAP_GUARD = 0.1


def eigenvalue_errors(
    theta: np.ndarray, residuals: np.ndarray, guard: float = GAP_GUARD
) -> np.ndarray:
    """Each Ritz value's eigenvalue error estimate: ``min(r, r²/gap)``, safeguarded.

    For a Ritz pair ``(θ, y)`` with residual ``r`` and an interval
    ``(θ − δ, θ + δ)`` that holds exactly one eigenvalue ``λ``,
    ``|λ − θ| ≤ r²/δ`` (Kato 1949, Temple 1929; Parlett, *The Symmetric
    Eigenvalue Problem*, §10.6): the residual overstates the eigenvalue error
    quadratically. The gap ``δ`` is estimated from the neighbouring Ritz
    values on each side as their distance minus their own residual, and is
    trusted only when every neighbour's residual is at most ``guard`` times
    its distance (its own interval stays clear of ``θ``) and ``θ``'s own
    residual at most ``guard`` times the gap; otherwise the estimate is the
    residual itself, so it is never looser than the residual bound. The extreme Ritz values have a neighbour on one side only (no
    eigenvalue lies beyond ``λ_max``). What no rule can see is an eigenvalue
    the Krylov space has not found yet, between ``θ`` and its neighbour.

    Parameters
    ----------
    theta : numpy.ndarray
        Ritz values, ascending, shape ``(m,)``.
    residuals : numpy.ndarray
        Their residual norms, shape ``(m,)``.
    guard : float
        Largest neighbour residual, as a share of its distance, for its gap to count.

    Returns
    -------
    numpy.ndarray
        Shape ``(m,)``, each at most the residual.
    """
    theta = np.asarray(theta, dtype=np.float64)
    r = np.asarray(residuals, dtype=np.float64)
    m = theta.size
    out = r.copy()
    if m < 2:
        return out
    gap = np.full(m, np.inf)
    ok = np.ones(m, dtype=bool)
    for shift in (-1, 1):
        j = np.arange(m) + shift
        has = (j >= 0) & (j < m)
        i = np.flatnonzero(has)
        jj = j[has]
        dist = np.abs(theta[i] - theta[jj])
        ok[i] &= r[jj] <= guard * dist
        gap[i] = np.minimum(gap[i], dist - r[jj])
    trusted = ok & (gap > 0) & (r <= guard * gap)
    out[trusted] = np.minimum(r[trusted], r[trusted] ** 2 / gap[trusted])
    return out


#: Pairs are locked once their residual is below this share of the tolerance
#: (when a later Krylov space will see them), so that their coupling to later
#: vectors stays below the tolerance.
LOCK_SHARE = 1 / 8


def _lock_set(
    ends: list[_End],
    found: _Found,
    theta: np.ndarray,
    reducible: np.ndarray,
    lock_tol: float,
    kry: BlockLanczos,
    k: int,
    p: int,
    which: str,
) -> np.ndarray:
    """Indices of the Ritz pairs to lock: the wanted ones, then others below ``lock_tol``.

    The others, most wanted first, only as far as they leave room for
    another Krylov space (unless nothing would be left to search).
    """
    nf = len(found.values)
    values = np.concatenate([np.array(found.values), theta])
    wanted = [
        int(i) - nf for chosen, _ in _select(ends, values) for i in chosen if i >= nf
    ]
    taken = set(wanted)
    others = [
        int(i)
        for i in _priority(theta, which)
        if int(i) not in taken and reducible[i] <= lock_tol
    ]
    room = kry.capacity - kry.num_locked - len(wanted)
    if kry.num_locked + len(wanted) + len(others) < kry.n:
        room -= min(room, max(2 * (k + 2 * p), 16))
    return np.array(sorted(wanted) + others[: max(room, 0)], dtype=np.int64)


def _refine(
    op: Any, U: torch.Tensor, floor: float
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Rayleigh–Ritz on the span of ``U`` (n, k) with one block product; true residuals.

    Returns the Ritz values (ascending), the Ritz vectors and ``‖Hu − θu‖``.
    """
    W = op.matmat(U).to(U.dtype)
    G = (U.T @ W).double().cpu().numpy()
    theta, V = projected_eigh(G)
    Vt = torch.from_numpy(V).to(dtype=U.dtype, device=U.device)
    U, W = U @ Vt, W @ Vt
    Th = torch.from_numpy(theta).to(dtype=U.dtype, device=U.device)
    res = torch.linalg.vector_norm(W - U * Th, dim=0).double().cpu().numpy()
    return theta, U, np.maximum(res, floor)


def _keep(
    theta: np.ndarray, which: str, k: int, kry: BlockLanczos, p: int
) -> np.ndarray:
    """Ritz pairs a thick restart keeps: the wanted ones and a share of the rest."""
    active = kry.capacity - kry.num_locked - p  # the basis size proper
    # Keep the wanted pairs plus a quarter of the rest (measured better than a
    # half for large bases); small bases keep half, to retain enough of the space.
    count = min(theta.size - 1, k + (active - k) // (4 if active >= 40 else 2))
    count = max(1, min(count, active - kry.width))
    return _priority(theta, which)[:count]


#: Failure probability of the bound that stops a Krylov space checking for
#: missed values (see :func:`_space_bounds`).
CHECK_DELTA = 1e-3


def _space_bounds(
    kry: BlockLanczos, B0: np.ndarray, width: int, delta: float
) -> tuple[float, float]:
    """Bounds on the spectrum of ``H`` deflated by the locked vectors, w.p. ``1 − delta``.

    The current space grew from ``width`` Gaussian vectors projected off the
    locked ones: uniform on the sphere of their complement, where the
    deflated operator acts as ``P[active, done]``. Each end gets ``delta``.
    """
    L = kry.num_locked
    M = kry.P[L : kry.used, kry.done]
    floor = kry.threshold()
    rules = start_rules(M, B0[:, :width], kry.num_steps, floor)
    dim = kry.n - L
    log_t = math.log(component_quantile(dim, delta ** (1.0 / len(rules))))
    hi = max(polynomial_top(rule, log_t) for rule in rules)
    lo = min(
        -polynomial_top(StartRule(-rule.theta[::-1], rule.log_beta), log_t)
        for rule in rules
    )
    return lo - floor, hi + floor


def _certify(
    kry: BlockLanczos, B0: np.ndarray, random_cols: list[int], p: int
) -> tuple[Certificate | None, int]:
    """The certificate of the first Krylov space, read off before it is restarted or locked."""
    steps = kry.num_steps
    if not random_cols or kry.num_done == 0:
        return None, steps
    M = kry.P[: kry.used, kry.done]
    floor = kry.threshold()
    rules = start_rules(M, B0[:, random_cols], steps, floor)
    cert = Certificate(
        n=kry.n,
        steps=steps,
        block_size=p,
        rules=tuple(rules),
        exhausted=kry.width == 0,
        slack=floor,
    )
    return cert, steps


def eigsh_memory(
    n: int, k: int, ncv: int, dtype: torch.dtype, block_size: int = 1
) -> tuple[int, int]:
    """Bytes :func:`eigsh` holds: ``(basis, working)``.

    The basis is the kernel's storage, ``n × min(n, ncv + block_size)``
    numbers (locked vectors included), where ``basis=`` puts it; the working
    memory, on the operator's device, is a block product and its
    reorthogonalisation (``3 × n × block_size``) during the steps and, at the
    end, the Ritz vectors with their refinement (``5 × n × k``): the larger
    of the two.

    Parameters
    ----------
    n, k, ncv : int
    dtype : torch.dtype
    block_size : int

    Returns
    -------
    (int, int)
    """
    basis = storage_bytes(n, min(n, ncv + block_size), dtype)
    working = storage_bytes(n, max(3 * block_size, 5 * k), dtype)
    return basis, working
