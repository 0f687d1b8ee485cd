"""Cross-entropy versus the square loss, and five optimizers, on one task.

One ReLU MLP 64-64-64-10 (the same initial weights in every run) learns the
digits training split with minibatches of 64 for a fixed number of epochs.
``critpoint.training.train`` builds each ``torch.optim`` optimizer by name
and tracks the sharpness (top Hessian eigenvalue of the full training loss)
along the way.

1. Loss: softmax cross-entropy versus the square loss ½‖f − onehot(y)‖², both
   with plain SGD at lr 0.1. Cohen et al. (2021) note that under
   cross-entropy the sharpness falls late in training, as the loss goes to
   zero and the softmax saturates; under the square loss it does not.
2. Optimizers, all with cross-entropy: SGD (lr 0.1), heavy-ball momentum
   (lr 0.01, β 0.9: the same effective step as SGD), RMSProp (lr 1e-3),
   Adam (lr 1e-3), Adam at lr 1e-2, and Adam at lr 1e-2 after a 100-step
   linear warm-up.

Sharpness values of different losses are in different units (each loss's
own Hessian), so compare their shapes over training, not their levels.

    python experiments/optimizers.py [--out DIR] [--quick]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from critpoint.data import load_data
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

NAME = "optimizers"
BATCH = 64

#: name -> (loss, optimizer, lr, warmup_steps)
#: The square-loss run; its cross-entropy twin is the "SGD (lr 0.1)" run below.
SQUARE_RUN = ("square loss, SGD", ("square", "sgd", 0.1, 0))
OPTIMIZER_RUNS = {
    "SGD (lr 0.1)": ("cross_entropy", "sgd", 0.1, 0),
    "momentum (lr 0.01, β 0.9)": ("cross_entropy", "momentum", 0.01, 0),
    "RMSProp (lr 1e-3)": ("cross_entropy", "rmsprop", 1e-3, 0),
    "Adam (lr 1e-3)": ("cross_entropy", "adam", 1e-3, 0),
    "Adam (lr 1e-2)": ("cross_entropy", "adam", 1e-2, 0),
    "Adam (lr 1e-2, 100-step warm-up)": ("cross_entropy", "adam", 1e-2, 100),
}


def run(
    name: str, spec: tuple[str, str, float, int], epochs: int, track_every: int
) -> dict[str, Any]:
    loss, optimizer, lr, warmup = spec
    train_data = load_data("digits", split="train")
    test_data = load_data("digits", split="test")
    model = build_model("mlp", widths=[64, 64], activation="relu", seed=0)
    history = train(
        model,
        train_data,
        loss=common.square_loss if loss == "square" else loss,
        optimizer=optimizer,
        lr=lr,
        momentum=0.9,
        warmup_steps=warmup,
        batch_size=BATCH,
        drop_last=True,
        epochs=epochs,
        seed=0,
        track={"sharpness"},
        track_every=track_every,
        eval_every=track_every,
        test_data=test_data,
    )
    sharp = np.asarray(history.sharpness)
    return {
        "name": name,
        "loss": loss,
        "optimizer": optimizer,
        "optimizer_class": history.settings["optimizer_class"],
        "lr": lr,
        "warmup_steps": warmup,
        "steps": history.num_steps,
        "initial_loss": history.full_loss[0],
        "final_loss": history.final_loss,
        "final_accuracy": history.accuracy[-1],
        "final_test_accuracy": history.test_accuracy[-1],
        "max_sharpness": float(sharp.max()),
        "step_of_max_sharpness": int(history.track_step[int(sharp.argmax())]),
        "final_sharpness": float(sharp[-1]),
        "final_over_max_sharpness": float(sharp[-1] / sharp.max()),
        "eval_step": history.eval_step,
        "full_loss": history.full_loss,
        "test_accuracy": history.test_accuracy,
        "track_step": history.track_step,
        "sharpness": history.sharpness,
        "track_matvecs": history.track_matvecs,
    }


def plot(
    loss_runs: list[dict[str, Any]], opt_runs: list[dict[str, Any]], path: Path
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    (ax1, ax2), (ax3, ax4) = axes
    for i, r in enumerate(opt_runs):
        color, ls, marker = common.STYLES[i]
        ax1.semilogy(
            r["eval_step"],
            r["full_loss"],
            color=color,
            ls=ls,
            marker=marker,
            ms=4,
            lw=1.1,
            label=r["name"],
        )
        ax2.plot(
            r["track_step"],
            r["sharpness"],
            color=color,
            ls=ls,
            marker=marker,
            ms=4,
            lw=1.1,
            label=r["name"],
        )
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=3, fontsize=8.5)
    common.panel_label(ax1, "a")
    ax1.set_title("Optimizers (cross-entropy): training loss", fontsize=10)
    ax1.set_xlabel(f"step (minibatch {BATCH})")
    ax1.set_ylabel("full training cross-entropy (nats)")
    common.panel_label(ax2, "b")
    ax2.set_title("Optimizers (cross-entropy): sharpness", fontsize=10)
    ax2.set_xlabel(f"step (minibatch {BATCH})")
    ax2.set_ylabel("sharpness λ_max (nats / param²)")
    for i, r in enumerate(loss_runs):
        color, ls, marker = common.STYLES[i]
        ax3.plot(
            r["eval_step"],
            r["test_accuracy"],
            color=color,
            ls=ls,
            marker=marker,
            ms=3,
            lw=1.2,
            label=r["name"],
        )
        ax4.plot(
            r["track_step"],
            np.asarray(r["sharpness"]) / r["max_sharpness"],
            color=color,
            ls=ls,
            marker=marker,
            ms=3,
            lw=1.2,
            label=f"{r['name']} (max λ = {r['max_sharpness']:.2f})",
        )
    common.panel_label(ax3, "c")
    ax3.set_title("Cross-entropy vs square loss: test accuracy", fontsize=10)
    ax3.set_xlabel(f"step (minibatch {BATCH}, SGD lr 0.1)")
    ax3.set_ylabel("test accuracy (fraction)")
    ax3.set_ylim(0, 1.02)
    ax3.legend(fontsize=8, loc="lower right")
    common.panel_label(ax4, "d")
    ax4.set_title("Cross-entropy vs square loss: sharpness / its maximum", fontsize=10)
    ax4.set_xlabel(f"step (minibatch {BATCH}, SGD lr 0.1)")
    ax4.set_ylabel("λ_max / max over the run (dimensionless)")
    ax4.set_ylim(0, 1.08)
    ax4.legend(fontsize=8, loc="lower right")
    common.save_figure(fig, path)


def main(
    out_dir: Path | str = common.DEFAULT_OUT, quick: bool = False
) -> dict[str, Any]:
    common.setup_torch()
    clock = common.Clock()
    out_dir = Path(out_dir)
    epochs, track_every = (15, 30) if quick else (20, 15)
    opt_runs = [
        run(name, spec, epochs, track_every) for name, spec in OPTIMIZER_RUNS.items()
    ]
    ce = {**opt_runs[0], "name": "cross-entropy, SGD"}  # the same run, not a rerun
    loss_runs = [ce, run(*SQUARE_RUN, epochs, track_every)]
    figure = out_dir / f"{NAME}.png"
    plot(loss_runs, opt_runs, figure)
    keys = (
        "optimizer_class",
        "final_loss",
        "final_accuracy",
        "final_test_accuracy",
        "max_sharpness",
        "step_of_max_sharpness",
        "final_sharpness",
        "final_over_max_sharpness",
    )
    sq = loss_runs[1]
    summary = {
        "epochs": epochs,
        "steps": opt_runs[0]["steps"],
        "losses": {r["name"]: {k: r[k] for k in keys} for r in loss_runs},
        "optimizers": {r["name"]: {k: r[k] for k in keys} for r in opt_runs},
        "ce_sharpness_falls_late": ce["final_over_max_sharpness"] < 0.8,
        "square_sharpness_stays": sq["final_over_max_sharpness"] > 0.9,
        "time": clock.read(),
        "quick": quick,
    }
    record = {
        "experiment": NAME,
        "summary": summary,
        "loss_runs": loss_runs,
        "optimizer_runs": opt_runs,
        "environment": common.environment(),
    }
    json_path = common.save_json(record, out_dir / f"{NAME}.json")
    return {
        "summary": summary,
        "loss_runs": loss_runs,
        "optimizer_runs": opt_runs,
        "figure": figure,
        "json": json_path,
    }


if __name__ == "__main__":
    common.run_cli(main, __doc__.splitlines()[0])
