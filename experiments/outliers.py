"""C classes give C−1 outlier eigenvalues (Sagun et al. 2016/17; Papyan 2019/20).

For C ∈ {3, 5, 7, 10}, the digits of classes 0..C−1 (pixels / 16) train a
ReLU MLP 64-32-C with softmax cross-entropy (full-batch SGD with momentum,
lr 0.1, β 0.9) until the training loss first reaches 0.25 — not further: near
zero loss the cross-entropy Hessian collapses and the gap goes with it. Then
critpoint's Lanczos gives the top 25 Hessian eigenvalues, and the number of
outliers is k* = argmax_{k ≤ 20} λ_k / λ_{k+1}. Expected (papers.md §1–2):
k* = C − 1 (the per-sample output Hessian diag(p) − ppᵀ has rank C − 1), with
a gap λ_{C−1}/λ_C of about 4× or more.

The full run also doubles the hidden width (Sagun's "bulk" conjecture: more
parameters scale the bulk, the outlier count stays).

    python experiments/outliers.py [--out DIR] [--quick]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

import critpoint as cp
from critpoint.data import load_data
from critpoint.losses import get_loss
from critpoint.models import build_model
from critpoint.training import train


def load_common() -> Any:
    name = "critpoint_experiments_common"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(  # noqa: TID251 (our own file)
            name, Path(__file__).with_name("_common.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


common = load_common()

NAME = "outliers"
CLASSES = (3, 5, 7, 10)
TOP_K = 25
MAX_OUTLIERS = 20
STOP_LOSS = 0.25


def run(num_classes: int, seed: int, width: int) -> dict[str, Any]:
    data = load_data("digits", num_classes=num_classes, preprocess="unit")
    model = build_model(
        "mlp", widths=[width], out_features=num_classes, activation="relu", seed=seed
    )
    history = train(
        model,
        data,
        loss="cross_entropy",
        optimizer="momentum",
        lr=0.1,
        momentum=0.9,
        batch_size=None,
        steps=2000,
        seed=seed,
        stop_loss=STOP_LOSS,
        eval_every=1,
    )
    obj = cp.Objective(model, get_loss("cross_entropy"), data.as_tuple())
    top = cp.eigsh(
        obj.hessian(),
        k=TOP_K,
        which="LA",
        tol=1e-3,
        seed=seed,
        return_eigenvectors=False,
    )
    values = top.eigenvalues.flip(0).numpy()  # descending
    ratios = values[:MAX_OUTLIERS] / values[1 : MAX_OUTLIERS + 1]
    k_star = int(np.argmax(ratios)) + 1
    return {
        "num_classes": num_classes,
        "seed": seed,
        "width": width,
        "num_samples": len(data),
        "num_params": obj.num_params,
        "steps": history.num_steps,
        "final_loss": history.final_loss,
        "stopped_at_target": history.stop_reason == "stop_loss",
        "top_eigenvalues": values.tolist(),
        "all_positive": bool((values[: MAX_OUTLIERS + 1] > 0).all()),
        "converged": bool(top.all_converged),
        "lanczos_matvecs": top.num_matvecs,
        "ratios": ratios.tolist(),
        "k_star": k_star,
        "gap_at_k_star": float(ratios[k_star - 1]),
        "gap_at_C_minus_1": float(ratios[num_classes - 2]),
        "next_largest_ratio": float(np.sort(ratios)[-2]),
    }


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    fig, (ax1, ax2, ax3) = common.new_figure(3)
    base = [
        r
        for r in runs
        if r["seed"] == runs[0]["seed"] and r["width"] == runs[0]["width"]
    ]
    for i, r in enumerate(base):
        color, ls, marker = common.STYLES[i]
        c = r["num_classes"]
        idx = np.arange(1, len(r["top_eigenvalues"]) + 1)
        ax1.semilogy(
            idx,
            r["top_eigenvalues"],
            color=color,
            ls=ls,
            marker=marker,
            ms=3.5,
            lw=1.2,
            label=f"C = {c}",
        )
        ax1.plot(
            [c - 1],
            [r["top_eigenvalues"][c - 2]],
            marker=marker,
            ms=10,
            mfc="none",
            mec=color,
            mew=1.5,
            ls="none",
        )
        k = np.arange(1, len(r["ratios"]) + 1)
        ax2.plot(
            k,
            r["ratios"],
            color=color,
            ls=ls,
            marker=marker,
            ms=3.5,
            lw=1.2,
            label=f"C = {c}: peak at k = {r['k_star']}",
        )
    common.panel_label(ax1, "a")
    ax1.set_title(f"Top {TOP_K} eigenvalues (large marker: k = C−1)", fontsize=10)
    ax1.set_xlabel("eigenvalue index k")
    ax1.set_ylabel("λ_k (loss / param²)")
    ax1.legend(fontsize=8)
    common.panel_label(ax2, "b")
    ax2.set_title("Gap ratio λ_k / λ_(k+1)", fontsize=10)
    ax2.set_xlabel("k")
    ax2.set_ylabel("λ_k / λ_(k+1) (dimensionless)")
    ax2.set_xticks([1, 2, 4, 6, 9, 12, 16, 20])
    ax2.legend(fontsize=8)
    widths = sorted({r["width"] for r in runs})
    for j, width in enumerate(widths):
        sel = [r for r in runs if r["width"] == width]
        offset = (j - (len(widths) - 1) / 2) * 0.25
        color, _, marker = common.STYLES[j]
        ax3.plot(
            [r["num_classes"] + offset for r in sel],
            [r["k_star"] for r in sel],
            ls="none",
            marker=marker,
            ms=6,
            mfc="none" if j else color,
            mec=color,
            label=f"hidden width {width} ({len(sel)} runs)",
        )
    for r in runs:
        if r["k_star"] != r["num_classes"] - 1:
            ax3.annotate(
                f"width {r['width']}, seed {r['seed']}: "
                f"λ1/λ2 = {r['ratios'][0]:.1f} > λ2/λ3 = {r['ratios'][1]:.1f}"
                if r["k_star"] == 1
                else f"width {r['width']}, seed {r['seed']}",
                (r["num_classes"], r["k_star"]),
                xytext=(14, 0),
                textcoords="offset points",
                va="center",
                fontsize=7.5,
            )
    cs = np.array(CLASSES)
    ax3.plot(cs, cs - 1, color="0.5", ls="--", lw=1, label="k* = C − 1", zorder=0)
    common.panel_label(ax3, "c")
    ax3.set_title("Number of outliers k* = argmax gap ratio", fontsize=10)
    ax3.set_xlabel("number of classes C")
    ax3.set_ylabel("k* (eigenvalues)")
    ax3.set_xticks(list(CLASSES))
    ax3.set_yticks(sorted({1, *(cs - 1).tolist()}))
    ax3.legend(fontsize=8, loc="upper left")
    common.save_figure(fig, path)


def main(
    out_dir: Path | str = common.DEFAULT_OUT, quick: bool = False
) -> dict[str, Any]:
    common.setup_torch()
    clock = common.Clock()
    out_dir = Path(out_dir)
    seeds = [0] if quick else [0, 1, 2]
    widths = [32] if quick else [32, 64]
    runs = [run(c, seed, width) for width in widths for seed in seeds for c in CLASSES]
    figure = out_dir / f"{NAME}.png"
    plot(runs, figure)
    table = {
        str(c): {
            "k_star": [r["k_star"] for r in runs if r["num_classes"] == c],
            "gap_at_C_minus_1": [
                round(r["gap_at_C_minus_1"], 2) for r in runs if r["num_classes"] == c
            ],
            "top_C_plus_1": next(
                [round(v, 3) for v in r["top_eigenvalues"][: c + 1]]
                for r in runs
                if r["num_classes"] == c
            ),
        }
        for c in CLASSES
    }
    hits = sum(r["k_star"] == r["num_classes"] - 1 for r in runs)
    summary = {
        "table": table,
        "seeds": seeds,
        "widths": widths,
        "runs": len(runs),
        "k_star_equals_C_minus_1": hits,
        "min_gap_at_C_minus_1": min(r["gap_at_C_minus_1"] for r in runs),
        "all_reached_target_loss": all(r["stopped_at_target"] for r in runs),
        "all_lanczos_converged": all(r["converged"] for r in runs),
        "time": clock.read(),
        "quick": quick,
    }
    record = {
        "experiment": NAME,
        "summary": summary,
        "runs": runs,
        "environment": common.environment(),
    }
    json_path = common.save_json(record, out_dir / f"{NAME}.json")
    return {"summary": summary, "runs": runs, "figure": figure, "json": json_path}


if __name__ == "__main__":
    common.run_cli(main, __doc__.splitlines()[0])
