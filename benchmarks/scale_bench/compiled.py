"""Hessian-vector products compiled by ``torch.compile`` against eager ones, on the ResNets.

``scale.py compile [--quick] [--device cpu|cuda] [--mode default|max-autotune]``
times, in one process with one torch thread (on a CPU), for ResNet-20 and
ResNet-18 (BatchNorm in eval mode) on CIFAR-shaped images:

- the gradient, eager;
- the HVP critpoint's operator computes (reverse-over-reverse from a kept
  ``create_graph`` graph: the second backward pass only), eager — AOTAutograd
  cannot compile a double backward, so this one has no compiled twin;
- a fresh reverse-over-reverse HVP (forward, ``create_graph`` backward,
  second backward), eager;
- forward-over-reverse, ``torch.func.jvp`` of ``torch.func.grad`` of the
  functional loss, eager and through ``torch.compile`` (what dynamo can
  trace), with the compile time (the first call) and the compiled product's
  relative difference from the eager one;
- a block of ``k`` forward-over-reverse products through ``torch.func.vmap``,
  eager and compiled, per vector.

It measures; critpoint itself does not compile anything. The published
claim it checks: ResNet-18 HVPs about 4.5× faster compiled on a GPU.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

HEADING = "## Scale: HVPs through torch.compile"


def _timer(device: str) -> Callable[[Callable[[], Any], int], float]:
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def median(fn: Callable[[], Any], repeats: int = 5) -> float:
        fn()
        sync()
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            sync()
            walls.append(time.perf_counter() - t)
        return statistics.median(walls)

    return median


def model_case(
    kind: str, width: int, images: int, device: str, mode: str, block: int
) -> dict[str, Any]:
    """One model's products, eager and compiled (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, jvp, vmap

    from scale_bench import models

    torch.manual_seed(0)
    model = models.resnet20(width) if kind == "resnet20" else models.resnet18(width)
    x, y = models.cifar_like(images, seed=0)
    models.prepare(model, x, y, steps=2)
    model = model.to(device).eval()
    x, y = x.to(device), y.to(device)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    theta = torch.cat([p.reshape(-1) for p in params])
    buffers = dict(model.named_buffers())
    n = theta.numel()
    median = _timer(device)
    out: dict[str, Any] = {
        "model": kind,
        "width": width,
        "images": images,
        "num_params": n,
        "device": device,
        "mode": mode,
        "block": block,
    }

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        state = {k: p.view(s) for k, p, s in zip(names, pieces, shapes, strict=True)}
        state.update(buffers)
        return F.cross_entropy(functional_call(model, state, (x,)), y)

    gen = torch.Generator().manual_seed(1)
    v = torch.randn(n, generator=gen).to(device)
    V = torch.randn(n, block, generator=gen).to(device)

    def gradient() -> torch.Tensor:
        t = theta.clone().requires_grad_(True)
        return torch.autograd.grad(loss(t), t)[0]

    out["grad_s"] = median(gradient)

    # reverse-over-reverse, as critpoint's operator runs it after linearising
    t_kept = theta.clone().requires_grad_(True)
    (g_kept,) = torch.autograd.grad(loss(t_kept), t_kept, create_graph=True)

    def kept_hvp() -> torch.Tensor:
        return torch.autograd.grad(g_kept, t_kept, v, retain_graph=True)[0]

    out["rev_rev_kept_s"] = median(kept_hvp)

    def fresh_hvp() -> torch.Tensor:
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(t), t, create_graph=True)
        return torch.autograd.grad(g, t, v)[0]

    out["rev_rev_fresh_s"] = median(fresh_hvp)
    reference = kept_hvp()

    def fwd_rev(vec: torch.Tensor) -> torch.Tensor:
        return jvp(grad(loss), (theta,), (vec,))[1]

    def fwd_rev_block(mat: torch.Tensor) -> torch.Tensor:
        return vmap(fwd_rev, in_dims=1, out_dims=1)(mat)

    out["fwd_rev_eager_s"] = median(lambda: fwd_rev(v))
    eager = fwd_rev(v)
    out["fwd_rev_vs_rev_rev"] = float(
        torch.linalg.vector_norm(eager - reference)
        / torch.linalg.vector_norm(reference)
    )
    out["fwd_rev_block_eager_s"] = median(lambda: fwd_rev_block(V), 3)

    for label, fn, arg in (
        ("fwd_rev_compiled", fwd_rev, v),
        ("fwd_rev_block_compiled", fwd_rev_block, V),
    ):
        torch._dynamo.reset()
        compiled = torch.compile(fn, mode=mode)
        try:
            t = time.perf_counter()
            first = compiled(arg)
            if device == "cuda":
                torch.cuda.synchronize()
            out[f"{label}_compile_s"] = time.perf_counter() - t
            out[f"{label}_s"] = median(
                lambda c=compiled, a=arg: c(a), 5 if arg.ndim == 1 else 3
            )
            want = fwd_rev(arg) if arg.ndim == 1 else fwd_rev_block(arg)
            out[f"{label}_rel_diff"] = float(
                torch.linalg.vector_norm(first - want) / torch.linalg.vector_norm(want)
            )
        except Exception as exc:  # what dynamo/inductor cannot do is a result too
            out[f"{label}_error"] = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            )
    # reverse-over-reverse through torch.compile: AOTAutograd refuses a double
    # backward; record what happens rather than assume it.
    torch._dynamo.reset()

    def rev_rev(vec: torch.Tensor) -> torch.Tensor:
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(t), t, create_graph=True)
        return torch.autograd.grad(g, t, vec)[0]

    try:
        compiled = torch.compile(rev_rev, mode=mode)
        t = time.perf_counter()
        first = compiled(v)
        out["rev_rev_compiled_compile_s"] = time.perf_counter() - t
        out["rev_rev_compiled_s"] = median(lambda: compiled(v))
        out["rev_rev_compiled_rel_diff"] = float(
            torch.linalg.vector_norm(first - reference)
            / torch.linalg.vector_norm(reference)
        )
    except Exception as exc:
        out["rev_rev_compiled_error"] = (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        )
    return out


