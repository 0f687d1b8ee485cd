"""Objective: loss, gradient and HVPs against dense float64 references."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.testing import autograd_hessian, reference_hessian


def make_data(n=37, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def mlp(d=5, h=6, out=3, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(d, h)]
    if bn:
        layers.append(nn.BatchNorm1d(h))
    layers += [nn.Tanh(), nn.Linear(h, out)]
    model = nn.Sequential(*layers).double()
    if bn:
        # Non-trivial running statistics and affine parameters.
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.5, 0.5)
            model[1].running_var.uniform_(0.5, 2.0)
            model[1].weight.uniform_(0.5, 1.5)
            model[1].bias.uniform_(-0.3, 0.3)
    return model


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def mse_onehot(out, y):
    return F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype))


@pytest.mark.parametrize("loss", [F.cross_entropy, mse_onehot], ids=["ce", "mse"])
@pytest.mark.parametrize("bn", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("mode", ["rev-rev", "fwd-rev"])
def test_mlp_matches_dense_hessian(loss, bn, mode):
    X, y = make_data()
    model = mlp(bn=bn)
    obj = cp.Objective(
        model, loss, (X, y), batch_size=10, hvp_mode=mode
    )  # uneven batches: 10,10,10,7
    model.eval()
    H_ref = reference_hessian(model, loss, X, y)
    model.train()
    theta = obj.theta
    g = torch.Generator().manual_seed(1)
    V = torch.randn(obj.num_params, 4, generator=g, dtype=torch.float64)
    assert rel(obj.hvp(V[:, 0]), H_ref @ V[:, 0]) < 1e-10
    assert rel(obj.hvp(V), H_ref @ V) < 1e-10
    # loss and gradient
    model.eval()
    with torch.no_grad():
        ref_loss = loss(model(X), y).item()
    model.train()
    assert obj.loss() == pytest.approx(ref_loss, rel=1e-13)

    def f(t):
        return loss(torch.func.functional_call(model, obj.unflatten(t), (X,)), y)

    model.eval()
    ref_grad = torch.func.grad(f)(theta)
    model.train()
    assert rel(obj.grad(), ref_grad) < 1e-12
    value, g2 = obj.loss_and_grad()
    assert value == pytest.approx(ref_loss, rel=1e-13)
    assert rel(g2, ref_grad) < 1e-12
    # the user's model is back in train mode, untouched
    assert model.training


def test_cnn_matches_dense_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 3),
    ).double()
    g = torch.Generator().manual_seed(3)
    X = torch.randn(13, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (13,), generator=g)
    obj = cp.Objective(model, F.cross_entropy, (X, y), batch_size=5)
    model.eval()
    H_ref = reference_hessian(model, F.cross_entropy, X, y)
    H = obj.hessian().dense()
    assert rel(H, H_ref) < 1e-10
    ev = torch.linalg.eigvalsh(H_ref)
    r = cp.eigsh(obj.hessian(), k=3, which="BE", tol=1e-12)
    assert torch.allclose(
        r.eigenvalues, torch.cat([ev[:1], ev[-2:]]), atol=1e-8 * ev.abs().max()
    )


def test_parameter_subsets_are_blocks_of_the_full_hessian():
    X, y = make_data()
    model = mlp()
    full = cp.Objective(model, F.cross_entropy, (X, y)).hessian().dense()
    sub = cp.Objective(model, F.cross_entropy, (X, y), params="2.*")
    assert sub.param_names == ["2.weight", "2.bias"]
    start = sum(p.numel() for p in model[0].parameters())
    block = full[start:, start:]
    assert rel(sub.hessian().dense(), block) < 1e-12
    pred = cp.Objective(
        model, F.cross_entropy, (X, y), params=lambda name: name.endswith("weight")
    )
    assert pred.param_names == ["0.weight", "2.weight"]
    # several patterns keep the model's order
    both = cp.Objective(model, F.cross_entropy, (X, y), params=["2.bias", "0.bias"])
    assert both.param_names == ["0.bias", "2.bias"]


def test_batching_does_not_change_the_objective():
    X, y = make_data(n=41)
    model = mlp()
    whole = cp.Objective(model, F.cross_entropy, (X, y))
    v = torch.randn(whole.num_params, dtype=torch.float64)
    ds = torch.utils.data.TensorDataset(X, y)
    loaders = [
        torch.utils.data.DataLoader(ds, batch_size=8),
        torch.utils.data.DataLoader(
            ds, batch_size=8, shuffle=True
        ),  # order must not matter
        ds,
        [(X[:3], y[:3]), (X[3:], y[3:])],
    ]
    for data in loaders:
        obj = cp.Objective(model, F.cross_entropy, data)
        assert obj.loss() == pytest.approx(whole.loss(), rel=1e-13)
        assert rel(obj.hvp(v), whole.hvp(v)) < 1e-12
    assert whole.num_samples == 41


def test_dict_batches_through_batch_loss():
    X, y = make_data()
    model = mlp()
    batches = [{"x": X[:20], "label": y[:20]}, {"x": X[20:], "label": y[20:]}]

    def batch_loss(m, batch):
        return F.cross_entropy(m(batch["x"]), batch["label"])

    obj = cp.Objective(model, data=batches, batch_loss=batch_loss)
    ref = cp.Objective(model, F.cross_entropy, (X, y))
    assert obj.loss() == pytest.approx(ref.loss(), rel=1e-13)
    v = torch.randn(obj.num_params, dtype=torch.float64)
    assert rel(obj.hvp(v), ref.hvp(v)) < 1e-12


def test_model_state_is_restored():
    X, y = make_data()
    model = mlp(bn=True)
    model.train()
    before = copy.deepcopy(model.state_dict())
    for train_mode in (False, True):
        obj = cp.Objective(model, F.cross_entropy, (X, y), train_mode=train_mode)
        obj.loss()
        obj.grad()
        obj.hvp(torch.ones(obj.num_params, 2, dtype=torch.float64))
        assert model.training
        after = model.state_dict()
        for key, value in before.items():
            assert torch.equal(value, after[key]), key
    assert all(p.requires_grad for p in model.parameters())


def test_train_mode_uses_batch_statistics():
    X, y = make_data()
    model = mlp(bn=True)
    obj = cp.Objective(model, F.cross_entropy, (X, y), train_mode=True)
    model.train()
    with torch.no_grad():
        expected = F.cross_entropy(model(X), y).item()
    # the forward pass above updated running stats; the objective must not have
    assert obj.loss() == pytest.approx(expected, rel=1e-12)
    H = obj.hessian().dense()
    assert torch.allclose(H, H.T, atol=1e-12)


def test_float64_analyses_a_copy():
    X, y = make_data()
    model = mlp().float()
    obj = cp.Objective(model, F.cross_entropy, (X.float(), y), dtype=torch.float64)
    assert obj.theta.dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32
    ref = reference_hessian(model.double(), F.cross_entropy, X.double(), y)
    model.float()
    assert (
        rel(obj.hessian().dense(), ref) < 1e-6
    )  # parameters were rounded to float32 once
    theta = obj.theta + 0.01
    obj.set_theta(theta)
    assert torch.allclose(
        torch.cat([p.reshape(-1) for p in model.parameters()]).double(),
        theta,
        atol=1e-6,
    )


def test_set_theta_and_explicit_theta():
    X, y = make_data()
    model = mlp()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    theta0 = obj.theta
    theta1 = theta0 + 0.1
    loss1 = obj.loss(theta1)
    assert obj.loss() != pytest.approx(loss1)  # explicit θ does not move the model
    assert torch.equal(obj.theta, theta0)
    obj.set_theta(theta1)
    assert obj.loss() == pytest.approx(loss1, rel=1e-14)
    assert torch.equal(obj.theta, theta1)
    parts = obj.unflatten(theta1)
    assert parts["0.weight"].shape == model[0].weight.shape


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(5, 3)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.used(x)


def test_unused_parameters_give_zero_rows():
    X, y = make_data()
    model = WithUnused().double()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    H = obj.hessian().dense()
    n_used = 18
    assert torch.count_nonzero(H[n_used:]) == 0
    assert torch.count_nonzero(obj.grad()[n_used:]) == 0
    assert torch.count_nonzero(H[:n_used, :n_used]) > 0


def test_nan_names_batch_and_parameter():
    X, y = make_data()
    X = X.clone()
    X[25, 2] = float("nan")
    model = mlp()
    obj_ok = cp.Objective(model, F.cross_entropy, (X[:10], y[:10]))
    assert obj_ok.loss() > 0
    with pytest.raises(cp.NonFiniteError, match="batch 2"):
        cp.Objective(model, F.cross_entropy, (X, y), batch_size=10).loss()
    with pytest.raises(
        cp.NonFiniteError, match=r"batch 2, first in parameter '0.weight'"
    ):
        cp.Objective(model, F.cross_entropy, (X, y), batch_size=10).grad()
    obj = cp.Objective(model, F.cross_entropy, (X, y), batch_size=10)
    with pytest.raises(
        cp.NonFiniteError, match="Hessian-vector product has NaN/Inf on batch 2"
    ):
        obj.hvp(torch.ones(obj.num_params, dtype=torch.float64))


def test_bad_input_errors():
    X, y = make_data()
    model = mlp()
    with pytest.raises(cp.InputError, match=r"first batch \(inputs \(37, 4\)"):
        cp.Objective(model, F.cross_entropy, (X[:, :4], y))
    with pytest.raises(cp.InputError, match="same number of samples"):
        cp.Objective(model, F.cross_entropy, (X, y[:5]))
    with pytest.raises(cp.InputError, match="batch_loss"):
        cp.Objective(model, F.cross_entropy, [{"x": X, "y": y}])
    with pytest.raises(cp.InputError, match="one-shot iterator"):
        cp.Objective(model, F.cross_entropy, ((X, y) for _ in range(2)))
    with pytest.raises(
        cp.InputError, match=r"selects no trainable parameter.*0\.weight"
    ):
        cp.Objective(model, F.cross_entropy, (X, y), params="decoder.*")
    with pytest.raises(cp.InputError, match="must be a scalar"):
        cp.Objective(
            model, lambda o, t: F.cross_entropy(o, t, reduction="none"), (X, y)
        )
    with pytest.raises(cp.InputError, match="neither was given"):
        cp.Objective(model, data=(X, y))
    with pytest.raises(cp.InputError, match="empty"):
        cp.Objective(model, F.cross_entropy, (X[:0], y[:0]))
    with pytest.raises(cp.InputError, match=r"float32 or torch\.float64"):
        cp.Objective(model, F.cross_entropy, (X, y), dtype=torch.float16)
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    with pytest.raises(cp.InputError, match=r"v must have shape \(57,\) or \(57, k\)"):
        obj.hvp(torch.ones(56, dtype=torch.float64))
    with pytest.raises(cp.InputError, match="theta must have shape"):
        obj.loss(torch.ones(3, dtype=torch.float64))


def test_inputs_cast_when_dtype_is_given():
    X, y = make_data()
    model = mlp().float()
    obj = cp.Objective(model, F.cross_entropy, (X.float(), y), dtype=torch.float64)
    assert obj.loss() == pytest.approx(
        F.cross_entropy(model.double()(X), y).item(), rel=1e-6
    )


# ---------------------------------------------------------------- reduction
def uneven_loader(X, y):
    """Batches of 4, 4 and 1 samples."""
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=4
    )


def whole(model, obj, loss, X, y):
    """The loss over all samples in one call, as a function of θ."""

    def f(theta):
        return loss(torch.func.functional_call(model, obj.unflatten(theta), (X,)), y)

    return f


@pytest.mark.parametrize("mode", ["rev-rev", "fwd-rev"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_summed_nn_losses_give_the_exact_sum(kind, mode):
    g = torch.Generator().manual_seed(5)
    X = torch.randn(9, 5, generator=g, dtype=torch.float64)
    if kind == "mse":
        y = torch.randn(9, 3, generator=g, dtype=torch.float64)
        loss, mean_loss = nn.MSELoss(reduction="sum"), nn.MSELoss()
    else:
        y = torch.randint(0, 3, (9,), generator=g)
        loss, mean_loss = nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss()
    model = mlp()
    obj = cp.Objective(model, loss, uneven_loader(X, y), hvp_mode=mode)
    assert obj.reduction == "sum"
    assert "reduction='sum'" in repr(obj)
    f = whole(model, obj, loss, X, y)
    theta = obj.theta
    with torch.no_grad():
        total = f(theta).item()
    assert obj.loss() == pytest.approx(total, rel=1e-13)
    # the batching makes no difference, and neither does the count of batches
    one = cp.Objective(model, loss, (X, y))
    assert one.loss() == pytest.approx(total, rel=1e-13)
    H_ref = autograd_hessian(f, theta)
    g_ref = torch.func.grad(f)(theta)
    assert rel(obj.grad(), g_ref) < 1e-12
    value, grad = obj.loss_and_grad()
    assert value == pytest.approx(total, rel=1e-13)
    assert rel(grad, g_ref) < 1e-12
    V = torch.randn(obj.num_params, 3, generator=g, dtype=torch.float64)
    assert rel(obj.hvp(V[:, 0]), H_ref @ V[:, 0]) < 1e-12
    assert rel(obj.hvp(V), H_ref @ V) < 1e-12
    assert rel(obj.hessian().dense(), H_ref) < 1e-12
    # the mean objective of the same data is exactly the sum divided by 9
    mean = cp.Objective(model, mean_loss, uneven_loader(X, y), hvp_mode=mode)
    assert mean.reduction == "mean"
    scale = 9 if kind == "ce" else 27  # MSE's mean runs over 9 samples × 3 outputs
    assert mean.loss() == pytest.approx(total / scale, rel=1e-13)
    assert rel(mean.hvp(V) * scale, H_ref @ V) < 1e-12


def test_reduction_argument_for_plain_functions_and_batch_loss():
    X, y = make_data(n=9)
    model = mlp()

    def summed(out, t):
        return F.cross_entropy(out, t, reduction="sum")

    obj = cp.Objective(model, summed, uneven_loader(X, y), reduction="sum")
    f = whole(model, obj, summed, X, y)
    H_ref = autograd_hessian(f, obj.theta)
    with torch.no_grad():
        assert obj.loss() == pytest.approx(f(obj.theta).item(), rel=1e-13)
    assert rel(obj.hessian().dense(), H_ref) < 1e-12
    # a partial of a torch function says its reduction itself
    import functools

    part = functools.partial(F.cross_entropy, reduction="sum")
    assert cp.Objective(model, part, (X, y)).reduction == "sum"
    # batch_loss returning the sum of its batch
    batches = [
        {"x": X[:4], "y": y[:4]},
        {"x": X[4:8], "y": y[4:8]},
        {"x": X[8:], "y": y[8:]},
    ]
    by_dict = cp.Objective(
        model,
        data=batches,
        batch_loss=lambda m, b: summed(m(b["x"]), b["y"]),
        reduction="sum",
    )
    assert by_dict.loss() == pytest.approx(obj.loss(), rel=1e-13)
    assert rel(by_dict.hessian().dense(), H_ref) < 1e-12
    # without the argument a plain function is a mean, as before
    assert cp.Objective(model, F.cross_entropy, (X, y)).reduction == "mean"


def test_unusable_reductions_are_refused():
    X, y = make_data(n=9)
    model = mlp()
    with pytest.raises(cp.InputError, match=r"reduction='none'.*'mean' or 'sum'"):
        cp.Objective(model, nn.CrossEntropyLoss(reduction="none"), (X, y))
    with pytest.raises(cp.InputError, match=r"reduction='sum'.*reduction='mean'"):
        cp.Objective(
            model, nn.CrossEntropyLoss(reduction="sum"), (X, y), reduction="mean"
        )
    with pytest.raises(cp.InputError, match="reduction must be 'mean' or 'sum'"):
        cp.Objective(model, F.cross_entropy, (X, y), reduction="batchmean")
    # KLDivLoss's "batchmean" is a mean over the batch's samples
    kl = nn.KLDivLoss(reduction="batchmean")
    assert cp.Objective(model, kl, (X, F.one_hot(y, 3).double())).reduction == "mean"


def test_summed_loss_in_the_diagnosis():
    X, y = make_data(n=9)
    model = mlp()
    obj = cp.Objective(model, nn.CrossEntropyLoss(reduction="sum"), uneven_loader(X, y))
    d = cp.diagnose(obj, k=2, density=False, trace=False)
    assert d.settings["reduction"] == "sum"
    assert "(sum over samples)" in d.summary()
    assert d.to_dict()["settings"]["reduction"] == "sum"
    mean = cp.diagnose(
        cp.Objective(model, F.cross_entropy, (X, y)), k=2, density=False, trace=False
    )
    assert "(mean over samples)" in mean.summary()


# ------------------------------------------------------------ linearisation
@pytest.mark.parametrize("mode", ["rev-rev", "fwd-rev"])
def test_linearize_gives_the_hessian_at_a_fixed_copied_point(mode):
    X, y = make_data()
    model = mlp(bn=True)
    obj = cp.Objective(model, F.cross_entropy, (X, y), batch_size=10, hvp_mode=mode)
    model.eval()
    H_ref = reference_hessian(model, F.cross_entropy, X, y)
    model.train()
    theta = obj.theta
    lin = obj.linearize(theta)
    assert not lin.cached  # nothing kept without a budget
    theta.add_(1.0)  # neither the tensor given ...
    obj.set_theta(obj.theta * 2)  # ... nor the model moves the linearisation
    g = torch.Generator().manual_seed(2)
    V = torch.randn(obj.num_params, 3, generator=g, dtype=torch.float64)
    assert rel(lin.hvp(V), H_ref @ V) < 1e-10
    assert rel(lin.hvp(V[:, 0]), H_ref @ V[:, 0]) < 1e-10
    assert lin.hvp(V[:, :0]).shape == (obj.num_params, 0)


def test_linearize_keeps_the_graphs_within_its_budget():
    X, y = make_data()
    model = mlp()
    obj = cp.Objective(model, F.cross_entropy, (X, y), batch_size=10)
    H_ref = reference_hessian(model, F.cross_entropy, X, y)
    V = torch.randn(obj.num_params, 4, dtype=torch.float64)
    kept = obj.linearize(max_bytes=2**30)
    assert kept.cached
    assert rel(kept.hvp(V), H_ref @ V) < 1e-12
    assert rel(kept.hvp(V, fresh=True), H_ref @ V) < 1e-12
    kept.release()
    assert not kept.cached
    assert rel(kept.hvp(V), H_ref @ V) < 1e-12
    assert not obj.linearize(max_bytes=100).cached  # the graphs need more
    fwd = cp.Objective(model, F.cross_entropy, (X, y), hvp_mode="fwd-rev")
    assert not fwd.linearize(max_bytes=2**30).cached  # only rev-rev graphs are kept
    with pytest.raises(cp.InputError, match="theta must have shape"):
        obj.linearize(torch.ones(3, dtype=torch.float64))


def test_products_at_a_fixed_point_do_not_read_or_check_theta_again(monkeypatch):
    X, y = make_data()
    model = mlp()
    H = cp.Objective(model, F.cross_entropy, (X, y)).hessian(check=False)
    H @ torch.ones(H.shape[0], dtype=torch.float64)  # the first product linearises
    calls = []
    original = cp.Objective._check_vector

    def spy(self, v, what, allow_block=False):
        calls.append(what)
        return original(self, v, what, allow_block)

    monkeypatch.setattr(cp.Objective, "_check_vector", spy)
    monkeypatch.setattr(
        cp.Objective, "theta", property(lambda self: calls.append("read") or 1 / 0)
    )
    for _ in range(3):
        H @ torch.ones(H.shape[0], dtype=torch.float64)
        H @ torch.ones(H.shape[0], 2, dtype=torch.float64)
    assert calls == []


def test_theta_is_a_copy_even_of_a_single_parameter():
    from critpoint.testing import Quadratic, quadratic_data

    model = Quadratic(torch.eye(3, dtype=torch.float64))
    obj = cp.Objective(model, data=quadratic_data(), batch_loss=lambda m, b: m())
    theta = obj.theta
    theta.add_(1.0)
    assert torch.equal(model.theta.detach(), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(obj.theta, torch.zeros(3, dtype=torch.float64))


def test_dtype_by_name_and_half_precision_models_refused():
    model = nn.Linear(3, 1)
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    obj = cp.Objective(model, F.mse_loss, (x, y), dtype="float64")
    assert obj.dtype == torch.float64
    assert obj.theta.dtype == torch.float64
    assert (
        next(model.parameters()).dtype == torch.float32
    )  # the user's model is untouched
    with pytest.raises(cp.InputError, match=r"unknown dtype 'float65'"):
        cp.Objective(model, F.mse_loss, (x, y), dtype="float65")
    half = nn.Linear(3, 1).to(torch.bfloat16)
    with pytest.raises(
        cp.InputError,
        match=r"the model's parameters torch.bfloat16 is too coarse.*dtype=torch.float32",
    ):
        cp.Objective(half, F.mse_loss, (x.bfloat16(), y.bfloat16()))
    obj = cp.Objective(half, F.mse_loss, (x, y), dtype=torch.float32)
    assert obj.dtype == torch.float32


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batch_terms_add_up_to_the_full_data_curvature_and_slope(reduction):
    torch.manual_seed(0)
    X = torch.randn(23, 3, dtype=torch.float64)
    y = torch.randn(23, 1, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    loss = nn.MSELoss(reduction=reduction)
    obj = cp.Objective(net, loss, (X, y), batch_size=5)  # 5, 5, 5, 5, 3
    H = obj.hessian().dense()
    g = obj.grad()
    U = torch.linalg.eigh(H).eigenvectors[:, [0, -1]]
    d = g / g.norm()
    counts, curv, slopes, grad_sq = obj.batch_terms(U, d)
    assert counts.tolist() == [5.0, 5.0, 5.0, 5.0, 3.0]
    N = 23.0 if reduction == "mean" else 1.0
    assert torch.allclose(
        curv.sum(0) / N, torch.einsum("ij,ij->j", U, H @ U), atol=1e-12
    )
    assert float(slopes.sum()) / N == pytest.approx(float(g.norm()), rel=1e-12)
    # each batch's own gradient, by a one-batch objective
    first = cp.Objective(net, nn.MSELoss(reduction="sum"), (X[:5], y[:5])).grad()
    assert float(grad_sq[0]) == pytest.approx(float(first @ first), rel=1e-12)
    assert slopes.shape == (5,)
    assert obj.batch_terms(U)[2] is None
    with pytest.raises(cp.InputError, match="U must have shape"):
        obj.batch_terms(U[:, 0])


def test_over_is_the_same_objective_over_other_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    whole = cp.Objective(model, F.cross_entropy, (x, y), batch_size=7)
    part = whole.over(["2.weight", "2.bias"])
    assert part.param_names == ["2.weight", "2.bias"]
    assert part.model is whole.model
    assert part.loss() == pytest.approx(whole.loss(), rel=1e-15)
    # its Hessian is the whole Hessian's diagonal block over those parameters
    H = whole.hessian().dense()
    first = sum(p.numel() for p in model[0].parameters())
    torch.testing.assert_close(
        part.hessian().dense(), H[first:, first:], rtol=1e-12, atol=1e-12
    )
