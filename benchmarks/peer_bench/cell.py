"""Measurements, each in its own process.

One server process per workload (``run.py --serve``) sets one torch thread,
imports every library (so all measurements share one memory baseline) and
loads the prepared workload; it then forks one child per (library, task).
The child warms the library up once (untimed: first-call set-up of the
autodiff transforms), runs the task with seeds 0, 1, ... and writes a JSON
record: wall times, HVPs, accuracy per run, and its peak resident memory
(``ru_maxrss``). An idle child gives the baseline. Forking instead of
starting interpreters saves the ~3-6 s import of torch per measurement.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critpoint._files import write_text_atomic
from peer_bench import workloads
from peer_bench.adapters import ADAPTERS, Adapter, Outcome
from peer_bench.workloads import Workload, relative_error


def configure() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    warnings.filterwarnings(
        "ignore"
    )  # PyHessian's create_graph warning, jit deprecations


def import_all() -> None:
    """Import every peer, so every child starts from the same memory footprint."""
    import curvlinops  # noqa: F401
    import hessian_eigenthings  # noqa: F401
    import pyhessian  # noqa: F401
    import scipy.sparse.linalg
    import scipy.stats  # noqa: F401


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def score(wl: Workload, task: str, out: Outcome) -> dict[str, Any]:
    """Accuracy of one run against the workload's ground truth."""
    truth = wl.truth
    assert truth is not None
    if task in ("top", "bottom"):
        ref = truth.top if task == "top" else truth.bottom
        values = np.array(
            out.values if out.values is not None else [], dtype=np.float64
        )
        if values.size != ref.size:
            return {"error": math.inf, "returned": int(values.size)}
        ordered = np.sort(values)[::-1] if task == "top" else np.sort(values)
        return {"error": relative_error(ordered, ref), "values": ordered.tolist()}
    if task == "trace":
        assert out.trace is not None
        return {
            "error": abs(out.trace - truth.trace) / abs(truth.trace),
            "value": out.trace,
        }
    if truth.spectrum is None or out.support is None:
        return {"wasserstein": None}
    from scipy.stats import wasserstein_distance

    w1 = wasserstein_distance(out.support, truth.spectrum, u_weights=out.weights)
    return {"wasserstein": float(w1)}


#: Runs per task at most: stochastic tasks more, so that their mean error is
#: not one draw (seeds 0, 1, ...).
MAX_RUNS = {"top": 3, "bottom": 3, "trace": 10, "density": 5}


def run_task(
    adapter: Adapter, wl: Workload, task: str, repeats: int, budget: float
) -> dict[str, Any]:
    """Run a task with seeds 0, 1, ...: once, then again while the runs so far
    took less than ``budget`` seconds, up to ``MAX_RUNS`` (or ``repeats``)."""
    runs: list[dict[str, Any]] = []
    record: dict[str, Any] = {"task": task, "status": "ok", "note": ""}
    total = 0.0
    for seed in range(max(repeats, MAX_RUNS.get(task, 1))):
        if seed > 0 and total > budget:
            break
        before = adapter.counter.count
        start, cpu = time.perf_counter(), time.process_time()
        try:
            out = getattr(adapter, task)(seed)
        except Exception as exc:
            record.update(status="fails", note=f"{type(exc).__name__}: {exc}")
            record["traceback"] = traceback.format_exc(limit=4)
            break
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if out.status != "ok":
            record.update(status=out.status, note=out.note)
            break
        hvps = adapter.counter.count - before - out.setup_hvps
        run = {
            "seed": seed,
            "time": elapsed,
            "cpu": cpu,
            "hvps": hvps,
            "setup_hvps": out.setup_hvps,
            "converged": out.converged,
        }
        run.update(score(wl, task, out))
        if "own_count" in out.extra:
            run["own_count"] = out.extra["own_count"]
        runs.append(run)
        record["note"] = out.note
        total += elapsed
    record["runs"] = runs
    if runs:
        record["time"] = statistics.median(r["time"] for r in runs)
        record["cpu"] = statistics.median(r["cpu"] for r in runs)
        record["hvps"] = statistics.median(r["hvps"] for r in runs)
        record["setup_hvps"] = runs[0]["setup_hvps"]
        key = "wasserstein" if task == "density" else "error"
        vals = [r[key] for r in runs if r.get(key) is not None]
        record[key] = float(np.mean(vals)) if vals else None
        record[key + "_se"] = (
            float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else None
        )
        conv = [r["converged"] for r in runs if r["converged"] is not None]
        record["converged"] = all(conv) if conv else None
    return record


