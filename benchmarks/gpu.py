"""critpoint and its peers on a GPU: top-5 eigenvalues and the spectral density.

The same adapters and workloads as ``run.py`` (each library through its
public API as documented), with the models and data on a CUDA device. One
process per workload (each library's products are counted by wrapping its
matvec, which must happen once per process); in it, each (library, task) is
warmed up once, then timed over seeds 0, 1, 2 (median, wall-clock after
``torch.cuda.synchronize()``). Accuracy is against the ground truth that
``run.py`` computes (prepared here on the CPU and carried along).

Usage, on a machine with CUDA::

    python benchmarks/gpu.py --prepare DIR            # on any machine: train, ground truth
    python benchmarks/gpu.py --folder DIR --write     # on the GPU: measure, update README.md

The first step runs on the CPU (minutes); the second needs the peers
importable (``pip install --no-deps`` as in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from engine import write_readme
from peer_bench import report, workloads
from peer_bench.adapters import ADAPTERS

from critpoint._files import write_text_atomic

HEADING = "## Side by side on a GPU"
WORKLOADS = ("w1-init", "w2", "w3")
LIBRARIES = ("critpoint", "pyhessian", "eigenthings", "curvlinops")
TASKS = ("top", "density")
SEEDS = (0, 1, 2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync() -> None:
    if workloads.DEVICE.type == "cuda":
        torch.cuda.synchronize()


def measure_workload(name: str, folder: Path, device: str) -> list[dict[str, Any]]:
    """Every (library, task) on one workload, in this process, on ``device``."""
    from peer_bench.cell import score

    workloads.DEVICE = torch.device(device)
    wl = workloads.load(name, folder)
    records = []
    for library in LIBRARIES:
        try:
            adapter = ADAPTERS[library](wl)
            adapter.warmup()
        except Exception as exc:
            log(f"[{name}] {library}: set-up failed: {type(exc).__name__}: {exc}")
            continue
        for task in TASKS:
            if task not in adapter.tasks:
                continue
            times, counts, accuracy = [], [], []
            try:
                getattr(adapter, task)(0)  # warm-up: first-call set-up of kernels
                for seed in SEEDS:
                    adapter.counter.count = 0
                    sync()
                    start = time.perf_counter()
                    out = getattr(adapter, task)(seed)
                    sync()
                    if out.status != "ok":
                        raise RuntimeError(out.note)
                    times.append(time.perf_counter() - start)
                    counts.append(adapter.counter.count - out.setup_hvps)
                    accuracy.append(score(wl, task, out))
            except Exception as exc:
                log(f"[{name}] {library} {task}: {type(exc).__name__}: {exc}")
                records.append(
                    {
                        "workload": name,
                        "library": library,
                        "task": task,
                        "fails": str(exc),
                    }
                )
                continue
            records.append(
                {
                    "workload": name,
                    "library": library,
                    "task": task,
                    "time": statistics.median(times),
                    "hvps": statistics.median(counts),
                    "accuracy": accuracy,
                }
            )
            log(f"[{name}] {library} {task}: {1e3 * statistics.median(times):.0f} ms")
    return records


def error_of(record: dict[str, Any]) -> float | None:
    """Mean over seeds of the task's error (top-5 relative error, or W₁)."""
    key = "error" if record["task"] == "top" else "wasserstein"
    values = [a.get(key) for a in record.get("accuracy", [])]
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def section(records: list[dict[str, Any]], elapsed: float) -> str:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    else:  # a dry run of the script on the CPU
        gpu = f"no GPU: {report.cpu_model()}"
    m = report.machine(elapsed, False, len(SEEDS))
    import critpoint

    versions = f"critpoint {critpoint.__version__}, " + ", ".join(
        f"{lib} {m[lib]}"
        for lib in ("pyhessian", "hessian-eigenthings", "curvlinops-for-pytorch")
    )
    lines = [
        HEADING,
        "",
        "The same adapters and workloads as above with the models and data on a "
        "GPU, by `benchmarks/gpu.py` (reproduce: `python benchmarks/gpu.py --prepare "
        "DIR` on any machine, then `python benchmarks/gpu.py --folder DIR` where "
        "CUDA is). Time: median wall-clock over seeds "
        f"{', '.join(map(str, SEEDS))} after one warm-up, synchronised; HVPs as "
        "counted above; error: top-5 largest relative error, density Wasserstein-1 "
        "against the full spectrum (W1 only), mean over the seeds. Ratios are the "
        "peer's time over critpoint's.",
        "",
        f"Machine: {gpu}, "
        f"{os.cpu_count()} host cores; Python {platform.python_version()}, torch "
        f"{torch.__version__}, {versions}. The whole run took {elapsed:.0f} s.",
        "",
        "| workload | task | library | time | × critpoint's time | HVPs | error |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    base = {
        (r["workload"], r["task"]): r["time"]
        for r in records
        if r["library"] == "critpoint" and "time" in r
    }
    for r in records:
        label = report.LABELS.get(r["library"], r["library"])
        if "fails" in r:
            lines.append(
                f"| {r['workload']} | {r['task']} | {label} | fails: "
                f"{r['fails'][:60]} | | | |"
            )
            continue
        ref = base.get((r["workload"], r["task"]))
        ratio = f"{r['time'] / ref:.1f}×" if ref else ""
        err = error_of(r)
        lines.append(
            f"| {r['workload']} | {r['task']} | {label} | {1e3 * r['time']:.0f} ms "
            f"| {ratio} | {r['hvps']:.0f} | {'' if err is None else f'{err:.1e}'} |"
        )
    lines += [
        "",
        "On a GPU the density's probes advance together: one batched backward "
        "pass of the kept linearisations per Lanczos step serves all of them, "
        "where the peers run one product per probe and step. PyTorch runs float32 "
        "convolutions in TF32 on this GPU by default "
        "(`torch.backends.cudnn.allow_tf32`), which bounds every library's "
        "top-5 accuracy on the CNN (W3) near 1e-4.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, help="train and compute the truth here")
    parser.add_argument("--folder", type=Path, help="prepared workloads (--prepare)")
    parser.add_argument("--write", action="store_true", help="update README.md")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one workload
    # a dry run of the script itself on the CPU
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.workloads.split(",")
    warnings.filterwarnings("ignore")
    if args.prepare:
        args.prepare.mkdir(parents=True, exist_ok=True)
        for name in names:
            workloads.prepare(name, args.prepare, log, check=False)
            log(f"[{name}] prepared")
        return 0
    if args.folder is None:
        parser.error("give --folder (prepared with --prepare) or --prepare")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here")
    if args.one:
        records = measure_workload(args.one, args.folder, args.device)
        write_text_atomic(args.folder / f"{args.one}-gpu.json", json.dumps(records))
        return 0
    started = time.perf_counter()
    records = []
    for name in names:
        cmd = [sys.executable, __file__, "--folder", str(args.folder), "--one", name]
        cmd += ["--device", args.device]
        subprocess.run(cmd, check=False)
        path = args.folder / f"{name}-gpu.json"
        if path.exists():
            records += json.loads(path.read_text())
    text = section(records, time.perf_counter() - started)
    print(text)
    if args.write:
        write_readme(text, HEADING)
        log(f"wrote {report.README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
