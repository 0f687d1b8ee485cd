"""Tables, target checks and the README section."""

from __future__ import annotations

import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from critpoint._files import write_text_atomic
from peer_bench.adapters import (
    ADAPTERS,
    ARPACK_MAX_HVPS,
    EIG_TOL,
    HE_MAX_ITER,
    LIBRARIES,
    TASKS,
)

HEADING = "## Side by side with the peers"
README = Path(__file__).resolve().parents[1] / "README.md"
LABELS = {name: adapter.label for name, adapter in ADAPTERS.items()}
PEERS = ("pyhessian", "eigenthings", "curvlinops")
TASK_LABELS = {
    "top": "top-5",
    "bottom": "bottom-5",
    "trace": "trace",
    "density": "density",
}
#: "bottom-5 at the same cost as top-5" is taken as at most this ratio of HVPs.
SAME_COST = 1.25


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(elapsed: float, quick: bool, repeats: int) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "critpoint": version("critpoint"),
        "pyhessian": version("pyhessian"),
        "hessian-eigenthings": version("hessian-eigenthings"),
        "curvlinops-for-pytorch": version("curvlinops-for-pytorch"),
        "scipy": version("scipy"),
        "elapsed": elapsed,
        "load": os.getloadavg(),
        "quick": quick,
        "repeats": repeats,
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 0.01:
        return f"{x:.{digits}f}" if abs(x) < 10 else f"{x:.1f}"
    return f"{x:.1e}"


def _err(x: float | None) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "wrong count"
    return f"{x:.1e}"


def short(t: dict[str, Any]) -> str:
    """One-line summary of a task record for the progress log."""
    if t.get("status") != "ok":
        return t.get("note", "")[:90]
    acc = t.get("wasserstein") if t["task"] == "density" else t.get("error")
    return (
        f"time {_fmt(t.get('time'))} s, HVPs {t.get('hvps')}, "
        f"{'W1' if t['task'] == 'density' else 'err'} {_err(acc)}, runs {len(t.get('runs', []))}"
    )


