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

With ``--device cuda`` the same measurements run on a GPU (times are then
wall-clock after ``torch.cuda.synchronize()``; process CPU time says nothing
about asynchronous kernels), with a wider MLP added where the GPU is busy
rather than waiting on kernel launches; the section is "Engine on a GPU".

Usage::

    .venv/bin/python benchmarks/engine.py                  # print the tables
    .venv/bin/python benchmarks/engine.py --write          # and update benchmarks/README.md
    python benchmarks/engine.py --device cuda --write      # on a machine with CUDA
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
from critpoint._files import write_text_atomic

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
#: A basis this large never fills up on these workloads: eigsh never restarts.
UNRESTARTED_NCV = 400
HEADING = "## Engine (one process)"
GPU_HEADING = "## Engine on a GPU"
#: Where the work runs; ``main`` sets it from ``--device``.
DEVICE = torch.device("cpu")
README = Path(__file__).resolve().parent / "README.md"


# ----------------------------------------------------------------- set-up
def on_gpu() -> bool:
    return DEVICE.type == "cuda"


def sync() -> None:
    """Wait for queued GPU work, so a timer reads finished work."""
    if on_gpu():
        torch.cuda.synchronize(DEVICE)


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


def make_mlp(widths: tuple[int, ...] = (256, 256)) -> nn.Module:
    """ReLU MLP 64 → widths → 10, initialised under ``torch.manual_seed(SEED)``."""
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    fan_in = 64
    for width in widths:
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, 10))


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
    x, y = x.to(DEVICE), y.to(DEVICE)
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


@dataclass(frozen=True)
class Timing:
    """Median seconds of one call: process CPU time and wall-clock time.

    On a GPU both are the wall-clock time after ``torch.cuda.synchronize()``.
    """

    cpu: float
    wall: float


def steady_time(
    fn: Callable[[], object], repeats: int = REPEATS, warmup: int = WARMUP
) -> Timing:
    """Median time of ``fn()`` over ``repeats`` back-to-back calls, after ``warmup``.

    Back to back on purpose, as eigsh calls the HVP: interleaving different
    calls penalises whichever follows a large one (glibc hands the freed memory
    back to the OS and the next call page-faults it in again: a gradient right
    after a block of 16 HVPs measured 25 ms against 14 ms steady). Both the
    process CPU time and the wall time are kept; with one torch thread the CPU
    time is what the work costs, and it leaves out time the core spent on
    other processes.
    """
    for _ in range(warmup):
        fn()
    sync()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        sync()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    if on_gpu():
        cpu = wall
    return Timing(statistics.median(cpu), statistics.median(wall))


# ------------------------------------------------------- plain-torch references
def batches(
    x: torch.Tensor, y: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (x[i : i + BATCH_SIZE].to(DEVICE), y[i : i + BATCH_SIZE].to(DEVICE))
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
GRAD = "critpoint grad"
BACKWARD = "torch loss.backward()"
DOUBLE = "torch double backward"
MODES = ("rev-rev", "fwd-rev")
OP = "operator hvp"
OP_BLOCK = "operator block"


def measure_costs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> dict[str, Timing]:
    """Time one gradient, one HVP per path and a block of BLOCK HVPs per mode."""
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
        for mode in MODES
    }
    obj = objs["rev-rev"]
    theta = obj.theta
    gen = torch.Generator().manual_seed(SEED)
    v = torch.randn(obj.num_params, generator=gen).to(DEVICE)
    V = torch.randn(obj.num_params, BLOCK, generator=gen).to(DEVICE)
    vs = list(obj.unflatten(v).values())
    # Sanity first: the three single-HVP paths agree.
    ref = torch.cat([t.reshape(-1) for t in torch_double_backward(model, parts, n, vs)])
    for mode, o in objs.items():
        err = float((o.hvp(v, theta) - ref).norm() / ref.norm())
        if err > 1e-4:
            msg = f"{mode} HVP differs from double backward by {err:.1e} relative"
            raise RuntimeError(msg)
    times = {
        GRAD: steady_time(lambda: obj.grad(theta)),
        BACKWARD: steady_time(lambda: torch_backward(model, parts, n)),
        DOUBLE: steady_time(lambda: torch_double_backward(model, parts, n, vs)),
    }
    for mode, o in objs.items():
        times[f"hvp {mode}"] = steady_time(lambda o=o: o.hvp(v, theta))
        times[f"block {mode}"] = steady_time(lambda o=o: o.hvp(V, theta), warmup=1)
    # What the solvers call: the operator keeps each batch's linearisation
    # after its first product, so later products run the second backward only.
    H = obj.hessian(check=False)
    err = float((H @ v - ref).norm() / ref.norm())
    if not H.cached or err > 1e-4:
        msg = f"operator HVP: cached={H.cached}, differs from double backward by {err:.1e}"
        raise RuntimeError(msg)
    times[OP] = steady_time(lambda: H @ v)
    times[OP_BLOCK] = steady_time(lambda: H @ V, warmup=1)
    model.zero_grad(set_to_none=True)
    return times


