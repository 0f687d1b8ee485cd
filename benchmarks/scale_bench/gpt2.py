"""GPT-2 small (124M) on one GPU: products, both ends, density, per-block spectra, the diagnosis.

Built from ``transformers.GPT2Config()`` defaults (no download: random
weights from seed 0), 64 random token sequences of 256 tokens (seed 0) in
batches of 16, the language-model loss (mean next-token cross-entropy), eval
mode (no dropout). Every phase is announced on stderr with the time left; the
run is time-boxed (``--time-box`` seconds, default 540): each phase gets a
share of what is left, eigensolvers a product budget that fits it, and a
phase that no longer fits is skipped and reported as such. Peak GPU memory
(``torch.cuda.max_memory_allocated``) is recorded per phase.

Without CUDA or without ``transformers`` it returns a record saying so
(``status="skipped"``) and measures nothing; ``--quick`` runs a tiny GPT-2
(2 layers, width 64) on whatever device there is, to check the plumbing.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

HEADING = "## Scale: GPT-2 small on a GPU"
NUM_SEQ, SEQ_LEN, BATCH = 64, 256, 16


def _skip(note: str) -> dict[str, Any]:
    return {"status": "skipped", "note": note}


def run(
    quick: bool = False, time_box: float = 540.0, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure everything that fits in ``time_box`` seconds; the record of what ran."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return _skip("torch is not importable")
    if not torch.cuda.is_available() and not quick:
        msg = "no CUDA device on this machine"
        log(f"{msg}: GPT-2 small is measured on a GPU only (--quick: a tiny CPU check)")
        return _skip(msg)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        msg = "transformers is not installed (pip install transformers): GPT-2 is built from its GPT2Config"
        log(msg)
        return _skip(msg)
    import critpoint as cp

    start = time.perf_counter()
    deadline = start + time_box
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    torch.set_num_threads(1) if not cuda else None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def left() -> float:
        return deadline - time.perf_counter()

    record: dict[str, Any] = {
        "status": "ok",
        "quick": quick,
        "time_box": time_box,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "critpoint": cp.__version__,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "phases": {},
    }
    try:
        import transformers

        record["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover
        pass

    class Phase:
        """Announce, time and take the peak memory of one phase."""

        def __init__(self, name: str) -> None:
            self.name = name
            self.out: dict[str, Any] = {}
            record["phases"][name] = self.out

        def __enter__(self) -> dict[str, Any]:
            log(f"gpt2: phase '{self.name}' ({left():.0f} s left of {time_box:.0f})")
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            self._t = time.perf_counter()
            return self.out

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            sync()
            self.out["wall"] = time.perf_counter() - self._t
            if cuda:
                self.out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if exc is not None:
                self.out["status"] = f"fails: {type(exc).__name__}: {str(exc)[:300]}"
                log(f"gpt2: phase '{self.name}' failed: {exc}")
                return not isinstance(exc, KeyboardInterrupt)
            self.out.setdefault("status", "ok")
            log(f"gpt2: phase '{self.name}' done in {self.out['wall']:.1f} s")
            return False

    def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
        fn()
        walls = []
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            walls.append(time.perf_counter() - t)
        return statistics.median(walls)

    # -- the model and data
    with Phase("build") as out:
        if quick:
            config = GPT2Config(
                n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=500,
                bos_token_id=0, eos_token_id=0,
            )  # fmt: skip
            num_seq, seq_len, batch = 8, 32, 4
        else:
            config = GPT2Config()
            num_seq, seq_len, batch = NUM_SEQ, SEQ_LEN, BATCH
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).to(device).eval()
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, config.vocab_size, (num_seq, seq_len), generator=gen)
        # Dict batches: a list of exactly two tensors would read as (inputs, targets).
        batches = [
            {"input_ids": ids[i : i + batch].to(device)}
            for i in range(0, num_seq, batch)
        ]

        def lm_loss(m: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
            x = b["input_ids"]
            return m(input_ids=x, labels=x, use_cache=False).loss

        obj = cp.Objective(model, data=batches, batch_loss=lm_loss)
        out.update(
            num_params=obj.num_params,
            layers=config.n_layer,
            width=config.n_embd,
            sequences=num_seq,
            tokens=seq_len,
            batch=batch,
            model_gpu_gib=(torch.cuda.memory_allocated() / 2**30) if cuda else None,
        )
    if "num_params" not in record["phases"]["build"]:
        record["status"] = "fails"
        return record
    n = obj.num_params
    gen_v = torch.Generator().manual_seed(1)
    v = torch.randn(n, generator=gen_v).to(device)

    # -- one gradient, the set-up, one product
    with Phase("gradient and HVP") as out:
        out["grad_s"] = timed(obj.grad)
        sync()
        t = time.perf_counter()
        H = obj.hessian()
        sync()
        out["setup_s"] = time.perf_counter() - t
        out["cached"] = bool(getattr(H, "cached", False))
        out["op_hvp_s"] = timed(lambda: H @ v)
        out["ratio"] = out["op_hvp_s"] / out["grad_s"]
    t_hvp = record["phases"]["gradient and HVP"].get("op_hvp_s", 1.0)

    def budget(share: float, floor: int = 10, cap: int = 600) -> int:
        """Products that fit in ``share`` of the time left."""
        return int(max(floor, min(cap, share * left() / max(t_hvp, 1e-3))))

    # -- both ends
    for which, label in (("LA", "top-5"), ("SA", "bottom-5")):
        if left() < 20 * t_hvp:
            record["phases"][label] = {"status": "skipped: time box"}
            continue
        with Phase(label) as out:
            maxiter = budget(0.15)
            r = cp.eigsh(
                H,
                k=5,
                which=which,
                tol=1e-4,
                max_matvecs=maxiter,
                seed=0,
                return_eigenvectors=False,
            )
            out.update(
                maxiter=maxiter,
                hvps=r.num_matvecs,
                values=[float(x) for x in r.eigenvalues],
                residuals=[float(x) for x in r.residuals],
                converged=bool(r.converged.all()),
            )

    # -- density
    probes, steps = 4, (20 if quick else 60)
    keep = probes * steps * n * 4
    free = torch.cuda.mem_get_info()[0] if cuda else 8 * 2**30
    reorth = keep < 0.3 * free
    if left() < steps * probes * t_hvp * 1.2:
        record["phases"]["density"] = {"status": "skipped: time box"}
    else:
        with Phase("density") as out:
            d = cp.spectral_density(
                H, num_probes=probes, num_steps=steps, seed=0, reorthogonalize=reorth
            )
            w = d.weights.numpy()
            nodes = d.nodes.numpy()
            out.update(
                probes=probes,
                steps=steps,
                reorthogonalize=reorth,
                basis_gib=keep / 2**30,
                support=[float(nodes[w > 0].min()), float(nodes[w > 0].max())],
                fraction_negative=float(d.fraction_negative(0.0))
                if hasattr(d, "fraction_negative")
                else None,
            )
    H = None  # free the kept linearisations before the per-block operators
    if cuda:
        torch.cuda.empty_cache()

    # -- per-block spectra
    blocks = [("embeddings", ["transformer.wte.weight", "transformer.wpe.weight"])]
    blocks += [(f"block {i}", f"transformer.h.{i}.*") for i in range(config.n_layer)]
    blocks += [("final LayerNorm", "transformer.ln_f.*")]
    with Phase("per-block spectra") as out:
        out["blocks"] = per_block_spectra(
            model, batches, lm_loss, blocks, left, t_hvp, log
        )

    # -- the whole diagnosis
    if left() < 30 * t_hvp:
        record["phases"]["diagnosis"] = {"status": "skipped: time box"}
    else:
        with Phase("diagnosis") as out:
            sig = inspect.signature(cp.diagnose).parameters
            kwargs: dict[str, Any] = {}
            if "memory" not in sig:
                # No memory plan yet: the default density would keep
                # probes × steps × n floats of Lanczos bases (238 GB here).
                p0 = sig["num_probes"].default if "num_probes" in sig else 8
                s0 = sig["num_steps"].default if "num_steps" in sig else 60
                need = p0 * s0 * n * 4
                free = torch.cuda.mem_get_info()[0] if cuda else 8 * 2**30
                if need > 0.3 * free:
                    kwargs["density"] = False
                    out["note"] = (
                        f"density off: its default {p0} × {s0} Lanczos bases would need "
                        f"{need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free, and no memory plan exists yet"
                    )
            kwargs["maxiter"] = budget(0.5, floor=30, cap=2000)
            from scale_bench.tasks import Counter, count_critpoint

            counter = Counter()
            count_critpoint(counter)
            dg = cp.diagnose(obj, **kwargs)
            out.update(
                hvps=counter.count,
                kwargs={k: v for k, v in kwargs.items()},
                kind=dg.kind,
                lambda_min=float(dg.lambda_min),
                lambda_max=float(dg.lambda_max),
                trace=float(dg.trace.value) if dg.trace is not None else None,
            )
    record["wall"] = time.perf_counter() - start
    peaks = [
        p.get("peak_gpu_gib")
        for p in record["phases"].values()
        if isinstance(p, dict) and p.get("peak_gpu_gib")
    ]
    record["peak_gpu_gib"] = max(peaks) if peaks else None
    log(f"gpt2: finished in {record['wall']:.0f} s")
    return record


def per_block_spectra(
    model: Any,
    batches: list[Any],
    lm_loss: Callable[..., Any],
    blocks: list[tuple[str, Any]],
    left: Callable[[], float],
    t_hvp: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """λ_min, λ_max, the trace and the density of each block's Hessian, in one batched run.

    :func:`critpoint.block_spectra` on the whole model's Hessian: every
    block's probes are block-masked columns of one ``matmat`` call per
    Lanczos step (in calls of at most ``MAX_COLUMNS`` columns, for memory),
    so all blocks share each pass over the data. The steps fit the time left.
    The records (name, lambda_min, lambda_max, trace, hvps, wall) are those
    of the README table; the run's heterogeneity (mean Jensen–Shannon
    distance between the blocks' normalised densities) is on the first.
    """
    import fnmatch

    import torch

    import critpoint as cp
    from critpoint.analysis.blocks import block_indices

    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def select(pattern: Any) -> list[str]:
        globs = [pattern] if isinstance(pattern, str) else list(pattern)
        return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]

    t = time.perf_counter()
    try:
        ob = cp.Objective(model, data=batches, batch_loss=lm_loss)
        H = ob.hessian(check=False)  # the whole model's probe ran already
        index = [(name, block_indices(ob, select(pattern))) for name, pattern in blocks]
        probes = 2
        # a batched column on a GPU costs well under one single product
        per_pass = len(blocks) * probes * 0.5 * max(t_hvp, 1e-3)
        steps = int(max(4, min(40, 0.7 * left() / per_pass)))
        run = cp.block_spectra(
            H,
            index,
            num_probes=probes,
            num_steps=steps,
            max_steps=steps,
            tol=1e-3,
            seed=0,
            max_columns=MAX_COLUMNS,
        )
    except Exception as exc:  # the failure is a result; the run goes on
        return [
            {"name": name, "status": f"fails: {type(exc).__name__}: {str(exc)[:200]}"}
            for name, _ in blocks
        ]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    log(
        f"gpt2:   {len(blocks)} blocks in {run.num_passes} batched passes, "
        f"{run.num_matvecs} HVPs, {wall:.1f} s; heterogeneity {run.heterogeneity:.3f}"
    )
    out = []
    for b in run.blocks:
        out.append(
            {
                "name": b.name,
                "status": "ok",
                "num_params": b.size,
                "lambda_min": b.lambda_min,
                "lambda_max": b.lambda_max,
                "converged": b.converged_min and b.converged_max,
                "trace": b.trace,
                "trace_stderr": b.trace_stderr,
                "hvps": b.num_matvecs,
                "wall": wall * b.num_matvecs / max(run.num_matvecs, 1),
            }
        )
    out[0]["heterogeneity_js"] = run.heterogeneity
    out[0]["num_passes"] = run.num_passes
    return out


#: Most columns per batched call of the per-block run (each is n numbers twice).
MAX_COLUMNS = 8


def heterogeneity(blocks: list[dict[str, Any]]) -> float | None:
    """Spread of the blocks' λ_max: the standard deviation of log10 λ_max over blocks."""
    tops = [
        b["lambda_max"]
        for b in blocks
        if b.get("status") == "ok" and b["lambda_max"] > 0
    ]
    if len(tops) < 2:
        return None
    return statistics.pstdev(math.log10(x) for x in tops)