def _index(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for rec in records:
        for t in rec.get("tasks", []):
            t = dict(t)
            t["peak_rss_mib"] = rec.get("peak_rss_mib")
            out[(rec["workload"], rec["library"], t["task"])] = t
    return out


def _baseline(records: list[dict[str, Any]]) -> dict[str, float]:
    return {
        r["workload"]: r.get("peak_rss_mib", 0.0)
        for r in records
        if r["library"] == "none" and "peak_rss_mib" in r
    }


def _accuracy(t: dict[str, Any]) -> str:
    if t["task"] == "density":
        w = t.get("wasserstein")
        return "W₁ " + _err(w) if w is not None else "no dense truth"
    text = _err(t.get("error"))
    if t.get("error") is not None and math.isinf(t["error"]):
        got = [r["returned"] for r in t.get("runs", []) if "returned" in r]
        text = (
            f"not converged: {min(got)} of 5 values"
            if got
            else "not converged: fewer than 5 values"
        )
    if t["task"] == "trace" and t.get("error_se") is not None:
        text += f" ± {_err(t['error_se'])}"
    if (
        t["task"] in ("top", "bottom")
        and t.get("converged") is False
        and "not conv" not in text
    ):
        text += " (not converged)"
    return text


def _one_line(text: str, width: int = 160) -> str:
    """First line of a message, shortened, safe inside a Markdown table."""
    line = (text.strip().splitlines() or [""])[0].replace("|", "/")
    return line if len(line) <= width else line[: width - 1] + "…"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×" if a / b < 10 else f"{a / b:.0f}×"


def workload_table(
    name: str, info: dict[str, Any], idx: dict, base: dict[str, float]
) -> str:
    spec = info["spec"]
    rows = [
        f"### {info['title']}",
        "",
        f"n = {info['num_params']:,} parameters; batches {info['batches']}; "
        f"eigenvalue truth: {info['source']}; trace truth: {info['trace_source']}. "
        f"True top-5 {[round(x, 5) for x in info['truth']['top']]}, bottom-5 "
        f"{[round(x, 5) for x in info['truth']['bottom']]}, trace {info['truth']['trace']:.6g}. "
        f"Trace budget {spec['trace_budget']} HVPs; density {spec['density_probes']} probes "
        f"× {spec['density_steps']} steps.",
        "",
        "| task | library | time (s) | time ÷ critpoint | HVPs | HVPs ÷ critpoint "
        "| CPU (s) | peak memory (MiB above idle) | accuracy | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for task in TASKS:
        ref = idx.get((name, "critpoint", task))
        for lib in LIBRARIES:
            t = idx.get((name, lib, task))
            if t is None:
                continue
            label = f"**{LABELS[lib]}**" if lib.startswith("critpoint") else LABELS[lib]
            if t.get("status") != "ok":
                note = _one_line(t.get("note", ""))
                rows.append(
                    f"| {TASK_LABELS[task]} | {label} | {t['status']} | | | | | | | {note} |"
                )
                continue
            ok_ref = ref if ref and ref.get("status") == "ok" else None
            mem = t.get("peak_rss_mib")
            extra = mem - base[name] if mem is not None and name in base else None
            runs = len(t.get("runs", []))
            hvps = t.get("hvps")
            setup = t.get("setup_hvps") or 0
            hv = f"{hvps:.0f}" + (f" (+{setup} set-up)" if setup else "")
            note = t.get("note", "")
            if runs > 1:
                note = (note + "; " if note else "") + f"median of {runs} runs (seeds)"
            rows.append(
                "| "
                + " | ".join(
                    [
                        TASK_LABELS[task],
                        label,
                        _fmt(t.get("time")),
                        _ratio(t.get("time"), ok_ref.get("time") if ok_ref else None)
                        if lib != "critpoint"
                        else "1",
                        hv,
                        _ratio(hvps, ok_ref.get("hvps") if ok_ref else None)
                        if lib != "critpoint"
                        else "1",
                        _fmt(t.get("cpu")),
                        _fmt(extra, 0) if extra is not None else "—",
                        _accuracy(t),
                        _one_line(note),
                    ]
                )
                + " |"
            )
    return "\n".join(rows)


def _get(idx: dict, key: tuple[str, str, str], field: str) -> float | None:
    t = idx.get(key)
    if t is None or t.get("status") != "ok":
        return None
    return t.get(field)


def targets(idx: dict, names: list[str]) -> list[str]:
    """One line per target and workload: met / not met, with the numbers."""
    lines = []

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("**met**" if ok else "**not met**")

    for name in names:
        cp_top = (name, "critpoint", "top")
        pyh = (name, "pyhessian", "top")
        arp = (name, "curvlinops", "top")
        h_cp = _get(idx, cp_top, "hvps")
        h_py, t_py = _get(idx, pyh, "hvps"), _get(idx, pyh, "time")
        e_py = _get(idx, pyh, "error")
        # critpoint's cheapest setting at PyHessian's accuracy or better
        best = None
        for lib in ("critpoint", "critpoint-loose"):
            h, t, e = (
                _get(idx, (name, lib, "top"), f) for f in ("hvps", "time", "error")
            )
            if None in (h, t, e, e_py) or e > e_py:
                continue
            if best is None or h < best[1]:
                best = (lib, h, t, e)
        if None not in (h_py, t_py, e_py):
            if best is None:
                lines.append(
                    f"| {name} | top-5 vs PyHessian at equal or better accuracy "
                    f"| no critpoint setting as accurate as PyHessian ({_err(e_py)}) "
                    "| **not met** |"
                )
            else:
                lib, h, t, e = best
                ok = h_py / h >= 5 and t_py / t >= 3
                lines.append(
                    f"| {name} | top-5 vs PyHessian: ≥ 5× fewer HVPs and ≥ 3× less time "
                    f"at equal or better accuracy | {LABELS[lib]}: {h_py / h:.1f}× fewer HVPs "
                    f"({h:.0f} vs {h_py:.0f}), {t_py / t:.1f}× less time, error {_err(e)} vs "
                    f"{_err(e_py)} | {verdict(ok)} |"
                )
        h_ar = _get(idx, arp, "hvps")
        if None not in (h_cp, h_ar):
            lines.append(
                f"| {name} | top-5 HVPs ≤ curvlinops + ARPACK | {h_cp:.0f} vs {h_ar:.0f} "
                f"| {verdict(h_cp <= h_ar)} |"
            )
        h_bot = _get(idx, (name, "critpoint", "bottom"), "hvps")
        h_bar = _get(idx, (name, "curvlinops", "bottom"), "hvps")
        if None not in (h_cp, h_bot):
            extra = f" (ARPACK: {h_bar:.0f})" if h_bar is not None else ""
            lines.append(
                f"| {name} | bottom-5 at the cost of top-5 (≤ {SAME_COST}× its HVPs) "
                f"| {h_bot:.0f} vs {h_cp:.0f} HVPs = {h_bot / h_cp:.2f}×{extra} "
                f"| {verdict(h_bot / h_cp <= SAME_COST)} |"
            )
        t_d = _get(idx, (name, "critpoint", "density"), "time")
        w_d = _get(idx, (name, "critpoint", "density"), "wasserstein")
        parts, ok_d = [], True
        for lib in PEERS:
            t_p = _get(idx, (name, lib, "density"), "time")
            if t_p is None or t_d is None:
                continue
            w_p = _get(idx, (name, lib, "density"), "wasserstein")
            fast = t_p / t_d >= 2
            s_d = _get(idx, (name, "critpoint", "density"), "wasserstein_se") or 0.0
            s_p = _get(idx, (name, lib, "density"), "wasserstein_se") or 0.0
            # "no worse": lower, or higher by less than one standard error (seeds)
            good = w_d is None or w_p is None or w_d - w_p <= math.hypot(s_d, s_p)
            ok_d = ok_d and fast and good
            parts.append(
                f"{LABELS[lib]} {t_p / t_d:.1f}×"
                + (
                    f" (W₁ {_err(w_d)} vs {_err(w_p)})"
                    if w_d is not None and w_p is not None
                    else ""
                )
            )
        if parts:
            lines.append(
                f"| {name} | density ≥ 2× faster than every peer, W₁ no worse (within one s.e.) "
                f"| {'; '.join(parts)} | {verdict(ok_d)} |"
            )
        e_t = _get(idx, (name, "critpoint", "trace"), "error")
        s_t = _get(idx, (name, "critpoint", "trace"), "error_se") or 0.0
        parts, state = [], "met"
        for lib in PEERS:
            e_p = _get(idx, (name, lib, "trace"), "error")
            if e_p is None or e_t is None:
                continue
            s_p = _get(idx, (name, lib, "trace"), "error_se") or 0.0
            if e_t > e_p:
                within = e_t - e_p <= math.hypot(s_t, s_p)
                state = "tie" if within and state != "not met" else "not met"
            parts.append(f"{LABELS[lib]} {_err(e_p)} ± {_err(s_p)}")
        if parts:
            shown = {
                "met": "**met**",
                "tie": "**tie** (behind by less than one standard error)",
                "not met": "**not met**",
            }[state]
            lines.append(
                f"| {name} | trace error ≤ peers' at equal budget (mean ± s.e. over seeds) "
                f"| critpoint {_err(e_t)} ± {_err(s_t)}; {'; '.join(parts)} | {shown} |"
            )
    return lines


def section(
    records: list[dict[str, Any]], prepared: dict[str, Any], meta: dict[str, Any]
) -> str:
    idx = _index(records)
    base = _baseline(records)
    names = list(prepared)
    command = ".venv/bin/python benchmarks/run.py" + (
        " --quick" if meta["quick"] else ""
    )
    checks = meta.get("checks") or {}
    check_lines = (
        "\n".join(f"- {k}: {v:.1e}" for k, v in checks.items())
        if checks
        else "- (run with `--check-truth` to cross-check the ground truth)"
    )
    parts = [
        HEADING,
        "",
        "critpoint and its peers on the same workloads, each library through its public",
        "API as documented, each measurement in a fresh process. Reproduce (add `--write`",
        "to rewrite this section, `--check-truth` to re-verify the ground truth):",
        "",
        "```",
        command,
        "```",
        "",
        "The peers are installed next to the CPU torch without letting pip touch torch:",
        "",
        "```",
        ".venv/bin/pip install --no-deps pyhessian==0.1 hessian-eigenthings==1.0.0a5 \\",
        "    curvlinops-for-pytorch==3.0.1 einops einconv linear-operator opt-einsum",
        "```",
        "",
        "`pip check` then names only `backpack-for-pytorch` as missing; curvlinops uses it "
        "only in `curvlinops.experimental`, which nothing here imports. A plain "
        '`pip install -e ".[bench]"` would instead follow backpack-for-pytorch → '
        "torchvision 0.29.1 → torch 2.14.1 and install the CUDA build (several GB). "
        "hessian-eigenthings has only pre-releases on PyPI (the 1.0 rewrite), so it "
        "must be pinned.",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores; one torch thread per process "
        "(`torch.set_num_threads(1)`, `OMP_NUM_THREADS=1`), `torch.set_flush_denormal(True)`. "
        f"Python {meta['python']}, torch {meta['torch']}, critpoint {meta['critpoint']}, "
        f"PyHessian {meta['pyhessian']}, hessian-eigenthings {meta['hessian-eigenthings']}, "
        f"curvlinops-for-pytorch {meta['curvlinops-for-pytorch']}, scipy {meta['scipy']}. "
        f"The whole run took {meta['elapsed']:.0f} s (wall), ground truth included"
        + (
            f" ({meta['check_seconds']:.0f} s of it cross-checking the ground truth)"
            if meta.get("check_seconds")
            else ""
        )
        + "; "
        f"load average at the end {meta['load'][0]:.1f} / {meta['load'][1]:.1f} / "
        f"{meta['load'][2]:.1f} (1 / 5 / 15 min). Measurements run one at a time; the CPU "
        "column (`time.process_time()` of the task) is steadier than wall time when other "
        "processes share the cores.",
        "",
        "How each number is measured:",
        "",
        "- **time**: wall time of the task in the child process, building the library's "
        "operator included (critpoint's symmetry probe, curvlinops' determinism check, "
        "PyHessian's `create_graph` backward), after one untimed warm-up; median over runs "
        "with seeds 0, 1, …: a task runs again while its runs so far took under 10 s, up "
        "to 3 runs for eigenvalues, 10 for the trace and 5 for the density.",
        "- **HVPs**: counted by wrapping the function each library calls per product "
        "(critpoint `Linearization.hvp`, through which every product of `Objective.hvp` "
        "and of the operator runs, from kept linearisations or not; PyHessian `hessian_vector_product` / "
        "`dataloader_hv_product`, hessian-eigenthings `HessianOperator.matvec`, curvlinops "
        "`HessianLinearOperator._matmat`, per column); products spent while building the "
        "operator are shown as “set-up” and not in the ratio.",
        "- **peak memory**: `ru_maxrss` of the child, minus that of an idle child that "
        "imported every library and loaded the workload"
        + (
            " (quick mode: one child per library runs all four tasks)."
            if meta["quick"]
            else "."
        ),
        "- **accuracy**: top-5 / bottom-5: largest |λ̂ᵢ − λᵢ| / |λᵢ| over the five, "
        "both sorted; trace: |t̂ − t| / |t|, mean over the runs' seeds; density: "
        "Wasserstein-1 (`scipy.stats.wasserstein_distance` with weights) between the "
        "estimate (quadrature nodes and weights, or curvlinops' gridded density) and the "
        "true eigenvalues, mean over seeds (only where all eigenvalues are known).",
        f"- **settings**: critpoint `eigsh(k=5, which='LA'|'SA', tol={EIG_TOL:g})`, "
        f"`trace()` (its default `method='auto'`: Hutch++ or Hutchinson, whichever the first third of the probes predicts better), `spectral_density(num_probes, num_steps)`; "
        f"PyHessian `eigenvalues(top_n=5)` (defaults maxIter=100, tol=1e-3), "
        "`trace(maxIter=budget, tol=-inf)` (spends exactly the budget), "
        "`density(iter, n_v)`; hessian-eigenthings `lanczos(k=5, "
        f"max_iter={HE_MAX_ITER}, which=…)` (its README's setting), `trace(method='hutch++')`, "
        "`spectral_density(num_runs, lanczos_steps)`; curvlinops `HessianLinearOperator` + "
        f"`scipy.sparse.linalg.eigsh(H.to_scipy(), k=5, which=…, tol={EIG_TOL:g})`, "
        "`hutchpp_trace`, `lanczos_approximate_spectrum(ncv=steps, num_repeats=probes)`. "
        f"ARPACK's restarts are capped at about {ARPACK_MAX_HVPS} products "
        "(`maxiter=66`), the default budget of critpoint's `eigsh`; an unconverged run "
        "reports its best values. The row *critpoint (tol 1e-3)* is the same `eigsh` "
        "with a looser tolerance, not a default: it prices accuracy (a wider Krylov "
        "basis than the default `max(2k + 1, 160)`, `--libraries critpoint-wide`, "
        "changed no count but the 85k MLP's bottom-5, 239 → 201 HVPs, when last run).",
        "",
        "Ground-truth checks:",
        "",
        check_lines,
        "",
        "### Targets",
        "",
        "| workload | target | measured | status |",
        "|---|---|---|---|",
        *targets(idx, names),
        "",
    ]
    for name in names:
        parts.append(workload_table(name, prepared[name], idx, base))
        parts.append("")
    profile = meta.get("profile") or {}
    if profile:
        parts += profile_table(profile)
    return "\n".join(parts)


def profile_table(profile: dict[str, Any]) -> list[str]:
    """The "where critpoint's time goes" tables (see peer_bench/profile.py)."""
    names = list(profile)
    rows = [
        "### Where critpoint's time goes",
        "",
        "CPU milliseconds per Hessian-vector product along each path "
        "(`peer_bench/profile.py`; median of 5 after a warm-up). critpoint's operator "
        "keeps each batch's linearisation by default (`hvp_cache`); the "
        "`hvp_cache=None` rows recompute it per product. The *cached linearisation* "
        "rows are the same math written directly with `torch.func`: `vjp(grad(f), θ)` "
        "once per batch, its `vjp_fn` reused for every vector.",
        "",
        "| path | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    keys: list[str] = []
    for name in names:
        for key in profile[name]["hvp"]:
            if key not in keys:
                keys.append(key)
    for key in keys:
        cells = []
        for name in names:
            value = profile[name]["hvp"].get(key)
            cells.append("—" if value is None else f"{1000 * value:.1f}")
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    shares = [(n, profile[n].get("eigsh", {})) for n in names]
    if any(s for _, s in shares):
        rows += ["", "Share of critpoint's top-5 `eigsh` time (cProfile):", ""]
        rows.append("| | " + " | ".join(names) + " |")
        rows.append("|---|" + "---:|" * len(names))
        keys = [k for _, s in shares for k in s]
        for key in dict.fromkeys(keys):
            cells = [f"{100 * s[key]:.0f} %" if key in s else "—" for _, s in shares]
            rows.append(f"| {key} | " + " | ".join(cells) + " |")
    rows.append("")
    return rows


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
                if lines[i].startswith(("## ", "# "))
            ),
            len(lines),
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:begin]) + text + ("\n" + tail if tail else "")
    write_text_atomic(README, new)
