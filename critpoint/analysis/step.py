"""The one quadratic step along negative curvature: its length and its predicted change.

If ``u`` is a unit eigenvector with eigenvalue ``λ < 0``, then
``L(θ + αu) ≈ L(θ) + gᵀu·α + ½λα²``: a direction that lowers the loss even
where the gradient vanishes. :func:`quadratic_step` is the one place where
that step is sized and its change predicted: the diagnosis's escape
prediction, :func:`critpoint.escape_saddle`'s first trial step and the
escape drawn on :func:`critpoint.landscape`'s plane all call it.
:func:`line_search` is the one backtracking from it on the real loss: the
step :func:`critpoint.escape_saddle` takes and the diagnosis's advice quotes
(:attr:`critpoint.Diagnosis.escape_step`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "LineSearch",
    "QuadraticStep",
    "downhill",
    "line_search",
    "predicted_change",
    "quadratic_step",
]


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


@dataclass(frozen=True)
class LineSearch:
    """The escape step the real loss accepts: backtracking from :func:`quadratic_step`.

    Attributes
    ----------
    step_size : float
        ``α`` of the step chosen (the accepted one, else the best decrease found).
    predicted_change : float
        ``gᵀu·α + ½λα²`` at that ``α``.
    actual_change : float
        The measured ``L(θ + αu) − L(θ)``.
    loss_before : float
        ``L(θ)``.
    backtracks : int
        Halvings of the first trial step before the choice.
    accepted : bool
        The measured decrease reached ``accept`` times the predicted one.
    trials : list of (float, float)
        Every ``(α, measured change)`` evaluated, in order.
    """

    step_size: float
    predicted_change: float
    actual_change: float
    loss_before: float
    backtracks: int
    accepted: bool
    trials: list[tuple[float, float]]

    @property
    def lowers_loss(self) -> bool:
        """The step chosen lowers the loss (``actual_change < 0``)."""
        return self.actual_change < 0

    @property
    def loss_after(self) -> float:
        """``L(θ + αu)``."""
        return self.loss_before + self.actual_change

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "step_size": self.step_size,
            "predicted_change": self.predicted_change,
            "actual_change": self.actual_change,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "backtracks": self.backtracks,
            "accepted": self.accepted,
            "trials": [list(t) for t in self.trials],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LineSearch:
        """Rebuild from :meth:`to_dict` (``None`` numbers, cleaned from JSON, become NaN)."""

        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        return cls(
            step_size=num(data["step_size"]),
            predicted_change=num(data["predicted_change"]),
            actual_change=num(data["actual_change"]),
            loss_before=num(data["loss_before"]),
            backtracks=int(data["backtracks"]),
            accepted=bool(data["accepted"]),
            trials=[(num(a), num(c)) for a, c in data.get("trials", [])],
        )


def line_search(
    change_at: Callable[[float], float],
    loss: float,
    slope: float,
    curvature: float,
    max_step: float | None = None,
    *,
    accept: float = 0.5,
    max_backtracks: int = 30,
    dtype: torch.dtype = torch.float64,
) -> LineSearch:
    """Backtrack from :func:`quadratic_step` until the real loss falls enough.

    The first trial is :func:`quadratic_step`'s ``α``; a step is accepted when
    the measured change is at most ``accept`` times the predicted one,
    otherwise ``α`` is halved, at most ``max_backtracks`` times. Without
    acceptance the best decrease measured is chosen. One loss evaluation per
    trial and no Hessian-vector product: :func:`critpoint.escape_saddle` takes
    this step and :func:`critpoint.diagnose` quotes it.

    Parameters
    ----------
    change_at : callable
        ``α ↦ L(θ + αu) − L(θ)``, the measured change.
    loss : float
        ``L(θ)``.
    slope, curvature : float
        ``gᵀu`` (``≤ 0``) and ``λ < 0`` along the unit direction ``u``.
    max_step : float, optional
        Longest step.
    accept : float
        Fraction of the predicted decrease the real loss must achieve.
    max_backtracks : int
        Most halvings.
    dtype : torch.dtype
        Dtype of the analysis (:func:`quadratic_step`).

    Returns
    -------
    LineSearch
    """
    alpha = quadratic_step(loss, slope, curvature, max_step, dtype=dtype).step_size
    trials: list[tuple[float, float]] = []
    best: tuple[float, float, float, int] | None = (
        None  # (change, α, predicted, halvings)
    )
    for backtracks in range(max_backtracks + 1):
        predicted = predicted_change(slope, curvature, alpha)
        change = float(change_at(alpha))
        trials.append((alpha, change))
        if change <= accept * predicted:
            return LineSearch(alpha, predicted, change, loss, backtracks, True, trials)
        if best is None or change < best[0]:
            best = (change, alpha, predicted, backtracks)
        alpha /= 2
    assert best is not None
    change, alpha, predicted, backtracks = best
    return LineSearch(alpha, predicted, change, loss, backtracks, False, trials)
