"""critpoint.testing: the dense oracles are right (closed forms, finite differences)."""

import torch
from torch import nn

from critpoint.testing import (
    Quadratic,
    TwoWeight,
    autograd_hessian,
    planted_matrix,
    quadratic_batch_loss,
    quadratic_data,
)


def test_planted_matrix_has_the_planted_spectrum():
    lam = torch.tensor([-3.0, -1.0, 0.0, 0.0, 2.0, 5.0], dtype=torch.float64)
    A, Q = planted_matrix(lam, seed=3)
    torch.testing.assert_close(A, A.T, rtol=0, atol=0)
    torch.testing.assert_close(torch.linalg.eigvalsh(A), lam, rtol=0, atol=1e-13)
    torch.testing.assert_close(
        Q.T @ Q, torch.eye(6, dtype=torch.float64), atol=1e-14, rtol=0
    )


def test_autograd_hessian_of_a_quadratic_is_its_matrix():
    A, _ = planted_matrix([-1.0, 2.0, 4.0], seed=0)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = torch.randn(3, dtype=torch.float64)
    H = autograd_hessian(lambda t: 0.5 * t @ A @ t + b @ t, theta)
    torch.testing.assert_close(H, A, rtol=0, atol=1e-14)
    model = Quadratic(A, b)
    assert quadratic_batch_loss(model, quadratic_data()[0]).shape == ()


def test_autograd_hessian_through_layer_norm_matches_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 1)
    ).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]

    def f(theta):
        params = {
            n: t.view(s)
            for n, t, s in zip(names, torch.split(theta, sizes), shapes, strict=True)
        }
        return torch.func.functional_call(net, params, (x,)).square().mean()

    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    H = autograd_hessian(f, theta)

    def grad(t):
        t = t.clone().requires_grad_(True)
        return torch.autograd.grad(f(t), t)[0]

    eps = 1e-6
    cols = [
        (grad(theta + eps * e) - grad(theta - eps * e)) / (2 * eps)
        for e in torch.eye(theta.numel(), dtype=torch.float64)
    ]
    torch.testing.assert_close(H, torch.stack(cols, 1), rtol=0, atol=1e-7)


def test_two_weight_saddle_has_its_closed_form():
    from critpoint._autodiff import functional_call

    one = torch.ones(1, 1, dtype=torch.float64)
    assert float(TwoWeight(0.5, -2.0)(one).detach()) == -1.0
    model = TwoWeight()

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {"w1": theta[0], "w2": theta[1]}
        return nn.functional.mse_loss(functional_call(model, params, (one,)), one)

    origin = torch.zeros(2, dtype=torch.float64)
    assert float(loss(origin)) == 1.0
    H = autograd_hessian(loss, origin)
    torch.testing.assert_close(
        H, torch.tensor([[0.0, -2.0], [-2.0, 0.0]], dtype=torch.float64)
    )
