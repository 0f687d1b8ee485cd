"""Block size of eigsh: HVP counts per block size, and the multiplicity / exhausted-space cases.

Counts are deterministic (same seed, same numbers on every machine), so this
script measures only counts; the times of the chosen default are in the
engine and peer tables. Workloads:

* the engine's digits networks (``benchmarks/engine.py``: ReLU MLP 85k and
  BatchNorm CNN 1.9k, float32, at initialisation and after 200 Adam steps),
  top-5 (``LA``) and bottom-5 (``SA``) at ``tol=1e-4``;
* the peer workloads (``benchmarks/peer_bench/workloads.py``: W1 init and
  trained, W2, W3, the planted saddle), top-5 and bottom-5 at ``tol=1e-5``;
* ``diagnose``'s solve (``which="BE"``, ``k=6``, ``tol=1e-4``) on all of them;
* the cases a single-vector Krylov space gets wrong or slow: ``Linear(20, 3)``
  with mean MSE (each eigenvalue three times), ``Linear(50, 1)`` on 10
  samples (41 zero eigenvalues), ``Linear(200, 1)`` on 20 samples (rank 21)
  and a deep linear net at the origin (``H = 0``, 2,700 parameters).

Usage::

    .venv/bin/python benchmarks/block_size.py --counts-only          # counts (~15 min)
    .venv/bin/python benchmarks/block_size.py --counts-only --write  # and update README.md
    .venv/bin/python benchmarks/block_size.py                        # counts and times
    python benchmarks/block_size.py --device cuda                    # on a GPU

Times are eigsh's own (process CPU time with one torch thread on a CPU,
wall-clock after ``torch.cuda.synchronize()`` on a GPU); take them on a quiet
machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine
from peer_bench import workloads

import critpoint as cp
from critpoint.linalg.lanczos import DEFAULT_BLOCK_SIZE

HEADING = "## Block size"
GPU_HEADING = "## Block size on a GPU"
BLOCKS = (1, 2, 3, 4)
PEERS = ("w1-init", "w1-trained", "w2", "w3", "planted")
#: Set by ``main``: whether to time each solve, and where.
TIMES = True
#: HVPs of the single-vector Lanczos that came before (commit c15bcee: no
#: block, no search for copies), same seeds and settings, for comparison.
#: ``git checkout c15bcee`` and the same calls reproduce them.
BEFORE = {
    ("Linear(20, 3), each eigenvalue ×3", "LA"): "21 (1.243, 1.483, 1.683: wrong)",
    ("Linear(50, 1), 41 zeros", "SA"): "11 (0, 2.94, 3.30, 6.39, 7.77: wrong)",
    ("Linear(200, 1), rank 21", "BE"): "4800 (unconverged)",
    ("deep linear at 0, H = 0 (n = 2700)", "BE3"): "4762",
    ("deep linear at 0, H = 0 (n = 2700)", "BE6"): "4800 (unconverged)",
    ("engine mlp init", "LA"): "44",
    ("engine mlp init", "SA"): "112",
    ("engine mlp init", "BE"): "87",
    ("engine mlp trained", "LA"): "16",
    ("engine mlp trained", "SA"): "109",
    ("engine mlp trained", "BE"): "93",
    ("engine cnn init", "LA"): "29",
    ("engine cnn init", "SA"): "59",
    ("engine cnn init", "BE"): "54",
    ("engine cnn trained", "LA"): "16",
    ("engine cnn trained", "SA"): "70",
    ("engine cnn trained", "BE"): "55",
    ("w1-init", "LA"): "73",
    ("w1-init", "SA"): "127",
    ("w1-init", "BE"): "107",
    ("w1-trained", "LA"): "30",
    ("w1-trained", "SA"): "154",
    ("w1-trained", "BE"): "129",
    ("w2", "LA"): "17",
    ("w2", "SA"): "240",
    ("w2", "BE"): "88",
    ("w3", "LA"): "24",
    ("w3", "SA"): "56",
    ("w3", "BE"): "43",
    ("planted", "LA"): "20",
    ("planted", "SA"): "29",
    ("planted", "BE"): "18",
}


def count(H: cp.HessianOperator, which: str, k: int, tol: float, p: int) -> str:
    engine.sync()
    c, w = time.process_time(), time.perf_counter()
    r = cp.eigsh(
        H, k=k, which=which, tol=tol, seed=0, block_size=p, return_eigenvectors=False
    )
    engine.sync()
    seconds = time.perf_counter() - w if engine.on_gpu() else time.process_time() - c
    flag = "" if r.all_converged else " (unconverged)"
    starts = f" [{r.num_starts}]" if r.num_starts > 1 else ""
    spent = f" / {seconds:.2f} s" if TIMES else ""
    return f"{r.num_matvecs}{starts}{flag}{spent}"


def rows_for(name: str, H: cp.HessianOperator, tol: float) -> list[str]:
    rows = []
    for which, k, t in (("LA", 5, tol), ("SA", 5, tol), ("BE", 6, 1e-4)):
        cells = [count(H, which, k, t, p) for p in BLOCKS]
        cells.append(BEFORE.get((name, which), ""))
        rows.append(
            f"| {name} | {which}, k={k}, tol={t:g} | " + " | ".join(cells) + " |"
        )
        print(rows[-1], flush=True)
    return rows


def engine_rows() -> list[str]:
    x, y = engine.digits()
    rows = []
    for name, model, inputs in (
        ("engine mlp", engine.make_mlp(), x),
        ("engine cnn", engine.make_cnn(), x.reshape(-1, 1, 8, 8)),
    ):
        for state in ("init", "trained"):
            if state == "trained":
                engine.train(model, inputs, y)
            model.eval()
            obj = cp.Objective(
                model.to(engine.DEVICE),
                F.cross_entropy,
                (inputs.to(engine.DEVICE), y.to(engine.DEVICE)),
                batch_size=engine.BATCH_SIZE,
            )
            rows += rows_for(f"{name} {state}", obj.hessian(check=False), 1e-4)
    return rows


def peer_rows(folder: Path) -> list[str]:
    rows = []
    workloads.DEVICE = engine.DEVICE
    for name in PEERS:
        workloads.prepare(name, folder, lambda _: None, check=False, with_truth=False)
        wl = workloads.load(name, folder)
        rows += rows_for(name, wl.objective().hessian(check=False), 1e-5)
    return rows


def linear_head(n_in: int, n_out: int, samples: int) -> cp.Objective:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(samples, n_in, generator=g, dtype=torch.float64)
    Y = torch.randn(samples, n_out, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(n_in, n_out).double().to(engine.DEVICE)
    return cp.Objective(model, F.mse_loss, (X.to(engine.DEVICE), Y.to(engine.DEVICE)))


def deep_linear() -> cp.Objective:
    model = nn.Sequential(*[nn.Linear(30, 30, bias=False) for _ in range(3)]).double()
    for p in model.parameters():
        nn.init.zeros_(p)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, 30, generator=g, dtype=torch.float64)
    Y = torch.randn(16, 30, generator=g, dtype=torch.float64)
    model = model.to(engine.DEVICE)
    return cp.Objective(model, F.mse_loss, (X.to(engine.DEVICE), Y.to(engine.DEVICE)))


def special_rows() -> list[str]:
    cases = (
        ("Linear(20, 3), each eigenvalue ×3", linear_head(20, 3, 50), "LA", 3, 1e-10),
        ("Linear(50, 1), 41 zeros", linear_head(50, 1, 10), "SA", 5, 1e-5),
        ("Linear(200, 1), rank 21", linear_head(200, 1, 20), "BE", 6, 1e-10),
        ("deep linear at 0, H = 0 (n = 2700)", deep_linear(), "BE", 3, 1e-5),
        ("deep linear at 0, H = 0 (n = 2700)", deep_linear(), "BE", 6, 1e-4),
    )
    rows = []
    for name, obj, which, k, tol in cases:
        H = obj.hessian(check=False)
        cells = [count(H, which, k, tol, p) for p in BLOCKS]
        key = (name, which) if which != "BE" or "deep" not in name else (name, f"BE{k}")
        cells.append(BEFORE.get(key, ""))
        rows.append(
            f"| {name} | {which}, k={k}, tol={tol:g} | " + " | ".join(cells) + " |"
        )
        print(rows[-1], flush=True)
        dg = cp.diagnose(obj, k=6, seed=0)
        rows.append(
            f"| {name} | `diagnose` (all of it: probe, eigsh, density, trace) "
            f"| {dg.num_matvecs} at the default block size ({DEFAULT_BLOCK_SIZE}) | | | | |"
        )
    return rows


def _first_int(cell: str) -> int:
    return int(cell.strip().split()[0])


def summary(measured: list[str]) -> tuple[str, str]:
    """Sentences on which block size spends the fewest products, and at what price."""
    wins, exceptions, ratios = 0, [], []
    for row in measured:
        cells = [c for c in row.strip("|").split("|")]
        name, solve = cells[0].strip(), cells[1].split(",")[0].strip()
        counts = [_first_int(c) for c in cells[2 : 2 + len(BLOCKS)]]
        best = BLOCKS[counts.index(min(counts))]
        two = counts[BLOCKS.index(2)]
        if min(counts) == two:
            wins += 1
        else:
            exceptions.append(f"{name} {solve} (block {best}: {min(counts)} vs {two})")
        before = cells[2 + len(BLOCKS)].strip()
        if before:
            ratios.append(two / _first_int(before))
    choice = (
        f"A block of 2 spends the fewest products of blocks 1–{BLOCKS[-1]} on {wins} "
        f"of these {len(measured)} solves"
        + (f"; the exceptions: {', '.join(exceptions)}." if exceptions else ".")
    )
    price = ""
    if ratios:
        price = (
            "Against the single-vector run that did not look for copies (last column), "
            f"it costs {100 * (min(ratios) - 1):.0f}–{100 * (max(ratios) - 1):.0f} % more "
            f"products (median {100 * (sorted(ratios)[len(ratios) // 2] - 1):.0f} %): the "
            "price of seeing multiplicities."
        )
    return choice, price


def section(special: list[str], measured: list[str], elapsed: float) -> str:
    head = (
        "| workload | solve | "
        + " | ".join(f"block {p}" for p in BLOCKS)
        + " | before (single vector, c15bcee) |"
    )
    rule = "|---|---|" + "---:|" * (len(BLOCKS) + 1)
    what = "HVPs / time" if TIMES else "HVPs"
    choice, price = summary(measured)
    if engine.on_gpu():
        machine = (
            f"{engine.machine()}; times are wall-clock after `torch.cuda.synchronize()`"
        )
        command = "python benchmarks/block_size.py --device cuda"
    else:
        machine = f"{engine.machine()}, one torch thread" + (
            "; times are process CPU time" if TIMES else ""
        )
        command = ".venv/bin/python benchmarks/block_size.py" + (
            "" if TIMES else " --counts-only"
        )
    return f"""{GPU_HEADING if engine.on_gpu() else HEADING}

