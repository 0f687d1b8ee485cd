"""BatchNorm suppresses the Hessian's outliers (Ghorbani, Krishnan & Xiao 2019).

The same ReLU MLP 64-32-32-10, with and without ``BatchNorm1d`` after each
hidden linear layer, is trained on the 1797 digits (pixels / 16) with
full-batch SGD with momentum (lr 0.05, β 0.9, cross-entropy, 200 steps).
BatchNorm runs in train mode with full batches, so its statistics are those of
the whole data and the loss is a deterministic function of the weights; the
Hessian is taken the same way (``Objective(train_mode=True)``). Then the top
20 Hessian eigenvalues come from critpoint's Lanczos. Expected (papers.md §3):
λ1/λ11 ≈ 25 without BatchNorm and ≈ 2.3 with it.

A control repeats both nets on *standardised* inputs (zero mean, unit
variance per pixel): how much of the gap is BatchNorm, and how much is the
input scaling that BatchNorm also fixes.

    python experiments/batchnorm.py [--out DIR] [--quick]
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

NAME = "batchnorm"
STEPS = 200
TOP_K = 20


def run(batchnorm: bool, preprocess: str, seed: int) -> dict[str, Any]:
    data = load_data("digits", split="all", preprocess=preprocess)
    model = build_model(
        "mlp", widths=[32, 32], activation="relu", batchnorm=batchnorm, seed=seed
    )
    history = train(
        model,
        data,
        loss="cross_entropy",
        optimizer="momentum",
        lr=0.05,
        momentum=0.9,
        batch_size=None,
        steps=STEPS,
        seed=seed,
        track={"sharpness"},
        track_every=10,
        track_train_mode=batchnorm,
        eval_every=STEPS,
    )
    obj = cp.Objective(
        model, get_loss("cross_entropy"), data.as_tuple(), train_mode=batchnorm
    )
    top = cp.eigsh(
        obj.hessian(),
        k=TOP_K,
        which="LA",
        tol=1e-4,
        seed=seed,
        return_eigenvectors=False,
    )
    values = top.eigenvalues.flip(0).tolist()  # descending
    return {
        "batchnorm": batchnorm,
        "inputs": preprocess,
        "seed": seed,
        "final_loss": history.final_loss,
        "final_accuracy": history.accuracy[-1],
        "top_eigenvalues": values,
        "converged": bool(top.all_converged),
        "lambda_1": values[0],
        "lambda_11": values[10],
        "ratio_1_11": values[0] / values[10],
        "lanczos_matvecs": top.num_matvecs,
        "track_step": history.track_step,
        "sharpness": history.sharpness,
        "loss": [*history.loss, history.final_loss],
    }


def label(r: dict[str, Any]) -> str:
    bn = "BN" if r["batchnorm"] else "no BN"
    inputs = "pixels/16" if r["inputs"] == "unit" else "standardised"
    return f"{bn}, {inputs}"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    fig, (ax1, ax2, ax3) = common.new_figure(3)
    shown = [r for r in runs if r["seed"] == runs[0]["seed"]]
    for i, r in enumerate(shown):
        color, ls, marker = common.STYLES[i]
        idx = np.arange(1, len(r["top_eigenvalues"]) + 1)
        ax1.semilogy(
            idx,
            r["top_eigenvalues"],
            color=color,
            ls=ls,
            marker=marker,
            ms=4,
            lw=1.2,
            label=f"{label(r)}: λ1/λ11 = {r['ratio_1_11']:.1f}",
        )
        ax2.plot(
            r["track_step"],
            r["sharpness"],
            color=color,
            ls=ls,
            marker=marker,
            ms=3,
            lw=1.2,
            label=label(r),
        )
        ax3.semilogy(
            np.arange(len(r["loss"])),
            r["loss"],
            color=color,
            ls=ls,
            lw=1.3,
            label=label(r),
        )
    ax1.axvline(11, color="0.7", lw=0.8, ls=":")
    common.panel_label(ax1, "a")
    ax1.set_title(f"Top {TOP_K} Hessian eigenvalues at step {STEPS}", fontsize=10)
    ax1.set_xlabel("eigenvalue index k")
    ax1.set_ylabel("λ_k (loss / param²)")
    ax1.set_xticks([1, 5, 11, 15, 20])
    ax1.legend(fontsize=7.5, loc="upper right")
    common.panel_label(ax2, "b")
    ax2.set_title("Sharpness during training", fontsize=10)
    ax2.set_xlabel("step (full-batch SGD + momentum)")
    ax2.set_ylabel("λ_max (loss / param²)")
    ax2.legend(fontsize=7.5)
    common.panel_label(ax3, "c")
    ax3.set_title("Training loss", fontsize=10)
    ax3.set_xlabel("step")
    ax3.set_ylabel("cross-entropy (nats)")
    ax3.legend(fontsize=7.5)
    common.save_figure(fig, path)


def main(
    out_dir: Path | str = common.DEFAULT_OUT, quick: bool = False
) -> dict[str, Any]:
    common.setup_torch()
    clock = common.Clock()
    out_dir = Path(out_dir)
    seeds = [0] if quick else [0, 1]
    inputs = ["unit"] if quick else ["unit", "standardize"]
    runs = [
        run(bn, pre, seed) for seed in seeds for pre in inputs for bn in (False, True)
    ]
    figure = out_dir / f"{NAME}.png"
    plot(runs, figure)

    def pick(pre: str, bn: bool, key: str) -> list[float]:
        return [r[key] for r in runs if r["inputs"] == pre and r["batchnorm"] is bn]

    table = {
        pre: {
            ("bn" if bn else "no_bn"): {
                "ratio_1_11": pick(pre, bn, "ratio_1_11"),
                "lambda_1": pick(pre, bn, "lambda_1"),
                "final_loss": pick(pre, bn, "final_loss"),
            }
            for bn in (False, True)
        }
        for pre in inputs
    }
    unit = table["unit"]
    summary = {
        "table": table,
        "seeds": seeds,
        "min_ratio_collapse_unit": min(unit["no_bn"]["ratio_1_11"])
        / max(unit["bn"]["ratio_1_11"]),
        "pass_no_bn_ge_10": all(r >= 10 for r in unit["no_bn"]["ratio_1_11"]),
        "pass_bn_le_5": all(r <= 5 for r in unit["bn"]["ratio_1_11"]),
        "all_lanczos_converged": all(r["converged"] for r in runs),
        "time": clock.read(),
        "quick": quick,
    }
    record = {
        "experiment": NAME,
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "loss"} for r in runs],
        "environment": common.environment(),
    }
    json_path = common.save_json(record, out_dir / f"{NAME}.json")
    return {"summary": summary, "runs": runs, "figure": figure, "json": json_path}


if __name__ == "__main__":
    common.run_cli(main, __doc__.splitlines()[0])
