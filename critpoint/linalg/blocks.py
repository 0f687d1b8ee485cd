"""Spectra of the diagonal blocks of a symmetric operator, all blocks in one batched pass.

For a block ``I`` of coordinates (one layer's parameters), the diagonal block
``H_II`` acts on a vector ``v`` supported on ``I`` as ``(H v)[I]``: a
*block-masked* product. :func:`block_spectra` runs, for every block and every
random probe, a single-vector Lanczos recurrence on ``H_II`` (the kernel of
:func:`critpoint.spectral_density`, with full reorthogonalisation), and
advances them all together: each step embeds every running recurrence's
newest vector in its block's rows of one ``(n, columns)`` matrix and makes one
``matmat`` call. ``B`` blocks of ``p`` probes therefore cost ``B·p``
Hessian-vector products per step in **one batched pass over the data**, where
``B`` separate runs would cost ``B`` passes.

From the same recurrences, per block: the extreme eigenvalues (the most
extreme Ritz values, each with its residual as a rigorous error bound), a
bound on the whole block spectrum in probability over the Gaussian probes
(:class:`critpoint.linalg._bounds.Certificate`), the trace (Hutchinson:
``n_I · qᵀ H_II q`` for each unit probe ``q``, exact from the first step) and
the eigenvalue density (Gauss quadrature rules, as
:class:`critpoint.SpectralDensity`). The first probe of a block whose extreme
Ritz values have not met ``tol`` keeps stepping, alone, up to ``max_steps``.

The heterogeneity between blocks (:func:`heterogeneity`) follows Zhang et
al. (2024), who compare the Hessian spectra of parameter blocks by their
Jensen–Shannon distance.

References
----------
Y. Zhang, C. Chen, T. Ding, Z. Li, R. Sun, Z.-Q. Luo, "Why Transformers Need
Adam: A Hessian Perspective", NeurIPS 2024, arXiv:2402.16788.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critpoint import _checks
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._bounds import Certificate, start_rules
from critpoint.linalg._operator import as_operator
from critpoint.linalg._random import make_generator, randn, seed_record
from critpoint.linalg._tridiag import BlockLanczos
from critpoint.linalg.slq import SpectralDensity

__all__ = [
    "BlockSpectra",
    "BlockSpectrum",
    "block_spectra",
    "heterogeneity",
    "js_distances",
]

BlockIndex = slice | Sequence[int] | torch.Tensor
#: Default most steps of a block's first probe while its extremes converge.
DEFAULT_MAX_STEPS = 160
#: Grid points and kernel width (a share of the normalised range [-1, 1]) of
#: the densities compared by :func:`js_distances`.
JS_GRID = 401
JS_SIGMA = 0.02


@dataclass(frozen=True)
class BlockSpectrum:
    """The spectrum of one diagonal block ``H_II``.

    Attributes
    ----------
    name : str
        The block's name.
    size : int
        ``|I|``, the block's dimension.
    lambda_min, lambda_max : float
        The most extreme Ritz values over the block's probes.
    lambda_min_error, lambda_max_error : float
        Their residual norms ``‖H_II y − θ y‖``: some eigenvalue of the block
        lies within this distance (floored at ``4·eps·scale``).
    converged_min, converged_max : bool
        Whether each error is at most ``tol · scale``.
    lower, upper : float
        Every eigenvalue of the block lies in ``[lower, upper]`` with
        probability at least ``probability`` over the Gaussian probes.
    probability : float
        ``1 − delta`` (1 when a probe's Krylov space was exhausted: exact).
    trace, trace_stderr : float
        Hutchinson's estimate of ``tr(H_II)`` from the probes (exact, stderr 0,
        when a probe's Krylov space spans the whole block).
    density : SpectralDensity
        One Gauss quadrature rule per probe.
    num_matvecs : int
        Hessian-vector products spent on this block's columns.
    scale : float
        The largest magnitude seen in the block's projections (``≤ ‖H_II‖``).
    vector_min, vector_max : torch.Tensor
        Unit Ritz vectors of ``lambda_min`` and ``lambda_max``, shape
        ``(size,)`` (not in :meth:`to_dict`).
    """

    name: str
    size: int
    lambda_min: float
    lambda_min_error: float
    lambda_max: float
    lambda_max_error: float
    converged_min: bool
    converged_max: bool
    lower: float
    upper: float
    probability: float
    trace: float
    trace_stderr: float
    density: SpectralDensity
    num_matvecs: int
    scale: float
    vector_min: torch.Tensor | None = field(default=None, repr=False, compare=False)
    vector_max: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (no vectors)."""
        return {
            "name": self.name,
            "size": self.size,
            "lambda_min": self.lambda_min,
            "lambda_min_error": self.lambda_min_error,
            "lambda_max": self.lambda_max,
            "lambda_max_error": self.lambda_max_error,
            "converged": [self.converged_min, self.converged_max],
            "lower": self.lower,
            "upper": self.upper,
            "probability": self.probability,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr
            if math.isfinite(self.trace_stderr)
            else None,
            "num_matvecs": self.num_matvecs,
            "density": self.density.to_dict(),
        }


@dataclass(frozen=True)
class BlockSpectra:
    """What :func:`block_spectra` found: one :class:`BlockSpectrum` per block.

    Attributes
    ----------
    blocks : tuple of BlockSpectrum
        In the order given.
    heterogeneity : float
        Mean pairwise Jensen–Shannon distance of the blocks' normalised
        densities (:func:`heterogeneity`), in ``[0, 1]``; 0 for one block.
    distances : numpy.ndarray
        The pairwise distances, shape ``(B, B)``.
    num_matvecs : int
        Hessian-vector products spent (columns passed to ``matmat``).
    num_passes : int
        ``matmat`` calls: batched passes over the data.
    num_probes, num_steps : int
        Probes per block and the steps every probe took (fewer where a block
        is smaller).
    seed : int or None
    """

    blocks: tuple[BlockSpectrum, ...]
    heterogeneity: float
    distances: np.ndarray = field(repr=False, compare=False)
    num_matvecs: int
    num_passes: int
    num_probes: int
    num_steps: int
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> BlockSpectrum:
        return self.blocks[i]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "blocks": [b.to_dict() for b in self.blocks],
            "heterogeneity": self.heterogeneity,
            "heterogeneity_definition": HETEROGENEITY_DEFINITION,
            "distances": self.distances.tolist(),
            "num_matvecs": self.num_matvecs,
            "num_passes": self.num_passes,
            "num_probes": self.num_probes,
            "num_steps": self.num_steps,
            "seed": self.seed,
        }


