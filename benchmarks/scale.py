"""critpoint at scale: ResNet-20 beside PyHessian, ResNet-18's default diagnosis, GPT-2 on a GPU.

Usage (one torch thread; every measurement in a fresh process)::

    .venv/bin/python benchmarks/scale.py resnet20 [--quick] [--write]
    .venv/bin/python benchmarks/scale.py resnet18 [--quick] [--write] [--stem cifar]
    .venv/bin/python benchmarks/scale.py gpt2 [--quick] [--write] [--time-box 540]
    .venv/bin/python benchmarks/scale.py profile [--quick]
    .venv/bin/python benchmarks/scale.py compile [--quick] [--device cuda] [--mode max-autotune]

``--quick`` runs the same harness on small sizes (32 images, narrower nets)
in a few minutes: HVP counts, memory and the plumbing, not the published
timings. ``--write`` rewrites this benchmark's sections of
``benchmarks/README.md``; ``--render`` rewrites them from the last results
without measuring. Models, data, ground truth and results are kept in
``benchmarks/.scale-cache/`` (rebuilt from seeds when missing).

PyHessian comes from ``make bench`` (``pip install --no-deps pyhessian==0.1``);
GPT-2 needs ``transformers`` (only its ``GPT2Config`` / ``GPT2LMHeadModel``:
no download) and CUDA, and skips with a message otherwise.
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CACHE = HERE / ".scale-cache"
README_HEADINGS = {
    "resnet20": "## Scale: ResNet-20 beside PyHessian (CPU)",
    "resnet18": "## Scale: ResNet-18, the default diagnosis (CPU)",
    "gpt2": "## Scale: GPT-2 small on a GPU",
}

#: Tolerances tried for critpoint's top eigenvalue, loosest first.
LADDER = (1e-1, 5e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 1e-5)


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- configurations


def config(section: str, quick: bool, stem: str = "imagenet") -> dict[str, Any]:
    """Sizes of one section: the published ones, or the ``--quick`` ones."""
    if section == "resnet20":
        c = {
            "kind": "resnet20",
            "width": 8 if quick else 16,
            "num_images": 32 if quick else 128,
            "train_steps": 20,
            "seeds": [0, 1] if quick else [0, 1, 2],
            "trace_budget": 30,
            "trace_seeds": [0, 1] if quick else [0, 1, 2, 3, 4],
            "truth_trace_budget": 90 if quick else 300,
            "density_probes": 1,  # PyHessian's defaults: n_v=1, iter=100
            "density_steps": 30 if quick else 100,
        }
    elif section == "resnet18":
        c = {
            "kind": "resnet18",
            "width": 16 if quick else 64,
            "stem": stem,
            "num_images": 32 if quick else 256,
            "train_steps": 10,
        }
    else:
        raise ValueError(section)
    c["quick"] = quick
    tag = f"{c['kind']}-w{c['width']}-n{c['num_images']}" + (
        f"-{stem}" if section == "resnet18" else ""
    )
    c["tag"] = tag
    c["cache"] = str(CACHE / f"{tag}.npz")
    return c


def prepare(c: dict[str, Any]) -> None:
    """Build, briefly train and save the workload (once; reused while it exists)."""
    path = Path(c["cache"])
    if path.exists():
        return
    import torch
    from scale_bench import models

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if c["kind"] == "resnet20":
        model = models.resnet20(c["width"])
    else:
        model = models.resnet18(c["width"], c["stem"])
    x, y = models.cifar_like(c["num_images"], seed=0)
    log(
        f"preparing {c['tag']}: {models.num_params(model):,} parameters, {c['train_steps']} Adam steps"
    )
    models.prepare(model, x, y, c["train_steps"])
    models.save_state(model, path, {"inputs": x.numpy(), "targets": y.numpy()})


# --------------------------------------------------------------- children


def available_mib() -> float:
    """``MemAvailable`` of the host, MiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("inf")


