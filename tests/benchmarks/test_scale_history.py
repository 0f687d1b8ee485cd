"""The stopping-rule analysis of benchmarks/scale.py against a planted spectrum."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import critpoint as cp

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from scale_bench.history import (
    Recorder,
    bounds,
    ritz_history,
    stopping_points,
)


class Diagonal:
    """``diag(values)`` in a random orthonormal basis, as an operator."""

    def __init__(self, values: torch.Tensor, gen: torch.Generator) -> None:
        n = values.shape[0]
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        self.A = Q @ torch.diag(values) @ Q.T
        self.shape = (n, n)
        self.dtype = torch.float64
        self.device = torch.device("cpu")

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.A @ V


@pytest.fixture
def planted(gen):
    bulk = torch.linspace(-0.5, 1.0, 197, dtype=torch.float64)
    values = torch.cat([bulk, torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64)])
    return values, Diagonal(values, gen)


def test_history_is_rayleigh_ritz_of_the_recorded_space(planted):
    values, op = planted
    rec = Recorder(op)
    r = cp.eigsh(rec, k=1, which="LA", tol=1e-10, seed=0, return_eigenvectors=False)
    steps = ritz_history(rec.inputs, rec.outputs, k=3)
    assert len(steps) == r.num_matvecs == len(rec.inputs)
    lam1, lam2 = 5.0, 3.0
    previous = -float("inf")
    for step in steps:
        theta1, r1 = step["theta"][0], step["residual"][0]
        # Cauchy interlacing: Ritz values climb towards λ₁ and never pass it.
        assert previous - 1e-12 <= theta1 <= lam1 + 1e-12
        previous = theta1
        # Explicit residuals: some eigenvalue lies within ‖r‖ of θ₁ ...
        assert float((values - theta1).abs().min()) <= r1 + 1e-12
        # ... and Kato–Temple with the true gap bounds the error of θ₁.
        if theta1 > lam2:
            assert lam1 - theta1 <= r1**2 / (theta1 - lam2) + 1e-12
    # The last step is the solver's answer.
    assert steps[-1]["theta"][0] == pytest.approx(float(r.eigenvalues[-1]), abs=1e-9)
    assert steps[-1]["theta"][0] == pytest.approx(lam1, abs=1e-9)


def test_stopping_points_fire_in_order(planted):
    _, op = planted
    rec = Recorder(op)
    cp.eigsh(rec, k=1, which="LA", tol=1e-10, seed=0, return_eigenvectors=False)
    steps = ritz_history(rec.inputs, rec.outputs, k=3)
    target = 1e-6
    pts = stopping_points(steps, truth=5.0, target=target)
    oracle = pts["oracle"]["hvps"]
    assert oracle is not None
    for rule in ("residual", "kato-temple", "kato-temple (safeguarded)"):
        pt = pts[rule]
        # Every rule stops no earlier than the oracle, at an error within the target.
        assert pt["hvps"] >= oracle
        assert pt["error"] <= target
        assert bounds(steps[pt["hvps"] - 1])[rule] <= target
    # The residual overstates the eigenvalue error: the squared rule stops earlier.
    assert pts["kato-temple"]["hvps"] < pts["residual"]["hvps"]
