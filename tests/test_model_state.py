"""An analysis leaves every buffer and flag as it found them, or says why it cannot run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint._model_state import ModelState, set_mode
from critpoint.errors import InputError

torch.manual_seed(0)
X = torch.randn(16, 3, dtype=torch.float64)
Y = torch.randn(16, 1, dtype=torch.float64)


class Counted(nn.Module):
    """A linear layer that counts its calls in a buffer (in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1).double()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.lin(x)


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Counted()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Remembers(nn.Module):
    """Reassigns a buffer in forward (not in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1).double()
        self.register_buffer("last", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        self.last = out.detach().mean()
        return out


class FreezesInEval(nn.Module):
    """A ``train()`` override that freezes the first layer outside training."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3).double()
        self.b = nn.Linear(3, 1).double()

    def train(self, mode: bool = True) -> FreezesInEval:
        super().train(mode)
        for p in self.a.parameters():
            p.requires_grad_(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def spectral_net() -> nn.Module:
    torch.manual_seed(3)
    lin = nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4))
    return nn.Sequential(lin, nn.Tanh(), nn.Linear(4, 1)).double()


def test_buffer_written_in_place_in_a_transform_is_a_clear_error() -> None:
    model = Holder()
    obj = cp.Objective(model, F.mse_loss, (X, Y))
    assert obj.loss() > 0  # no transform: runs, and the counter is put back
    assert int(model.block.calls) == 0
    with pytest.raises(
        InputError, match=r"module 'block' \(Counted\) writes to a tensor"
    ):
        obj.grad()
    with pytest.raises(InputError, match=r"module 'block'"):
        obj.hvp(torch.ones(obj.num_params, dtype=torch.float64))
    assert int(model.block.calls) == 0
    assert model.training  # the mode is back too


def test_buffer_reassigned_in_forward_is_put_back() -> None:
    model = Remembers()
    original = model.last
    obj = cp.Objective(model, F.mse_loss, (X, Y))
    obj.grad()
    obj.hvp(torch.ones(obj.num_params, dtype=torch.float64))
    assert model.last is original
    assert float(original) == 0.0


def test_train_override_that_sets_requires_grad_is_undone() -> None:
    model = FreezesInEval()
    obj = cp.Objective(model, F.mse_loss, (X, Y))
    assert obj.num_params == 16
    obj.loss()
    obj.hvp(torch.ones(16, dtype=torch.float64))
    assert all(p.requires_grad for p in model.parameters())
    assert model.training


def oracle_hessian(model: nn.Module) -> torch.Tensor:
    """Dense Hessian by plain double backward, one fresh copy of the model per column."""
    n = sum(p.numel() for p in model.parameters())
    cols = []
    for i in range(n):
        m = copy.deepcopy(model).train()
        params = list(m.parameters())
        loss = F.mse_loss(m(X), Y)
        g = torch.cat(
            [
                t.reshape(-1)
                for t in torch.autograd.grad(loss, params, create_graph=True)
            ]
        )
        col = torch.autograd.grad(g[i], params)
        cols.append(torch.cat([t.reshape(-1) for t in col]))
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("hvp_cache", ["auto", None])
def test_spectral_norm_in_train_mode_is_deterministic_and_exact(hvp_cache) -> None:
    model = spectral_net()
    sn = model[0].parametrizations.weight[0]
    u0, v0 = sn._u.clone(), sn._v.clone()
    expected = oracle_hessian(model)
    obj = cp.Objective(model, F.mse_loss, (X, Y), train_mode=True, hvp_cache=hvp_cache)
    dense = obj.hessian().dense()
    # Every pass starts from the same power-iteration vectors: H is one fixed matrix.
    torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-12)
    cp.diagnose(obj, k=2, density=False, trace=False)  # the symmetry probe passes
    assert torch.equal(sn._u, u0)
    assert torch.equal(sn._v, v0)


def test_batchnorm_statistics_in_train_mode_are_untouched() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    bn = model[1]
    mean, var = bn.running_mean, bn.running_var
    before = (mean.clone(), var.clone(), int(bn.num_batches_tracked))
    obj = cp.Objective(model, F.mse_loss, (X, Y), train_mode=True)
    obj.hessian().dense()
    assert bn.running_mean is mean
    assert bn.running_var is var
    assert torch.equal(mean, before[0])
    assert torch.equal(var, before[1])
    assert int(bn.num_batches_tracked) == before[2]


def test_model_state_round_trip_and_set_mode() -> None:
    model = Counted()
    state = ModelState(model)
    with torch.no_grad():
        model(X)
        model(X)
    model.eval()
    model.lin.weight.requires_grad_(False)
    assert int(model.calls) == 2
    state.restore()
    assert int(model.calls) == 0
    assert model.training
    assert model.lin.weight.requires_grad

    class CannotSwitch(nn.Module):
        def train(self, mode: bool = True) -> nn.Module:
            raise NotImplementedError("Calling train() is not supported yet.")

    m = CannotSwitch()
    set_mode(m, False)
    assert m.training is False
