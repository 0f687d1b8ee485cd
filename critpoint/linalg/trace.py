"""Stochastic trace estimation from Hessian-vector products: Hutchinson, Hutch++.

The default, ``method="auto"``, picks between the two from the first third
of the budget: Hutch++ only pays when a few eigenvalues carry most of
``‖H‖_F²``, and on a flat spectrum (a network at initialisation) it is worse
than Hutchinson, since it spends two thirds of the budget on a low-rank part
that captures little.

References
----------
.. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the influence
   matrix for Laplacian smoothing splines", Commun. Statist. Simula. 19(2), 1990.
.. [2] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal
   stochastic trace estimation", SOSA 2021, arXiv:2010.09649.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from critpoint import _checks
from critpoint._deprecation import UNSET, renamed
from critpoint._finite import all_finite
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._operator import SymmetricOperator, as_operator
from critpoint.linalg._random import make_generator, rademacher, randn, seed_record
from critpoint.linalg._tridiag import storage_bytes

METHODS = ("auto", "hutchinson", "hutchpp")
_ALIASES = {"hutch++": "hutchpp"}
#: Columns per matmat call. It bounds the n × block working memory, and wide
#: vmapped blocks are slower per vector on a CPU (the digits CNN: 113 ms per
#: vector in blocks of 64, 72 in blocks of 16, 50 alone). The estimates do
#: not depend on it.
_BLOCK = 16


@dataclass(frozen=True)
class TraceEstimate:
    """An estimate of ``tr(H)``.

    Attributes
    ----------
    value : float
        The estimate, in eigenvalue units.
    stderr : float
        Standard error of ``value``: sample standard deviation of the
        Hutchinson samples over ``√(number of samples)``; ``0.0`` for an exact
        trace; ``inf`` when fewer than two Hutchinson samples were drawn.
    num_matvecs : int
        Hessian-vector products actually used.
    method : str
        ``"hutchinson"``, ``"hutchpp"`` or ``"exact"`` (identity basis, used
        when ``max_matvecs >= n``): what ran, also under ``method="auto"``.
    seed : int or None
        Seed of the probes (``None`` if a generator or no seed was given).
    """

    value: float
    stderr: float
    num_matvecs: int
    method: str
    seed: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (a non-finite ``stderr`` becomes ``None``)."""
        return {
            "value": float(self.value),
            "stderr": float(self.stderr) if math.isfinite(self.stderr) else None,
            "num_matvecs": int(self.num_matvecs),
            "method": self.method,
            "seed": self.seed,
        }