@dataclass
class EigRun:
    which: str
    ncv: int | None
    num_matvecs: int
    num_restarts: int
    time: Timing
    converged: int
    eigenvalues: list[float]


def run_eigsh(H: cp.HessianOperator, which: str, ncv: int | None = None) -> EigRun:
    sync()
    c, w = time.process_time(), time.perf_counter()
    r = cp.eigsh(
        H, k=K, which=which, tol=TOL, seed=SEED, return_eigenvectors=False, ncv=ncv
    )
    sync()
    wall = time.perf_counter() - w
    timing = Timing(wall if on_gpu() else time.process_time() - c, wall)
    return EigRun(
        which=which,
        ncv=ncv,
        num_matvecs=r.num_matvecs,
        num_restarts=r.num_restarts,
        time=timing,
        converged=int(r.converged.sum()),
        eigenvalues=[float(e) for e in r.eigenvalues],
    )


@dataclass
class PowerRun:
    reference: float
    # HVPs until the true relative error first reaches each level
    counts: dict[float, int | None]
    # HVPs until PyHessian's rule (relative change < level) fires, and the
    # true relative error at that moment
    rule: dict[float, tuple[int, float] | None]


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
    v = torch.randn(H.shape[0], generator=gen, dtype=H.dtype).to(H.device)
    v /= v.norm()
    counts: dict[float, int | None] = dict.fromkeys(POWER_TOLS)
    rule: dict[float, tuple[int, float] | None] = dict.fromkeys(POWER_TOLS)
    previous = None
    for i in range(1, POWER_MAX + 1):
        w = H @ v
        estimate = float(v @ w)  # Rayleigh quotient of the current unit vector
        err = abs(estimate - reference) / abs(reference)
        for tol in POWER_TOLS:
            if counts[tol] is None and err <= tol:
                counts[tol] = i
            if (
                rule[tol] is None
                and previous is not None
                and abs(estimate - previous) / (abs(previous) + 1e-6) < tol
            ):
                rule[tol] = (i, err)
        if all(c is not None for c in counts.values()) and all(
            r is not None for r in rule.values()
        ):
            break
        previous = estimate
        v = w / w.norm()
    return PowerRun(reference=reference, counts=counts, rule=rule)


