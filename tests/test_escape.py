"""escape_saddle and SaddleEscape against closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.testing import TwoWeight

ONE = torch.ones(1, 1, dtype=torch.float64)


def test_escape_from_the_origin_moves_along_the_diagonal():
    model = TwoWeight()
    obj = cp.Objective(model, F.mse_loss, (ONE, ONE))
    s = cp.escape_saddle(obj)
    assert s.taken
    assert s.loss_before == 1.0
    assert s.loss_after < 1.0
    assert s.eigenvalue == pytest.approx(-2.0)
    w1, w2 = model.w1.item(), model.w2.item()
    assert w1 == pytest.approx(w2, abs=1e-12)  # along ±(1, 1)/√2
    assert math.hypot(w1, w2) == pytest.approx(s.step_size)
    # L(t) = (1 − t²/2)² along the unit diagonal
    assert s.loss_after == pytest.approx((1 - s.step_size**2 / 2) ** 2, rel=1e-12)
    assert obj.loss() == pytest.approx(s.loss_after)


@pytest.mark.parametrize("alpha", [1e-1, 1e-2, 1e-3])
def test_predicted_change_is_right_to_second_order(alpha):
    model = TwoWeight()
    obj = cp.Objective(model, F.mse_loss, (ONE, ONE))
    s = cp.escape_saddle(obj, max_step=alpha)
    assert s.step_size == alpha
    # exact: actual = −α² + α⁴/4, predicted = −α²
    assert s.predicted_change == pytest.approx(-(alpha**2), rel=1e-12)
    assert abs(s.actual_change - s.predicted_change) == pytest.approx(
        alpha**4 / 4, rel=1e-6
    )


def test_predicted_change_off_the_critical_point():
    # a non-critical point with negative curvature: gᵀuα enters the prediction
    torch.manual_seed(1)
    X = torch.randn(30, 3, dtype=torch.float64)
    y = torch.randn(30, 1, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    errors = []
    for alpha in (1e-2, 1e-3):
        clone = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        clone.load_state_dict(model.state_dict())
        obj = cp.Objective(clone, F.mse_loss, (X, y))
        s = cp.escape_saddle(obj, max_step=alpha, tol=1e-12)
        assert s.taken
        errors.append(abs(s.actual_change - s.predicted_change))
    # third-order remainder: ten times shorter step, ~1000 times smaller error
    assert errors[1] < errors[0] / 300


def test_escape_keeps_other_state():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 1)
    ).double()
    model.train()
    X = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, 1, dtype=torch.float64)
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    obj = cp.Objective(model, F.mse_loss, (X, y), params="0.*")
    frozen = model[3].weight.detach().clone()
    s = cp.escape_saddle(obj)
    assert model.training
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert torch.equal(model[3].weight, frozen)  # outside the selected parameters
    if s.taken:
        assert obj.loss() < s.loss_before


def test_escape_at_a_minimum_is_refused():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randn(40, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    A = torch.cat([X, torch.ones(40, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(A, y).solution
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    before = [p.detach().clone() for p in model.parameters()]
    s = cp.escape_saddle(cp.Objective(model, F.mse_loss, (X, y)))
    assert not s.taken
    assert "no clearly negative curvature" in s.reason
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )


def test_plain_gradient_descent_never_leaves_the_origin():
    model = TwoWeight()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        F.mse_loss(model(ONE), ONE).backward()
        opt.step()
    assert model.w1.item() == 0.0
    assert model.w2.item() == 0.0


def test_saddle_escape_around_sgd_reaches_zero_loss():
    model = TwoWeight()
    obj = cp.Objective(model, F.mse_loss, (ONE, ONE))
    opt = cp.SaddleEscape(
        torch.optim.SGD(model.parameters(), lr=0.1), obj, grad_tol=1e-8
    )
    for _ in range(200):
        opt.zero_grad()
        loss = F.mse_loss(model(ONE), ONE)
        loss.backward()
        opt.step()
    assert F.mse_loss(model(ONE), ONE).item() < 1e-6
    assert opt.num_escapes == 1
    assert opt.events[0].step == 0
    assert opt.events[0].result.eigenvalue == pytest.approx(-2.0)


def test_saddle_escape_leaves_the_optimizer_alone_when_not_stalled():
    model = TwoWeight(0.5, 0.5)
    obj = cp.Objective(model, F.mse_loss, (ONE, ONE))
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = cp.SaddleEscape(inner, obj, grad_tol=1e-12, stalled=None)
    reference = TwoWeight(0.5, 0.5)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(20):
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            F.mse_loss(m(ONE), ONE).backward()
            o.step()
    assert opt.events == []
    assert model.w1.item() == reference.w1.item()


def test_custom_stall_rule_and_bad_args():
    model = TwoWeight()
    obj = cp.Objective(model, F.mse_loss, (ONE, ONE))
    calls = []

    def rule(step, grad_norm):
        calls.append((step, grad_norm))
        return step == 3

    opt = cp.SaddleEscape(
        torch.optim.SGD(model.parameters(), lr=0.1), obj, stalled=rule
    )
    for _ in range(5):
        opt.zero_grad()
        F.mse_loss(model(ONE), ONE).backward()
        opt.step()
    assert [e.step for e in opt.events] == [3]
    assert len(calls) == 5
    with pytest.raises(cp.InputError, match=r"torch\.optim\.Optimizer"):
        cp.SaddleEscape("sgd", obj)
    with pytest.raises(cp.InputError, match="max_step"):
        cp.escape_saddle(obj, max_step=-1.0)


# --------------------------------------------------------------------------
# One rule, one step: the diagnosis and the escape agree


def planted_objective(eigenvalues, seed=0):
    from critpoint.testing import (
        Quadratic,
        planted_matrix,
        quadratic_batch_loss,
        quadratic_data,
    )

    A, _ = planted_matrix(eigenvalues, seed=seed)
    b = 1e-3 * torch.ones(A.shape[0], dtype=torch.float64)  # a small gradient
    model = Quadratic(A, b=b)
    return cp.Objective(model, data=quadratic_data(), batch_loss=quadratic_batch_loss)


@pytest.mark.parametrize(
    "lam", [-0.05, -0.0125, -0.0105, -0.0101, -0.0099, -0.0095, -0.005, 0.0, 0.5]
)
@pytest.mark.parametrize(("tol", "eig_rtol"), [(1e-4, 1e-3), (1e-2, 1e-3), (1e-4, 0.0)])
def test_diagnose_saddle_iff_escape_steps(lam, tol, eig_rtol):
    # λ_max = 10 sets τ = eig_rtol·10: λ around −0.01 sits at the edge of the
    # rule, where the error bounds (loose at tol=1e-2) decide.
    eigenvalues = sorted([lam, *torch.linspace(1.0, 2.0, 30).tolist(), 10.0])
    d = cp.diagnose(
        planted_objective(eigenvalues),
        tol=tol,
        eig_rtol=eig_rtol,
        density=False,
        trace=False,
    )
    s = cp.escape_saddle(planted_objective(eigenvalues), tol=tol, eig_rtol=eig_rtol)
    assert (d.kind == "saddle") == s.taken
    assert (d.escape_direction is not None) == s.taken
    assert s.eigenvalue == d.lambda_min
    assert s.eigenvalue_error == d.lambda_min_error
    if s.taken:
        # the first trial step is the one quadratic step; its prediction is the
        # diagnosis's when no backtracking was needed
        full = cp.quadratic_step(
            s.loss_before,
            float(s.direction @ planted_objective(eigenvalues).grad()),
            s.eigenvalue,
        )
        assert s.step_size == pytest.approx(full.step_size / 2**s.backtracks)
        if s.backtracks == 0:
            assert s.predicted_change == pytest.approx(d.escape_prediction)


def test_escape_hvp_budget_is_max_matvecs():
    obj = cp.Objective(TwoWeight(), F.mse_loss, (ONE, ONE))
    with pytest.warns(DeprecationWarning, match="escape_saddle"):
        old = cp.escape_saddle(obj, maxiter=40)
    obj = cp.Objective(TwoWeight(), F.mse_loss, (ONE, ONE))
    new = cp.escape_saddle(obj, max_matvecs=40)
    assert (old.step_size, old.loss_after) == (new.step_size, new.loss_after)
    # every product counted: the eigensolver's 2 (the probe's symmetry test
    # rides on its block, its determinism test is a forward pass)
    obj = cp.Objective(TwoWeight(), F.mse_loss, (ONE, ONE))
    tight = cp.escape_saddle(obj, max_matvecs=2)
    assert tight.taken
    assert tight.num_matvecs == 2
    with pytest.raises(
        cp.InputError,
        match=r"max_matvecs=1 counts every .* eigensolver 1; .*at least 2",
    ):
        cp.escape_saddle(obj, max_matvecs=1)


def test_escape_until_leaves_the_two_weight_saddle_and_stops():
    model = TwoWeight()
    obj = cp.Objective(model, F.mse_loss, (ONE, ONE))
    run = cp.escape_until(obj, max_steps=10, seed=5)
    # step 1 is the quadratic step α = 1 along (1, 1)/√2: L = (1 − ½)² = ¼
    first = run.steps[0]
    assert first.taken
    assert first.step_size == pytest.approx(1.0)
    assert first.loss_after == pytest.approx(0.25, rel=1e-12)
    # the loss only falls, and the run stops at the first step not taken
    losses = [s.loss_after for s in run.steps]
    assert losses == sorted(losses, reverse=True)
    assert all(s.taken for s in run.steps[:-1])
    assert len(run.steps) == 10 or not run.steps[-1].taken
    assert run.loss_before == 1.0
    assert run.loss_after == obj.loss() == run.steps[-1].loss_after
    assert run.num_steps_taken == sum(s.taken for s in run.steps)
    assert run.num_matvecs == sum(s.num_matvecs for s in run.steps)
    # the same steps as escape_saddle called with seeds 5, 6, ...
    again = cp.Objective(TwoWeight(), F.mse_loss, (ONE, ONE))
    for i, s in enumerate(run.steps):
        one = cp.escape_saddle(again, seed=5 + i)
        assert (one.taken, one.step_size, one.loss_after) == (
            s.taken,
            s.step_size,
            s.loss_after,
        )
    doc = run.to_dict()
    assert doc["schema"] == "critpoint.escape"
    assert doc["schema_version"] == 1
    assert doc["num_steps_taken"] == run.num_steps_taken
    assert doc["steps"][0]["step_size"] == pytest.approx(1.0)
    assert doc["settings"]["seed"] == 5
    assert doc["settings"]["max_steps"] == 10


def test_escape_until_at_a_minimum_takes_no_step_and_checks_its_arguments():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 2, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    obj = cp.Objective(model, F.mse_loss, (X, y))
    run = cp.escape_until(obj, max_steps=3)
    assert len(run.steps) == 1
    assert run.num_steps_taken == 0
    assert run.loss_after == run.loss_before == pytest.approx(0.0, abs=1e-30)
    with pytest.raises(cp.InputError, match="max_steps must be a positive integer"):
        cp.escape_until(obj, max_steps=0)


def test_escape_reports_the_eigensolver_and_the_line_search():
    obj = cp.Objective(TwoWeight(), F.mse_loss, (ONE, ONE))
    seen = []
    s = cp.escape_saddle(obj, progress=lambda d, t: seen.append((d, t)))
    assert s.taken
    # the eigensolver's products (the last report is what it spent) ...
    eig = [x for x in seen if x[1] > 1 + s.backtracks]
    assert eig
    assert all(done <= total for done, total in seen)
    # ... then the line search: its loss evaluations, one per trial
    trials = s.backtracks + 1
    assert seen[-1] == (trials, trials)
    with pytest.raises(cp.InputError, match="progress must be True"):
        cp.escape_saddle(obj, progress="yes")


def test_escape_until_counts_its_steps():
    obj = cp.Objective(TwoWeight(), F.mse_loss, (ONE, ONE))
    seen = []
    run = cp.escape_until(obj, max_steps=5, progress=lambda d, t: seen.append((d, t)))
    n = len(run.steps)
    assert seen[:n] == [(i + 1, 5) for i in range(n)]
    assert seen[-1] == (n, n)  # the plan closes at the steps made