def trace(
    H: object,
    max_matvecs: int = 100,
    method: str = "auto",
    seed: int | torch.Generator | None = 0,
    progress: ProgressArg = False,
    *,
    num_matvecs: Any = UNSET,
    block_size: int | None = None,
) -> TraceEstimate:
    """Estimate ``tr(H)`` from at most ``max_matvecs`` Hessian-vector products.

    Parameters
    ----------
    H : HessianOperator, SymmetricOperator or torch.Tensor
        Symmetric operator of shape ``(n, n)``.
    max_matvecs : int
        Budget of Hessian-vector products. Below ``n`` it is spent exactly
        (every estimator here uses every product it is given: more probes,
        less variance), so the result's ``num_matvecs`` equals it. From
        ``max_matvecs >= n`` on the trace is computed exactly from the ``n``
        columns of the identity (in blocks), with ``stderr = 0``, ``method =
        "exact"`` and ``num_matvecs = n`` in the result.
    method : {"auto", "hutchpp", "hutchinson"}
        ``"auto"`` (the default): the first ``k = max_matvecs // 3`` products
        go to Rademacher probes ``S`` that serve both as Hutchinson samples
        and as a sketch ``HS``. From them it predicts the variance of each
        method with the budget left (Hutchinson: the sample variance of
        ``sᵢᵀHsᵢ``; Hutch++: ``2‖PHP‖_F²`` over its probes, with ``‖PHP‖_F²``
        bounded from a held-out half of the sketch) and goes on with the
        smaller: Hutch++ from the sketch already drawn, or more Hutchinson
        probes, the first ``k`` samples included. The result's ``method``
        says which ran. On clearly flat or clearly decaying spectra it picks
        the better method every time; where the two are about as good, the
        choice depends on the probes and biases the estimate a little (on
        the power-law spectrum ``λᵢ = i^−0.9``, n = 300, 45 products, where
        each method ran about half the time: a bias of −0.16 times the
        estimate's standard deviation, over 2000 seeds).
        ``"hutchinson"``: mean of ``zᵀHz`` over Rademacher probes ``z``.
        ``"hutchpp"`` (alias ``"hutch++"``): with ``k = max_matvecs // 3``,
        a Gaussian sketch ``S`` of ``k`` columns gives ``Q = orth(HS)``;
        ``tr(QᵀHQ)`` is exact (``k`` products) and Hutchinson with the
        remaining ``max_matvecs - 2k`` probes estimates the trace of
        ``(I − QQᵀ)H(I − QQᵀ)``. Its ``stderr`` is that of the Hutchinson part
        only (the sketch part is treated as fixed). Far more accurate than
        Hutchinson when a few eigenvalues dominate.
    seed : int, torch.Generator or None
        Seed of the probes, drawn on the CPU (same numbers on any device).
    progress : bool, callable or None
        ``True`` shows a progress bar (``tqdm.auto``); a callable is called as
        ``progress(matvecs_done, max_matvecs)`` after each block; ``False`` or
        ``None``: silent.
    num_matvecs : int, optional
        Deprecated name of ``max_matvecs`` (a ``DeprecationWarning``; removed
        in the next release).
    block_size : int, optional
        Columns per ``matmat`` call (default 16): with the sketch, what the
        run holds (:func:`trace_memory`). The estimate does not depend on it.

    Returns
    -------
    TraceEstimate

    Raises
    ------
    InputError
        If ``method`` is unknown, ``max_matvecs < 1`` or ``H`` is not square.
    NonFiniteError
        If a Hessian-vector product contains NaN or Inf.

    Notes
    -----
    Probe vectors are in the operator's dtype and device; the quadratic forms
    are accumulated in float64. Hutchinson holds a few blocks of probes;
    Hutch++ (and ``"auto"``) also the sketch ``HS`` and its orthonormal basis,
    ``2 × n × (max_matvecs // 3)`` numbers (see :func:`trace_memory`).

    References
    ----------
    .. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the
       influence matrix for Laplacian smoothing splines", 1990.
    .. [2] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal
       stochastic trace estimation", SOSA 2021.
    """
    key = _ALIASES.get(method, method) if isinstance(method, str) else method
    if key not in METHODS:
        msg = f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}"
        raise InputError(msg)
    budget = renamed(
        "trace", "num_matvecs", "max_matvecs", num_matvecs, max_matvecs, 100
    )
    budget = _checks.positive_int(budget, "max_matvecs", "use e.g. max_matvecs=100")
    check_progress(progress)
    block = _BLOCK if block_size is None else block_size
    block = _checks.positive_int(block, "block_size", "or None for the default")
    op = as_operator(H)
    n = int(op.shape[0])
    record = seed_record(seed)
    if budget >= n:
        bar = Progress(progress, n, "trace")
        try:
            value = _exact_trace(op, bar, block)
        finally:
            bar.close()
        return TraceEstimate(value, 0.0, n, "exact", record)

    gen = make_generator(seed)
    bar = Progress(progress, budget, "trace")
    try:
        if key == "hutchinson":
            samples = _hutchinson_samples(op, budget, gen, None, bar, 0, block)
            value, stderr = _mean_and_stderr(samples)
        elif key == "hutchpp":
            value, stderr = _hutchpp(op, budget, gen, bar, block)
        else:
            value, stderr, key = _adaptive(op, budget, gen, bar, block)
    finally:
        bar.close()
    return TraceEstimate(value, stderr, budget, key, record)


def _blocks(total: int, block: int) -> Iterator[tuple[int, int]]:
    """``(start, size)`` of consecutive blocks of at most ``block`` columns."""
    for start in range(0, total, block):
        yield start, min(block, total - start)


def _apply(op: SymmetricOperator, V: torch.Tensor) -> torch.Tensor:
    """``H @ V`` with a NaN/Inf check."""
    V = V.contiguous()
    W = op.matmat(V)
    if W.shape != V.shape:
        msg = f"the operator's matmat returned shape {tuple(W.shape)} for input {tuple(V.shape)}"
        raise InputError(msg)
    if not all_finite(W):
        msg = (
            "a Hessian-vector product contains NaN or Inf during trace estimation; "
            "the loss is not finite or not twice differentiable near these parameters: "
            "check obj.loss(), or try dtype=torch.float64"
        )
        raise NonFiniteError(msg)
    return W.to(V.dtype)


def _exact_trace(op: SymmetricOperator, bar: Progress, block: int) -> float:
    """``Σ_i e_iᵀ H e_i`` over the identity basis, in blocks of columns."""
    n = int(op.shape[0])
    total = 0.0
    for start, size in _blocks(n, block):
        E = torch.zeros((n, size), dtype=op.dtype, device=op.device)
        rows = torch.arange(start, start + size, device=op.device)
        E[rows, torch.arange(size, device=op.device)] = 1
        W = _apply(op, E)
        total += float(
            torch.sum(
                W[rows, torch.arange(size, device=op.device)], dtype=torch.float64
            )
        )
        bar.update(start + size)
    return total


