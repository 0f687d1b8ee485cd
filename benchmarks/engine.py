"""Engine benchmark: cost of gradients, HVPs and eigsh on the digits workloads.

One process, one torch thread, flush-denormal on. Two workloads on
scikit-learn's bundled ``load_digits`` (1797 samples, standardised, float32):

* ``mlp``: ReLU MLP 64-256-256-10 (85,002 parameters), cross-entropy, batches of 512;
* ``cnn``: 1→8 conv3, BN, ReLU, pool, 8→16 conv3, BN, ReLU, pool, linear → 10
  (1,946 parameters), eval mode (BatchNorm running statistics).

For each workload it times one gradient (``Objective.grad``) and, as
references, plain-torch ``loss.backward()`` and plain-torch double backward;
one HVP in both of critpoint's modes; a vmapped block of 16 HVPs; then counts
the HVPs (and time) ``eigsh`` spends on the top-5 and bottom-5 eigenvalues at
``tol=1e-4``, at initialisation and after a short training, with a plain power
iteration on the top eigenvalue for context.

Usage::

    .venv/bin/python benchmarks/engine.py            # print the tables
    .venv/bin/python benchmarks/engine.py --write    # and update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import critpoint as cp

BATCH_SIZE = 512
REPEATS = 7
WARMUP = 2
BLOCK = 16
K = 5
TOL = 1e-4
TRAIN_STEPS = 200
POWER_MAX = 1000
POWER_TOLS = (1e-2, 1e-6)
SEED = 0
HEADING = "## Engine (one process)"
README = Path(__file__).resolve().parent / "README.md"


# ----------------------------------------------------------------- set-up
def configure() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    print(
        "torch.set_num_threads(1) and torch.set_flush_denormal(True): "
        f"{torch.get_num_threads()} torch thread, denormals flushed"
    )


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits, standardised per pixel (constant pixels → 0), float32."""
    bunch = load_digits()
    x = bunch.data.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    x = np.where(std > 0, (x - mean) / safe, 0.0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(bunch.target)


def make_mlp() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def make_cnn() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 10),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Full-batch Adam (lr 1e-3) for TRAIN_STEPS steps, in train mode; eval after."""
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(TRAIN_STEPS):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def median_time(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``fn()`` in seconds, after WARMUP untimed calls."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------- plain-torch references
def batches(
    x: torch.Tensor, y: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (x[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE])
        for i in range(0, len(x), BATCH_SIZE)
    ]


def torch_backward(model: nn.Module, parts: list, n: int) -> None:
    """Gradient of the mean loss by ``loss.backward()``, batch by batch."""
    model.zero_grad(set_to_none=True)
    for xb, yb in parts:
        loss = nn.functional.cross_entropy(model(xb), yb) * (len(xb) / n)
        loss.backward()


def torch_double_backward(
    model: nn.Module, parts: list, n: int, vs: list[torch.Tensor]
) -> list[torch.Tensor]:
    """HVP by double backward (``autograd.grad`` with ``create_graph``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for xb, yb in parts:
        loss = nn.functional.cross_entropy(model(xb), yb) * (len(xb) / n)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=vs)
        for t, h in zip(total, hv, strict=True):
            t.add_(h)
    return total


# ------------------------------------------------------------------- measuring
@dataclass
class Costs:
    grad_s: float
    backward_s: float
    hvp_s: dict[str, float] = field(default_factory=dict)
    block_s: dict[str, float] = field(default_factory=dict)


