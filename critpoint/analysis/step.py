"""The one quadratic step along negative curvature: its length and its predicted change.

If ``u`` is a unit eigenvector with eigenvalue ``λ < 0``, then
``L(θ + αu) ≈ L(θ) + gᵀu·α + ½λα²``: a direction that lowers the loss even
where the gradient vanishes. :func:`quadratic_step` is the one place where
that step is sized and its change predicted: the diagnosis's escape
prediction, :func:`critpoint.escape_saddle`'s first trial step and the
escape drawn on :func:`critpoint.landscape`'s plane all call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["QuadraticStep", "downhill", "predicted_change", "quadratic_step"]


@dataclass(frozen=True)
class QuadraticStep:
    """A step of length ``α`` along a unit direction and what the quadratic model predicts.

    Attributes
    ----------
    step_size : float
        ``α``, in parameter units (Euclidean norm).
    predicted_change : float
        ``gᵀu·α + ½λα²``.
    """

    step_size: float
    predicted_change: float


def predicted_change(slope: float, curvature: float, step_size: float) -> float:
    """The quadratic model's change of the loss: ``gᵀu·α + ½λα²``.

    Parameters
    ----------
    slope : float
        ``gᵀu``, the directional derivative along the unit direction ``u``.
    curvature : float
        ``λ = uᵀHu``.
    step_size : float
        ``α``.

    Returns
    -------
    float
    """
    return slope * step_size + 0.5 * curvature * step_size**2


def quadratic_step(
    loss: float,
    slope: float,
    curvature: float,
    max_step: float | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> QuadraticStep:
    """The escape step along a direction of negative curvature, and its predicted change.

    The length is ``α = √(2·max(|L|, eps)/|λ|)``: where ``½|λ|α²`` equals the
    loss, i.e. the quadratic model predicts the loss to fall by its whole
    value (``eps`` of ``dtype`` keeps a zero loss from giving a zero step).
    ``max_step`` caps it.

    Parameters
    ----------
    loss : float
        The loss at the point.
    slope : float
        ``gᵀu`` along the unit direction ``u`` (``≤ 0`` once oriented downhill).
    curvature : float
        ``λ = uᵀHu``, non-zero.
    max_step : float, optional
        Longest step.
    dtype : torch.dtype
        Dtype of the analysis (sets the floor on the loss).

    Returns
    -------
    QuadraticStep
    """
    floor = torch.finfo(dtype).eps
    alpha = math.sqrt(2 * max(abs(loss), floor) / abs(curvature))
    if max_step is not None:
        alpha = min(alpha, max_step)
    return QuadraticStep(alpha, predicted_change(slope, curvature, alpha))


def downhill(u: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``u`` or ``−u``, whichever does not go uphill (``gᵀu ≤ 0``), and that slope.

    Parameters
    ----------
    u : torch.Tensor
        Unit direction, shape ``(n,)``.
    g : torch.Tensor
        Gradient, shape ``(n,)``.

    Returns
    -------
    (torch.Tensor, float)
    """
    slope = float(g.double() @ u.double())
    if slope > 0:
        return -u, -slope
    return u, slope