def run_child(
    c: dict[str, Any],
    task: str,
    params: dict[str, Any],
    name: str,
    timeout: float,
    needs_mib: float = 0.0,
) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its JSON record (or why there is none)."""
    folder = CACHE / "runs" / c["tag"]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.json"
    if needs_mib and needs_mib > 0.8 * available_mib():
        msg = (
            f"not run: needs about {needs_mib / 1024:.1f} GiB, "
            f"{available_mib() / 1024:.1f} GiB available"
        )
        log(f"{name}: {msg}")
        return {"task": task, "status": "skipped", "note": msg}
    spec = {"task": task, "workload": c, "params": params, "out": str(out)}
    spec_path = folder / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    out.unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log(f"{name}: {task} {json.dumps(params)[:120]}")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
    except subprocess.TimeoutExpired:
        log(f"{name}: timed out after {timeout:.0f} s")
        return {
            "task": task,
            "status": "timeout",
            "note": f"stopped after {timeout:.0f} s",
        }
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        log(f"{name}: failed ({tail[0]})")
        (folder / f"{name}.stderr").write_text(proc.stderr)
        return {"task": task, "status": "fails", "note": tail[0][:300]}
    record = json.loads(out.read_text())
    record["status"] = "ok"
    record["process_wall"] = wall
    log(f"{name}: done in {wall:.0f} s")
    return record


def cached_child(
    c: dict[str, Any], task: str, params: dict[str, Any], name: str, timeout: float
) -> dict[str, Any]:
    """Like :func:`run_child`, but reuses an earlier successful record (ground truth)."""
    out = CACHE / "runs" / c["tag"] / f"{name}.json"
    if out.exists():
        record = json.loads(out.read_text())
        if record.get("params") == params:
            record["status"] = "ok"
            log(f"{name}: reused {out.relative_to(HERE)}")
            return record
    record = run_child(c, task, params, name, timeout)
    if record.get("status") == "ok":
        record["params"] = params
        out.write_text(json.dumps(record, indent=1))
    return record


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def row_time(record: dict[str, Any]) -> dict[str, float]:
    """Median set-up, solve and total (wall and CPU) over a record's runs."""
    runs = record["runs"]
    total = [r["setup_wall"] + r["solve_wall"] for r in runs]
    total_cpu = [r["setup_cpu"] + r["solve_cpu"] for r in runs]
    return {
        "setup": _median(runs, "setup_wall"),
        "solve": _median(runs, "solve_wall"),
        "total": statistics.median(total),
        "total_cpu": statistics.median(total_cpu),
        "hvps": statistics.median(r["hvps"] for r in runs),
        "setup_hvps": statistics.median(r["setup_hvps"] for r in runs),
    }


# --------------------------------------------------------------- sections