def measure(
    wl: Workload, library: str, tasks: list[str], repeats: int, slow: float
) -> dict[str, Any]:
    """Run the tasks of one library (in a forked child) and return the record."""
    result: dict[str, Any] = {"workload": wl.name, "library": library, "tasks": []}
    if library != "none":
        adapter = ADAPTERS[library](wl)
        try:
            adapter.warmup()
        except Exception as exc:
            result["warmup_error"] = f"{type(exc).__name__}: {exc}"
        for task in tasks:
            result["tasks"].append(run_task(adapter, wl, task, repeats, slow))
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def _fork(
    wl: Workload,
    library: str,
    tasks: list[str],
    repeats: int,
    slow: float,
    out_path: Path,
    timeout: float,
) -> dict[str, Any]:
    """One measurement in a forked child: its own process, its own ``ru_maxrss``.

    The child starts as a copy of this server (libraries imported, workload
    loaded), so its peak memory minus an idle child's is what the task added.
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            record = measure(wl, library, tasks, repeats, slow)
            write_text_atomic(out_path, json.dumps(record, indent=1))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        note = f"timeout after {timeout:.0f} s"
        return _failed(wl.name, library, tasks, note)
    if status != 0 or not out_path.exists():
        return _failed(wl.name, library, tasks, f"child exited with status {status}")
    return json.loads(out_path.read_text())


def _failed(workload: str, library: str, tasks: list[str], note: str) -> dict[str, Any]:
    return {
        "workload": workload,
        "library": library,
        "tasks": [{"task": t, "status": "fails", "note": note} for t in tasks],
    }


def serve(
    workload: str,
    libraries: list[str],
    tasks: list[str],
    folder: Path,
    repeats: int,
    slow: float,
    timeout: float,
    quick: bool,
    grouped: bool,
) -> int:
    """Measure every (library, task) of one workload, each in a forked child.

    Writes ``folder/<workload>-records.json``. ``grouped``: one child per
    library runs all its tasks (quick mode: fewer processes, coarser memory).
    """
    configure()
    import_all()
    wl = workloads.load(workload, folder, quick)
    torch.set_default_dtype(
        wl.dtype
    )  # PyHessian draws its vectors in the default dtype
    records = [
        _fork(wl, "none", [], 1, slow, folder / f"{workload}-idle.json", timeout)
    ]
    for library in libraries:
        mine = [t for t in tasks if t in ADAPTERS[library].tasks]
        for group in ([mine] if mine else []) if grouped else [[t] for t in mine]:
            out = folder / f"{workload}-{library}-{'-'.join(group)}.json"
            start = time.perf_counter()
            rec = _fork(wl, library, group, repeats, slow, out, timeout)
            records.append(rec)
            for t in rec["tasks"]:
                print(
                    f"[{workload}] {library:12s} {t['task']:8s} {t['status']:5s} "
                    f"{short(t)} ({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    path = folder / f"{workload}-records.json"
    write_text_atomic(path, json.dumps(records, indent=1))
    return 0


def short(t: dict[str, Any]) -> str:
    """One-line summary of a task record for the progress log."""
    if t.get("status") != "ok":
        return str(t.get("note", ""))[:90]
    acc = t.get("wasserstein") if t["task"] == "density" else t.get("error")
    acc_text = "—" if acc is None else f"{acc:.1e}"
    return (
        f"time {t.get('time', 0):.2f} s, HVPs {t.get('hvps')}, "
        f"{'W1' if t['task'] == 'density' else 'err'} {acc_text}, runs {len(t.get('runs', []))}"
    )