{what} that `eigsh` spends per block size (`EigenResult.num_matvecs`, seed 0;
`[s]`: the run needed `s` Krylov spaces, the later ones started from fresh
random vectors to look for copies of what was found). The counts are the same
on any machine. Reproduce (add `--write` to rewrite this section):

```
{command}
```

Machine: {machine}. Python {platform.python_version()}, torch
{torch.__version__}, critpoint {cp.__version__}; the run took {elapsed:.0f} s.

### Multiplicities and exhausted Krylov spaces

{head}
{rule}
{chr(10).join(special)}

### The benchmark workloads

Top-5 (`LA`) and bottom-5 (`SA`) at each workload's tolerance (the engine's
`1e-4`, the peer comparison's `1e-5`), and `diagnose`'s solve (`BE`, `k=6`,
`tol=1e-4`).

{head}
{rule}
{chr(10).join(measured)}

### How the default was chosen

With one vector per block, `eigsh` must start a second Krylov space to rule
out copies of what it found (`[2]` above), and that space must converge its
own most extreme value, or certify that nothing lies beyond the last one
returned: next to a dense bulk, at the bottom of a trained network, that costs
as much again. A block of two start vectors sees two copies of every
eigenvalue from the start, so it needs a second space only where it finds two
overlapping pairs. {choice} So 2 is the default, and 1 where every end wants
a single value (`k = 1`, or `"BE"` with `k = 2`: a copy of the only value
would not change the answer). {price} On a GPU a block of products costs far
less per vector than single products (the engine's GPU table: 0.10–0.25 of a
gradient per vector in a block of 16, against 0.66–0.92 for one product);
`python benchmarks/block_size.py --device cuda` measures what that makes of
each block size's time.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument(
        "--counts-only",
        action="store_true",
        help="leave the times out (they need a quiet machine)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--only", choices=("special", "engine", "peers"), default=None)
    args = parser.parse_args(argv)
    global TIMES
    TIMES = not args.counts_only
    engine.DEVICE = torch.device(args.device)
    if engine.on_gpu() and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but CUDA is not available here")
    engine.configure()
    start = time.perf_counter()
    special = special_rows() if args.only in (None, "special") else []
    measured = []
    if args.only in (None, "engine"):
        measured += engine_rows()
    if args.only in (None, "peers"):
        with tempfile.TemporaryDirectory() as tmp:
            measured += peer_rows(Path(tmp))
    text = section(special, measured, time.perf_counter() - start)
    print()
    print(text)
    if args.write:
        engine.write_readme(text, GPU_HEADING if engine.on_gpu() else HEADING)
        print(f"wrote {engine.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
