"""The sampling error of a diagnosis: how much λ_min, λ_max and ‖g‖ move between batches.

When the data are a sample (``max_samples``, a user's subset), the loss,
gradient and Hessian are estimates of the population's. The objective is a
sum over its batches, so for a Ritz vector ``u`` the curvature is a sum of
the batches' parts, ``uᵀHu = Σ_b uᵀH_b u / N``, and the same holds for the
slope of the gradient along its own direction. Treating the batches as
independent draws (clusters of samples), the standard error of such a ratio
estimate is

    SE = √( B/(B−1) · Σ_b (s_b − θ n_b)² ) / N,

with ``s_b`` batch ``b``'s summed part, ``n_b`` its samples, ``N = Σ n_b`` and
``θ = Σ s_b / N`` (``sd / √B`` for equal batches); for a summed loss it is
``N`` times that. To first order an eigenvalue moves by ``uᵀ δH u`` (its
eigenvector held fixed: Hellmann–Feynman), so this is the standard error of
``λ_min`` and ``λ_max`` themselves, and ``ĝᵀ δg`` that of ``‖g‖``. The
*gradient noise* ``√(tr Cov ĝ)``, the size of the gradient sampling alone
would give, comes from the same pass.

Cost: 2 HVPs (the two Ritz vectors), in one pass over the batches. When the
operator keeps the batches' linearisations (``hvp_cache``), each kept graph
holds its batch's gradient and runs the products by the second backward pass
alone: two such passes per batch, no forward pass. Otherwise one fresh pass:
per batch a forward and first backward pass and two second backward passes
(about a gradient more).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from critpoint.errors import SecondDerivativeError
from critpoint.operator import HessianOperator

logger = logging.getLogger("critpoint")

__all__ = ["SAMPLING_Z", "SamplingError", "measure_sampling_error", "ratio_stderr"]

#: Standard errors a sampled diagnosis adds to its error bars (about 95 %
#: two-sided for a normal estimate).
SAMPLING_Z = 2.0


@dataclass(frozen=True)
class SamplingError:
    """Standard errors over batches of the quantities a verdict rests on.

    Attributes
    ----------
    num_batches : int
        Batches the data came in (``B``).
    lambda_min, lambda_max : float
        Standard errors of the extreme eigenvalues (eigenvalue units).
    grad_norm : float
        Standard error of the gradient norm (first order, along ``ĝ``).
    grad_noise : float
        ``√(tr Cov ĝ)``: the gradient norm sampling alone would give.
    num_matvecs : int
        Hessian-vector products spent on it (2: one per Ritz vector).
    used : bool
        Whether the verdict's tolerances include it (``sampled=True``).
    from_linearisations : bool
        Whether it came from the operator's kept linearisations (two second
        backward passes per batch) rather than a fresh pass (a gradient and
        two second backward passes per batch).
    z : float
        Standard errors added to the error bars when used.
    """

    num_batches: int
    lambda_min: float
    lambda_max: float
    grad_norm: float
    grad_noise: float
    num_matvecs: int
    used: bool
    from_linearisations: bool = False
    z: float = SAMPLING_Z

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return asdict(self)


def ratio_stderr(counts: torch.Tensor, parts: torch.Tensor, summed: bool) -> float:
    """Standard error over batches of ``Σ parts / Σ counts`` (``Σ parts`` if ``summed``).

    Parameters
    ----------
    counts : torch.Tensor
        Samples per batch, shape ``(B,)``.
    parts : torch.Tensor
        Each batch's summed part, shape ``(B,)``.
    summed : bool
        The objective is the sum over samples, not the mean.

    Returns
    -------
    float
        ``nan`` for fewer than two batches.
    """
    B = int(counts.numel())
    if B < 2:
        return math.nan
    N = float(counts.sum())
    theta = float(parts.sum()) / N
    residual = parts.double() - theta * counts.double()
    se = math.sqrt(B / (B - 1) * float(torch.sum(residual * residual))) / N
    return se * N if summed else se


def measure_sampling_error(
    H: HessianOperator,
    u_min: torch.Tensor,
    u_max: torch.Tensor,
    g: torch.Tensor,
    used: bool = False,
) -> SamplingError | None:
    """The standard errors over batches of ``λ_min``, ``λ_max`` and ``‖g‖``.

    Parameters
    ----------
    H : HessianOperator
        The Hessian of the objective at the point (one process: its batches);
        its kept linearisations serve when it has them, and the pass is
        counted in its ``num_matvecs``.
    u_min, u_max : torch.Tensor
        Unit Ritz vectors of ``λ_min`` and ``λ_max``, shape ``(n,)``.
    g : torch.Tensor
        The full-data gradient, shape ``(n,)``.
    used : bool
        Recorded in the result: whether the verdict uses it.

    Returns
    -------
    SamplingError or None
        ``None`` when it cannot be measured: fewer than two batches, several
        processes, or a model plain autograd cannot differentiate twice
        (forward-over-reverse products).
    """
    obj = H.objective
    if obj.process_group is not None:
        logger.info("sampling error left out: the batches are spread over processes")
        return None
    U = torch.stack([u_min, u_max], dim=1).to(dtype=obj.dtype, device=obj.device)
    norm = float(torch.linalg.vector_norm(g.double()))
    direction = g / norm if norm > 0 else None
    if obj.num_batches is not None and obj.num_batches < 2:
        return None  # one batch: no spread to measure, so no product is spent
    if obj.hvp_mode != "rev-rev":
        logger.info("sampling error left out: it needs plain double backward (rev-rev)")
        return None
    try:
        cached = H.cached
        counts, curv, slopes, grad_sq = H.batch_terms(U, direction)
    except (RuntimeError, SecondDerivativeError) as exc:  # no plain double backward
        logger.info("sampling error left out: %s", exc)
        return None
    B = int(counts.numel())
    if B < 2:
        return None
    summed = obj.reduction == "sum"
    N = float(counts.sum())
    se_min = ratio_stderr(counts, curv[:, 0], summed)
    se_max = ratio_stderr(counts, curv[:, 1], summed)
    # The gradient: Σ_b ‖∇s_b − n_b ḡ‖² from the batches' norms and slopes,
    # with ḡ the per-sample mean gradient (g itself, or g / N for a sum).
    mean_g = norm / N if summed else norm
    along = slopes if slopes is not None else torch.zeros_like(counts)
    spread = (grad_sq - 2 * counts * mean_g * along + counts**2 * mean_g**2).sum()
    noise = math.sqrt(max(0.0, B / (B - 1) * float(spread))) / N
    se_grad = ratio_stderr(counts, along, summed) if slopes is not None else noise
    if summed:
        noise *= N
    return SamplingError(
        num_batches=B,
        lambda_min=se_min,
        lambda_max=se_max,
        grad_norm=se_grad,
        grad_noise=noise,
        num_matvecs=2,
        used=bool(used),
        from_linearisations=cached,
    )
