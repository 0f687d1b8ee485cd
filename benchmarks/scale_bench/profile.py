"""Where critpoint's time goes on the ResNets: one product, the set-up, the solvers' own work.

``scale.py profile [--quick]`` runs, in this process with one thread:

- ``torch.profiler`` over one gradient, one HVP through the operator (kept
  linearisation), one fresh HVP and one PyHessian product, on ResNet-20 and
  ResNet-18 (full widths, fewer images: the per-image cost is the same and
  the per-parameter cost is all there), with the operators grouped by kind;
- the set-up, piece by piece (``Objective(...)``, the linearisation, the
  probe's products);
- the vector work of the solvers at ResNet-18's size: one Gram–Schmidt
  reorthogonalisation step of ``eigsh`` against ``j`` basis vectors and one
  SLQ step over ``p`` probes, beside one product.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

#: Operator names (substrings) grouped into what a reader asks about.
GROUPS = (
    ("convolution", ("convolution", "conv2d", "mkldnn_conv", "_slow_conv")),
    ("batch norm", ("batch_norm",)),
    ("matmul / linear", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("pooling", ("pool",)),
    ("ReLU / threshold", ("relu", "threshold")),
    (
        "elementwise (mul, add, sub, div, copy)",
        ("mul", "add", "sub", "div", "copy_", "neg", "fill_", "zero_"),
    ),
    ("reductions (sum, mean, norm)", ("sum", "mean", "norm", "dot")),
    ("softmax / loss", ("softmax", "nll", "cross_entropy")),
    (
        "allocation / views / cat",
        (
            "empty",
            "view",
            "reshape",
            "cat",
            "stack",
            "as_strided",
            "clone",
            "contiguous",
            "t",
            "transpose",
            "select",
            "slice",
            "split",
            "unsqueeze",
            "expand",
            "flatten",
            "permute",
        ),
    ),
)


def _group(name: str) -> str:
    lname = name.lower().removeprefix("aten::")
    for group, keys in GROUPS:
        if any(k == lname or k in lname for k in keys):
            return group
    return "other"


def profile_call(fn: Callable[[], Any]) -> dict[str, Any]:
    """Self CPU time by operator group (and the top operators) of one call."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    wall = time.perf_counter() - t
    groups: dict[str, float] = defaultdict(float)
    ops = []
    for evt in prof.key_averages():
        self_us = evt.self_cpu_time_total
        if self_us <= 0:
            continue
        groups[_group(evt.key)] += self_us
        ops.append((evt.key, self_us, evt.count))
    total = sum(groups.values())
    ops.sort(key=lambda x: -x[1])
    return {
        "wall_profiled": wall,
        "self_total_ms": total / 1000,
        "groups": {
            k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
        "top": [{"op": k, "share": v / total, "calls": c} for k, v, c in ops[:12]],
    }


def _median_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def model_profile(kind: str, width: int, images: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    import critpoint as cp
    from scale_bench import models

    torch.manual_seed(0)
    model = models.resnet20(width) if kind == "resnet20" else models.resnet18(width)
    x, y = models.cifar_like(images, seed=0)
    models.prepare(model, x, y, steps=2)
    out: dict[str, Any] = {"model": kind, "width": width, "images": images}
    t = time.perf_counter()
    obj = cp.Objective(model, nn.CrossEntropyLoss(), (x, y))
    out["objective_s"] = time.perf_counter() - t
    out["num_params"] = obj.num_params
    v = torch.randn(obj.num_params, generator=torch.Generator().manual_seed(0))
    H = obj.hessian(check=False)
    t = time.perf_counter()
    H @ v
    out["first_product_s"] = time.perf_counter() - t
    out["grad_s"] = _median_time(obj.grad)
    out["op_hvp_s"] = _median_time(lambda: H @ v)
    out["op_block2_s"] = _median_time(lambda: H @ torch.stack([v, v], 1))
    out["fresh_hvp_s"] = _median_time(lambda: obj.hvp(v))
    t = time.perf_counter()
    obj.hessian()
    out["hessian_with_probe_s"] = time.perf_counter() - t
    # PyHessian's way: one retained create_graph graph, autograd.grad per product.
    m2 = models.resnet20(width) if kind == "resnet20" else models.resnet18(width)
    m2.load_state_dict(model.state_dict())
    m2.eval()
    params = [p for p in m2.parameters() if p.requires_grad]
    t = time.perf_counter()
    loss = F.cross_entropy(m2(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    out["pyhessian_setup_s"] = time.perf_counter() - t
    vs = list(torch.split(v, [p.numel() for p in params]))
    vs = [a.view_as(p) for a, p in zip(vs, params, strict=True)]

    def ph_hvp() -> Any:
        return torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)

    out["pyhessian_hvp_s"] = _median_time(ph_hvp)
    out["profile_grad"] = profile_call(obj.grad)
    out["profile_op_hvp"] = profile_call(lambda: H @ v)
    out["profile_pyhessian_hvp"] = profile_call(ph_hvp)
    return out


#: The most memory one test basis of :func:`vector_work` may take.
MEMORY_CAP = 6 * 2**30


def vector_work(
    n: int, js: tuple[int, ...] = (10, 50, 150), probes: int = 8
) -> dict[str, Any]:
    """Cost of the solvers' own vector work at dimension ``n`` (float32).

    The kernel's own Gram–Schmidt (:func:`critpoint.linalg._tridiag.project_rows`,
    the last two vectors first, then every stored one, a second pass where
    the first cancelled) of one column and of a block of two against ``j``
    stored vectors, as eigsh (blocks of 2) and each SLQ probe (one column)
    call it.
    """
    import torch

    from critpoint.linalg._tridiag import project_rows

    out: dict[str, Any] = {"n": n}
    # Keep every test basis within MEMORY_CAP: the machine is shared.
    js = tuple(j for j in js if j * n * 4 <= MEMORY_CAP) or (
        max(1, MEMORY_CAP // (n * 4)),
    )
    for j in js:
        R = torch.linalg.qr(torch.randn(n, j))[0].T.contiguous()
        for width in (1, 2):
            W = torch.randn(width, n).T  # columns contiguous, as the kernel keeps them

            def step(
                W: torch.Tensor = W, R: torch.Tensor = R, local: int = min(2, j - 1)
            ) -> None:
                project_rows(W, R, local=local)

            out[f"reorth_j{j}_w{width}_s"] = _median_time(step)
        del R
    return out


def run(quick: bool, log: Callable[[str], None]) -> str:
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    res: dict[str, Any] = {}
    log("profile: ResNet-20")
    res["resnet20"] = model_profile("resnet20", 8 if quick else 16, 16 if quick else 32)
    log("profile: ResNet-18")
    res["resnet18"] = model_profile(
        "resnet18", 16 if quick else 64, 16 if quick else 32
    )
    log("profile: vector work")
    res["vectors"] = vector_work(
        res["resnet18"]["num_params"], js=(10, 50) if quick else (10, 50, 150)
    )
    from scale import CACHE

    res["load"] = os.getloadavg()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"results-profile{'-quick' if quick else ''}.json").write_text(
        json.dumps(res, indent=1)
    )
    return render(res)


def render(res: dict[str, Any]) -> str:
    lines = []
    for key in ("resnet20", "resnet18"):
        r = res[key]
        g = r["grad_s"]
        lines += [
            f"{key}: {r['num_params']:,} parameters, width {r['width']}, {r['images']} images",
            f"  gradient {1000 * g:.0f} ms; operator HVP {1000 * r['op_hvp_s']:.0f} ms ({r['op_hvp_s'] / g:.2f}x); "
            f"block of 2 {1000 * r['op_block2_s']:.0f} ms; fresh HVP {1000 * r['fresh_hvp_s']:.0f} ms "
            f"({r['fresh_hvp_s'] / g:.2f}x); PyHessian HVP {1000 * r['pyhessian_hvp_s']:.0f} ms "
            f"({r['pyhessian_hvp_s'] / g:.2f}x)",
            f"  set-up: Objective() {1000 * r['objective_s']:.0f} ms, first product (linearise + 1) "
            f"{1000 * r['first_product_s']:.0f} ms, hessian() with probe {1000 * r['hessian_with_probe_s']:.0f} ms; "
            f"PyHessian's create_graph backward {1000 * r['pyhessian_setup_s']:.0f} ms",
        ]
        for name in ("profile_grad", "profile_op_hvp", "profile_pyhessian_hvp"):
            p = r[name]
            groups = ", ".join(
                f"{k} {100 * v:.0f}%" for k, v in list(p["groups"].items())[:6]
            )
            lines.append(f"  {name}: {p['self_total_ms']:.0f} ms self CPU: {groups}")
            lines.append(
                "    top: "
                + ", ".join(
                    f"{t['op']} {100 * t['share']:.0f}% ({t['calls']})"
                    for t in p["top"][:6]
                )
            )
    v = res["vectors"]
    lines.append(
        f"vector work at n = {v['n']:,}: "
        + ", ".join(
            f"{k} {1000 * x:.0f} ms" for k, x in v.items() if k.startswith("reorth")
        )
    )
    return "\n".join(lines)


HEADING = "## Scale: where critpoint's time goes"


def render_markdown(res: dict[str, Any], quick: bool) -> str:
    """The README section of ``scale.py profile --write``."""
    size = " (`--quick` widths)" if quick else ""
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python benchmarks/scale.py profile --write`{size}: one torch "
        "thread, the two ResNets at their full widths on fewer images (the "
        "per-image work scales down, the per-parameter work is all there). "
        "Median of 3 wall-clock calls after a warm-up; operator shares are the "
        "`torch.profiler` self CPU time of one call.",
        "",
        *(
            [
                f"Load average at the end of the run: {' / '.join(f'{x:.1f}' for x in res['load'])} "
                "(1 / 5 / 15 min); above 1 other processes shared the two cores, so "
                "compare the numbers within a column, not across runs.",
                "",
            ]
            if "load" in res
            else []
        ),
        "| | ResNet-20 | ResNet-18 |",
        "|---|---:|---:|",
    ]
    a, b = res["resnet20"], res["resnet18"]

    def row(label: str, key: str, ratio: bool = True) -> str:
        cells = []
        for r in (a, b):
            x = r[key]
            cells.append(
                f"{1000 * x:.0f} ms" + (f" ({x / r['grad_s']:.2f}×)" if ratio else "")
            )
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += [
        f"| parameters, images | {a['num_params']:,}, {a['images']} | {b['num_params']:,}, {b['images']} |",
        row("gradient (`obj.grad`)", "grad_s"),
        row("HVP through the operator (kept linearisation)", "op_hvp_s"),
        row("block of 2 through the operator", "op_block2_s"),
        row("fresh HVP (`obj.hvp`)", "fresh_hvp_s"),
        row(
            "PyHessian's product (`autograd.grad` on its retained graph)",
            "pyhessian_hvp_s",
        ),
        row("`Objective(...)`", "objective_s"),
        row(
            "a new operator's first product (linearise + 1 product)", "first_product_s"
        ),
        row("`hessian()` with its symmetry probe", "hessian_with_probe_s"),
        row(
            "PyHessian's set-up (forward + `create_graph` backward)",
            "pyhessian_setup_s",
        ),
        "",
        "Self CPU time by kind of operator:",
        "",
        "| call | ResNet-20 | ResNet-18 |",
        "|---|---|---|",
    ]
    for key, label in (
        ("profile_grad", "gradient"),
        ("profile_op_hvp", "critpoint HVP (operator)"),
        ("profile_pyhessian_hvp", "PyHessian HVP"),
    ):
        cells = []
        for r in (a, b):
            groups = list(r[key]["groups"].items())[:4]
            cells.append(", ".join(f"{k} {100 * v:.0f} %" for k, v in groups))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    v = res["vectors"]
    lines += [
        "",
        f"The solvers' own vector work at ResNet-18's size (n = {v['n']:,}, float32):",
        "",
    ]
    for k, x in v.items():
        if k.startswith("reorth_j"):
            j, width = k.removeprefix("reorth_j").removesuffix("_s").split("_w")
            what = (
                "one column (an SLQ probe's step)"
                if width == "1"
                else "a block of 2 (an eigsh step)"
            )
            lines.append(
                f"- the kernel's Gram–Schmidt (`project_rows`) of {what} against {j} stored vectors: {1000 * x:.0f} ms"
            )
    return "\n".join(lines) + "\n"
