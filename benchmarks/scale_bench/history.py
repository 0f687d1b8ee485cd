"""When could a top-eigenvalue run have stopped? Post-processing its products.

:class:`Recorder` sits between a solver and the operator and keeps every
vector it multiplied and every product. :func:`ritz_history` rebuilds, after
each product ``m``, the Rayleigh–Ritz approximation from the span of the
first ``m`` vectors: for a Krylov solver that is exactly what the solver
itself sees at step ``m`` (its basis spans the same space), whatever its
internals. Residuals ``‖Hu − θu‖`` are computed explicitly from the stored
products, not from the Lanczos recurrence.

:func:`stopping_points` then says, for a target accuracy, after how many
products each stopping rule would have fired and what the true error was
then:

``residual``
    ``‖r₁‖ ≤ tol · |θ₁|``: the rule of the solver (``eigsh``'s ``tol``).
``kato-temple``
    ``‖r₁‖² / (θ₁ − θ₂) ≤ ε · |θ₁|``: Kato–Temple's bound on
    ``λ₁ − θ₁`` with the gap to the rest of the spectrum estimated by the
    second Ritz value (Parlett 1998, section 10.2). ``θ₂ ≤ λ₂`` (Cauchy
    interlacing), so this gap can be too large and the bound optimistic.
``kato-temple (safeguarded)``
    The same with the gap ``θ₁ − θ₂ − ‖r₂‖``: the second Ritz value moved up
    by its own residual (λ₂ is within ``‖r₂‖`` of it once that pair has
    converged), which is the usual safeguard.
``oracle``
    The first step whose true error is at most ``ε`` (needs the truth; no
    rule can stop earlier).
"""

from __future__ import annotations

import math
from typing import Any

import torch


class Recorder:
    """An operator that records ``(V, HV)`` for every product it passes on.

    Parameters
    ----------
    H : operator
        Anything with ``shape``, ``dtype``, ``device`` and ``matmat``.
    """

    def __init__(self, H: Any) -> None:
        self.H = H
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.H.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.H.dtype

    @property
    def device(self) -> torch.device:
        return self.H.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        HV = self.H.matmat(V)
        for j in range(V.shape[1]):
            self.inputs.append(V[:, j].detach().double().cpu().clone())
            self.outputs.append(HV[:, j].detach().double().cpu().clone())
        return HV


def ritz_history(
    inputs: list[torch.Tensor], outputs: list[torch.Tensor], k: int = 3
) -> list[dict[str, Any]]:
    """Top-``k`` Ritz values and explicit residuals after each product.

    Parameters
    ----------
    inputs, outputs : list of torch.Tensor
        The vectors ``v_j`` (shape ``(n,)``) and the products ``H v_j``, in order.
    k : int
        Ritz pairs kept per step (the largest).

    Returns
    -------
    list of dict
        One per step ``m = 1 … M``: ``m``, ``theta`` (descending, up to ``k``)
        and ``residual`` (``‖H Q s − θ Q s‖`` for each).
    """
    X = torch.stack(inputs, dim=1)
    Y = torch.stack(outputs, dim=1)
    Q, R = torch.linalg.qr(X)
    # H Q = Y R⁻¹: the first m columns of Q and HQ depend on the first m products only.
    HQ = torch.linalg.solve_triangular(R, Y, upper=True, left=False)
    G = Q.T @ HQ
    steps = []
    for m in range(1, X.shape[1] + 1):
        T = (G[:m, :m] + G[:m, :m].T) / 2
        theta, S = torch.linalg.eigh(T)
        top = torch.arange(m - 1, max(-1, m - 1 - k), -1)
        thetas, residuals = [], []
        for i in top.tolist():
            s = S[:, i]
            r = HQ[:, :m] @ s - theta[i] * (Q[:, :m] @ s)
            thetas.append(float(theta[i]))
            residuals.append(float(torch.linalg.vector_norm(r)))
        steps.append({"m": m, "theta": thetas, "residual": residuals})
    return steps


def bounds(step: dict[str, Any]) -> dict[str, float]:
    """Relative error estimates of the top Ritz value at one step (see the module)."""
    theta, res = step["theta"], step["residual"]
    t1, r1 = theta[0], res[0]
    scale = max(abs(t1), 1e-300)
    out = {
        "residual": r1 / scale,
        "kato-temple": math.inf,
        "kato-temple (safeguarded)": math.inf,
    }
    if len(theta) > 1:
        gap = t1 - theta[1]
        if gap > 0:
            out["kato-temple"] = min(r1, r1**2 / gap) / scale
        safe = gap - res[1]
        if safe > 0:
            out["kato-temple (safeguarded)"] = min(r1, r1**2 / safe) / scale
    return out


def stopping_points(
    steps: list[dict[str, Any]], truth: float, target: float, tol: float | None = None
) -> dict[str, dict[str, Any]]:
    """For each rule, the first step it fires at and the true relative error there.

    Parameters
    ----------
    steps : list of dict
        From :func:`ritz_history`.
    truth : float
        The true top eigenvalue.
    target : float
        The relative accuracy asked for (Kato–Temple rules fire at ``≤ target``).
    tol : float, optional
        The solver's residual tolerance to evaluate (default: ``target``).

    Returns
    -------
    dict
        ``rule -> {"hvps": m or None, "error": true error at m, "bound": estimate at m}``.
    """
    tol = target if tol is None else tol
    thresholds = {
        "residual": tol,
        "kato-temple": target,
        "kato-temple (safeguarded)": target,
    }
    out: dict[str, dict[str, Any]] = {}
    for rule, level in thresholds.items():
        out[rule] = {"hvps": None, "error": None, "bound": None}
        for step in steps:
            b = bounds(step)[rule]
            if b <= level:
                err = abs(step["theta"][0] - truth) / abs(truth)
                out[rule] = {"hvps": step["m"], "error": err, "bound": b}
                break
    out["oracle"] = {"hvps": None, "error": None, "bound": None}
    for step in steps:
        err = abs(step["theta"][0] - truth) / abs(truth)
        if err <= target:
            out["oracle"] = {"hvps": step["m"], "error": err, "bound": None}
            break
    return out
