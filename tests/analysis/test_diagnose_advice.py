"""The advice of a diagnosis comes from the real loss: closed-form points of two-weight nets."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.testing import TwoWeight

ONE = torch.ones(1, 1, dtype=torch.float64)


def quartic_loss(model, batch):
    """``(w1·w2 − 1)² + 2‖w‖⁴``: the ±2 saddle at the origin, walled in by a quartic."""
    x, y = batch
    w2 = model.w1**2 + model.w2**2
    return F.mse_loss(model(x), y) + 2 * w2**2


def test_escape_step_backtracks_on_the_real_loss_as_escape_saddle_does():
    """Along u = (1, 1)/√2: L(α) = (α²/2 − 1)² + 2α⁴, quadratic model 1 − α².

    α = 1: L = 2.25 (up); α = ½: change −0.109 > ½·(−0.25); α = ¼: change
    −0.0537 ≤ ½·(−0.0625), accepted after two halvings.
    """
    model = TwoWeight()
    obj = cp.Objective(model, data=(ONE, ONE), batch_loss=quartic_loss)
    d = cp.diagnose(obj, k=2, density=False, trace=False)
    assert d.kind == "saddle"
    assert d.critical
    assert d.lambda_min == pytest.approx(-2.0, abs=1e-12)

    def exact(a):
        return (a * a / 2 - 1) ** 2 + 2 * a**4 - 1

    step = d.escape_step
    assert [a for a, _ in step.trials] == pytest.approx([1.0, 0.5, 0.25])
    assert [c for _, c in step.trials] == pytest.approx(
        [exact(1.0), exact(0.5), exact(0.25)]
    )
    assert step.backtracks == 2
    assert step.accepted
    assert step.actual_change == pytest.approx(exact(0.25))
    assert step.predicted_change == pytest.approx(-0.0625)
    assert d.escape_prediction == pytest.approx(-0.0625)
    advice = d.advice()
    # the measured change, not −L = −1 (what a quadratic step of ½|λ|α² = L promised)
    assert f"change {exact(0.25):.3g}" in advice
    assert "-1;" not in advice
    assert f"goes 1 → {1 + exact(0.25):.6g}" in advice
    assert cp.Diagnosis.from_dict(json.loads(d.to_json())).advice() == advice
    # escape_saddle takes exactly this step
    s = cp.escape_saddle(obj, k=2)
    assert s.taken
    assert s.step_size == pytest.approx(step.step_size)
    assert s.loss_after == pytest.approx(step.loss_after)
    assert s.backtracks == step.backtracks
    assert abs(float(model.w1.detach())) == pytest.approx(0.25 / 2**0.5)


def test_a_step_that_never_lowers_the_loss_is_said():
    """``L = (w1·w2 − 1)² + c‖w‖⁴`` along u: ``−α² + α⁴/4 + cα⁴`` falls only for ``α² < 1/c``.

    Thirty halvings from α = 1 reach ``2⁻³⁰ ≈ 1e-9``, whose square is above
    ``1/c`` for ``c = 1e20``: every trial goes up.
    """

    def steep(model, batch):
        x, y = batch
        return F.mse_loss(model(x), y) + 1e20 * (model.w1**2 + model.w2**2) ** 2

    obj = cp.Objective(TwoWeight(), data=(ONE, ONE), batch_loss=steep)
    d = cp.diagnose(obj, k=2, density=False, trace=False)
    assert d.kind == "saddle"
    assert not d.escape_step.lowers_loss
    assert len(d.escape_step.trials) == 31
    assert "no step along its eigenvector lowered the loss in 31 trials" in d.advice()
    assert cp.Diagnosis.from_dict(d.to_dict()).advice() == d.advice()


def test_non_critical_point_says_keep_training_and_names_the_curvature():
    """At w = (0.3, −0.2) the Hessian of (w1·w2 − 1)² is [[0.08, −2.24], [−2.24, 0.18]]."""
    obj = cp.Objective(TwoWeight(0.3, -0.2), F.mse_loss, (ONE, ONE))
    H = obj.hessian().dense()
    expected = torch.tensor([[0.08, -2.24], [-2.24, 0.18]], dtype=torch.float64)
    assert torch.allclose(H, expected, atol=1e-12)
    d = cp.diagnose(obj, k=2)
    assert not d.critical
    assert d.kind == "saddle"
    assert d.headline() == (
        "indefinite curvature; not a critical point (the gradient is not small)"
    )
    assert "saddle" not in d.headline()
    assert d.advice().startswith(
        f"keep training: the gradient norm {d.grad_norm:.3g} is above"
    )
    assert "step" not in d.advice().split("(")[0].replace("gradient step", "")
    back = cp.Diagnosis.from_dict(d.to_dict())
    assert back.advice() == d.advice()
    assert back.headline() == d.headline()


def test_curvature_names():
    # least squares away from its solution: positive definite, gradient large
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [2.0], [0.0]], dtype=torch.float64)
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, -5.0]]))
    d = cp.diagnose(cp.Objective(model, F.mse_loss, (X, y)), k=2, density=False)
    assert d.kind == "minimum"
    assert not d.critical
    assert d.headline().startswith("positive definite curvature; not a critical point")
    # its negation: negative definite
    neg = cp.diagnose(
        cp.Objective(model, lambda out, t: -F.mse_loss(out, t), (X, y)),
        k=2,
        density=False,
    )
    assert neg.kind == "maximum"
    assert neg.headline().startswith("negative definite curvature; not a critical")