def run_resnet20(c: dict[str, Any], check_truth: bool = False) -> dict[str, Any]:
    prepare(c)
    t_long = 3600.0
    res: dict[str, Any] = {"config": c, "started": time.time()}
    res["costs"] = run_child(c, "costs", {"repeats": 3}, "costs", t_long)
    res["truth_top"] = cached_child(
        c, "truth_top", {"k": 3, "tol": 1e-10}, "truth_top", t_long
    )
    if check_truth:
        res["truth_check"] = run_child(
            c,
            "truth_top",
            {"k": 3, "tol": 1e-10, "arpack": True},
            "truth_check",
            t_long,
        )
    res["truth_trace"] = cached_child(
        c, "truth_trace", {"budget": c["truth_trace_budget"]}, "truth_trace", t_long
    )
    lam1 = res["truth_top"]["values"][0]
    seeds = c["seeds"]
    ph = run_child(c, "pyhessian_top", {"seeds": seeds}, "pyhessian_top", t_long)
    res["pyhessian_top"] = ph
    if ph.get("status") == "ok":
        errors = [abs(r["value"] - lam1) / abs(lam1) for r in ph["runs"]]
        target = statistics.median(errors)
    else:
        target = 1e-3
    res["target"] = target
    ladder = run_child(
        c,
        "critpoint_ladder",
        {"truth": lam1, "target": target, "ladder": list(LADDER), "seeds": seeds},
        "critpoint_ladder",
        t_long,
    )
    res["ladder"] = ladder
    tol = ladder.get("chosen") or 1e-5
    res["critpoint_top"] = run_child(
        c, "critpoint_top", {"tol": tol, "seeds": seeds}, "critpoint_top", t_long
    )
    # the same with eigsh's stop="eigenvalue" (Kato–Temple, safeguarded)
    kt = {"truth": lam1, "target": target, "ladder": list(LADDER), "seeds": seeds}
    res["ladder_kt"] = run_child(
        c,
        "critpoint_ladder",
        {**kt, "stop": "eigenvalue"},
        "critpoint_ladder_kt",
        t_long,
    )
    res["critpoint_top_kt"] = run_child(
        c,
        "critpoint_top",
        {
            "tol": res["ladder_kt"].get("chosen") or 1e-5,
            "seeds": seeds,
            "stop": "eigenvalue",
        },
        "critpoint_top_kt",
        t_long,
    )
    res["critpoint_top_default"] = run_child(
        c,
        "critpoint_top",
        {"tol": 1e-5, "seeds": seeds[:1]},
        "critpoint_top_default",
        t_long,
    )
    budget, tseeds = c["trace_budget"], c["trace_seeds"]
    res["critpoint_trace"] = run_child(
        c,
        "critpoint_trace",
        {"budget": budget, "seeds": tseeds},
        "critpoint_trace",
        t_long,
    )
    res["pyhessian_trace"] = run_child(
        c,
        "pyhessian_trace",
        {"budget": budget, "seeds": tseeds},
        "pyhessian_trace",
        t_long,
    )
    dens = {"probes": c["density_probes"], "steps": c["density_steps"], "seeds": [0]}
    res["critpoint_density"] = run_child(
        c, "critpoint_density", dens, "critpoint_density", t_long
    )
    res["pyhessian_density"] = run_child(
        c, "pyhessian_density", dens, "pyhessian_density", t_long
    )
    res["history"] = run_child(
        c, "history", {"tol": 1e-6, "maxiter": 40, "seed": 0}, "history", t_long
    )
    res["history_seeds"] = {
        str(seed): run_child(
            c,
            "history",
            {"tol": 1e-6, "maxiter": 40, "seed": seed},
            f"history_seed{seed}",
            t_long,
        )
        for seed in seeds[1:]
    }
    res["elapsed"] = time.time() - res["started"]
    return res


def predicted_slq_mib(n: int, probes: int, steps: int, itemsize: int = 4) -> float:
    """The bases ``spectral_density`` keeps for its reorthogonalisation: ``p × m × n``."""
    return probes * steps * n * itemsize / 2**20


#: The parameters run_resnet18 gives the measurements ``--rerun`` repeats.
RERUN: dict[str, dict[str, Any]] = {"costs": {"repeats": 3}, "diagnose": {}}


