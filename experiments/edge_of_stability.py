"""Edge of stability (Cohen et al. 2021): full-batch GD drives the sharpness to 2/η.

A tanh MLP 64-200-200-10 is trained by full-batch gradient descent
(``torch.optim.SGD``, no momentum) with the square loss ½‖f − onehot(y)‖² on
1000 standardised digits. ``critpoint.training.train`` tracks the sharpness
(top Hessian eigenvalue of the full training loss, Lanczos on exact HVPs)
every few steps. Expected (papers.md §4): the sharpness rises
("progressive sharpening") until it reaches 2/η, then hovers there while the
loss keeps falling over long horizons but not monotonically.

The quadratic control: linear least squares on scikit-learn's diabetes data,
whose loss is exactly quadratic with Hessian 2AᵀA/n. GD with η = 0.99·2/λ_max
converges; with η = 1.01·2/λ_max it diverges.

    python experiments/edge_of_stability.py [--out DIR] [--quick]
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import critpoint as cp
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

NAME = "edge_of_stability"


def run_gd(eta: float, steps: int, track_every: int, seed: int = 0) -> dict[str, Any]:
    """Full-batch GD on the tanh MLP; sharpness tracked every ``track_every`` steps."""
    data = load_data("digits", split="train").subset(1000)
    model = build_model("mlp", widths=[200, 200], activation="tanh", seed=seed)
    history = train(
        model,
        data,
        loss=common.square_loss,
        optimizer="sgd",
        lr=eta,
        batch_size=None,
        steps=steps,
        seed=seed,
        track={"sharpness"},
        track_every=track_every,
        track_tol=1e-2,
        eval_every=steps,  # full batch: history.loss is already the full loss
    )
    edge = 2.0 / eta
    steps_t = np.asarray(history.track_step)
    sharp = np.asarray(history.sharpness)
    crossed = np.flatnonzero(sharp >= 0.95 * edge)
    t_cross = int(steps_t[crossed[0]]) if crossed.size else None
    out: dict[str, Any] = {
        "eta": eta,
        "two_over_eta": edge,
        "steps": steps,
        "num_params": history.settings["num_params"],
        "sharpness_init": float(sharp[0]),
        "first_step_above_0.95_edge": t_cross,
        "track_step": history.track_step,
        "sharpness": history.sharpness,
        "track_matvecs": history.track_matvecs,
        "loss": [*history.loss, history.final_loss],
        "final_loss": history.final_loss,
    }
    if t_cross is not None:
        # "Hovering": the tracked values from 100 steps after the first crossing on.
        late = sharp[steps_t >= t_cross + 100]
        loss = np.asarray(out["loss"])
        after = loss[t_cross:]
        out.update(
            hover_from_step=t_cross + 100,
            hover_median_over_edge=float(np.median(late) / edge) if late.size else None,
            hover_min_over_edge=float(late.min() / edge) if late.size else None,
            hover_max_over_edge=float(late.max() / edge) if late.size else None,
            loss_at_crossing=float(loss[t_cross]),
            loss_increases_after_crossing=int((np.diff(after) > 0).sum()),
            loss_falls_overall=bool(loss[-1] < loss[t_cross]),
        )
        window = sharp[steps_t >= 1000]
        if window.size:  # papers.md §4's window: every value in [0.95, 1.10]·2/η
            out.update(
                from_step_1000_min_over_edge=float(window.min() / edge),
                from_step_1000_max_over_edge=float(window.max() / edge),
            )
    return out


def run_quadratic(steps: int) -> dict[str, Any]:
    """GD on least squares (diabetes): η just below and just above 2/λ_max."""
    from sklearn.datasets import load_diabetes  # bundled, no download

    x_np, y_np = load_diabetes(return_X_y=True)
    x = torch.from_numpy((x_np - x_np.mean(0)) / x_np.std(0))
    y = torch.from_numpy((y_np - y_np.mean()) / y_np.std()).reshape(-1, 1)
    model = build_model(
        "mlp", in_features=10, widths=(), out_features=1, seed=0, dtype="float64"
    )
    start = {k: v.clone() for k, v in model.state_dict().items()}
    obj = cp.Objective(model, torch.nn.functional.mse_loss, (x, y))
    top = cp.eigsh(obj.hessian(), k=1, which="LA", tol=1e-12)
    lam = float(top.eigenvalues[-1])
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    lam_closed = float(torch.linalg.eigvalsh(2 * a.T @ a / len(x))[-1])
    best = torch.linalg.lstsq(a, y).solution
    optimum = float(((a @ best - y) ** 2).mean())
    runs = {}
    for factor in (0.99, 1.01):
        model.load_state_dict(start)
        history = train(
            model,
            (x, y),
            loss="mse",
            optimizer="sgd",
            lr=factor * 2.0 / lam,
            steps=steps,
            eval_every=steps,
        )
        loss = [*history.loss, history.final_loss]
        runs[f"{factor:.2f}"] = {
            "lr": factor * 2.0 / lam,
            "loss": loss,
            "final_loss": history.final_loss,
            "monotone": bool(np.all(np.diff(loss) <= 0)),
        }
    below, above = runs["0.99"], runs["1.01"]
    return {
        "lambda_max": lam,
        "lambda_max_closed_form": lam_closed,
        "lambda_max_matvecs": top.num_matvecs,
        "optimum_loss": optimum,
        "steps": steps,
        "runs": runs,
        "below_converges": bool(
            below["monotone"] and below["final_loss"] - optimum < 1e-3 * optimum
        ),
        "above_diverges": bool(above["final_loss"] > 1e6 * above["loss"][0]),
    }


def plot(gd_runs: list[dict[str, Any]], quad: dict[str, Any], path: Path) -> None:
    fig, (ax1, ax2, ax3) = common.new_figure(3)
    for i, run in enumerate(gd_runs):
        color, ls, marker = common.STYLES[i]
        label = f"η = {run['eta']:g}"
        ax1.plot(
            run["track_step"],
            run["sharpness"],
            color=color,
            ls=ls,
            marker=marker,
            ms=3,
            lw=1.3,
            label=f"{label}: sharpness",
        )
        ax1.axhline(run["two_over_eta"], color=color, ls=(0, (1, 2)), lw=1)
        ax1.text(
            0.02,
            run["two_over_eta"],
            f"2/η = {run['two_over_eta']:g}",
            transform=ax1.get_yaxis_transform(),
            va="bottom",
            fontsize=8,
        )
        ax2.semilogy(
            np.arange(len(run["loss"])),
            run["loss"],
            color=color,
            ls=ls,
            lw=1.1,
            label=label,
        )
    common.panel_label(ax1, "a")
    ax1.set_title("Sharpness under full-batch GD", fontsize=10)
    ax1.set_xlabel("GD step")
    ax1.set_ylabel("sharpness λ_max (loss / param²)")
    ax1.legend(fontsize=8, loc="lower right")
    common.panel_label(ax2, "b")
    ax2.set_title("Training loss (non-monotone at the edge)", fontsize=10)
    ax2.set_xlabel("GD step")
    ax2.set_ylabel("training loss ½‖f − onehot(y)‖²")
    ax2.legend(fontsize=8)
    for i, (factor, run) in enumerate(quad["runs"].items()):
        color, ls, _ = common.STYLES[i]
        excess = np.asarray(run["loss"]) - quad["optimum_loss"]
        ax3.semilogy(
            np.arange(len(excess)),
            np.maximum(excess, 1e-16),
            color=color,
            ls=ls,
            lw=1.5,
            label=f"η = {factor}·2/λ_max",
        )
    common.panel_label(ax3, "c")
    ax3.set_title(
        f"Quadratic (least squares, λ_max = {quad['lambda_max']:.3f})", fontsize=10
    )
    ax3.set_xlabel("GD step")
    ax3.set_ylabel("excess loss L − L* (mean squared error)")
    ax3.legend(fontsize=8)
    common.save_figure(fig, path)


def main(
    out_dir: Path | str = common.DEFAULT_OUT, quick: bool = False
) -> dict[str, Any]:
    common.setup_torch()
    clock = common.Clock()
    out_dir = Path(out_dir)
    if quick:
        configs = [(0.2, 600, 50)]
        quad_steps = 1000
    else:
        configs = [(0.2, 1500, 50), (0.4, 600, 25)]
        quad_steps = 3000
    gd_runs = [run_gd(eta, steps, every) for eta, steps, every in configs]
    quad = run_quadratic(quad_steps)
    figure = out_dir / f"{NAME}.png"
    plot(gd_runs, quad, figure)
    summary = {
        "gd": [
            {
                k: v
                for k, v in run.items()
                if k not in ("loss", "track_step", "sharpness", "track_matvecs")
            }
            for run in gd_runs
        ],
        "quadratic": {
            "lambda_max": quad["lambda_max"],
            "lambda_max_closed_form": quad["lambda_max_closed_form"],
            "final_loss_0.99": quad["runs"]["0.99"]["final_loss"],
            "final_loss_1.01": quad["runs"]["1.01"]["final_loss"],
            "optimum_loss": quad["optimum_loss"],
            "below_converges": quad["below_converges"],
            "above_diverges": quad["above_diverges"],
        },
        "median_track_matvecs": statistics.median(
            m for run in gd_runs for m in run["track_matvecs"]
        ),
        "time": clock.read(),
        "quick": quick,
    }
    record = {
        "experiment": NAME,
        "summary": summary,
        "gd_runs": [{k: v for k, v in run.items() if k != "loss"} for run in gd_runs],
        "gd_loss_every_10_steps": [run["loss"][::10] for run in gd_runs],
        "quadratic": {k: v for k, v in quad.items() if k != "runs"},
        "environment": common.environment(),
    }
    json_path = common.save_json(record, out_dir / f"{NAME}.json")
    return {
        "summary": summary,
        "gd_runs": gd_runs,
        "quadratic": quad,
        "figure": figure,
        "json": json_path,
    }


if __name__ == "__main__":
    common.run_cli(main, __doc__.splitlines()[0])
