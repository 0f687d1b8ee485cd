"""The README sections of ``benchmarks/scale.py``, rendered from its results."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from scale_bench.history import stopping_points

README = Path(__file__).resolve().parents[1] / "README.md"

INTRO_HEADING = "## Scale"
INTRO = """## Scale

`benchmarks/scale.py` measures critpoint on models people bring: ResNet-20
beside PyHessian on PyHessian's own workload, the whole default diagnosis of a
ResNet-18 on a CPU, and GPT-2 small on a GPU. One torch thread
(`torch.set_num_threads(1)`, `OMP_NUM_THREADS=1`); every measurement runs in a
fresh interpreter, so each peak of resident memory (`ru_maxrss`) is one
measurement's own. Each library is warmed up once, untimed, in its process;
every timed row then builds its operator again, so **set-up is inside every
row**: critpoint's `Objective(...)` and `hessian()` (whose symmetry probe also
linearises every batch for the later products), PyHessian's constructor (a
forward pass and a `create_graph` backward). HVPs are counted by wrapping the
function each library calls once per product (`Objective.hvp` and
`critpoint.objective.Linearization.hvp`; PyHessian's `hessian_vector_product`).

```
make bench-scale                                        # both CPU sections, about an hour
.venv/bin/python benchmarks/scale.py resnet20 --write     # ~20 min (+6 with --check-truth: ARPACK)
.venv/bin/python benchmarks/scale.py resnet18 --write     # ~30 min
.venv/bin/python benchmarks/scale.py profile --write      # ~3 min
.venv/bin/python benchmarks/scale.py compile --write      # HVPs eager vs torch.compile (--device cuda on a GPU)
python benchmarks/scale.py gpt2 --write                 # on a CUDA machine, time-boxed to 9 min
.venv/bin/python benchmarks/scale.py resnet20 --quick     # the same harness on small sizes, minutes
```

The workloads are rebuilt from seeds (no download): CIFAR-shaped images
(3×32×32, standard normal) with random labels over 10 classes, the network
trained for a few full-batch Adam steps in train mode, then its BatchNorm
statistics recomputed on the same images; the Hessian is taken in eval mode
(running statistics), by both libraries. Models, data, ground truth and raw
results are kept in `benchmarks/.scale-cache/` (not committed).
"""


def write_section(text: str, heading: str) -> None:
    """Replace (or append) ``heading``'s section of the README, and the intro."""
    from engine import write_readme

    write_readme(INTRO, INTRO_HEADING)
    write_readme(text, heading)


# --------------------------------------------------------------- formatting


def s(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def e(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.1e}"


def gib(mib: float | None) -> str:
    return "—" if mib is None else f"{mib / 1024:.2f} GiB"


def _ok(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("status") == "ok"


def _why(r: dict[str, Any] | None) -> str:
    if not r:
        return "not run"
    return f"{r.get('status')}: {r.get('note', '')}"


def machine_line(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    load = m.get("load")
    load_txt = " / ".join(f"{x:.1f}" for x in load) if load else "?"
    return (
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('mem_total_gib', float('nan')):.0f} GiB; Python {m.get('python', '?')}, "
        f"torch {m.get('torch', '?')}, critpoint {m.get('critpoint', '?')}, "
        f"PyHessian {m.get('pyhessian', '?')}. The whole run took "
        f"{res.get('wall', float('nan')) / 60:.0f} min; load average at the end "
        f"{load_txt} (1 / 5 / 15 min){_load_note(load)}."
    )


def _rerun_note(res: dict[str, Any]) -> str:
    again = res.get("rerun")
    if not again:
        return ""
    names = ", ".join(f"`--rerun {name}`" for name in again)
    return (
        f" Measured again afterwards in a process of its own, on the same workload ({names}): the "
        f"{' and '.join(again)} rows; the others are the whole run's, the load "
        "average the last run's."
    )


def _load_note(load: Any) -> str:
    if load and max(load) > 1.2:
        return (
            "; above 1, other processes shared the two cores during the run, so "
            "wall times carry their noise (the CPU times less so)"
        )
    return ""


def _timing(record: dict[str, Any]) -> dict[str, float]:
    runs = record["runs"]
    return {
        "setup": statistics.median(r["setup_wall"] for r in runs),
        "solve": statistics.median(r["solve_wall"] for r in runs),
        "total": statistics.median(r["setup_wall"] + r["solve_wall"] for r in runs),
        "cpu": statistics.median(r["setup_cpu"] + r["solve_cpu"] for r in runs),
        "hvps": statistics.median(r["hvps"] for r in runs),
        "setup_hvps": statistics.median(r["setup_hvps"] for r in runs),
    }


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = (
        statistics.stdev(values) / math.sqrt(len(values))
        if len(values) > 1
        else math.nan
    )
    return mean, se


# --------------------------------------------------------------- ResNet-20


def render_resnet20(res: dict[str, Any]) -> str:
    c = res["config"]
    quick = " (`--quick` sizes: not the published workload)" if c.get("quick") else ""
    truth = res["truth_top"]
    lam1, lam2 = truth["values"][0], truth["values"][1]
    tr_ref = res["truth_trace"]
    n = res["costs"].get("num_params")
    lines = [
        "## Scale: ResNet-20 beside PyHessian (CPU)",
        "",
        f"PyHessian's own workload{quick}: ResNet-20 (CIFAR variant, BatchNorm, "
        f"projection shortcuts, width {c['width']}: {n:,} parameters) on "
        f"{c['num_images']} CIFAR-shaped images in one batch, mean cross-entropy. "
        f"Reproduce with `.venv/bin/python benchmarks/scale.py resnet20 --write`.",
        "",
        machine_line(res),
        "",
        f"Ground truth: λ₁ = {lam1:.8g}, λ₂ = {lam2:.8g} ({truth['method']}, "
        f"{truth['hvps']} HVPs); the trace reference {tr_ref['value']:.6g} ± "
        f"{tr_ref['stderr']:.2g} ({tr_ref['method']}). Times are medians over the "
        f"seeds' runs, wall clock; *CPU* is the process CPU time (steadier when "
        f"other processes share the cores); ratios are PyHessian's time over "
        f"critpoint's.",
        "",
    ]
    chk = res.get("truth_check")
    if _ok(chk) and chk.get("arpack"):
        diff = abs(chk["arpack"][0] - lam1) / abs(lam1)
        lines += [
            f"Cross-check: ARPACK (`scipy.sparse.linalg.eigsh` on the float64 "
            f"`H.to_scipy()`, tol 1e-10) gives λ₁ = {chk['arpack'][0]:.10g}, "
            f"relative difference {diff:.1e}.",
            "",
        ]
    rows = [
        "| task | library (setting) | set-up | solve | total | CPU | × critpoint | HVPs (+ set-up) | error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    ph, cp_eq, cp_def = (
        res["pyhessian_top"],
        res["critpoint_top"],
        res["critpoint_top_default"],
    )
    target = res.get("target")
    tol = res["ladder"].get("chosen") if _ok(res.get("ladder")) else None
    ratios: dict[str, float] = {}

    def top_row(
        name: str, rec: dict[str, Any], base: dict[str, float] | None
    ) -> dict[str, float] | None:
        if not _ok(rec):
            rows.append(f"| top eigenvalue | {name} | {_why(rec)} | | | | | | |")
            return None
        t = _timing(rec)
        errs = [abs(r["value"] - lam1) / abs(lam1) for r in rec["runs"]]
        ratio = (base["total"] / t["total"]) if base else 1.0
        rows.append(
            f"| top eigenvalue | {name} | {s(t['setup'])} s | {s(t['solve'])} s | "
            f"**{s(t['total'])} s** | {s(t['cpu'])} s | {ratio:.2f}× | {t['hvps']:.0f} "
            f"(+{t['setup_hvps']:.0f}) | {e(statistics.median(errs))} (max {e(max(errs))}) |"
        )
        return t

    t_ph = top_row(
        "PyHessian (`eigenvalues()` defaults: power iteration, tol 1e-3)", ph, None
    )
    base = t_ph if t_ph else None
    t_eq = top_row(
        f"critpoint (`eigsh(k=1, 'LA', tol={tol:g})`: equal accuracy)"
        if tol
        else "critpoint (equal accuracy)",
        cp_eq,
        base,
    )
    kt = res.get("critpoint_top_kt")
    t_kt = None
    if kt is not None:
        tol_kt = res["ladder_kt"].get("chosen") if _ok(res.get("ladder_kt")) else None
        t_kt = top_row(
            f"critpoint (`eigsh(k=1, 'LA', tol={tol_kt:g}, stop='eigenvalue')`: equal accuracy)"
            if tol_kt
            else "critpoint (`stop='eigenvalue'`, equal accuracy)",
            kt,
            base,
        )
    top_row("critpoint (`eigsh` default tol 1e-5)", cp_def, base)
    if t_ph and t_eq:
        ratios["top"] = t_ph["total"] / t_eq["total"]
    if t_ph and t_kt:
        # the faster of the two stopping rules at equal accuracy
        ratios["top"] = max(ratios.get("top", 0.0), t_ph["total"] / t_kt["total"])
    # trace
    for name, key in (
        ("critpoint (`trace(max_matvecs=30)`, method auto)", "critpoint_trace"),
        ("PyHessian (`trace(maxIter=30, tol=-inf)`)", "pyhessian_trace"),
    ):
        rec = res.get(key)
        if not _ok(rec):
            rows.append(f"| trace, 30 products | {name} | {_why(rec)} | | | | | | |")
            continue
        t = _timing(rec)
        errs = [
            abs(r["value"] - tr_ref["value"]) / abs(tr_ref["value"])
            for r in rec["runs"]
        ]
        mean, se = _mean_se(errs)
        other = res.get("pyhessian_trace")
        ratio = _timing(other)["total"] / t["total"] if _ok(other) else math.nan
        if key == "critpoint_trace":
            ratios["trace"] = ratio
        methods = sorted({r.get("method", "") for r in rec["runs"]} - {""})
        meth = f" ({', '.join(methods)} ran)" if methods else ""
        rows.append(
            f"| trace, 30 products | {name}{meth} | {s(t['setup'])} s | {s(t['solve'])} s | "
            f"**{s(t['total'])} s** | {s(t['cpu'])} s | {ratio:.2f}× | {t['hvps']:.0f} "
            f"(+{t['setup_hvps']:.0f}) | {e(mean)} ± {e(se)} over {len(errs)} seeds |"
        )
    for name, key in (
        ("critpoint (`spectral_density`)", "critpoint_density"),
        ("PyHessian (`density`, with a `torch.eig` shim)", "pyhessian_density"),
    ):
        rec = res.get(key)
        p = f"{c['density_probes']} probe × {c['density_steps']} steps"
        if not _ok(rec):
            rows.append(f"| density, {p} | {name} | {_why(rec)} | | | | | | |")
            continue
        t = _timing(rec)
        r0 = rec["runs"][0]
        other = res.get("pyhessian_density")
        ratio = _timing(other)["total"] / t["total"] if _ok(other) else math.nan
        if key == "critpoint_density":
            ratios["density"] = ratio
        rows.append(
            f"| density, {p} | {name} | {s(t['setup'])} s | {s(t['solve'])} s | "
            f"**{s(t['total'])} s** | {s(t['cpu'])} s | {ratio:.2f}× | {t['hvps']:.0f} "
            f"(+{t['setup_hvps']:.0f}) | top node {e(abs(r0['top_node'] - lam1) / abs(lam1))} |"
        )
    lines += [*rows, ""]
    lines += _resnet20_targets(res, ratios, target, tol)
    lines += _resnet20_costs(res)
    lines += _resnet20_history(res, lam1, lam2, target, tol, t_ph)
    return "\n".join(lines) + "\n"


def _resnet20_targets(
    res: dict[str, Any],
    ratios: dict[str, float],
    target: float | None,
    tol: float | None,
) -> list[str]:
    top = ratios.get("top")
    ladder = res.get("ladder", {})
    steps = ladder.get("steps", [])
    ladder_txt = ", ".join(
        f"tol {st['tol']:g}: max error {e(max(st['errors']))} in {max(st['hvps'])} HVPs"
        for st in steps
    )
    met = "**met**" if top is not None and top >= 1.5 else "**not met**"
    trace_txt = "—" if "trace" not in ratios else f"{ratios['trace']:.2f}×"
    return [
        "Equal accuracy: PyHessian's error is the median over its seeds "
        f"({e(target)}); critpoint's `tol` is the loosest of the ladder whose largest "
        f"error over the same seeds is no larger ({ladder_txt})."
        + (
            " At the looser tolerances some runs stopped on λ₂ with a small "
            "residual: a residual bounds the distance to *some* eigenvalue."
            if any(max(st["errors"]) > 0.05 for st in steps)
            else ""
        ),
        "",
        "| target | measured | status |",
        "|---|---|---|",
        f"| top eigenvalue at equal accuracy ≥ 1.5× faster than PyHessian, set-up included | "
        f"{'—' if top is None else f'{top:.2f}×'} | {met} |",
        f"| trace at 30 products: faster than PyHessian | {trace_txt} | "
        f"{'**met**' if ratios.get('trace', 0) > 1 else '**not met**'} |",
        "",
    ]


def _resnet20_costs(res: dict[str, Any]) -> list[str]:
    c = res.get("costs", {})
    if not _ok(c):
        return []
    g = c["grad_wall"]
    return [
        "What one product costs here (median of 3 after a warm-up, wall): "
        f"gradient (`obj.grad`) {s(1000 * g, 0)} ms, plain `loss.backward()` "
        f"{s(1000 * c['backward_wall'], 0)} ms; an HVP through the operator (kept "
        f"linearisation) {s(1000 * c['op_hvp_wall'], 0)} ms = {c['op_hvp_wall'] / g:.2f}× "
        f"a gradient; a fresh HVP (`obj.hvp`) {s(1000 * c['fresh_hvp_wall'], 0)} ms = "
        f"{c['fresh_hvp_wall'] / g:.2f}×; `hessian()` with its probe "
        f"{s(c['setup_wall'], 2)} s ({c['setup_hvps']} HVPs); a new operator's first "
        f"product (linearise every batch, then one product) {s(c['first_product_wall'], 2)} s.",
        "",
    ]


def _resnet20_history(
    res: dict[str, Any],
    lam1: float,
    lam2: float,
    target: float | None,
    tol: float | None,
    t_ph: dict[str, float] | None,
) -> list[str]:
    h = res.get("history")
    if not _ok(h) or target is None:
        return []
    steps = h["steps"]
    pts = stopping_points(steps, lam1, target, tol)
    runs = [(0, steps)] + [
        (int(sd), r["steps"])
        for sd, r in sorted(res.get("history_seeds", {}).items())
        if _ok(r)
    ]
    lines = [
        "### When could the top-eigenvalue run stop?",
        "",
        "One `eigsh(k=1, 'LA', tol=1e-6)` run (seed 0) with every product recorded; "
        "after each product, the Rayleigh–Ritz pairs of the vectors so far and their "
        "explicit residuals (`scale_bench/history.py`). The first product at which each "
        f"stopping rule fires for the accuracy PyHessian reached ({e(target)}), and the "
        f"true error then (λ₁ − λ₂ = {lam1 - lam2:.4g}, relative gap "
        f"{(lam1 - lam2) / lam1:.2f}):",
        "",
        "| rule | fires after | true error then | estimate then |",
        "|---|---:|---:|---:|",
    ]
    names = {
        "residual": f"residual ‖r₁‖ ≤ tol·θ₁ (today's rule, tol {tol:g})"
        if tol
        else "residual",
        "kato-temple": "Kato–Temple ‖r₁‖²/(θ₁ − θ₂) ≤ ε·θ₁",
        "kato-temple (safeguarded)": "Kato–Temple, gap θ₁ − θ₂ − ‖r₂‖",
        "oracle": "oracle (true error ≤ ε)",
    }
    for rule, label in names.items():
        pt = pts[rule]
        if pt["hvps"] is None:
            lines.append(f"| {label} | not within {len(steps)} | | |")
        else:
            lines.append(
                f"| {label} | {pt['hvps']} HVPs | {e(pt['error'])} | {e(pt['bound'])} |"
            )
    lines += [
        "",
        "Asking for a relative accuracy ε directly (the residual rule with tol = ε, "
        "which is what `eigsh(tol=ε)` does today, against Kato–Temple at ε): "
        "products until each rule fires, then the largest true error at that "
        "point over the runs, for each start vector (seeds "
        f"{', '.join(str(sd) for sd, _ in runs)}):",
        "",
        "| ε | residual rule (tol = ε) | Kato–Temple | Kato–Temple, safeguarded | oracle |",
        "|---:|---:|---:|---:|---:|",
    ]
    for eps in (3e-3, 1e-3, 1e-4, 1e-5):
        cells = []
        pts_seeds = [stopping_points(st, lam1, eps, eps) for _, st in runs]
        for rule in ("residual", "kato-temple", "kato-temple (safeguarded)", "oracle"):
            counts = [p[rule]["hvps"] for p in pts_seeds]
            errs = [p[rule]["error"] for p in pts_seeds if p[rule]["error"] is not None]
            txt = " / ".join("—" if x is None else str(x) for x in counts)
            worst = max(errs) if errs else None
            flag = " **(wrong)**" if worst is not None and worst > eps else ""
            cells.append(f"{txt} ({e(worst)}){flag}")
        lines.append(f"| {eps:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**(wrong)**: the rule stopped on a Ritz value of another eigenvalue: a "
        "start vector with little weight on the top eigenvector gives a θ₁ near "
        "λ₂ with a small residual and a far θ₂, so the plain Kato–Temple bound "
        "looks tight. Residual and Kato–Temple bounds say that *some* eigenvalue "
        "is near θ₁, not that it is λ₁; the safeguarded gap (θ₂ moved up by ‖r₂‖) "
        "waited for the missing eigenvalue here, which is luck, not a guarantee.",
    ]
    lines.append("")
    c = res.get("costs", {})
    eq = res.get("critpoint_top")
    if _ok(c) and _ok(eq) and t_ph:
        kt = pts["kato-temple (safeguarded)"]["hvps"] or pts["residual"]["hvps"]
        obj_time = statistics.median(r.get("objective_wall", 0.0) for r in eq["runs"])
        hvp = c["op_hvp_wall"]
        lin = max(0.0, c["first_product_wall"] - hvp)
        now = _timing(eq)["total"]
        floor = obj_time + lin + kt * hvp
        same = kt == pts["residual"]["hvps"]
        lines += [
            "Where the time goes (wall): critpoint spends "
            f"{s(now)} s at equal accuracy. Its probe spends no product of its own "
            "(the symmetry test uᵀHv = vᵀHu from the solver's first two Lanczos "
            "vectors, the determinism test from one fresh forward pass against the "
            "kept one), so the run is the objective "
            f"({s(obj_time, 2)} s) + the linearisation ({s(lin, 2)} s) + {kt} products "
            f"× {s(hvp, 2)} s ≈ {s(floor)} s, and the rest the forward pass and the "
            "solver's own work. The safeguarded Kato–Temple bound fires after "
            f"{kt} products{', as the residual rule does here' if same else ''}: "
            f"{t_ph['total'] / now:.2f}× faster than PyHessian's {s(t_ph['total'])} s.",
            "",
        ]
    return lines


# --------------------------------------------------------------- ResNet-18


def render_resnet18(res: dict[str, Any]) -> str:
    c = res["config"]
    quick = " (`--quick` sizes: not the published workload)" if c.get("quick") else ""
    costs = res.get("costs", {})
    n = costs.get("num_params")
    stem = (
        "torchvision's ImageNet stem (7×7 convolution of stride 2, 3×3 max-pool: 8×8 maps after the stem on 32×32 inputs), as `torchvision.models.resnet18(num_classes=10)`"
        if c["stem"] == "imagenet"
        else "the CIFAR stem (3×3 convolution of stride 1, no max-pool)"
    )
    lines = [
        "## Scale: ResNet-18, the default diagnosis (CPU)",
        "",
        f"ResNet-18 in torchvision's layout{quick} (BasicBlock, BatchNorm, width "
        f"{c['width']}, {stem}; {n:,} parameters) on {c['num_images']} CIFAR-shaped "
        f"images, mean cross-entropy, Hessian in eval mode. Reproduce with "
        f"`.venv/bin/python benchmarks/scale.py resnet18 --write` "
        f"(`--stem cifar` for the CIFAR stem).",
        "",
        machine_line(res) + _rerun_note(res),
        "",
    ]
    if _ok(costs):
        g = costs["grad_wall"]
        lines += [
            "### One product",
            "",
            "Median of 3 after a warm-up, wall clock (CPU time in brackets).",
            "",
            "| what | time | × gradient |",
            "|---|---:|---:|",
            f"| gradient (`obj.grad`) | {s(g, 2)} s ({s(costs['grad_cpu'], 2)} s) | 1 |",
            f"| plain `loss.backward()` | {s(costs['backward_wall'], 2)} s | {costs['backward_wall'] / g:.2f}× |",
            f"| HVP through the operator (kept linearisation) | {s(costs['op_hvp_wall'], 2)} s ({s(costs['op_hvp_cpu'], 2)} s) | **{costs['op_hvp_wall'] / g:.2f}×** |",
            f"| fresh HVP (`obj.hvp`, forward + two backward passes) | {s(costs['fresh_hvp_wall'], 2)} s | {costs['fresh_hvp_wall'] / g:.2f}× |",
            f"| a new operator's first product (linearise, then one product) | {s(costs['first_product_wall'], 2)} s | {costs['first_product_wall'] / g:.2f}× |",
            f"| set-up: `hessian()` with its symmetry probe ({costs['setup_hvps']} HVPs) | {s(costs['setup_wall'], 2)} s | {costs['setup_wall'] / g:.2f}× |",
            "",
        ]
    lines += _resnet18_diagnosis(res)
    lines += _resnet18_pyhessian(res)
    lines += _resnet18_targets(res)
    return "\n".join(lines) + "\n"


def _phase_rows(
    phases: dict[str, dict[str, float]], total: float, base_mib: float
) -> list[str]:
    rows = [
        "| phase | time (CPU) | share | HVPs | per HVP | peak RSS above model and data |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    accounted = 0.0
    for label, ph in phases.items():
        if not ph.get("calls"):
            continue
        accounted += ph["wall"]
        per = f"{s(ph['wall'] / ph['hvps'], 2)} s" if ph["hvps"] else ""
        peak = gib(ph["peak_rss_mib"] - base_mib) if "peak_rss_mib" in ph else "—"
        rows.append(
            f"| {label} | {s(ph['wall'])} s ({s(ph['cpu'])} s) | "
            f"{100 * ph['wall'] / total:.0f} % | {ph['hvps']} | {per} | {peak} |"
        )
    rest = total - accounted
    rows.append(
        f"| rest (verdict, bookkeeping) | {s(rest)} s | {100 * rest / total:.0f} % | | | |"
    )
    return rows


def _resnet18_diagnosis(res: dict[str, Any]) -> list[str]:
    d = res.get("diagnose")
    lines = ["### The default diagnosis", ""]
    probes, steps = res.get("default_probes", 8), res.get("default_steps", 60)
    if not _ok(d):
        return [*lines, f"Not measured ({_why(d)}).", ""]
    base = d["rss_before_mib"]
    above = d["peak_rss_mib"] - base
    whole = res.get("default_fits", True)
    mem = res.get("diagnose_memory")
    if _ok(mem) and not any("peak_rss_mib" in ph for ph in d["phases"].values()):
        # Peaks by phase from a second, identical run with a memory sampler
        # (the first run predates the sampler).
        for label, ph in mem["phases"].items():
            if label in d["phases"] and "peak_rss_mib" in ph:
                d["phases"][label]["peak_rss_mib"] = (
                    ph["peak_rss_mib"] - mem["rss_before_mib"] + base
                )
        mem_note = [
            "",
            "(Peak memory by phase from a second run of the same diagnosis with "
            f"a sampler of the resident memory every 0.1 s; it peaked "
            f"{gib(mem['peak_rss_mib'] - mem['rss_before_mib'])} above its model and data.)",
        ]
    else:
        mem_note = []
    if whole:
        lines += [
            f"`critpoint.diagnose(obj)` with its defaults: **{s(d['wall'] / 60)} min**, "
            f"{d['hvps']} HVPs, peak resident memory {gib(d['peak_rss_mib'])} "
            f"({gib(above)} above the {gib(base)} of the process with the model and data "
            f"loaded). Verdict: {d.get('kind')}, λ_min {d['lambda_min']:.4g}, "
            f"λ_max {d['lambda_max']:.4g}.",
            "",
            *_phase_rows(d["phases"], d["wall"], base),
            *mem_note,
            "",
        ]
        res["_diag_total"] = d["wall"]
        res["_diag_peak_above"] = above
        return lines
    sl = res.get("slq")
    pred = res.get("slq_predicted_mib", float("nan"))
    lines += [
        f"The default diagnosis cannot run here: its density (SLQ, {probes} probes × "
        f"{steps} steps) keeps every probe's Lanczos basis for full "
        f"reorthogonalisation, {probes} × {steps} × {res.get('costs', {}).get('num_params', 'n'):,} numbers = "
        f"**{gib(pred)}** in float32, with no check before it allocates "
        "(the machine has 24 GiB, shared). So the diagnosis ran without the "
        "density (`diagnose(obj, density=False)`: gradient, probe, Lanczos, trace), "
        "and the SLQ phase ran alone on fewer probes, scaled to the default's: on a "
        "CPU a block's columns run one after another and the reorthogonalisation "
        "grows with the probes, so time scales with the number of probes.",
        "",
        f"Without the density: **{s(d['wall'] / 60)} min**, {d['hvps']} HVPs, peak "
        f"{gib(d['peak_rss_mib'])} ({gib(above)} above the {gib(base)} with the model and "
        f"data loaded). Verdict: {d.get('kind')}, λ_min {d['lambda_min']:.4g}, "
        f"λ_max {d['lambda_max']:.4g}.",
        "",
        *_phase_rows(d["phases"], d["wall"], base),
    ]
    total = d["wall"]
    peak_above = above
    if _ok(sl):
        p = sl.get("probes") or sl.get("params", {}).get("probes") or 1
        p = int(p)
        scale = probes / p
        est = sl["wall"] * scale
        slq_above = sl["peak_rss_mib"] - sl["rss_before_mib"]
        lines.append(
            f"| SLQ alone, {p} probe(s) × {steps} steps (measured) | {s(sl['wall'])} s "
            f"({s(sl['cpu'])} s) | | {sl['hvps']} | {s(sl['wall'] / max(sl['hvps'], 1), 2)} s | "
            f"{gib(sl['peak_rss_mib'] - sl['rss_before_mib'])} |"
        )
        lines.append(
            f"| SLQ, {probes} probes (× {scale:.2g}, estimated) | {s(est)} s | | "
            f"{int(sl['hvps'] * scale)} | | {gib(pred)} for the bases alone |"
        )
        est_cpu = d["cpu"] + sl["cpu"] * scale
        total += est
        peak_above = max(above, pred + (slq_above - pred * p / probes))
        lines += [
            *mem_note,
            "",
            f"The SLQ run alone peaked {gib(slq_above)} above its model and data. "
            f"Estimated default diagnosis: **{s(total / 60)} min** "
            f"({s(est_cpu / 60)} min by CPU time), "
            f"{d['hvps'] + int(sl['hvps'] * scale)} HVPs, about {gib(peak_above)} above the model "
            "and data (the full SLQ bases plus what the rest of the run holds).",
            "",
        ]
    else:
        lines += ["", f"SLQ alone: {_why(sl)}.", ""]
        total = math.nan
    res["_diag_total"] = total
    res["_diag_peak_above"] = peak_above
    lines += _reading(res, d, sl)
    cli = res.get("cli")
    if cli:
        lines += _cli_lines(cli, whole)
    return lines


def _reading(
    res: dict[str, Any], d: dict[str, Any], sl: dict[str, Any] | None
) -> list[str]:
    """Each phase's time per product against what one product costs alone."""
    costs = res.get("costs", {})
    if not _ok(costs):
        return []
    hvp = costs["op_hvp_wall"]
    parts = []
    for label, ph in d["phases"].items():
        if ph.get("calls") and ph["hvps"] >= 10:
            parts.append(f"{label} {s(ph['wall'] / ph['hvps'], 2)} s")
    if _ok(sl):
        parts.append(f"SLQ {s(sl['wall'] / max(sl['hvps'], 1), 2)} s")
    peaks = {
        k: ph["peak_rss_mib"] for k, ph in d["phases"].items() if "peak_rss_mib" in ph
    }
    peak_txt = ""
    if peaks:
        top = max(peaks, key=peaks.get)
        peak_txt = (
            f" Outside the density, the phase that holds the most memory is {top}."
        )
    return [
        f"Reading: one product through the operator costs {s(hvp, 2)} s alone; per "
        f"product, the phases spend {', '.join(parts)}. The difference is the "
        "solvers' own work on vectors of this length: `eigsh` reorthogonalises "
        "every new vector against its whole basis, `spectral_density` every "
        "probe's against its own (see *where critpoint's time goes* for both "
        "measured alone), and the trace's products come in blocks, which cost "
        "more per vector than single products on a CPU." + peak_txt,
        "",
    ]


def _cli_lines(cli: dict[str, Any], whole: bool) -> list[str]:
    if not _ok(cli):
        return [f"The CLI equivalent: {_why(cli)}.", ""]
    what = "" if whole else " with `--no-density` (the same phases as above)"
    cmd = cli.get("command", "")
    return [
        f"The CLI equivalent{what}, `critpoint diagnose` on the same weights (a state "
        f"dict) and data (`.npz`), in its own process: {s(cli['wall'] / 60)} min wall "
        f"(interpreter start and loading included), peak resident memory "
        f"{gib(cli['cli_peak_rss_mib'])}, exit code {cli['returncode']}"
        f"{', verdict ' + str(cli.get('kind')) if cli.get('kind') else ''}.",
        "",
        "```",
        cmd.replace(str(Path(__file__).resolve().parents[2]) + "/", ""),
        "```",
        "",
    ]


def _resnet18_pyhessian(res: dict[str, Any]) -> list[str]:
    lines = [
        "### PyHessian on the same model and data",
        "",
        "With its defaults as its example script calls them (`eigenvalues()`, "
        "`trace()`: maxIter 100, tol 1e-3, `density()`: 100 steps, 1 probe, with a "
        "`torch.eig` shim); each in a fresh process, set-up included.",
        "",
        "| task | set-up | solve | total | HVPs | peak above model and data | result |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    d = res.get("diagnose") or {}
    for label, key in (
        ("top eigenvalue", "pyhessian_top"),
        ("trace", "pyhessian_trace"),
        ("density", "pyhessian_density"),
    ):
        rec = res.get(key)
        if not _ok(rec):
            lines.append(f"| {label} | {_why(rec)} | | | | | |")
            continue
        t = _timing(rec)
        r0 = rec["runs"][0]
        above = rec["peak_rss_mib"] - rec["rss_loaded_mib"]
        if key == "pyhessian_top":
            out = f"λ₁ {r0['value']:.6g}"
            if d.get("lambda_max"):
                out += f" (critpoint's diagnosis: {d['lambda_max']:.6g})"
        elif key == "pyhessian_trace":
            out = f"{r0['value']:.6g}"
            if d.get("trace"):
                out += f" (critpoint's: {d['trace']:.6g})"
        else:
            out = f"nodes {r0['bottom_node']:.4g} … {r0['top_node']:.4g}"
        lines.append(
            f"| {label} | {s(t['setup'])} s | {s(t['solve'])} s | **{s(t['total'])} s** | "
            f"{t['hvps']:.0f} | {gib(above)} | {out} |"
        )
    return [*lines, ""]


def _resnet18_targets(res: dict[str, Any]) -> list[str]:
    costs = res.get("costs", {})
    ratio = costs["op_hvp_wall"] / costs["grad_wall"] if _ok(costs) else math.nan
    total = res.get("_diag_total", math.nan)
    above = res.get("_diag_peak_above", math.nan)
    cores = res.get("machine", {}).get("cores")
    quick = res["config"].get("quick")

    def status(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    est = ""
    d = res.get("diagnose") or {}
    if not res.get("default_fits", True) and _ok(d):
        above_nd = d["peak_rss_mib"] - d["rss_before_mib"]
        est = f" (estimated; without the density: {gib(above_nd)}, {s(d['wall'] / 60)} min)"

    rows = [
        "### Targets",
        "",
        "| target | measured | status |",
        "|---|---|---|",
        f"| an HVP ≤ 2.5 gradients | {ratio:.2f}× (through the operator) | {status(ratio <= 2.5)} |",
        f"| peak memory ≤ 4 GB above the model and data | {gib(above)} = {above * 2**20 / 1e9:.2f} GB{est} | {status(above * 2**20 <= 4e9)} |",
        f"| the default diagnosis ≤ 15 min on the {cores}-core machine | {s(total / 60)} min{est} | {status(total <= 900)} |",
        "",
    ]
    if quick:
        rows.insert(2, "(`--quick` sizes: these are not the targets' workload.)\n")
    return rows


# --------------------------------------------------------------- GPT-2


def render_gpt2(res: dict[str, Any]) -> str:
    from scale_bench.gpt2 import render

    return render(res)
