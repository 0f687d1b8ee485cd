"""The rule: the zero tolerance, the verdict, the minimum ratio, the criticality threshold."""

import math

import pytest
import torch

import critpoint as cp
from critpoint.analysis.rule import (
    default_grad_tol,
    measure_extremes,
    minimum_ratio,
    verdict,
)
from critpoint.linalg import DenseOperator, SpectralDensity
from critpoint.testing import planted_matrix


def test_negative_eigenvalue_within_its_error_bound_is_degenerate():
    # a loose solve: the bound, not the value, decides
    v = cp.classify(-0.02, 0.05, 10.0, 0.01, eig_rtol=1e-3)
    assert v.kind == "degenerate"
    assert v.side == "positive"
    v = cp.classify(-0.02, 0.001, 10.0, 0.01, eig_rtol=1e-3)
    assert v.kind == "saddle"
    # the tolerance is relative to the spectrum's scale
    assert cp.classify(-0.02, 0.0, 100.0, 0.0, eig_rtol=1e-3).kind == "degenerate"
    assert cp.classify(-0.02, 0.0, 10.0, 0.0, eig_rtol=1e-3).kind == "saddle"
    assert cp.classify(0.0, 0.0, 0.0, 0.0).side == "none"


def test_classify_with_bounds_on_the_spectrum():
    args = (1.0, 1e-6, 10.0, 1e-6)
    assert (
        cp.classify(*args).kind == "minimum"
    )  # no bound given: the Ritz values decide
    assert cp.classify(*args, lower=0.5, upper=10.0).kind == "minimum"
    v = cp.classify(*args, lower=-0.3, upper=10.0, probability=0.99)
    assert (v.kind, v.side) == ("degenerate", "positive")
    assert "lo = -0.3" in v.reason
    neg = (-10.0, 1e-6, -1.0, 1e-6)
    assert cp.classify(*neg, lower=-10.0, upper=-0.5).kind == "maximum"
    assert cp.classify(*neg, lower=-10.0, upper=0.2).kind == "degenerate"
    # a saddle needs no certificate: a clearly negative Ritz value is one
    assert cp.classify(-1.0, 1e-6, 10.0, 1e-6, lower=-5.0, upper=20.0).kind == "saddle"
    c = cp.curvature(-0.02, 0.001, 10.0, 0.0, eig_rtol=1e-3)
    assert c.zero_tol == cp.zero_tolerance(-0.02, 10.0, 1e-3) == pytest.approx(0.01)
    assert c.negative
    assert c.positive
    assert not c.all_positive


def test_verdict_of_a_curvature_is_classify():
    c = cp.curvature(-3.0, 1e-8, 5.0, 1e-8, eig_rtol=1e-3)
    assert verdict(c) == cp.classify(-3.0, 1e-8, 5.0, 1e-8, eig_rtol=1e-3)
    v = verdict(c)
    assert (v.kind, v.side) == ("saddle", "both")
    assert v.zero_tol == pytest.approx(5e-3)
    with pytest.warns(DeprecationWarning, match="use Verdict.zero_tol"):
        assert v.threshold == v.zero_tol
    assert isinstance(v, cp.Verdict)


def test_default_grad_tol_closed_form():
    # ‖g‖ ≤ √(2 · λ_max · rtol · max(|L|, √eps))
    assert default_grad_tol(1.0, 2.0, torch.float64) == pytest.approx(
        math.sqrt(2 * 2 * 1e-3)
    )
    assert default_grad_tol(-3.0, 2.0, torch.float64, rtol=0.5) == pytest.approx(
        math.sqrt(2 * 2 * 0.5 * 3.0)
    )
    # a loss fitted to zero and a zero Hessian still give a positive threshold
    floor = math.sqrt(torch.finfo(torch.float32).eps)
    assert default_grad_tol(0.0, 0.0, torch.float32) == pytest.approx(
        math.sqrt(2 * floor * 1e-3 * floor)
    )


def test_minimum_ratio_of_a_known_density():
    # two probes; τ = 0.1: masses below −τ are 0.25 and 0.5, within ±τ 0.25 and 0
    nodes = torch.tensor([[-1.0, 0.05, 2.0, 3.0], [-2.0, -0.5, 1.0, 4.0]])
    weights = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]])
    density = SpectralDensity(nodes, weights, num_matvecs=0, seed=None)
    ratio, negative, flat = minimum_ratio(density, 0.1)
    assert negative == pytest.approx((0.25 + 0.5) / 2)
    assert ratio == pytest.approx(1 - 0.375)
    assert flat == pytest.approx((0.25 + 0.0) / 2)
    # −0.05 is within τ: not negative
    assert minimum_ratio(density, 0.6)[1] == pytest.approx((0.25 + 0.25) / 2)


def test_measure_extremes_matches_the_dense_spectrum():
    eigenvalues = [-1.5, *torch.linspace(0.5, 1.0, 20).tolist(), 4.0]
    A, Q = planted_matrix(eigenvalues, seed=3)
    ext = measure_extremes(DenseOperator(A), k=4, tol=1e-10, seed=0)
    c = ext.curvature
    assert c.lambda_min == pytest.approx(-1.5, abs=1e-9)
    assert c.lambda_max == pytest.approx(4.0, abs=1e-9)
    assert c.zero_tol == pytest.approx(1e-3 * 4.0)
    assert ext.eigenvalues.shape == ext.errors.shape == (4,)
    assert ext.vectors.shape == (22, 4)
    assert abs(float(ext.vectors[:, 0] @ Q[:, 0])) == pytest.approx(1.0, abs=1e-8)
    assert abs(float(ext.vectors[:, -1] @ Q[:, -1])) == pytest.approx(1.0, abs=1e-8)
    assert c.lower <= -1.5 + 1e-9
    assert c.upper >= 4.0 - 1e-9
    assert c.probability == pytest.approx(0.99)
    assert measure_extremes(DenseOperator(A), k=4, delta=None).curvature.lower is None


def test_measure_extremes_of_one_parameter_is_exact():
    ext = measure_extremes(DenseOperator(torch.tensor([[-0.75]], dtype=torch.float64)))
    assert ext.curvature.lambda_min == ext.curvature.lambda_max == -0.75
    assert ext.curvature.lambda_min_error == 0.0
    assert (ext.curvature.lower, ext.curvature.upper) == (-0.75, -0.75)
    assert ext.vectors.tolist() == [[1.0]]