def run_resnet18(c: dict[str, Any], cli_run: bool = True) -> dict[str, Any]:
    prepare(c)
    import inspect

    import critpoint as cp

    t_diag = 2400.0  # 40 minutes: then the phase is stopped and reported as such
    res: dict[str, Any] = {"config": c, "started": time.time()}
    res["costs"] = run_child(c, "costs", {"repeats": 3}, "costs", t_diag)
    n = res["costs"].get("num_params", 11_181_642)
    sig = inspect.signature(cp.diagnose).parameters
    probes = sig["num_probes"].default if "num_probes" in sig else 8
    if probes is None:  # chosen from n
        probes = cp.linalg.slq.default_num_probes(n)
    steps = sig["num_steps"].default if "num_steps" in sig else 60
    planned = "memory" in sig  # the library plans its own memory: run it whole
    slq_mib = predicted_slq_mib(n, probes, steps)
    res["slq_predicted_mib"] = slq_mib
    res["default_probes"], res["default_steps"] = probes, steps
    fits = planned or slq_mib < 0.6 * available_mib()
    res["default_fits"] = fits
    if fits:
        res["diagnose"] = run_child(c, "diagnose", {}, "diagnose", t_diag)
    else:
        log(
            f"the default density would keep {slq_mib / 1024:.1f} GiB of Lanczos bases "
            f"({probes} probes x {steps} steps x {n:,}); diagnosing without it and "
            "measuring the SLQ phase on fewer probes"
        )
        res["diagnose"] = run_child(
            c, "diagnose", {"kwargs": {"density": False}}, "diagnose_nodensity", t_diag
        )
        few = max(
            1, min(probes, int(0.4 * available_mib() // predicted_slq_mib(n, 1, steps)))
        )
        res["slq"] = run_child(
            c,
            "slq",
            {"probes": few, "steps": steps},
            "slq",
            t_diag,
            needs_mib=predicted_slq_mib(n, few, steps),
        )
    if cli_run:
        res["cli"] = run_cli(c, density=fits, timeout=t_diag)
    res["pyhessian_top"] = run_child(
        c, "pyhessian_top", {"seeds": [0]}, "pyhessian_top", t_diag
    )
    res["pyhessian_trace"] = run_child(
        c, "pyhessian_trace", {"seeds": [0]}, "pyhessian_trace", t_diag
    )
    res["pyhessian_density"] = run_child(
        c,
        "pyhessian_density",
        {"probes": 1, "steps": 100, "seeds": [0]},
        "pyhessian_density",
        t_diag,
        needs_mib=predicted_slq_mib(n, 1, 100) * 1.3,
    )
    res["elapsed"] = time.time() - res["started"]
    return res


def cli_command(c: dict[str, Any], density: bool) -> tuple[list[str], Path]:
    """The ``critpoint diagnose`` command on the workload's weights and data."""
    import numpy as np
    import torch
    from scale_bench import models

    folder = CACHE / "runs" / c["tag"] / "cli"
    folder.mkdir(parents=True, exist_ok=True)
    model = models.resnet18(c["width"], c["stem"])
    rest = models.load_state(model, Path(c["cache"]))
    weights, data = folder / "weights.pt", folder / "data.npz"
    torch.save(model.state_dict(), weights)
    np.savez(data, inputs=rest["inputs"], targets=rest["targets"])
    exe = Path(sys.executable).with_name("critpoint")
    kwargs = json.dumps({"width": c["width"], "stem": c["stem"]})
    cmd = [
        str(exe),
        "--device", "cpu",
        "diagnose", str(weights),
        "--model", f"{HERE / 'scale_bench' / 'models.py'}:resnet18",
        "--model-kwargs", kwargs,
        "--data", str(data),
        "--loss", "cross_entropy",
        "--json", str(folder / "cli-diagnosis.json"),
        "--quiet",
    ]  # fmt: skip
    if not density:
        cmd.append("--no-density")
    return cmd, folder


def run_cli(c: dict[str, Any], density: bool, timeout: float) -> dict[str, Any]:
    cmd, folder = cli_command(c, density)
    (folder / "cli-diagnosis.json").unlink(missing_ok=True)
    return run_child(c, "cli", {"command": cmd, "folder": str(folder)}, "cli", timeout)


# --------------------------------------------------------------- the entry point


def machine() -> dict[str, Any]:
    import torch

    import critpoint as cp

    try:
        from importlib.metadata import version

        ph = version("pyhessian")
    except Exception:
        ph = "not installed"
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "critpoint": cp.__version__,
        "pyhessian": ph,
        "load": os.getloadavg(),
        "mem_total_gib": _meminfo("MemTotal") / 2**20,
    }


def _meminfo(key: str) -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return float("nan")


def results_path(section: str, quick: bool) -> Path:
    return CACHE / f"results-{section}{'-quick' if quick else ''}.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        from scale_bench.tasks import child_main

        return child_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "section", choices=["resnet20", "resnet18", "gpt2", "profile", "compile"]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, minutes")
    parser.add_argument(
        "--write", action="store_true", help="rewrite the README section"
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite it from the last results"
    )
    parser.add_argument("--stem", choices=["imagenet", "cifar"], default="imagenet")
    parser.add_argument(
        "--no-cli", action="store_true", help="resnet18: skip the CLI run"
    )
    parser.add_argument(
        "--rerun",
        choices=["costs", "diagnose"],
        help="resnet18: run this measurement again, keep the others from the last results",
    )
    parser.add_argument(
        "--time-box", type=float, default=540.0, help="gpt2: seconds for the whole run"
    )
    parser.add_argument(
        "--check-truth",
        action="store_true",
        help="resnet20: cross-check the float64 ground truth against ARPACK",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="compile: where"
    )
    parser.add_argument(
        "--mode",
        default="default",
        help="compile: torch.compile's mode (default, reduce-overhead, max-autotune)",
    )
    args = parser.parse_args(argv)

    from scale_bench import report

    if args.section == "gpt2":
        from scale_bench import gpt2

        path = results_path("gpt2", args.quick)
        if args.render:
            res = json.loads(path.read_text())
        else:
            res = gpt2.run(quick=args.quick, time_box=args.time_box, log=log)
            CACHE.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=1))
        print(report.render_gpt2(res))
        heading = README_HEADINGS["gpt2"]
        # A run without a GPU writes the section only where there is none yet:
        # it never replaces measured numbers by "not measured".
        measured = res.get("status") == "ok" and not res.get("quick")
        if args.write and (measured or heading not in report.README.read_text()):
            report.write_section(report.render_gpt2(res), heading)
        return 0
    if args.section == "compile":
        from scale_bench import compiled

        name = f"compile-{args.device}"
        path = results_path(name, args.quick)
        if args.render:
            res = json.loads(path.read_text())
        else:
            res = compiled.run(args.quick, args.device, args.mode, log)
        text = compiled.render_markdown(res)
        print(text)
        measured = res.get("status") == "ok" and not res.get("quick")
        if args.write and (
            measured or compiled.HEADING not in report.README.read_text()
        ):
            report.write_section(text, compiled.HEADING)
        return 0
    if args.section == "profile":
        from scale_bench import profile

        path = results_path("profile", args.quick)
        if args.render:
            res = json.loads(path.read_text())
            print(profile.render(res))
        else:
            print(profile.run(quick=args.quick, log=log))
            res = json.loads(path.read_text())
        if args.write:
            report.write_section(
                profile.render_markdown(res, args.quick), profile.HEADING
            )
        return 0

    c = config(args.section, args.quick, args.stem)
    path = results_path(args.section, args.quick)
    if args.render:
        res = json.loads(path.read_text())
    elif args.rerun and args.section == "resnet18":
        res = json.loads(path.read_text())
        prepare(c)
        # The measurement alone, in its fresh process, as run_resnet18 runs it.
        res[args.rerun] = run_child(
            c, args.rerun, RERUN[args.rerun], args.rerun, 2400.0
        )
        res["machine"] = machine()
        res["rerun"] = sorted({*res.get("rerun", []), args.rerun})
        path.write_text(json.dumps(res, indent=1))
        log(f"results in {path.relative_to(HERE)}")
    else:
        start = time.perf_counter()
        if args.section == "resnet20":
            res = run_resnet20(c, check_truth=args.check_truth)
        else:
            res = run_resnet18(c, cli_run=not args.no_cli)
        res["wall"] = time.perf_counter() - start
        res["machine"] = machine()
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1))
        log(f"results in {path.relative_to(HERE)}")
    render = (
        report.render_resnet20 if args.section == "resnet20" else report.render_resnet18
    )
    text = render(res)
    print(text)
    if args.write:
        report.write_section(text, README_HEADINGS[args.section])
    return 0


if __name__ == "__main__":
    sys.exit(main())
