"""critpoint side by side with PyHessian, hessian-eigenthings and curvlinops.

Runs the same four tasks (top-5 and bottom-5 eigenvalues, trace, spectral
density) with every library on the same workloads, each measurement in its
own process, and prints a table of ratios to critpoint (time, HVPs, peak
memory) with the accuracy of each against ground truth.

Usage::

    .venv/bin/python benchmarks/run.py            # full run (~10 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # ~1 min smoke run
    .venv/bin/python benchmarks/run.py --write    # and update benchmarks/README.md

The peers come from ``pip install -e ".[bench]"`` (see benchmarks/README.md
for an install that keeps the CPU torch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_bench import cell, report, workloads
from peer_bench import profile as peer_profile
from peer_bench.adapters import LIBRARIES, TASKS

from critpoint._files import write_text_atomic

FULL = ("w1-init", "w1-trained", "w2", "w3", "planted")
QUICK = ("planted", "w1-init")
PROFILED = ("w1-init", "w2", "w3")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def serve(
    workload: str,
    libraries: tuple[str, ...],
    tasks: tuple[str, ...],
    folder: Path,
    repeats: int,
    slow: float,
    quick: bool,
) -> list[dict[str, Any]]:
    """Measure one workload in a fresh interpreter (it forks one child per cell)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        workload,
        "--folder",
        str(folder),
        "--libraries",
        ",".join(libraries),
        "--tasks",
        ",".join(tasks),
        "--repeats",
        str(repeats),
        "--slow",
        str(slow),
    ]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run(cmd, env=env, check=False)
    path = folder / f"{workload}-records.json"
    if not path.exists():
        log(f"[{workload}] the measuring process failed; no records")
        return []
    return json.loads(path.read_text())


def run_profile(names: list[str], folder: Path, fresh: bool) -> dict[str, Any]:
    """Profile critpoint's HVP paths on prepared workloads (``fresh``: prepare them)."""
    out = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            if fresh:
                workloads.prepare(name, folder, log, check=False, with_truth=False)
            wl = workloads.load(name, folder)
            out[name] = {
                "hvp": peer_profile.hvp_costs(wl),
                "eigsh": peer_profile.eigsh_shares(wl),
            }
        except Exception as exc:  # a profile must not cost the measurements
            log(f"[{name}] profile failed: {type(exc).__name__}: {exc}")
            continue
        log(f"[{name}] profiled ({time.perf_counter() - t0:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    parser.add_argument(
        "--write", action="store_true", help="update benchmarks/README.md"
    )
    parser.add_argument("--json", type=Path, help="also save the raw records here")
    parser.add_argument("--workloads", help=f"comma list from {','.join(FULL)}")
    parser.add_argument("--libraries", help=f"comma list from {','.join(LIBRARIES)}")
    parser.add_argument("--tasks", help=f"comma list from {','.join(TASKS)}")
    parser.add_argument("--repeats", type=int, help="runs per measurement (seeds 0..)")
    parser.add_argument(
        "--check-truth",
        action="store_true",
        help="cross-check the ground truth (torch.func.hessian, ARPACK, GGN identity)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="with --from-json: profile critpoint's HVP paths and add them to the file",
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the profile of critpoint's HVP paths (full runs do it)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="re-render the tables from a --json file of an earlier run (no measuring)",
    )
    # internal: measure one prepared workload in this process
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slow", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    names = (
        tuple(args.workloads.split(","))
        if args.workloads
        else (QUICK if args.quick else FULL)
    )
    if args.libraries:
        libraries = tuple(args.libraries.split(","))
    else:  # quick: without the non-default critpoint rows
        libraries = tuple(x for x in LIBRARIES if not (args.quick and "-" in x))
    tasks = tuple(args.tasks.split(",")) if args.tasks else TASKS
    repeats = args.repeats or (1 if args.quick else 3)
    slow = args.slow or (1.0 if args.quick else 10.0)
    if args.serve:
        return cell.serve(
            args.serve,
            list(libraries),
            list(tasks),
            args.folder,
            repeats,
            slow,
            timeout=120.0 if args.quick else 400.0,
            quick=args.quick,
            grouped=args.quick,
        )

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        if args.profile:
            cell.configure()
            with tempfile.TemporaryDirectory(prefix="critpoint-bench-") as tmp:
                names = [n for n in saved["workloads"] if n in PROFILED]
                saved["meta"]["profile"] = run_profile(names, Path(tmp), fresh=True)
            write_text_atomic(args.from_json, json.dumps(saved, indent=1))
        text = report.section(saved["records"], saved["workloads"], saved["meta"])
        print(text)
        if args.write:
            report.write_readme(text)
            log(f"wrote {report.README}")
        return 0

    cell.configure()
    log("one torch thread per process (torch.set_num_threads(1)), denormals flushed")
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    prepared: dict[str, Any] = {}
    checks: dict[str, float] = {}
    profile: dict[str, Any] = {}
    check_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="critpoint-bench-") as tmp:
        folder = Path(tmp)
        if args.check_truth:
            t0 = time.perf_counter()
            check_seconds -= t0
            checks[
                "tr(GGN) vs dense trace, ReLU MLP + BN CNN (64 samples), max rel diff"
            ] = workloads.ggn_identity_check()
            check_seconds += time.perf_counter()
            log(f"GGN-trace identity checked ({time.perf_counter() - t0:.0f} s)")
        for name in names:
            t0 = time.perf_counter()
            log(f"[{name}] preparing (training, ground truth) ...")
            truth = workloads.prepare(name, folder, log, args.check_truth)
            wl = workloads.load(name, folder, args.quick)
            prepared[name] = {
                "title": wl.spec.title,
                "num_params": wl.num_params,
                "batches": [int(b[0].shape[0]) for b in wl.batches],
                "truth": {
                    "top": wl.truth.top.tolist(),
                    "bottom": wl.truth.bottom.tolist(),
                    "trace": wl.truth.trace,
                },
                "spec": {
                    "trace_budget": wl.spec.trace_budget,
                    "density_probes": wl.spec.density_probes,
                    "density_steps": wl.spec.density_steps,
                },
                "source": truth.source,
                "trace_source": truth.trace_source,
                "prepare_s": time.perf_counter() - t0,
            }
            checks.update({f"{name}: {k}": v for k, v in truth.checks.items()})
            check_seconds += truth.check_seconds
            log(f"[{name}] prepared in {time.perf_counter() - t0:.0f} s")
            records += serve(name, libraries, tasks, folder, repeats, slow, args.quick)
            if args.json:  # keep what is measured so far
                partial = {"meta": {}, "workloads": prepared, "records": records}
                write_text_atomic(args.json, json.dumps(partial, indent=1))
        if not args.quick and not args.no_profile:
            profile = run_profile(
                [n for n in names if n in PROFILED], folder, fresh=False
            )
    elapsed = time.perf_counter() - started
    meta = report.machine(elapsed, args.quick, repeats)
    meta["checks"] = checks
    meta["profile"] = profile
    meta["check_seconds"] = check_seconds
    text = report.section(records, prepared, meta)
    print(text)
    if args.json:
        write_text_atomic(
            args.json,
            json.dumps(
                {"meta": meta, "workloads": prepared, "records": records}, indent=1
            ),
        )
    if args.write:
        report.write_readme(text)
        log(f"wrote {report.README}")
    log(f"total {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
