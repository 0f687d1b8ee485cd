"""Objective(bn=...): the three BatchNorm modes against dense autograd Hessians.

``eval`` uses the model's running statistics, ``train`` each batch's own,
``recalibrate`` statistics re-estimated over the data exactly as
``torch.optim.swa_utils.update_bn`` re-estimates them, on new tensors: the
user's model, its buffers (the very tensor objects) and its mode are the same
afterwards.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

import critpoint as cp
from critpoint.testing import reference_hessian


def bn_cnn(seed=0):
    """A small CNN with one BatchNorm2d and non-trivial (lagging) running statistics."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 3),
    ).double()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.4, -0.3]))
        model[1].running_var.copy_(torch.tensor([0.5, 2.0]))
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.3, 0.3)
        model[1].num_batches_tracked.fill_(7)
    return model


def images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = 1.5 * torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64) + 0.7
    y = torch.randint(0, 3, (n,), generator=g)
    return X, y


def snapshot(model):
    """Every buffer's tensor object and a copy of its values, the mode flags."""
    return (
        [(name, b, b.clone()) for name, b in model.named_buffers()],
        [m.training for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def assert_unchanged(model, snap):
    buffers, modes, state = snap
    now = dict(model.named_buffers())
    for name, tensor, values in buffers:
        assert now[name] is tensor, f"buffer {name} was replaced"
        assert torch.equal(tensor, values), f"buffer {name} was written"
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def batch_statistics_model(model):
    """A copy whose BatchNorm normalises by batch statistics and updates nothing."""
    ref = copy.deepcopy(model).train()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return ref


def recalibrated_model(model, X, batch_size):
    """A copy whose running statistics update_bn set on the same batches."""
    ref = copy.deepcopy(model)
    loader = [(X[i : i + batch_size],) for i in range(0, len(X), batch_size)]
    update_bn(loader, ref)
    return ref.eval()


@pytest.mark.parametrize("bn", ["eval", "train", "recalibrate"])
def test_each_mode_matches_its_dense_hessian(bn):
    X, y = images()
    model = bn_cnn()
    model.train()  # the user's mode, to be kept
    snap = snapshot(model)
    # train mode depends on the batching: one batch, so the oracle is the same
    # function; eval and recalibrate are sums over samples: uneven batches.
    batch_size = 24 if bn == "train" else 10
    obj = cp.Objective(model, F.cross_entropy, (X, y), bn=bn, batch_size=batch_size)
    assert obj.bn == bn
    assert obj.train_mode == (bn == "train")
    H = obj.hessian().dense()
    assert_unchanged(model, snap)

    if bn == "eval":
        ref = copy.deepcopy(model).eval()
    elif bn == "train":
        ref = batch_statistics_model(model)
    else:
        ref = recalibrated_model(model, X, batch_size)
        # the statistics really moved: not the model's own
        assert not torch.allclose(ref[1].running_mean, model[1].running_mean)
    H_ref = reference_hessian(ref, F.cross_entropy, X, y)
    assert rel(H, H_ref) < 1e-11
    with torch.no_grad():
        expected = F.cross_entropy(ref(X), y).item()
    assert obj.loss() == pytest.approx(expected, rel=1e-13)
    assert_unchanged(model, snap)


def test_recalibrate_differs_from_eval_and_train():
    """The three modes are three functions: the test above cannot pass by accident."""
    X, y = images()
    model = bn_cnn()
    dense = {
        bn: cp.Objective(model, F.cross_entropy, (X, y), bn=bn, batch_size=10)
        .hessian()
        .dense()
        for bn in ("eval", "recalibrate")
    }
    dense["train"] = (
        cp.Objective(model, F.cross_entropy, (X, y), bn="train").hessian().dense()
    )
    assert rel(dense["eval"], dense["recalibrate"]) > 1e-2
    assert rel(dense["train"], dense["recalibrate"]) > 1e-4


def test_recalibration_follows_the_parameters():
    """After set_theta the statistics are re-estimated at the new point."""
    X, y = images()
    model = bn_cnn()
    obj = cp.Objective(model, F.cross_entropy, (X, y), bn="recalibrate", batch_size=10)
    g = torch.Generator().manual_seed(3)
    moved = obj.theta + 0.3 * torch.randn(
        obj.num_params, generator=g, dtype=torch.float64
    )
    obj.set_theta(moved)
    ref = recalibrated_model(model, X, 10)
    with torch.no_grad():
        expected = F.cross_entropy(ref(X), y).item()
    assert obj.loss() == pytest.approx(expected, rel=1e-13)
    # an optimizer moving the parameters in place is seen too
    with torch.no_grad():
        model[0].weight.mul_(1.1)
    ref = recalibrated_model(model, X, 10)
    with torch.no_grad():
        expected = F.cross_entropy(ref(X), y).item()
    assert obj.loss() == pytest.approx(expected, rel=1e-13)


def test_loss_in_another_mode():
    X, y = images()
    model = bn_cnn()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    for bn in ("train", "recalibrate"):
        other = cp.Objective(model, F.cross_entropy, (X, y), bn=bn)
        assert obj.loss(bn=bn) == pytest.approx(other.loss(), rel=1e-14)
    recal = cp.Objective(model, F.cross_entropy, (X, y), bn="recalibrate")
    assert recal.loss(bn="eval") == pytest.approx(obj.loss(), rel=1e-14)
    assert obj.batchnorm_layers == ["1"]


def test_train_mode_is_the_old_spelling_of_bn_train():
    X, y = images()
    model = bn_cnn()
    old = cp.Objective(model, F.cross_entropy, (X, y), train_mode=True)
    assert old.bn == "train"
    assert old.loss() == cp.Objective(model, F.cross_entropy, (X, y), bn="train").loss()
    assert cp.Objective(model, F.cross_entropy, (X, y)).bn == "eval"
    with pytest.raises(cp.InputError, match="contradicts bn='eval'"):
        cp.Objective(model, F.cross_entropy, (X, y), train_mode=True, bn="eval")
    with pytest.raises(cp.InputError, match="bn must be one of"):
        cp.Objective(model, F.cross_entropy, (X, y), bn="running")


def test_model_without_batchnorm_has_no_layers_and_one_function():
    X, y = images()
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).double()
    objs = [
        cp.Objective(model, F.cross_entropy, (X, y), bn=bn)
        for bn in ("eval", "train", "recalibrate")
    ]
    assert objs[0].batchnorm_layers == []
    assert len({o.loss() for o in objs}) == 1


def test_recalibration_failure_is_one_clear_error():
    X, y = images(n=1)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(36, 3), nn.BatchNorm1d(3)
    ).double()  # one sample: no batch variance
    with pytest.raises(cp.InputError, match="re-estimate the BatchNorm statistics"):
        cp.Objective(model, F.cross_entropy, (X, y), bn="recalibrate")
