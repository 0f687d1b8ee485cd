"""Larger batches end in sharper places (Keskar et al. 2017; Yao et al. 2018).

A tanh MLP 64-128-128-10 is trained on the digits training split with plain
SGD (``torch.optim.SGD``, lr 0.1, no momentum) and the square loss
½‖f − onehot(y)‖², at batch sizes 8, 64 and the full batch, each until the
full training loss first falls to the same target. At that *matched* training
loss the sharpness (top Hessian eigenvalue of the full training loss, by
critpoint's Lanczos) is compared. Expected (papers.md §5): it grows with the
batch size — about 7 at batch 8 against 17–19 for full-batch GD, which the
edge of stability caps at 2/η = 20.

    python experiments/batch_size.py [--out DIR] [--quick]
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FormatStrFormatter, NullFormatter

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

NAME = "batch_size"
LR = 0.1
BATCH_SIZES = (8, 64, None)  # None: the full batch
#: Rough step counts to the target loss (seed 0), only to space the tracking points.
EXPECTED_STEPS = {
    0.05: {8: 2400, 64: 1500, None: 1300},
    0.02: {8: 5800, 64: 3700, None: 3300},
}


def run(
    batch_size: int | None, seed: int, target: float, track_points: int
) -> dict[str, Any]:
    data = load_data("digits", split="train")
    n = len(data)
    model = build_model("mlp", widths=[128, 128], activation="tanh", seed=seed)
    per_epoch = 1 if batch_size is None else n // batch_size
    expected = EXPECTED_STEPS[target][batch_size]
    history = train(
        model,
        data,
        loss=common.square_loss,
        optimizer="sgd",
        lr=LR,
        batch_size=batch_size,
        drop_last=True,
        steps=50 * expected,  # an upper bound; stop_loss ends the run
        seed=seed,
        stop_loss=target,
        eval_every=5 if batch_size != 8 else 20,
        track={"sharpness"},
        track_every=max(1, expected // track_points) if track_points else 10**9,
        track_tol=1e-3,
    )
    if history.stop_reason != "stop_loss":
        msg = f"batch size {batch_size}: the loss never reached {target}"
        raise RuntimeError(msg)
    # The full loss at each tracking point (tracking points are evaluation points
    # only when they coincide; evaluate the curve at the nearest evaluation).
    eval_steps = np.asarray(history.eval_step)
    full = np.asarray(history.full_loss)
    track_loss = [
        float(full[np.argmin(np.abs(eval_steps - s))]) for s in history.track_step
    ]
    return {
        "batch_size": n if batch_size is None else batch_size,
        "full_batch": batch_size is None,
        "seed": seed,
        "steps": history.num_steps,
        "epochs": history.num_steps / per_epoch,
        "final_loss": history.final_loss,
        "final_accuracy": history.accuracy[-1],
        "sharpness": history.final_sharpness,
        "track_step": history.track_step,
        "track_sharpness": history.sharpness,
        "track_loss": track_loss,
    }


def plot(runs: list[dict[str, Any]], target: float, path: Path) -> None:
    fig, (ax1, ax2) = common.new_figure(2, width=4.8)
    sizes = sorted({r["batch_size"] for r in runs})
    for i, bs in enumerate(sizes):
        color, ls, marker = common.STYLES[i]
        r = next(
            r for r in runs if r["batch_size"] == bs and r["seed"] == runs[0]["seed"]
        )
        name = f"batch {bs}" + (" (full)" if r["full_batch"] else "")
        ax1.plot(
            r["track_loss"],
            r["track_sharpness"],
            color=color,
            ls=ls,
            marker=marker,
            ms=4,
            lw=1.3,
            label=name,
        )
        per_seed = [(r["seed"], r["sharpness"]) for r in runs if r["batch_size"] == bs]
        for j, (_, value) in enumerate(per_seed):
            ax2.plot(
                bs,
                value,
                ls="none",
                marker=marker,
                ms=7,
                color=color,
                mfc=color if j == 0 else "white",
                label=name if j == 0 else None,
            )
    ax1.set_xscale("log")
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax1.set_xticks([t for t in (0.02, 0.05, 0.1, 0.2, 0.5) if t >= target])
    ax1.invert_xaxis()
    ax1.axvline(target, color="0.6", ls=":", lw=1)
    ax1.axhline(2 / LR, color="0.6", ls="--", lw=1)
    ax1.text(
        0.02,
        2 / LR,
        "2/η",
        transform=ax1.get_yaxis_transform(),
        va="bottom",
        fontsize=8,
    )
    common.panel_label(ax1, "a")
    ax1.set_title("Sharpness along training (seed 0)", fontsize=10)
    ax1.set_xlabel("full training loss (log scale; training runs →)")
    ax1.set_ylabel("sharpness λ_max (loss / param²)")
    ax1.legend(fontsize=8, loc="center left")
    medians = [
        float(np.median([r["sharpness"] for r in runs if r["batch_size"] == bs]))
        for bs in sizes
    ]
    ax2.plot(sizes, medians, color="0.5", lw=1, zorder=0)
    ax2.axhline(2 / LR, color="0.6", ls="--", lw=1)
    ax2.text(
        0.02,
        2 / LR,
        "2/η (edge of stability)",
        transform=ax2.get_yaxis_transform(),
        va="bottom",
        fontsize=8,
    )
    ax2.set_xscale("log")
    ax2.set_ylim(0, 2 / LR * 1.15)
    common.panel_label(ax2, "b")
    ax2.set_title(f"At matched training loss {target:g}", fontsize=10)
    ax2.set_xlabel("batch size (samples, log scale)")
    ax2.set_ylabel("sharpness λ_max (loss / param²)")
    seeds = sorted({r["seed"] for r in runs})
    ax2.legend(
        fontsize=8,
        loc="lower right",
        title=f"filled: seed {seeds[0]}, open: seed {seeds[1]}"
        if len(seeds) > 1
        else None,
        title_fontsize=7,
    )
    common.save_figure(fig, path)


def main(
    out_dir: Path | str = common.DEFAULT_OUT, quick: bool = False
) -> dict[str, Any]:
    common.setup_torch()
    clock = common.Clock()
    out_dir = Path(out_dir)
    target = 0.05 if quick else 0.02
    seeds = [0] if quick else [0, 1]
    runs = [
        run(
            bs,
            seed,
            target,
            track_points=(2 if quick else 8) if seed == seeds[0] else 0,
        )
        for seed in seeds
        for bs in BATCH_SIZES
    ]
    figure = out_dir / f"{NAME}.png"
    plot(runs, target, figure)
    per_seed = {}
    for seed in seeds:
        values = [r["sharpness"] for r in runs if r["seed"] == seed]
        per_seed[str(seed)] = {
            "batch_sizes": [r["batch_size"] for r in runs if r["seed"] == seed],
            "sharpness": values,
            "final_loss": [r["final_loss"] for r in runs if r["seed"] == seed],
            "monotone": bool(all(a < b for a, b in itertools.pairwise(values))),
            "smallest_over_full": values[0] / values[-1],
        }
    summary = {
        "target_loss": target,
        "lr": LR,
        "per_seed": per_seed,
        "pass_monotone": all(s["monotone"] for s in per_seed.values()),
        "pass_small_lt_0.6_full": all(
            s["smallest_over_full"] < 0.6 for s in per_seed.values()
        ),
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