def measure_costs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Costs:
    model.eval()
    parts = batches(x, y)
    n = len(x)
    objs = {
        mode: cp.Objective(
            model,
            nn.functional.cross_entropy,
            (x, y),
            batch_size=BATCH_SIZE,
            hvp_mode=mode,
        )
        for mode in ("rev-rev", "fwd-rev")
    }
    obj = objs["rev-rev"]
    theta = obj.theta
    gen = torch.Generator().manual_seed(SEED)
    v = torch.randn(obj.num_params, generator=gen)
    V = torch.randn(obj.num_params, BLOCK, generator=gen)
    costs = Costs(
        grad_s=median_time(lambda: obj.grad(theta)),
        backward_s=median_time(lambda: torch_backward(model, parts, n)),
    )
    for mode, o in objs.items():
        costs.hvp_s[mode] = median_time(lambda o=o: o.hvp(v, theta))
        costs.block_s[mode] = median_time(lambda o=o: o.hvp(V, theta))
    vs = list(obj.unflatten(v).values())
    costs.hvp_s["torch double backward"] = median_time(
        lambda: torch_double_backward(model, parts, n, vs)
    )
    # Sanity: the three single-HVP paths agree.
    ref = torch.cat([t.reshape(-1) for t in torch_double_backward(model, parts, n, vs)])
    for mode, o in objs.items():
        err = float((o.hvp(v, theta) - ref).norm() / ref.norm())
        if err > 1e-4:
            msg = f"{mode} HVP differs from double backward by {err:.1e} relative"
            raise RuntimeError(msg)
    model.zero_grad(set_to_none=True)
    return costs


@dataclass
class EigRun:
    which: str
    num_matvecs: int
    num_restarts: int
    seconds: float
    converged: int
    eigenvalues: list[float]


def run_eigsh(H: cp.HessianOperator, which: str) -> EigRun:
    start = time.perf_counter()
    r = cp.eigsh(H, k=K, which=which, tol=TOL, seed=SEED, return_eigenvectors=False)
    seconds = time.perf_counter() - start
    return EigRun(
        which=which,
        num_matvecs=r.num_matvecs,
        num_restarts=r.num_restarts,
        seconds=seconds,
        converged=int(r.converged.sum()),
        eigenvalues=[float(e) for e in r.eigenvalues],
    )


@dataclass
class PowerRun:
    reference: float
    counts: dict[float, int | None]  # first HVP count with true relative error ≤ tol
    stop_rule: dict[float, int | None]  # PyHessian's rule: relative change < tol


def power_iteration(H: cp.HessianOperator) -> PowerRun:
    """Plain power iteration on the top eigenvalue, counting HVPs.

    The reference is the top eigenvalue from eigsh at tol=1e-6 (its error is
    about residual²/gap, far below 1e-6). The spectrum's top is checked to
    dominate in magnitude, else power iteration would find the bottom.
    """
    top = cp.eigsh(H, k=1, which="LA", tol=1e-6, seed=SEED, return_eigenvectors=False)
    bottom = cp.eigsh(
        H, k=1, which="SA", tol=1e-3, seed=SEED, return_eigenvectors=False
    )
    reference = float(top.eigenvalues[0])
    if abs(float(bottom.eigenvalues[0])) >= abs(reference):
        msg = "the most negative eigenvalue dominates: power iteration would find it"
        raise RuntimeError(msg)
    gen = torch.Generator().manual_seed(SEED)
    v = torch.randn(H.shape[0], generator=gen, dtype=H.dtype)
    v /= v.norm()
    counts: dict[float, int | None] = dict.fromkeys(POWER_TOLS)
    stop_rule: dict[float, int | None] = dict.fromkeys(POWER_TOLS)
    previous = None
    for i in range(1, POWER_MAX + 1):
        w = H @ v
        estimate = float(v @ w)  # Rayleigh quotient of the current unit vector
        err = abs(estimate - reference) / abs(reference)
        for tol in POWER_TOLS:
            if counts[tol] is None and err <= tol:
                counts[tol] = i
            if (
                stop_rule[tol] is None
                and previous is not None
                and abs(estimate - previous) / (abs(previous) + 1e-6) < tol
            ):
                stop_rule[tol] = i
        if all(c is not None for c in counts.values()) and all(
            c is not None for c in stop_rule.values()
        ):
            break
        previous = estimate
        v = w / w.norm()
    return PowerRun(reference=reference, counts=counts, stop_rule=stop_rule)


@dataclass
class Workload:
    name: str
    description: str
    num_params: int
    costs: Costs
    eig: dict[str, dict[str, EigRun]] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    power: dict[str, PowerRun] = field(default_factory=dict)


