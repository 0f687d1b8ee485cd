"""Where critpoint's time goes: the cost of one HVP, taken apart.

For a workload this measures CPU time (``time.process_time``, steadier than
wall time on a shared machine; median of repeats, after a warm-up) of

* critpoint's public path: ``H @ v`` and ``H @ V`` for a block of 8, through
  an operator that keeps each batch's linearisation (the default) and one
  that recomputes it per product (``hvp_cache=None``);
* the same math written directly with ``torch.func`` on a flat-θ loss, with
  the linearisation ``vjp(grad(f), θ)`` computed **once** and its ``vjp_fn``
  reused for every vector, per vector and vmapped over the block, and a
  Python loop over the block;
* plain autograd double backward per vector (what hessian-eigenthings does)
  and a retained ``create_graph`` graph (what PyHessian does for one batch);
* one gradient, for scale;

and, with ``cProfile``, the share of ``eigsh`` (top-5) spent in products
and, within them, in building the forward pass and first backward pass
(``torch.func`` ``grad``): once per batch with the cache, once per product
without.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad, vjp, vmap

import critpoint as cp
from peer_bench.workloads import K, Workload

BLOCK = 8


def _cpu(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _flat_loss(wl: Workload, model: torch.nn.Module) -> tuple[list, torch.Tensor]:
    """One ``f_b(θ)`` per batch (the batch's share of the mean loss) and θ."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    theta = torch.cat([params[k].detach().reshape(-1) for k in names])
    n_total = sum(int(b[0].shape[0]) for b in wl.batches)
    criterion = wl.criterion()

    def make(batch: tuple[torch.Tensor, torch.Tensor]) -> Callable:
        x, y = batch
        weight = x.shape[0] / n_total

        def f(flat: torch.Tensor) -> torch.Tensor:
            pieces = torch.split(flat, sizes)
            p = {k: v.view(s) for k, v, s in zip(names, pieces, shapes, strict=True)}
            return criterion(functional_call(model, p, (x,)), y) * weight

        return f

    return [make(b) for b in wl.batches], theta


def hvp_costs(wl: Workload) -> dict[str, float]:
    """CPU seconds per Hessian-vector product along each path (see module doc)."""
    torch.manual_seed(0)
    n, dt = wl.num_params, wl.dtype
    v = torch.randn(n, dtype=dt)
    V = torch.randn(n, BLOCK, dtype=dt)
    out: dict[str, float] = {}
    H = wl.objective().hessian()
    out["critpoint H @ v"] = _cpu(lambda: H @ v)
    out[f"critpoint H @ V (block of {BLOCK}), per vector"] = _cpu(lambda: H @ V) / BLOCK
    R = wl.objective(hvp_cache=None).hessian()
    out["critpoint H @ v, hvp_cache=None"] = _cpu(lambda: R @ v)
    out[f"critpoint H @ V (block of {BLOCK}), hvp_cache=None, per vector"] = (
        _cpu(lambda: R @ V) / BLOCK
    )
    model = wl.model()
    fs, theta = _flat_loss(wl, model)
    for p in model.parameters():  # θ enters through functional_call only
        p.requires_grad_(False)
    out["gradient (torch.func)"] = _cpu(lambda: sum(grad(f)(theta) for f in fs))
    out["linearise once: vjp(grad(f), θ)"] = _cpu(
        lambda: [vjp(grad(f), theta) for f in fs]
    )
    lin = [vjp(grad(f), theta)[1] for f in fs]
    out["cached linearisation, per vector"] = _cpu(lambda: sum(g(v)[0] for g in lin))
    out[f"cached linearisation, vmapped block of {BLOCK}, per vector"] = (
        _cpu(
            lambda: sum(
                vmap(lambda x, g=g: g(x)[0], in_dims=1, out_dims=1)(V) for g in lin
            )
        )
        / BLOCK
    )
    out[f"cached linearisation, loop over block of {BLOCK}, per vector"] = (
        _cpu(lambda: [sum(g(V[:, i])[0] for g in lin) for i in range(BLOCK)]) / BLOCK
    )
    model = wl.model()
    params = [p for p in model.parameters() if p.requires_grad]
    criterion = wl.criterion()
    n_total = sum(int(b[0].shape[0]) for b in wl.batches)
    vs = [
        c.view_as(p)
        for c, p in zip(
            torch.split(v, [p.numel() for p in params]), params, strict=True
        )
    ]

    def double_backward() -> None:
        for x, y in wl.batches:
            loss = criterion(model(x), y) * (x.shape[0] / n_total)
            g = torch.autograd.grad(loss, params, create_graph=True)
            torch.autograd.grad(g, params, grad_outputs=vs)

    out["plain autograd double backward (hessian-eigenthings' way)"] = _cpu(
        double_backward
    )
    if len(wl.batches) == 1:
        x, y = wl.batches[0]
        g = torch.autograd.grad(criterion(model(x), y), params, create_graph=True)
        out["retained create_graph graph (PyHessian's way, one batch)"] = _cpu(
            lambda: torch.autograd.grad(g, params, grad_outputs=vs, retain_graph=True)
        )
    return out


def eigsh_shares(wl: Workload) -> dict[str, float]:
    """cProfile of critpoint's top-5 eigsh on a fresh operator: shares of its time.

    With the default operator (kept linearisations) and with ``hvp_cache=None``.
    """
    cp.eigsh(wl.objective().hessian(), K, which="LA", seed=0)  # warm-up
    out: dict[str, float] = {}
    for label, kwargs in (("", {}), (", hvp_cache=None", {"hvp_cache": None})):
        H = wl.objective(**kwargs).hessian()
        prof = cProfile.Profile()
        prof.enable()
        cp.eigsh(H, K, which="LA", seed=0, return_eigenvectors=False)
        prof.disable()
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        total = products = build = 0.0
        for (filename, _line, func), (_cc, _nc, _tt, ct, _calls) in stats.items():
            if func == "eigsh" and filename.endswith("lanczos.py"):
                total = ct
            elif func in ("matvec", "matmat") and filename.endswith("operator.py"):
                products += ct
            elif func == "grad_impl" and "eager_transforms" in filename:
                build = max(build, ct)
        if total == 0:
            continue
        out[f"eigsh time in products{label}"] = products / total
        out[f"eigsh time building forward + first backward{label}"] = build / total
    return out