def render(res: dict[str, Any]) -> str:
    """The README section: what ran, or that no GPU was available."""
    cmd = "python benchmarks/scale.py gpt2 --write            # on a CUDA machine; --time-box 540 by default"
    head = [
        HEADING,
        "",
        "GPT-2 small (124M parameters, `transformers.GPT2Config()` defaults, random "
        "weights from seed 0: no download) on 64 random token sequences × 256 tokens "
        "(batches of 16), the language-model loss, eval mode. One script, "
        "time-boxed (each phase announced with the time left; eigensolvers get a "
        "product budget that fits): gradient time, the HVP ratio, top-5 and "
        "bottom-5, the density, per-block spectra of every block (embeddings, the "
        "12 transformer blocks, the final LayerNorm; all blocks in one batched "
        "`block_spectra` run, time shared by HVPs), the whole diagnosis, and the "
        "peak GPU memory (`torch.cuda.max_memory_allocated`) of each phase. "
        "Targets: an HVP ≤ 2.5 gradients, the whole diagnosis ≤ 10 min on one "
        "H100/H200-class GPU, peak memory stated.",
        "",
        "```",
        cmd,
        "```",
        "",
    ]
    if res.get("status") != "ok" or res.get("quick"):
        why = "no GPU was available when this section was written" + (
            f" ({res['note']})" if res.get("note") else ""
        )
        return (
            "\n".join(
                [
                    *head,
                    f"**Not measured yet**: {why}. The numbers appear here once the script has run on a GPU.",
                    "",
                ]
            )
            + "\n"
        )
    ph = res["phases"]
    b = ph.get("build", {})
    g = ph.get("gradient and HVP", {})
    lines = [
        *head,
        f"Machine: {res['device']}; torch {res['torch']}, transformers "
        f"{res.get('transformers', '?')}, critpoint {res['critpoint']}; TF32 matmul "
        f"{'on' if res['tf32_matmul'] else 'off'}, cuDNN TF32 {'on' if res['tf32_cudnn'] else 'off'}. "
        f"{b.get('num_params', 0):,} parameters. The whole run took {res['wall']:.0f} s "
        f"(time box {res['time_box']:.0f} s); peak GPU memory {res.get('peak_gpu_gib') or float('nan'):.1f} GiB "
        f"(the model alone {b.get('model_gpu_gib') or float('nan'):.1f} GiB).",
        "",
        "| phase | time | peak GPU memory | result |",
        "|---|---:|---:|---|",
    ]
    if g.get("status") == "ok":
        lines.append(
            f"| gradient / HVP | {g['grad_s'] * 1000:.0f} ms / {g['op_hvp_s'] * 1000:.0f} ms | "
            f"{g.get('peak_gpu_gib', float('nan')):.1f} GiB | HVP = **{g['ratio']:.2f}×** a gradient "
            f"(target ≤ 2.5); set-up (`hessian()`, probe) {g['setup_s']:.1f} s |"
        )
    for key in ("top-5", "bottom-5"):
        p = ph.get(key, {})
        if p.get("status") != "ok":
            lines.append(f"| {key} | | | {p.get('status', 'not run')} |")
            continue
        vals = ", ".join(f"{x:.4g}" for x in p["values"])
        lines.append(
            f"| {key} | {p['wall']:.0f} s | {p.get('peak_gpu_gib', float('nan')):.1f} GiB | {vals} "
            f"({p['hvps']} HVPs{'' if p['converged'] else ', not converged'}) |"
        )
    d = ph.get("density", {})
    if d.get("status") == "ok":
        lines.append(
            f"| density ({d['probes']} probes × {d['steps']} steps"
            f"{'' if d['reorthogonalize'] else ', no reorthogonalisation'}) | {d['wall']:.0f} s | "
            f"{d.get('peak_gpu_gib', float('nan')):.1f} GiB | support {d['support'][0]:.3g} … {d['support'][1]:.3g} |"
        )
    else:
        lines.append(f"| density | | | {d.get('status', 'not run')} |")
    pb = ph.get("per-block spectra", {})
    blocks = pb.get("blocks", [])
    het = heterogeneity(blocks)
    lines.append(
        f"| per-block spectra ({len(blocks)} blocks) | {pb.get('wall', float('nan')):.0f} s | "
        f"{pb.get('peak_gpu_gib', float('nan')):.1f} GiB | heterogeneity: JS "
        f"{blocks[0].get('heterogeneity_js', float('nan')) if blocks else float('nan'):.3f} "
        f"(mean Jensen–Shannon distance of the normalised densities), s.d. of log₁₀ λ_max "
        f"{'—' if het is None else f'{het:.2f}'} |"
    )
    dg = ph.get("diagnosis", {})
    if dg.get("status") == "ok":
        lines.append(
            f"| whole diagnosis | **{dg['wall']:.0f} s** | {dg.get('peak_gpu_gib', float('nan')):.1f} GiB | "
            f"{dg['hvps']} HVPs; {dg['kind']}, λ_min {dg['lambda_min']:.4g}, λ_max {dg['lambda_max']:.4g}"
            f"{'; ' + dg['note'] if dg.get('note') else ''} |"
        )
    else:
        lines.append(f"| whole diagnosis | | | {dg.get('status', 'not run')} |")
    lines += [
        "",
        "| block | parameters | λ_min | λ_max | trace | HVPs | time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for blk in blocks:
        if blk.get("status") != "ok":
            lines.append(f"| {blk['name']} | | | | | | {blk.get('status')} |")
            continue
        lines.append(
            f"| {blk['name']} | {blk['num_params']:,} | {blk['lambda_min']:.3g} | {blk['lambda_max']:.3g} | "
            f"{blk['trace']:.3g} ± {blk['trace_stderr']:.2g} | {blk['hvps']} | {blk['wall']:.0f} s |"
        )
    return "\n".join(lines) + "\n"