#: One sentence that says what :attr:`BlockSpectra.heterogeneity` is.
HETEROGENEITY_DEFINITION = (
    "mean over pairs of blocks of the Jensen-Shannon distance (base 2, in [0, 1]) "
    "between their eigenvalue densities, each with its eigenvalues divided by the "
    "block's own scale max(|lambda_min|, |lambda_max|) and smoothed by a Gaussian "
    f"of width {JS_SIGMA} on [-1, 1]"
)


class _BlockView:
    """The shape, dtype and device of ``H_II``, for a kernel driven from outside."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.shape = (size, size)
        self.dtype = dtype
        self.device = device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - guard
        msg = "a block's products are taken in one batched pass by block_spectra"
        raise InputError(msg)


def _indices(blocks: Any, n: int) -> list[tuple[str, torch.Tensor]]:
    """``blocks`` as ``(name, positions)`` pairs, positions a sorted int64 tensor."""
    if isinstance(blocks, Mapping):
        items = list(blocks.items())
    elif isinstance(blocks, Sequence) and not isinstance(blocks, (str, bytes)):
        items = [
            b
            if isinstance(b, tuple) and len(b) == 2 and isinstance(b[0], str)
            else (str(i), b)
            for i, b in enumerate(blocks)
        ]
    else:
        msg = (
            "blocks must be a mapping name -> indices or a sequence of (name, indices); "
            f"got {type(blocks).__name__}"
        )
        raise InputError(msg)
    if not items:
        msg = "blocks is empty; give at least one block of coordinates"
        raise InputError(msg)
    out = []
    for name, index in items:
        if isinstance(index, slice):
            idx = torch.arange(n)[index]
        else:
            try:
                idx = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
            except (TypeError, ValueError, RuntimeError) as exc:
                msg = f"block {name!r}: indices must be a slice or integers, got {type(index).__name__}"
                raise InputError(msg) from exc
        if idx.numel() == 0:
            msg = f"block {name!r} is empty; every block needs at least one coordinate"
            raise InputError(msg)
        if int(idx.min()) < 0 or int(idx.max()) >= n:
            msg = f"block {name!r} has indices outside [0, {n}); they index the operator's rows"
            raise InputError(msg)
        idx = torch.unique(idx)  # sorted
        out.append((str(name), idx))
    return out


def block_spectra(
    H: Any,
    blocks: Mapping[str, BlockIndex] | Sequence[tuple[str, BlockIndex] | BlockIndex],
    num_probes: int = 4,
    num_steps: int = 60,
    seed: int | torch.Generator | None = 0,
    *,
    tol: float = 1e-4,
    max_steps: int | None = None,
    delta: float = 0.01,
    max_columns: int | None = None,
    progress: ProgressArg = False,
) -> BlockSpectra:
    """Extreme eigenvalues, trace and density of every diagonal block ``H_II``, in one pass.

    Parameters
    ----------
    H : HessianOperator, SymmetricOperator or torch.Tensor
        Symmetric operator of shape ``(n, n)``.
    blocks : mapping or sequence
        ``{name: indices}`` or ``[(name, indices), ...]`` (or bare indices,
        named by position); indices are a ``slice`` or integers in ``[0, n)``.
        Blocks need not cover every coordinate; overlapping blocks are
        allowed (each is its own diagonal block).
    num_probes : int
        Gaussian probes per block ``p``.
    num_steps : int
        Lanczos steps of every probe (capped at the block's size): the
        density's resolution.
    seed : int, torch.Generator or None
        Seed of the probes. Each block draws its probes from a fresh
        generator of this seed (an ``int``), so a block's numbers are those
        of a run on that block alone.
    tol : float
        Relative tolerance of the extreme eigenvalues: a block's first probe
        keeps stepping while the residual of its smallest or largest Ritz
        value exceeds ``tol · scale``.
    max_steps : int, optional
        Most steps of that probe (default ``max(num_steps, 160)``, capped at
        the block's size). Memory: ``size × (max_steps + 1)`` numbers for it,
        ``size × (num_steps + 1)`` for each other probe.
    delta : float
        Failure probability of the bounds ``[lower, upper]`` on each block's
        whole spectrum.
    max_columns : int, optional
        Most columns per ``matmat`` call (the working memory of one product
        is ``n × columns`` twice); by default every running recurrence goes
        into one call.
    progress : bool, callable or None
        ``True`` shows a progress bar (in steps); a callable gets
        ``(step, total)``.

    Returns
    -------
    BlockSpectra

    Raises
    ------
    InputError
        If an argument is invalid.
    NonFiniteError
        If a product contains NaN or Inf.
    """
    op = as_operator(H)
    n = int(op.shape[0])
    items = _indices(blocks, n)
    p = _checks.positive_int(num_probes, "num_probes", "use e.g. num_probes=4")
    m = _checks.positive_int(num_steps, "num_steps", "use e.g. num_steps=60")
    tol = _checks.finite_float(tol, "tol", minimum=0.0)
    if max_steps is None:
        max_steps = max(m, DEFAULT_MAX_STEPS)
    max_steps = max(_checks.positive_int(max_steps, "max_steps", "or None"), m)
    if max_columns is not None:
        max_columns = _checks.positive_int(max_columns, "max_columns", "or None")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        msg = f"delta must lie strictly between 0 and 1, got {delta!r}"
        raise InputError(msg)
    check_progress(progress)
    dtype, device = op.dtype, op.device
    if dtype not in (torch.float32, torch.float64):
        msg = f"block_spectra needs a float32 or float64 operator, got {dtype}"
        raise InputError(msg)
    eff_tol = max(float(tol), 50 * torch.finfo(dtype).eps)
    index_dev = [idx.to(device) for _, idx in items]

    # kernels[b][j]: probe j of block b; probe 0 may run to max_steps.
    kernels: list[list[BlockLanczos]] = []
    starts: list[list[np.ndarray]] = []
    steps: list[int] = []
    for _, idx in items:
        size = int(idx.numel())
        steps_b = min(m, size)
        steps.append(steps_b)
        gen = make_generator(seed)
        Z = randn((size, p), gen, dtype, device)
        view = _BlockView(size, dtype, device)
        row, coords = [], []
        for j in range(p):
            cap = min(size, (max_steps if j == 0 else steps_b) + 1)
            kry = BlockLanczos(view, capacity=cap)  # type: ignore[arg-type]
            coords.append(kry.add_block(Z[:, j : j + 1]))
            row.append(kry)
        kernels.append(row)
        starts.append(coords)

    def wanted(b: int, j: int) -> bool:
        kry = kernels[b][j]
        if kry.width == 0:
            return False
        if kry.num_steps < steps[b]:
            return True
        if j != 0:
            return False
        return not _extremes_converged(kry, eff_tol)

    num_matvecs, num_passes = 0, 0
    per_block = [0] * len(items)
    total = max(steps)
    bar = Progress(progress, total, "per-block spectra", unit="step")
    try:
        while True:
            running = [
                (b, j) for b in range(len(items)) for j in range(p) if wanted(b, j)
            ]
            if not running:
                break
            width = len(running) if max_columns is None else max_columns
            for start in range(0, len(running), width):
                chunk = running[start : start + width]
                V = torch.zeros((n, len(chunk)), dtype=dtype, device=device)
                for c, (b, j) in enumerate(chunk):
                    V[index_dev[b], c] = kernels[b][j].frontier_block()[:, 0]
                W = op.matmat(V)
                if W.shape != V.shape:
                    msg = f"the operator's matmat returned shape {tuple(W.shape)} for input {tuple(V.shape)}"
                    raise InputError(msg)
                del V
                num_passes += 1
                num_matvecs += len(chunk)
                for c, (b, j) in enumerate(chunk):
                    per_block[b] += 1
                    try:
                        kernels[b][j].extend(W[index_dev[b], c : c + 1])
                    except NonFiniteError as exc:
                        msg = (
                            f"a Hessian-vector product contains NaN or Inf (block "
                            f"{items[b][0]!r}, probe {j}); the loss is not finite or not "
                            "twice differentiable near these parameters"
                        )
                        raise NonFiniteError(msg) from exc
                del W
            bar.update(min(num_passes, total))
    finally:
        bar.close()

    spectra = tuple(
        _summarise(
            name, kernels[b], starts[b], steps[b], eff_tol, delta, per_block[b], seed
        )
        for b, (name, _) in enumerate(items)
    )
    dist = js_distances(spectra)
    het = heterogeneity(dist)
    return BlockSpectra(
        blocks=spectra,
        heterogeneity=het,
        distances=dist,
        num_matvecs=num_matvecs,
        num_passes=num_passes,
        num_probes=p,
        num_steps=m,
        seed=seed_record(seed),
    )


def _extreme_residuals(kry: BlockLanczos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values, coordinates and residual bounds of a kernel (floored)."""
    theta, S = kry.ritz()
    total, _ = kry.residual_norms(S)
    floor = 4 * torch.finfo(kry.dtype).eps * kry.scale
    return theta, S, np.maximum(total, floor)


def _extremes_converged(kry: BlockLanczos, tol: float) -> bool:
    _, _, res = _extreme_residuals(kry)
    limit = tol * max(kry.scale, 1e-300)
    return bool(res[0] <= limit and res[-1] <= limit)


def _summarise(
    name: str,
    row: list[BlockLanczos],
    coords: list[np.ndarray],
    steps: int,
    tol: float,
    delta: float,
    num_matvecs: int,
    seed: Any,
) -> BlockSpectrum:
    """One block's numbers from its probes' recurrences."""
    size = row[0].n
    lo_val, lo_err, lo_vec = math.inf, math.nan, None
    hi_val, hi_err, hi_vec = -math.inf, math.nan, None
    samples, rules = [], []
    exhausted = False
    scale = max(kry.scale for kry in row)
    width = max(kry.num_done for kry in row)
    nodes = torch.zeros((len(row), width), dtype=torch.float64)
    weights = torch.zeros((len(row), width), dtype=torch.float64)
    slack = 0.0
    for j, kry in enumerate(row):
        theta, S, res = _extreme_residuals(kry)
        if theta[0] < lo_val:
            lo_val, lo_err, lo_vec = float(theta[0]), float(res[0]), (kry, S[:, :1])
        if theta[-1] > hi_val:
            hi_val, hi_err, hi_vec = float(theta[-1]), float(res[-1]), (kry, S[:, -1:])
        tau = S[0] ** 2  # the probe is the first basis vector
        nodes[j, : theta.size] = torch.from_numpy(theta)
        weights[j, : theta.size] = torch.from_numpy(tau / tau.sum())
        # Hutchinson: n · qᵀHq for the unit probe q (the first diagonal entry).
        samples.append(size * float(kry.P[0, 0]))
        exhausted = exhausted or kry.width == 0
        floor = kry.threshold()
        slack = max(slack, floor)
        rules.extend(
            start_rules(
                kry.P[: kry.used, kry.done], coords[j], min(kry.num_steps, steps), floor
            )
        )
    full = [k for k in row if k.width == 0 and k.num_done == size]
    if full:
        # A probe's space is the whole block: its Ritz values are the eigenvalues.
        trace, stderr = float(full[0].ritz()[0].sum()), 0.0
    else:
        trace, stderr = _mean(samples), _stderr(samples)
    cert = Certificate(
        n=size,
        steps=min(min(k.num_steps for k in row), steps),
        block_size=len(row),
        rules=tuple(rules),
        exhausted=exhausted,
        slack=slack,
    )
    lower, upper = cert.bounds(lo_val, hi_val, delta)
    limit = tol * max(scale, 1e-300)
    vmin = _unit(lo_vec[0].vectors(lo_vec[1])[:, 0])  # type: ignore[index]
    vmax = _unit(hi_vec[0].vectors(hi_vec[1])[:, 0])  # type: ignore[index]
    return BlockSpectrum(
        name=name,
        size=size,
        lambda_min=lo_val,
        lambda_min_error=lo_err,
        lambda_max=hi_val,
        lambda_max_error=hi_err,
        converged_min=bool(lo_err <= limit),
        converged_max=bool(hi_err <= limit),
        lower=float(lower),
        upper=float(upper),
        probability=1.0 if exhausted else 1.0 - delta,
        trace=trace,
        trace_stderr=stderr,
        density=SpectralDensity(nodes, weights, num_matvecs, seed_record(seed)),
        num_matvecs=num_matvecs,
        scale=scale,
        vector_min=vmin,
        vector_max=vmax,
    )


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v)


def _mean(x: list[float]) -> float:
    return float(np.mean(x))


def _stderr(x: list[float]) -> float:
    if len(x) < 2:
        return math.inf
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


def js_distances(
    spectra: Sequence[BlockSpectrum] | Sequence[SpectralDensity],
) -> np.ndarray:
    """Pairwise Jensen–Shannon distances of the blocks' normalised densities.

    Each density has its nodes divided by its block's scale
    ``s = max(|λ_min|, |λ_max|)`` (the largest |node| for a bare density), so
    the shapes are compared, not the scales; it is smoothed by a Gaussian of
    width :data:`JS_SIGMA` on :data:`JS_GRID` points of ``[-1, 1]`` and
    normalised to unit mass. The distance is the square root of the
    Jensen–Shannon divergence with base-2 logarithms: in ``[0, 1]``, 0 for
    equal densities.

    Parameters
    ----------
    spectra : sequence of BlockSpectrum or SpectralDensity

    Returns
    -------
    numpy.ndarray
        Shape ``(B, B)``, symmetric, zero diagonal.
    """
    from scipy.special import rel_entr

    grid = np.linspace(-1.0 - 3 * JS_SIGMA, 1.0 + 3 * JS_SIGMA, JS_GRID)
    pdfs = []
    for item in spectra:
        dens = item.density if isinstance(item, BlockSpectrum) else item
        nodes = dens.nodes.numpy()
        w = dens.weights.numpy()
        if isinstance(item, BlockSpectrum):
            s = max(abs(item.lambda_min), abs(item.lambda_max))
        else:
            s = float(np.abs(nodes[w > 0]).max(initial=0.0))
        scaled = SpectralDensity(
            torch.from_numpy(nodes / s if s > 0 else nodes), dens.weights, 0, None
        )
        pdf = scaled.pdf(grid, sigma=JS_SIGMA)
        pdfs.append(pdf / pdf.sum())
    B = len(pdfs)
    out = np.zeros((B, B))
    for a in range(B):
        for b in range(a + 1, B):
            mid = (pdfs[a] + pdfs[b]) / 2
            js = float(rel_entr(pdfs[a], mid).sum() + rel_entr(pdfs[b], mid).sum())
            # max(0, ·): equal densities give a rounding-sized negative sum
            out[a, b] = out[b, a] = math.sqrt(max(js / (2 * math.log(2)), 0.0))
    return out


def heterogeneity(distances: np.ndarray) -> float:
    """The mean of the pairwise distances above the diagonal; 0 for fewer than two blocks.

    Parameters
    ----------
    distances : numpy.ndarray
        Shape ``(B, B)``, from :func:`js_distances`.

    Returns
    -------
    float
    """
    B = distances.shape[0]
    if B < 2:
        return 0.0
    return float(distances[np.triu_indices(B, 1)].mean())