def measure(
    name: str,
    description: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    power: bool,
) -> Workload:
    t0 = time.perf_counter()
    model.eval()
    costs = measure_costs(model, x, y)
    obj = cp.Objective(
        model, nn.functional.cross_entropy, (x, y), batch_size=BATCH_SIZE
    )
    w = Workload(name, description, obj.num_params, costs)
    for state in ("init", "trained"):
        if state == "trained":
            train(model, x, y)
        w.loss[state] = obj.loss()
        H = obj.hessian()
        w.eig[state] = {which: run_eigsh(H, which) for which in ("LA", "SA")}
        if power:
            w.power[state] = power_iteration(H)
        print(f"  {name} {state}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    return w


# --------------------------------------------------------------------- report
def ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms"


def count(c: int | None) -> str:
    return str(c) if c is not None else f"> {POWER_MAX}"


def tables(workloads: list[Workload]) -> str:
    lines = [
        "### Cost of one product, as a ratio to one gradient (`Objective.grad`)",
        "",
        "Median of 7 timed repeats after 2 warm-up calls; a block is 16 HVPs in one "
        "vmapped pass, given per vector.",
        "",
        "| workload | params | gradient | plain `loss.backward()` | HVP rev-rev (default) "
        "| HVP fwd-rev | plain double backward | block of 16, rev-rev, per vector "
        "| block of 16, fwd-rev, per vector |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        c = w.costs
        g = c.grad_s

        def r(s: float, g: float = g) -> str:
            return f"{s / g:.2f}× ({ms(s)})"

        lines.append(
            f"| {w.name} | {w.num_params:,} | {ms(g)} | {r(c.backward_s)} "
            f"| {r(c.hvp_s['rev-rev'])} | {r(c.hvp_s['fwd-rev'])} "
            f"| {r(c.hvp_s['torch double backward'])} "
            f"| {c.block_s['rev-rev'] / BLOCK / g:.2f}× ({ms(c.block_s['rev-rev'])} for 16) "
            f"| {c.block_s['fwd-rev'] / BLOCK / g:.2f}× ({ms(c.block_s['fwd-rev'])} for 16) |"
        )
    lines += [
        "",
        f"### eigsh, k={K}, tol={TOL:g} (seed {SEED}, default `ncv`)",
        "",
        f"Trained = {TRAIN_STEPS} steps of full-batch Adam, lr 1e-3. "
        "The count is `EigenResult.num_matvecs` (the 3 HVPs of `hessian()`'s symmetry "
        "probe are not included); the time is eigsh's alone.",
        "",
        "| workload | point | loss | top-5 (LA): HVPs / restarts / time "
        "| bottom-5 (SA): HVPs / restarts / time | SA ÷ LA | λ top-5 | λ bottom-5 |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for w in workloads:
        for state, runs in w.eig.items():
            la, sa = runs["LA"], runs["SA"]

            def cell(e: EigRun) -> str:
                flag = "" if e.converged == K else f" ({e.converged}/{K} converged)"
                return f"{e.num_matvecs} / {e.num_restarts} / {e.seconds:.1f} s{flag}"

            def vals(e: EigRun) -> str:
                return ", ".join(f"{v:.4g}" for v in e.eigenvalues)

            lines.append(
                f"| {w.name} | {state} | {w.loss[state]:.4f} | {cell(la)} | {cell(sa)} "
                f"| {sa.num_matvecs / la.num_matvecs:.2f} | {vals(la)} | {vals(sa)} |"
            )
    lines += [
        "",
        "### Context: plain power iteration on the top eigenvalue",
        "",
        "One HVP per step, Rayleigh-quotient estimate; HVPs until the true relative "
        "error (against eigsh at tol 1e-6) first reaches the level, and until "
        "PyHessian's stopping rule (relative change between steps < level) first fires. "
        f"Capped at {POWER_MAX} HVPs.",
        "",
        "| workload | point | λ_max | eigsh top-1 reference | to 1% error | to 1e-6 error "
        "| PyHessian rule 1e-2 | PyHessian rule 1e-6 | eigsh top-5 to 1e-4 |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        for state, p in w.power.items():
            lines.append(
                f"| {w.name} | {state} | {p.reference:.6g} | tol 1e-6 "
                f"| {count(p.counts[1e-2])} | {count(p.counts[1e-6])} "
                f"| {count(p.stop_rule[1e-2])} | {count(p.stop_rule[1e-6])} "
                f"| {w.eig[state]['LA'].num_matvecs} |"
            )
    return "\n".join(lines)


def targets(workloads: list[Workload]) -> tuple[str, list[bool]]:
    rows: list[tuple[str, str, bool]] = []
    for w in workloads:
        c = w.costs
        r1 = c.hvp_s["rev-rev"] / c.grad_s
        rows.append(
            (f"{w.name}: default single HVP ≤ 3× a gradient", f"{r1:.2f}×", r1 <= 3.0)
        )
        rb = c.block_s["rev-rev"] / BLOCK / c.grad_s
        rows.append(
            (
                f"{w.name}: vmapped block of 16 ≤ 2.2× a gradient per vector",
                f"{rb:.2f}× per vector",
                rb <= 2.2,
            )
        )
    mlp = next(w for w in workloads if w.name == "mlp")
    for state, runs in mlp.eig.items():
        la, sa = runs["LA"], runs["SA"]
        rows.append(
            (
                f"mlp ({state}): top-5 to tol=1e-4 in ≤ 60 HVPs",
                f"{la.num_matvecs} HVPs",
                la.num_matvecs <= 60 and la.converged == K,
            )
        )
        rows.append(
            (
                f"mlp ({state}): bottom-5 at the same cost (≤ 1.5× the top-5's count)",
                f"{sa.num_matvecs} vs {la.num_matvecs} HVPs "
                f"({sa.num_matvecs / la.num_matvecs:.2f}×)",
                sa.num_matvecs <= 1.5 * la.num_matvecs and sa.converged == K,
            )
        )
    lines = ["| target | measured | met |", "|---|---:|:---:|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in rows]
    return "\n".join(lines), [ok for _, _, ok in rows]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def section(workloads: list[Workload], elapsed: float) -> str:
    target_table, _ = targets(workloads)
    descriptions = "\n".join(f"- `{w.name}`: {w.description}" for w in workloads)
    return f"""{HEADING}

What the engine itself costs, measured in one process by `benchmarks/engine.py`.
Reproduce (and rewrite this section) with:

```
.venv/bin/python benchmarks/engine.py --write
```

Machine: {cpu_model()}, {os.cpu_count()} cores; one torch thread
(`torch.set_num_threads(1)`) and `torch.set_flush_denormal(True)`. Python
{platform.python_version()}, torch {torch.__version__}, critpoint {cp.__version__}.
The whole run took {elapsed:.0f} s.

Data: scikit-learn's bundled `load_digits` (1797 samples, 64 pixels),
standardised per pixel (constant pixels set to 0), float32; the objective is
the mean cross-entropy over all 1797 samples in batches of {BATCH_SIZE}.

{descriptions}

### Targets

{target_table}

{tables(workloads)}
"""


def write_readme(text: str) -> None:
    """Replace (or append) this section of benchmarks/README.md; keep the rest."""
    old = README.read_text() if README.exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    begin = next((i for i, s in enumerate(lines) if s.rstrip() == HEADING), None)
    if begin is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (
                i
                for i in range(begin + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].startswith("# ")
            ),
            len(lines),
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:begin]) + text + ("\n" + tail if tail else "")
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(README)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"write the results into {README.name} under '{HEADING}'",
    )
    args = parser.parse_args(argv)
    configure()
    start = time.perf_counter()
    x, y = digits()
    workloads = [
        measure(
            "mlp",
            "ReLU MLP 64-256-256-10 (85,002 parameters), PyTorch default init, seed 0",
            make_mlp(),
            x,
            y,
            power=True,
        ),
        measure(
            "cnn",
            "conv 1→8 (3×3, pad 1), BatchNorm, ReLU, max-pool 2, conv 8→16, BatchNorm, "
            "ReLU, max-pool 2, flatten, linear 64→10 (1,946 parameters), seed 0, "
            "Hessian in eval mode (running statistics)",
            make_cnn(),
            x.reshape(-1, 1, 8, 8),
            y,
            power=False,
        ),
    ]
    elapsed = time.perf_counter() - start
    text = section(workloads, elapsed)
    print()
    print(text)
    if args.write:
        write_readme(text)
        print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