@dataclass
class Workload:
    name: str
    description: str
    num_params: int
    costs: dict[str, Timing]
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
    model.to(DEVICE).eval()
    costs = measure_costs(model, x, y)
    print(f"  {name}: product costs ({time.perf_counter() - t0:.0f} s)", flush=True)
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
        # The same solver without restarts: the fewest HVPs any Krylov method
        # needs from this start vector, so the price of restarting shows.
        for which in ("LA", "SA"):
            run = w.eig[state][which]
            w.eig[state][f"{which} unrestarted"] = (
                run
                if run.num_restarts == 0  # the same run, HVP for HVP
                else run_eigsh(H, which, ncv=UNRESTARTED_NCV)
            )
        if power:
            w.power[state] = power_iteration(H)
        print(
            f"  {name} {state}: eigsh done ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return w


# --------------------------------------------------------------------- report
def ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms"


def count(c: int | None) -> str:
    return str(c) if c is not None else f"> {POWER_MAX}"


def ratio(costs: dict[str, Timing], name: str, per: int = 1) -> float:
    return costs[name].cpu / per / costs[GRAD].cpu


def cost_table(workloads: list[Workload]) -> list[str]:
    lines = [
        "### Cost of one product, as a ratio to one gradient (`Objective.grad`)",
        "",
        f"Median {clock()} of {REPEATS} back-to-back calls after "
        f"{WARMUP} warm-up calls (1 for a block); a block is 16 HVPs in one vmapped pass "
        "(`obj.hvp(V)` with `V` of shape `(n, 16)`), given per vector. "
        "Plain-torch references: `loss.backward()` over the same batches, and "
        "double backward (`torch.autograd.grad` with `create_graph=True`, then a "
        "second `autograd.grad`). *Operator* columns are products through "
        "`obj.hessian()`, what the solvers call: after its first product it keeps "
        "each batch's linearisation (`hvp_cache`), so a product runs the second "
        "backward pass only (a block's columns one by one on a CPU, in one batched "
        "pass on a GPU).",
        "",
        "| workload | params | gradient | plain `loss.backward()` "
        "| HVP rev-rev (`obj.hvp`) | HVP fwd-rev | plain double backward "
        "| block of 16, rev-rev, per vector | block of 16, fwd-rev, per vector "
        "| operator HVP | operator block of 16, per vector |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        c = w.costs

        def cell(name: str, c: dict[str, Timing] = c) -> str:
            return f"{ratio(c, name):.2f}× ({ms(c[name].cpu)})"

        def block(name: str, c: dict[str, Timing] = c) -> str:
            return f"{ratio(c, name, BLOCK):.2f}× ({ms(c[name].cpu)} for 16)"

        lines.append(
            f"| {w.name} | {w.num_params:,} | {ms(c[GRAD].cpu)} | {cell(BACKWARD)} "
            f"| {cell('hvp rev-rev')} | {cell('hvp fwd-rev')} | {cell(DOUBLE)} "
            f"| {block('block rev-rev')} | {block('block fwd-rev')} "
            f"| {cell(OP)} | {block(OP_BLOCK)} |"
        )
    if on_gpu():
        return lines  # the times above are wall-clock already
    lines += [
        "",
        "The same by median wall-clock time (other processes on the two cores "
        "inflate these):",
        "",
        "| workload | gradient | `loss.backward()` | HVP rev-rev | HVP fwd-rev "
        "| double backward | block rev-rev, per vector | block fwd-rev, per vector "
        "| operator HVP | operator block, per vector |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        c = w.costs
        g = c[GRAD].wall

        def wr(name: str, per: int = 1, c: dict[str, Timing] = c, g: float = g) -> str:
            return f"{c[name].wall / per / g:.2f}×"

        lines.append(
            f"| {w.name} | {ms(g)} | {wr(BACKWARD)} | {wr('hvp rev-rev')} "
            f"| {wr('hvp fwd-rev')} | {wr(DOUBLE)} | {wr('block rev-rev', BLOCK)} "
            f"| {wr('block fwd-rev', BLOCK)} | {wr(OP)} | {wr(OP_BLOCK, BLOCK)} |"
        )
    return lines


def eig_table(workloads: list[Workload]) -> list[str]:
    lines = [
        "",
        f"### eigsh, k={K}, tol={TOL:g}, seed {SEED}",
        "",
        f"Init = PyTorch's default initialisation under `torch.manual_seed({SEED})`; "
        f"trained = then {TRAIN_STEPS} steps of full-batch Adam, lr 1e-3 (in train "
        "mode; the Hessian is taken in eval mode). HVPs = `EigenResult.num_matvecs` "
        "(the 3 HVPs of `hessian()`'s symmetry probe are not counted); time = "
        f"eigsh's own, {'wall-clock' if on_gpu() else 'CPU (wall)'}. *Unrestarted* is the same call with "
        f"`ncv={UNRESTARTED_NCV}`, so it never restarts: the fewest HVPs a Krylov "
        "method needs from this start vector.",
        "",
        "| workload | point | loss | top-5 (LA): HVPs / restarts / time "
        "| bottom-5 (SA): HVPs / restarts / time | SA ÷ LA "
        "| unrestarted LA / SA HVPs | λ top-5 | λ bottom-5 |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for w in workloads:
        for state, runs in w.eig.items():
            la, sa = runs["LA"], runs["SA"]
            ula, usa = runs["LA unrestarted"], runs["SA unrestarted"]

            def cell(e: EigRun) -> str:
                flag = "" if e.converged == K else f" ({e.converged}/{K} converged)"
                return (
                    f"{e.num_matvecs} / {e.num_restarts} / "
                    f"{e.time.cpu:.1f} s ({e.time.wall:.1f} s){flag}"
                )

            def vals(e: EigRun) -> str:
                return ", ".join(f"{v:.4g}" for v in e.eigenvalues)

            lines.append(
                f"| {w.name} | {state} | {w.loss[state]:.4f} | {cell(la)} | {cell(sa)} "
                f"| {sa.num_matvecs / la.num_matvecs:.2f} "
                f"| {ula.num_matvecs} / {usa.num_matvecs} | {vals(la)} | {vals(sa)} |"
            )
    return lines


def power_table(workloads: list[Workload]) -> list[str]:
    lines = [
        "",
        "### Context: plain power iteration on the top eigenvalue",
        "",
        "One HVP per step, Rayleigh-quotient estimate. HVPs until the true relative "
        "error (against eigsh's top eigenvalue at tol 1e-6) first reaches the level; "
        "and HVPs until PyHessian's stopping rule (relative change between steps "
        "below the level) fires, with the true error at that moment. Capped at "
        f"{POWER_MAX} HVPs.",
        "",
        "| workload | point | λ_max | to 1% error | to 1e-6 error "
        "| PyHessian rule 1e-2: HVPs (error) | PyHessian rule 1e-6: HVPs (error) "
        "| eigsh top-5 to tol 1e-4 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def fired(r: tuple[int, float] | None) -> str:
        return f"{r[0]} ({r[1]:.1e})" if r is not None else f"> {POWER_MAX}"

    for w in workloads:
        for state, p in w.power.items():
            lines.append(
                f"| {w.name} | {state} | {p.reference:.6g} "
                f"| {count(p.counts[1e-2])} | {count(p.counts[1e-6])} "
                f"| {fired(p.rule[1e-2])} | {fired(p.rule[1e-6])} "
                f"| {w.eig[state]['LA'].num_matvecs} |"
            )
    return lines


def targets(workloads: list[Workload]) -> list[str]:
    rows: list[tuple[str, str, bool]] = []
    for w in workloads:
        r1 = ratio(w.costs, "hvp rev-rev")
        rows.append(
            (f"{w.name}: default single HVP ≤ 3× a gradient", f"{r1:.2f}×", r1 <= 3.0)
        )
        ro = ratio(w.costs, OP)
        rows.append(
            (
                f"{w.name}: single HVP through the operator (what eigsh calls) ≤ 3× a gradient",
                f"{ro:.2f}×",
                ro <= 3.0,
            )
        )
        rb = ratio(w.costs, "block rev-rev", BLOCK)
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
    lines = [
        "### Targets",
        "",
        f"Ratios by {clock()}, against critpoint's own gradient (`obj.grad`).",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
    ]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in rows]
    return lines


def notes(workloads: list[Workload]) -> list[str]:
    """What the numbers say, computed from them (so a re-run keeps them true)."""
    lines = ["", "### Reading the eigsh numbers", ""]
    for w in workloads:
        for state, runs in w.eig.items():
            la, sa = runs["LA"], runs["SA"]
            ula, usa = runs["LA unrestarted"], runs["SA unrestarted"]
            lines.append(
                f"- {w.name} {state}: bottom-5 {sa.num_matvecs} HVPs with restarts, "
                f"{usa.num_matvecs} without (restart overhead "
                f"{sa.num_matvecs / usa.num_matvecs:.1f}×); top-5 {la.num_matvecs} "
                f"and {ula.num_matvecs}. Even unrestarted, the bottom costs "
                f"{usa.num_matvecs / ula.num_matvecs:.1f}× the top."
            )
    restarted = any(
        runs[w].num_restarts > 0
        for x in workloads
        for runs in x.eig.values()
        for w in ("LA", "SA")
    )
    tail = (
        "The rest of the gap is the price of restarting with the default basis of "
        "`ncv = max(2k+1, 160)` vectors."
        if restarted
        else "With the default basis of `ncv = max(2k+1, 160)` vectors none of these "
        "runs restarted: the gap is the spectrum's alone."
    )
    lines += [
        "",
        "The solver treats both ends alike (`which` only changes which Ritz "
        "values are kept); the bottom costs more because of the spectrum: the top "
        "has a few well-separated outliers, the bottom five sit at the edge of a "
        "dense cluster, and a Krylov method needs more steps to separate them. " + tail,
    ]
    return lines


def clock() -> str:
    return (
        "wall-clock time after `torch.cuda.synchronize()`"
        if on_gpu()
        else "process CPU time"
    )


def machine() -> str:
    """The machine in words: the GPU's name and memory, or the CPU and its cores."""
    if on_gpu():
        props = torch.cuda.get_device_properties(DEVICE)
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), host "
            f"{cpu_model()} with {os.cpu_count()} cores; CUDA {torch.version.cuda}"
        )
    return f"{cpu_model()}, {os.cpu_count()} cores"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def section(workloads: list[Workload], elapsed: float) -> str:
    descriptions = "\n".join(f"- `{w.name}`: {w.description}" for w in workloads)
    body = "\n".join(
        [
            *targets(workloads),
            "",
            *cost_table(workloads),
            *eig_table(workloads),
            *notes(workloads),
            *power_table(workloads),
        ]
    )
    heading, command = HEADING, ".venv/bin/python benchmarks/engine.py"
    if on_gpu():
        heading, command = GPU_HEADING, "python benchmarks/engine.py --device cuda"
    return f"""{heading}

What the engine itself costs, measured in one process by `benchmarks/engine.py`.
Reproduce (add `--write` to rewrite this section):

```
{command}
```

Machine: {machine()}; one torch thread
(`torch.set_num_threads(1)`) and `torch.set_flush_denormal(True)`. Python
{platform.python_version()}, torch {torch.__version__}, critpoint {cp.__version__}.
The whole run took {elapsed:.0f} s (wall).

Data: scikit-learn's bundled `load_digits` (1797 samples, 64 pixels),
standardised per pixel (constant pixels set to 0), float32; the objective is
the mean cross-entropy over all 1797 samples in batches of {BATCH_SIZE}.

{descriptions}

{body}
"""


def write_readme(text: str, heading: str = HEADING) -> None:
    """Replace (or append) the section ``heading`` of benchmarks/README.md; keep the rest."""
    old = README.read_text() if README.exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    begin = next((i for i, s in enumerate(lines) if s.rstrip() == heading), None)
    if begin is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (
                i
                for i in range(begin + 1, len(lines))
                if lines[i].startswith(("## ", "# "))
            ),
            len(lines),
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:begin]) + text + ("\n" + tail if tail else "")
    write_text_atomic(README, new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"write the results into {README.name} under '{HEADING}' "
        f"(on a GPU: '{GPU_HEADING}')",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where to compute: cpu (default) or cuda[:N]",
    )
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if on_gpu() and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but CUDA is not available here")
    configure()
    start = time.perf_counter()
    x, y = digits()
    workloads = [
        measure(
            "mlp",
            "ReLU MLP 64-256-256-10 (85,002 parameters)",
            make_mlp(),
            x,
            y,
            power=True,
        ),
        measure(
            "cnn",
            "conv 1→8 (3×3, pad 1), BatchNorm, ReLU, max-pool 2, conv 8→16, "
            "BatchNorm, ReLU, max-pool 2, flatten, linear 64→10 (1,946 parameters); "
            "Hessian in eval mode (running statistics)",
            make_cnn(),
            x.reshape(-1, 1, 8, 8),
            y,
            power=False,
        ),
    ]
    if on_gpu():
        # Large enough that the GPU computes rather than waits on launches.
        workloads.append(
            measure(
                "wide mlp",
                "ReLU MLP 64-1024-1024-1024-10 (2,176,010 parameters), GPU only",
                make_mlp((1024, 1024, 1024)),
                x,
                y,
                power=False,
            )
        )
    elapsed = time.perf_counter() - start
    text = section(workloads, elapsed)
    print()
    print(text)
    if args.write:
        write_readme(text, GPU_HEADING if on_gpu() else HEADING)
        print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