def run(
    quick: bool, device: str, mode: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Both ResNets; results kept in the benchmark cache."""
    import torch

    if device == "cpu":
        torch.set_num_threads(1)
        torch.set_flush_denormal(True)
    elif not torch.cuda.is_available():
        return {"status": "skipped", "note": "no CUDA device on this machine"}
    res: dict[str, Any] = {
        "status": "ok",
        "quick": quick,
        "torch": torch.__version__,
        "device": device,
        "mode": mode,
    }
    images = 8 if quick else (32 if device == "cpu" else 128)
    block = 2 if quick else 8
    for kind, width in (
        ("resnet20", 8 if quick else 16),
        ("resnet18", 16 if quick else 64),
    ):
        log(f"compile: {kind} (width {width}, {images} images, {device}, mode {mode})")
        res[kind] = model_case(kind, width, images, device, mode, block)
    res["load"] = os.getloadavg()
    from scale import CACHE

    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"results-compile-{device}{'-quick' if quick else ''}.json"
    (CACHE / name).write_text(json.dumps(res, indent=1))
    return res


def _ms(x: Any) -> str:
    return "—" if not isinstance(x, (int, float)) else f"{1000 * x:.0f} ms"


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return "—"
    return f"{a / b:.2f}×"


def render_markdown(res: dict[str, Any]) -> str:
    """The README section."""
    lines = [HEADING, ""]
    lines.append(
        "`.venv/bin/python benchmarks/scale.py compile --write` (CPU, one thread; "
        "`--device cuda` on a GPU, `--mode max-autotune` for inductor's autotuning): "
        "one product of each kind, median wall clock after a warm-up; *compiled* is "
        "`torch.compile` of the function, its first call (the compilation) timed apart. "
        "critpoint's operator runs reverse-over-reverse from a kept graph, which "
        "AOTAutograd cannot compile (no double backward); forward-over-reverse "
        "(`jvp` of `grad`) is what dynamo traces."
    )
    lines.append("")
    if res.get("status") != "ok":
        lines.append(f"**Not measured yet**: {res.get('note', 'no results')}.")
        return "\n".join(lines) + "\n"
    lines.append(
        f"torch {res['torch']}, device {res['device']}, mode {res['mode']}"
        + (" (quick sizes)" if res.get("quick") else "")
        + f"; load average at the end {' / '.join(f'{x:.1f}' for x in res['load'])}."
    )
    lines.append("")
    lines.append(
        "| model | params | gradient | rev-rev, kept graph (critpoint) | rev-rev, fresh | "
        "fwd-rev eager | fwd-rev compiled (compile time) | compiled ÷ eager | "
        "block of k, eager / compiled, per vector | rev-rev compiled |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for kind in ("resnet20", "resnet18"):
        r = res.get(kind)
        if not r:
            continue
        k = r["block"]
        comp = r.get("fwd_rev_compiled_s")
        comp_cell = (
            f"{_ms(comp)} ({r.get('fwd_rev_compiled_compile_s', 0):.0f} s)"
            if comp is not None
            else f"failed: {r.get('fwd_rev_compiled_error', '?')}"
        )
        block_eager = r.get("fwd_rev_block_eager_s")
        block_comp = r.get("fwd_rev_block_compiled_s")
        block_cell = (
            f"{_ms(block_eager / k if block_eager else None)} / "
            f"{_ms(block_comp / k if block_comp else None)}"
        )
        rr = (
            f"{_ms(r['rev_rev_compiled_s'])}"
            if "rev_rev_compiled_s" in r
            else f"failed: {r.get('rev_rev_compiled_error', '?')}"
        )
        lines.append(
            f"| {kind} | {r['num_params']:,} | {_ms(r['grad_s'])} | "
            f"{_ms(r['rev_rev_kept_s'])} | {_ms(r['rev_rev_fresh_s'])} | "
            f"{_ms(r['fwd_rev_eager_s'])} | {comp_cell} | "
            f"{_ratio(comp, r['fwd_rev_eager_s'])} | {block_cell} (k = {k}) | {rr} |"
        )
    lines.append("")
    lines.append(
        "Relative difference of the compiled product from the eager one: "
        + ", ".join(
            f"{kind} {res[kind].get('fwd_rev_compiled_rel_diff', float('nan')):.1e}"
            for kind in ("resnet20", "resnet18")
            if kind in res
        )
        + "; forward-over-reverse against reverse-over-reverse: "
        + ", ".join(
            f"{kind} {res[kind]['fwd_rev_vs_rev_rev']:.1e}"
            for kind in ("resnet20", "resnet18")
            if kind in res
        )
        + "."
    )
    return "\n".join(lines) + "\n"
