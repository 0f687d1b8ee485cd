"""diagnose: closed-form points, planted spectra, a real MLP on digits."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.analysis.rule import default_grad_tol
from critpoint.testing import (
    Quadratic,
    TwoWeight,
    planted_matrix,
    quadratic_batch_loss,
    quadratic_data,
)


def two_weight_objective(w1=0.0, w2=0.0):
    one = torch.ones(1, 1, dtype=torch.float64)
    model = TwoWeight(w1, w2)
    return model, cp.Objective(model, F.mse_loss, (one, one))


def quadratic_objective(eigenvalues, seed=0):
    A, Q = planted_matrix(eigenvalues, seed=seed)
    model = Quadratic(A)
    return cp.Objective(
        model, data=quadratic_data(), batch_loss=quadratic_batch_loss
    ), Q


def test_two_weight_origin_is_a_saddle_with_eigenvalues_pm2():
    _, obj = two_weight_objective()
    d = cp.diagnose(obj, k=2)
    assert d.grad_norm == 0.0
    assert d.critical
    assert d.kind == "saddle"
    assert d.lambda_min == pytest.approx(-2.0, abs=1e-12)
    assert d.lambda_max == pytest.approx(2.0, abs=1e-12)
    assert d.loss == pytest.approx(1.0)
    u = d.escape_direction
    assert u is not None
    assert abs(float(u[0])) == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert float(u[0]) == pytest.approx(float(u[1]), abs=1e-12)  # ±(1, 1)/√2
    assert d.escape_prediction == pytest.approx(-1.0)
    assert d.minimum_ratio == pytest.approx(0.5, abs=1e-12)
    assert d.trace.value == pytest.approx(0.0, abs=1e-12)


def test_two_weight_valley_at_one_one():
    _, obj = two_weight_objective(1.0, 1.0)
    H = obj.hessian().dense()
    assert torch.allclose(
        H, torch.tensor([[2.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    )
    d = cp.diagnose(obj, k=2)
    assert d.kind == "degenerate"
    assert d.side == "positive"
    assert d.critical
    assert "flat minimum" in d.headline()
    assert d.escape_direction is None


def linear_regression(seed=0, negate=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = X @ torch.tensor(
        [[1.0], [-2.0], [0.5], [3.0]], dtype=torch.float64
    ) + 0.3 * torch.randn(60, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 1).double()
    A = torch.cat([X, torch.ones(60, 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.lstsq(A, y).solution
    with torch.no_grad():
        model.weight.copy_(sol[:4].T)
        model.bias.copy_(sol[4])
    sign = -1.0 if negate else 1.0
    obj = cp.Objective(model, lambda o, t: sign * F.mse_loss(o, t), (X, y))
    return obj, sign * 2 * A.T @ A / 60


def test_least_squares_solution_is_a_minimum_and_its_negation_a_maximum():
    obj, H = linear_regression()
    ev = torch.linalg.eigvalsh(H)
    d = cp.diagnose(obj, k=2, tol=1e-10)
    assert d.kind == "minimum"
    assert d.critical
    assert d.grad_norm < 1e-12
    assert d.lambda_min == pytest.approx(float(ev[0]), rel=1e-8)
    assert d.lambda_max == pytest.approx(float(ev[-1]), rel=1e-8)
    assert d.trace.value == pytest.approx(float(ev.sum()), rel=1e-10)  # n = 5: exact
    assert d.minimum_ratio == pytest.approx(1.0)
    neg, Hn = linear_regression(negate=True)
    dn = cp.diagnose(neg, k=2, tol=1e-10)
    assert dn.kind == "maximum"
    assert dn.lambda_max == pytest.approx(
        float(torch.linalg.eigvalsh(Hn)[-1]), rel=1e-8
    )


def test_deep_linear_chain_at_origin_is_degenerate():
    model = nn.Sequential(
        nn.Linear(1, 1, bias=False),
        nn.Linear(1, 1, bias=False),
        nn.Linear(1, 1, bias=False),
    )
    model = model.double()
    for p in model.parameters():
        nn.init.zeros_(p)
    one = torch.ones(1, 1, dtype=torch.float64)
    d = cp.diagnose(cp.Objective(model, F.mse_loss, (one, one)), k=2)
    assert d.grad_norm == 0.0
    assert d.lambda_min == 0.0
    assert d.lambda_max == 0.0
    assert d.kind == "degenerate"
    assert d.side == "none"


@pytest.mark.parametrize(
    ("negatives", "positives", "kind", "side"),
    [
        ([], [1.0, 5.0, 10.0], "minimum", "positive"),
        ([-10.0, -5.0, -1.0], [], "maximum", "negative"),
        ([-3.0], [1.0, 10.0], "saddle", "both"),
        ([-0.05], [10.0], "saddle", "both"),  # tiny next to the top, clearly resolved
        ([-1e-6], [10.0], "degenerate", "positive"),  # within the zero tolerance
        ([], [0.0, 10.0], "degenerate", "positive"),
        ([-10.0], [0.0], "degenerate", "negative"),
    ],
)
def test_planted_spectra(negatives, positives, kind, side):
    bulk = (
        torch.linspace(1.0, 2.0, 40).tolist() if kind in ("minimum", "saddle") else []
    )
    if kind == "maximum":
        bulk = torch.linspace(-2.0, -1.0, 40).tolist()
    if kind == "degenerate" and side == "positive":
        bulk = torch.linspace(1.0, 2.0, 40).tolist()
    if kind == "degenerate" and side == "negative":
        bulk = torch.linspace(-2.0, -1.0, 40).tolist()
    eigenvalues = sorted(negatives + bulk + positives)
    obj, Q = quadratic_objective(eigenvalues)
    d = cp.diagnose(obj, k=4, tol=1e-10)
    assert d.kind == kind
    assert d.side == side
    assert d.lambda_min == pytest.approx(eigenvalues[0], abs=1e-8)
    assert d.lambda_max == pytest.approx(eigenvalues[-1], abs=1e-8)
    if kind == "saddle":
        u = d.escape_direction
        q = Q[:, 0]
        assert abs(float(u @ q)) == pytest.approx(1.0, abs=1e-6)


def test_unconverged_solve_gives_a_marked_verdict():
    g = torch.Generator().manual_seed(0)
    eigenvalues = torch.sort(
        torch.rand(300, generator=g, dtype=torch.float64) * 2 - 0.5
    ).values.tolist()
    obj, _ = quadratic_objective(eigenvalues)
    d = cp.diagnose(obj, k=4, tol=1e-12, max_matvecs=25, density=False, trace=False)
    assert not d.converged
    assert "unconverged" in d.headline()
    assert d.kind in ("saddle", "degenerate")
    # the bounds still hold, loose as they are
    assert d.lambda_min - d.lambda_min_error <= eigenvalues[0] + 1e-12


def test_grad_tol_rule_and_override():
    _, obj = two_weight_objective(0.3, 0.2)
    d = cp.diagnose(obj, k=2, density=False, trace=False)
    assert not d.critical
    assert d.grad_tol == pytest.approx(
        default_grad_tol(
            d.loss, max(abs(d.lambda_min), abs(d.lambda_max)), torch.float64
        )
    )
    d2 = cp.diagnose(obj, k=2, grad_tol=10.0, density=False, trace=False)
    assert d2.critical
    assert d2.settings["grad_tol"] == 10.0
    assert d2.settings["tf32"] is None  # TF32 exists on CUDA only (tests/test_gpu.py)


def test_bad_arguments():
    _, obj = two_weight_objective()
    with pytest.raises(cp.InputError, match="k must be an int >= 2"):
        cp.diagnose(obj, k=1)
    with pytest.raises(cp.InputError, match="eig_rtol"):
        cp.diagnose(obj, eig_rtol=float("nan"))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.tensor(data.data[:300], dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0).clamp_min(1e-8)
    y = torch.tensor(data.target[:300])
    return X, y


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_digits_mlp_from_init_to_a_stalled_point(digits, seed):
    # A narrow tanh net with the square loss stalls at a genuine critical point
    # (cross-entropy on a wide net drifts on towards zero loss instead).
    X, y = digits
    Y = F.one_hot(y, 10).double()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10)).double()
    obj = cp.Objective(model, F.mse_loss, (X, Y))
    d0 = cp.diagnose(obj, k=4, num_steps=40, trace=False)
    assert not d0.critical
    assert d0.kind == "saddle"
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=2000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = F.mse_loss(model(X), Y)
        loss.backward()
        return loss

    opt.step(closure)
    d = cp.diagnose(obj, k=4, num_steps=40, trace=False)
    assert d.loss < d0.loss
    assert d.critical
    assert d.kind in ("minimum", "degenerate")
    assert d.side == "positive"  # digits has constant pixels: exact flat directions
    # the minimum ratio rises as the loss falls
    assert d.minimum_ratio > 0.99
    assert d0.minimum_ratio < 0.9


def test_minimum_only_when_the_whole_spectrum_is_certified_positive():
    # λ_min = 0.05 next to a bulk on [1, 2] and a top at 10 (τ = 0.01)
    eigenvalues = [0.05, *torch.linspace(1.0, 2.0, 200).tolist(), 10.0]
    obj, _ = quadratic_objective(eigenvalues)
    loose = cp.diagnose(obj, tol=1e-2, density=False, trace=False)
    # The Ritz value is clearly positive, yet the Krylov space is too short to
    # rule out a negative eigenvalue it never saw: no "minimum".
    assert loose.lambda_min - loose.lambda_min_error > loose.zero_tol
    assert loose.lambda_lower < loose.zero_tol
    assert loose.kind == "degenerate"
    assert loose.side == "positive"
    assert loose.uncertified
    assert "not certified" in loose.headline()
    assert "tighter tol" in loose.advice()
    tight = cp.diagnose(obj, tol=1e-6, density=False, trace=False)
    assert tight.kind == "minimum"
    assert 0.05 >= tight.lambda_lower > tight.zero_tol
    assert tight.lambda_upper >= 10.0
    assert tight.bound_probability == pytest.approx(0.99)
    assert "with probability ≥ 99 %" in tight.reason
    assert "with probability ≥ 99 %" in tight.summary()
    # the bounds travel with the document
    back = cp.Diagnosis.from_dict(json.loads(tight.to_json()))
    assert back.lambda_lower == tight.lambda_lower
    assert back.bound_probability == tight.bound_probability
    # a smaller failure probability asks more of the same run
    strict = cp.diagnose(obj, tol=1e-6, delta=1e-6, density=False, trace=False)
    assert strict.lambda_lower <= tight.lambda_lower
    assert "99.9999 %" in strict.reason
    with pytest.raises(cp.InputError, match="delta"):
        cp.diagnose(obj, delta=0.0)


def test_zero_hessian_diagnosis_stops_at_once():
    # A deep linear net at the origin: H = 0 exactly (n = 2700). Every Krylov
    # space is exhausted at its first product.
    model = nn.Sequential(*[nn.Linear(30, 30, bias=False) for _ in range(3)]).double()
    for p in model.parameters():
        nn.init.zeros_(p)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, 30, generator=g, dtype=torch.float64)
    Y = torch.randn(16, 30, generator=g, dtype=torch.float64)
    obj = cp.Objective(model, F.mse_loss, (X, Y))
    d = cp.diagnose(obj)
    assert d.kind == "degenerate"
    assert d.side == "none"
    assert d.eigenvalues == [0.0] * 6
    assert d.converged
    assert (d.lambda_lower, d.lambda_upper) == (0.0, 0.0)
    # 3 (symmetry probe) + about k (eigsh) + 8 (density, one step per probe)
    # + 60 (trace budget)
    assert d.num_matvecs <= 3 + 2 * 6 + 8 + 60


def test_hvp_budgets_are_max_matvecs_and_old_names_warn():
    eigenvalues = torch.linspace(-1.0, 3.0, 120).tolist()
    obj, _ = quadratic_objective(eigenvalues)
    new = cp.diagnose(obj, k=4, max_matvecs=20, trace_max_matvecs=10, density=False)
    assert not new.converged  # 20 products cannot resolve 120 eigenvalues
    assert new.trace.num_matvecs == 10
    assert new.settings["max_matvecs"] == new.settings["maxiter"] == 20
    assert new.settings["trace_max_matvecs"] == 10
    with pytest.warns(DeprecationWarning, match=r"maxiter=\.\.\.\) is deprecated"):
        old = cp.diagnose(obj, k=4, maxiter=20, trace_max_matvecs=10, density=False)
    assert old.eigenvalues == new.eigenvalues
    assert old.num_matvecs == new.num_matvecs
    with pytest.warns(DeprecationWarning, match="trace_max_matvecs"):
        old = cp.diagnose(obj, k=4, max_matvecs=20, trace_matvecs=10, density=False)
    assert old.trace.value == new.trace.value
    with pytest.raises(cp.InputError, match="not both"):
        cp.diagnose(obj, max_matvecs=20, maxiter=30)


# --------------------------------------------------------------------------
# Per layer: each layer's block of the Hessian


def small_mlp():
    from critpoint.data import load_data
    from critpoint.models import build_model

    data = load_data(
        "teacher",
        task="classification",
        n_samples=30,
        in_features=4,
        num_classes=3,
        seed=1,
        dtype=torch.float64,
    )
    model = build_model(
        "mlp", in_features=4, widths=[3], out_features=3, seed=0, dtype="float64"
    )
    return model, cp.get_loss("cross_entropy"), data.as_tuple()


def test_layer_groups():
    model, _, _ = small_mlp()
    assert cp.layer_groups(model) == [
        ("net.0", "Linear", ["net.0.weight", "net.0.bias"]),
        ("net.2", "Linear", ["net.2.weight", "net.2.bias"]),
    ]
    assert cp.layer_groups(model, ["*.bias"]) == [
        ("net.0", "Linear", ["net.0.bias"]),
        ("net.2", "Linear", ["net.2.bias"]),
    ]
    (root,) = cp.layer_groups(TwoWeight())
    assert (root.name, root.module_type, root.params) == (
        "(root)",
        "TwoWeight",
        ["w1", "w2"],
    )


def test_diagnose_layers_diagnoses_the_diagonal_blocks():
    from critpoint.testing import reference_hessian

    model, loss, (X, Y) = small_mlp()
    obj = cp.Objective(model, loss, (X, Y))
    options = {"k": 2, "tol": 1e-10, "seed": 0, "density": False}
    layers = cp.diagnose_layers(obj, one_pass=False, **options)
    assert [x.name for x in layers] == ["net.0", "net.2"]
    H = reference_hessian(model, loss, X, Y)
    start = 0
    for layer in layers:
        n = layer.diagnosis.num_params
        assert layer.params == [f"{layer.name}.weight", f"{layer.name}.bias"]
        assert layer.module_type == "Linear"
        block = torch.linalg.eigvalsh(H[start : start + n, start : start + n])
        assert layer.diagnosis.lambda_min == pytest.approx(float(block[0]), abs=1e-9)
        assert layer.diagnosis.lambda_max == pytest.approx(float(block[-1]), abs=1e-9)
        assert layer.diagnosis.trace.value == pytest.approx(
            float(block.sum()), rel=1e-9
        )
        # the same numbers as the layer's own objective
        own = cp.diagnose(
            cp.Objective(model, loss, (X, Y), params=layer.params), **options
        )
        assert own.eigenvalues == layer.diagnosis.eigenvalues
        start += n
    doc = layers[1].to_dict()
    assert doc["name"] == "net.2"
    assert doc["type"] == "Linear"
    assert doc["num_params"] == 3 * 3 + 3
    back = cp.LayerDiagnosis.from_dict(json.loads(json.dumps(doc)))
    assert back.diagnosis.lambda_max == layers[1].diagnosis.lambda_max
    # an objective over some parameters gives the layers of those only
    part = cp.Objective(model, loss, (X, Y), params="net.2.*")
    assert [x.name for x in cp.diagnose_layers(part, one_pass=False, **options)] == [
        "net.2"
    ]


def test_diagnose_layers_with_a_factory():
    model, loss, data = small_mlp()

    def factory(names):
        return cp.Objective(model, loss, data, params=names)

    groups = cp.layer_groups(model, ["net.0.*"])
    (layer,) = cp.diagnose_layers(factory, groups, k=2, density=False, trace=False)
    whole = cp.diagnose_layers(
        cp.Objective(model, loss, data),
        k=2,
        density=False,
        trace=False,
        one_pass=False,
    )
    assert layer.diagnosis.eigenvalues == whole[0].diagnosis.eigenvalues
    with pytest.raises(cp.InputError, match="needs groups="):
        cp.diagnose_layers(factory)
    with pytest.raises(cp.InputError, match="needs the whole Objective"):
        cp.diagnose_layers(factory, groups, one_pass=True)
    with pytest.raises(cp.InputError, match="an Objective or a factory"):
        cp.diagnose_layers("model", groups)


def test_progress_callback_sees_every_solver():
    _, obj = two_weight_objective()
    seen = []
    d = cp.diagnose(obj, k=2, progress=lambda done, total: seen.append((done, total)))
    assert seen
    assert all(0 <= done <= total for done, total in seen)
    # the products the callbacks saw are the ones spent (the 3-product probe aside)
    assert d.num_matvecs >= max(done for done, _ in seen)
    with pytest.raises(cp.InputError, match="progress must be True, False, None"):
        cp.diagnose(obj, progress="yes")