def _hutchinson_samples(
    op: SymmetricOperator,
    count: int,
    gen: torch.Generator,
    Q: torch.Tensor | None,
    bar: Progress,
    done: int,
    block: int,
) -> torch.Tensor:
    """Draw samples ``zᵀ P H P z`` for ``count`` Rademacher ``z``, ``P = I − QQᵀ``.

    Returns a float64 CPU tensor of shape ``(count,)``.
    """
    n = int(op.shape[0])
    out = []
    for _start, size in _blocks(count, block):
        # Drawn as (size, n) so that each probe is a contiguous run of draws,
        # and kept so: the block is its transpose, each column contiguous.
        Z = rademacher((size, n), gen, op.dtype, op.device).T
        if Q is not None:
            Z = _project_out(Q, Z)
        W = _apply(op, Z)  # (Pz)ᵀ H (Pz) = zᵀ P H P z: P is a projector
        out.append(torch.sum(Z * W, dim=0, dtype=torch.float64).cpu())
        del Z, W  # before the next block is drawn: two blocks live, not four
        done += size
        bar.update(done)
    return torch.cat(out)


def _project_out(Q: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """``(I − QQᵀ) Z`` for orthonormal ``Q`` of shape ``(n, k)``, ``Z`` ``(n, b)``."""
    return Z - Q @ (Q.T @ Z)


def _mean_and_stderr(samples: torch.Tensor) -> tuple[float, float]:
    mean = float(samples.mean())
    if samples.numel() < 2:
        return mean, math.inf
    return mean, float(samples.std(correction=1)) / math.sqrt(samples.numel())


def _hutchpp(
    op: SymmetricOperator, m: int, gen: torch.Generator, bar: Progress, block: int
) -> tuple[float, float]:
    """Hutch++ with ``m // 3`` sketch products, as many for ``QᵀHQ``, the rest Hutchinson."""
    n = int(op.shape[0])
    k = m // 3
    if k == 0:
        return _mean_and_stderr(_hutchinson_samples(op, m, gen, None, bar, 0, block))
    # Drawn in one call: torch's Gaussian sampler pairs values across a call,
    # so drawing per block would tie the sketch to the block size.
    S = randn((k, n), gen, op.dtype, op.device).T
    sketch = [_products(op, S, bar, 0, block)]
    del S
    return _deflated(op, sketch, m, gen, bar, block)


def _products(
    op: SymmetricOperator, V: torch.Tensor, bar: Progress, done: int, block: int
) -> torch.Tensor:
    """``H V`` in blocks of columns, reporting progress from ``done`` products on."""
    out = torch.empty_like(V)
    for start, size in _blocks(V.shape[1], block):
        out[:, start : start + size] = _apply(op, V[:, start : start + size])
        bar.update(done + start + size)
    return out


def _deflated(
    op: SymmetricOperator,
    sketch: list[torch.Tensor],
    m: int,
    gen: torch.Generator,
    bar: Progress,
    block: int,
) -> tuple[float, float]:
    """Hutch++ after its sketch ``Y = HS`` (``k`` columns, ``k`` products spent).

    ``Q = orth(Y)``; ``tr(QᵀHQ)`` exactly (``k`` products, in blocks) plus
    Hutchinson on ``(I − QQᵀ)H(I − QQᵀ)`` with the ``m − 2k`` products left.
    The sketch comes in a list, emptied here, so that ``Y`` is freed once
    ``Q`` is built: the run then holds ``Q`` and a few blocks.
    """
    Y = sketch.pop()
    k = Y.shape[1]
    # Householder QR by its two steps, freeing Y between them: two n × k
    # blocks live at a time, not three (what linalg.qr holds: Y, its
    # factored copy and Q).
    factored, tau = torch.geqrf(Y)
    del Y
    Q = torch.linalg.householder_product(factored, tau)
    del factored, tau
    exact = 0.0
    for start, size in _blocks(k, block):
        Qb = Q[:, start : start + size]
        exact += float(torch.sum(Qb * _apply(op, Qb), dtype=torch.float64))
        bar.update(k + start + size)
    samples = _hutchinson_samples(op, m - 2 * k, gen, Q, bar, 2 * k, block)
    rest, stderr = _mean_and_stderr(samples)
    return exact + rest, stderr


def _adaptive(
    op: SymmetricOperator, m: int, gen: torch.Generator, bar: Progress, block: int
) -> tuple[float, float, str]:
    """Hutchinson or Hutch++, whichever the first ``m // 3`` probes predict better.

    Returns ``(value, stderr, method)`` with ``method`` the one that ran.
    """
    n = int(op.shape[0])
    k = m // 3
    rest = m - 2 * k  # Hutch++'s deflated probes
    if k < 4 or rest < 2:  # too few to predict anything: plain Hutchinson
        samples = _hutchinson_samples(op, m, gen, None, bar, 0, block)
        return (*_mean_and_stderr(samples), "hutchinson")
    # Rademacher probes: Hutchinson samples sᵢᵀHsᵢ and a sketch Y = HS at once.
    S = rademacher((k, n), gen, op.dtype, op.device).T
    Y = _products(op, S, bar, 0, block)
    first = torch.cat(
        [
            torch.sum(S[:, a : a + b] * Y[:, a : a + b], dim=0, dtype=torch.float64)
            for a, b in _blocks(k, block)
        ]
    ).cpu()
    del S
    # Hutchinson's variance with all m probes, from its own samples.
    var_hutchinson = float(first.var(correction=1)) / m
    # Hutch++ leaves ‖PHP‖_F² ≤ ‖PH‖_F² in its probes' variance (2‖·‖_F² per
    # Rademacher probe, less the diagonal). ‖PH‖_F² is estimated without bias
    # from a held-out half of the sketch: deflate by the first half's range,
    # E‖P₁HS₂‖_F² = k₂‖P₁H‖_F². Deflating by all k columns leaves less, and a
    # residual with a heavy diagonal varies less than 2‖·‖_F², so the
    # prediction errs towards Hutchinson, which is unbiased whatever H is.
    half = k // 2
    residual = _deflated_norm2(Y[:, :half], Y[:, half:]) / (k - half)
    var_hutchpp = 2 * residual / rest
    if var_hutchpp < var_hutchinson:
        sketch = [Y]
        del Y
        return (*_deflated(op, sketch, m, gen, bar, block), "hutchpp")
    del Y
    more = _hutchinson_samples(op, m - k, gen, None, bar, k, block)
    return (*_mean_and_stderr(torch.cat([first, more])), "hutchinson")


def _deflated_norm2(Y1: torch.Tensor, Y2: torch.Tensor) -> float:
    """``‖(I − Q₁Q₁ᵀ) Y₂‖_F²`` with ``Q₁`` an orthonormal basis of ``range(Y₁)``, from Gram matrices.

    ``‖Y₂‖_F² − tr(Cᵀ G⁺ C)`` with ``G = Y₁ᵀY₁``, ``C = Y₁ᵀY₂`` (small, in
    float64): no ``n × k`` block beyond the two given, where forming ``Q₁``
    and the projection held three more (2.9 GB in passing for the trace's
    sketch at 11M parameters). It only predicts a variance, so the rounding
    of the difference where deflation removes nearly everything (then
    Hutch++ wins by far anyway) does not matter; clamped at 0.

    Parameters
    ----------
    Y1, Y2 : torch.Tensor
        Shapes ``(n, a)`` and ``(n, b)``.
    """
    G = (Y1.T @ Y1).double()
    C = (Y1.T @ Y2).double()
    total = float(torch.trace((Y2.T @ Y2).double()))
    w, V = torch.linalg.eigh(G)
    keep = w > w.max().clamp(min=0) * Y1.shape[1] * torch.finfo(Y1.dtype).eps
    B = V[:, keep].T @ C  # coordinates of C in G's eigenbasis
    along = float((B * B / w[keep, None]).sum())
    return max(total - along, 0.0)


def trace_memory(
    n: int,
    max_matvecs: int,
    method: str,
    dtype: torch.dtype,
    block_size: int | None = None,
) -> int:
    """Bytes :func:`trace` holds at its peak, on the operator's device.

    Hutchinson: a block of probes, their product and its projection
    (``4 × n × block`` numbers, with the elementwise product); Hutch++ and
    ``"auto"`` hold the sketch ``HS`` (``k = max_matvecs // 3`` columns)
    and, while it is orthonormalised, its basis: ``2 × n × k`` more. An exact
    trace (``max_matvecs ≥ n``) holds one block of the identity and its
    product.

    Parameters
    ----------
    n : int
    max_matvecs : int
    method : {"auto", "hutchinson", "hutchpp"}
    dtype : torch.dtype
    block_size : int, optional
        Columns per product (default 16).

    Returns
    -------
    int
    """
    key = _ALIASES.get(method, method)
    if key not in METHODS:
        msg = f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}"
        raise InputError(msg)
    block = min(_BLOCK if block_size is None else int(block_size), max(1, max_matvecs))
    vectors = 4 * block
    if max_matvecs < n and key != "hutchinson":
        vectors += 2 * (max_matvecs // 3)
    return storage_bytes(n, vectors, dtype)


__all__ = ["METHODS", "TraceEstimate", "trace", "trace_memory"]
