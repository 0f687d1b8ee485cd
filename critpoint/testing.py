"""Ground truth for tests and benchmarks: planted spectra and dense reference Hessians.

These helpers build problems whose answer is known exactly, so critpoint's
matrix-free results can be checked against them. They allocate ``n × n``
matrices on purpose and are meant for small ``n``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from critpoint._autodiff import functional_call  # torch.func's, not a transform
from critpoint.linalg._random import make_generator


def planted_matrix(
    eigenvalues: Sequence[float] | torch.Tensor,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense symmetric matrix ``Q diag(λ) Qᵀ`` with a random orthogonal ``Q``.

    Parameters
    ----------
    eigenvalues : sequence of float or torch.Tensor
        The spectrum ``λ``, shape ``(n,)``.
    seed : int
        Seed of the Gaussian matrix whose QR factor is ``Q``.
    dtype : torch.dtype
        Dtype of the result.

    Returns
    -------
    matrix : torch.Tensor
        Shape ``(n, n)``, symmetric.
    Q : torch.Tensor
        The eigenvectors as columns, shape ``(n, n)``.
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    n = lam.shape[0]
    gen = make_generator(seed)
    Q, R = torch.linalg.qr(torch.randn((n, n), generator=gen, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))  # unique, well-spread Haar sample
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    return A.to(dtype), Q.to(dtype)


class TwoWeight(nn.Module):
    """``f(x) = w₁ w₂ x``: the smallest network with a saddle, at ``w₁ = w₂ = 0``.

    With ``F.mse_loss`` on the one sample ``x = y = 1`` the loss is
    ``(w₁w₂ − 1)²``: at the origin it is 1, the gradient is 0 and the Hessian
    ``[[0, −2], [−2, 0]]`` (eigenvalues ±2, escape along ``w₁ = w₂``).

    Parameters
    ----------
    w1, w2 : float
        The starting weights (float64).
    """

    def __init__(self, w1: float = 0.0, w2: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor(w1, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.tensor(w2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``w₁ w₂ x``, the shape of ``x``."""
        return self.w1 * self.w2 * x


class Quadratic(nn.Module):
    """``L(θ) = ½ θᵀAθ + bᵀθ`` as a model whose "loss" is its output.

    Use with ``batch_loss=lambda model, batch: model()`` and any one-sample
    data, e.g. ``data=[(torch.zeros(1),)]``: the Hessian is exactly ``A``.

    Parameters
    ----------
    A : torch.Tensor
        Symmetric matrix, shape ``(n, n)``.
    b : torch.Tensor, optional
        Linear term, shape ``(n,)``; zero by default.
    theta : torch.Tensor, optional
        Initial point, shape ``(n,)``; zero by default.
    """

    def __init__(
        self,
        A: torch.Tensor,
        b: torch.Tensor | None = None,
        theta: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        n = A.shape[0]
        self.register_buffer("A", A.clone())
        self.register_buffer(
            "b", torch.zeros(n, dtype=A.dtype) if b is None else b.clone()
        )
        init = torch.zeros(n, dtype=A.dtype) if theta is None else theta.clone()
        self.theta = nn.Parameter(init)

    def forward(self, *args: object) -> torch.Tensor:
        """Return ``½ θᵀAθ + bᵀθ`` (the arguments are ignored)."""
        return 0.5 * self.theta @ (self.A @ self.theta) + self.b @ self.theta


def quadratic_batch_loss(model: nn.Module, batch: object) -> torch.Tensor:
    """``batch_loss`` for :class:`Quadratic`: the model's value, whatever the batch."""
    return model()


def quadratic_data() -> list[tuple[torch.Tensor]]:
    """One one-sample batch for :class:`Quadratic` objectives."""
    return [(torch.zeros(1),)]


def autograd_hessian(
    f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor
) -> torch.Tensor:
    """Dense Hessian of a scalar ``f(θ)`` by plain autograd double backward.

    One reverse pass gives ``∇f`` with its graph kept; each row ``i`` is then
    ``∂(∇f)_i/∂θ`` by a second backward pass. This is the oracle the tests
    trust: it uses no ``torch.func`` transform, so it does not share their
    failures (``torch.func.hessian`` and ``jvp(jacrev)`` are wrong through
    ``nn.LayerNorm`` and train-mode BatchNorm on torch 2.13).

    Parameters
    ----------
    f : callable
        Scalar function of a flat vector.
    theta : torch.Tensor
        The point, shape ``(n,)``.

    Returns
    -------
    torch.Tensor
        Shape ``(n, n)``, as computed (not symmetrised).
    """
    point = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(point), point, create_graph=True)
    n = point.numel()
    rows = []
    for i in range(n):
        if g.grad_fn is None:  # f is linear in θ
            rows.append(torch.zeros_like(point))
            continue
        (row,) = torch.autograd.grad(g[i], point, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(point) if row is None else row)
    return torch.stack(rows).detach()


def reference_hessian(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    param_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Dense Hessian of ``loss_fn(model(inputs), targets)`` by :func:`autograd_hessian`.

    Independent of critpoint's objective: all samples in one batch, the
    parameters flattened in ``param_names`` order (default: all trainable, in
    ``named_parameters`` order), the model in whatever mode it is in.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        Mean loss of ``(outputs, targets)``.
    inputs, targets : torch.Tensor
        The whole data set, leading dimension = samples.
    param_names : sequence of str, optional
        Parameters to differentiate, in order.

    Returns
    -------
    torch.Tensor
        Shape ``(n, n)``.
    """
    named = dict(model.named_parameters())
    names = (
        list(param_names)
        if param_names is not None
        else [k for k, p in named.items() if p.requires_grad]
    )
    shapes = [named[k].shape for k in names]
    sizes = [named[k].numel() for k in names]
    theta = torch.cat([named[k].detach().reshape(-1) for k in names])

    def f(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        params = {k: p.view(s) for k, p, s in zip(names, pieces, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (inputs,)), targets)

    return autograd_hessian(f, theta)
