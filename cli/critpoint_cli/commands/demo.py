"""``critpoint demo``: train the demo MLP, diagnose three points, write one report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from critpoint_cli.commands._common import plain, stage, start
from critpoint_cli.options import get_state, global_options

#: Initial weights are the default ones times this: gradient descent then
#: starts next to the saddle at the origin and stalls there for a while.
INIT_SCALE = 1e-4


@click.command()
@click.option(
    "-o",
    "--output",
    "out_dir",
    metavar="DIR",
    default="critpoint-demo",
    show_default=True,
    help="Directory for the report, the checkpoints and the figures.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=20),
    default=400,
    show_default=True,
    help="Gradient-descent steps.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Learning rate η of gradient descent.",
)
@click.option(
    "--quick",
    is_flag=True,
    default=False,
    hidden=True,
    help="A much smaller run (tests): fewer samples, a narrower net, coarser figures.",
)
@global_options
@click.pass_context
def demo(ctx: click.Context, out_dir: str, steps: int, lr: float, quick: bool) -> None:
    """The main job on built-in data: train, diagnose three points, write one report.

    Trains a small MLP (64 → 32 → 10, ReLU) on the 8×8 digits by full-batch
    gradient descent from a small initialisation (the default weights × 10⁻⁴),
    so that it first stalls next to the saddle at the origin. It diagnoses the
    point at initialisation, the stalled point (the smallest gradient on the
    plateau) and the end of training, and writes to DIR:

    \b
      report.html      the report comparing the three points (self-contained)
      diagnosis.json   its numbers (re-render with `critpoint report`)
      *.png            the figures
      model.ckpt       the trained model  (try `critpoint diagnose DIR/model.ckpt`)
      stalled.ckpt     the stalled point  (try `critpoint escape DIR/stalled.ckpt -o x.ckpt`)
    """  # noqa: D301 (click's \b marks a verbatim block)
    state = get_state(ctx)
    start(state)
    t0 = time.perf_counter()

    import copy

    import torch

    import critpoint as cp
    from critpoint.checkpoint import save_checkpoint
    from critpoint.data import get_loss, load_data
    from critpoint.models import build_model
    from critpoint.report import ReportEntry, build_report
    from critpoint.report.text import field_line, num
    from critpoint.surface import landscape
    from critpoint.training import train
    from critpoint_cli.loading import resolve_device, resolve_dtype

    out = Path(out_dir)
    seed = state.seed
    device = resolve_device(state.device)
    dtype = resolve_dtype(state.dtype) or torch.float32
    progress = state.show_progress()
    width = 8 if quick else 32
    model_kwargs: dict[str, Any] = {"widths": [width], "activation": "relu"}
    net = build_model("mlp", seed=seed, **model_kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(INIT_SCALE)
    net = net.to(device=device, dtype=dtype)
    data = load_data("digits", dtype=dtype)
    test = load_data("digits", split="test", dtype=dtype)
    data_spec: dict[str, Any] = {"name": "digits", "kwargs": {}}
    sizes: dict[str, Any] = {}
    lands: dict[str, Any] = {}
    if quick:
        data = data.subset(200, seed=seed)
        test = test.subset(100, seed=seed)
        data_spec.update(max_samples=200, subset_seed=seed)
        sizes = {"num_probes": 4, "num_steps": 20, "trace_max_matvecs": 12}
        lands = {"num": 9, "plane_num": 7}
    loss_fn = get_loss("cross_entropy")

    def objective(model: torch.nn.Module) -> cp.Objective:
        return cp.Objective(model, loss_fn, data.as_tuple(), device=device, dtype=dtype)

    def examine(model: torch.nn.Module) -> tuple[Any, Any]:
        obj = objective(model)
        dg = cp.diagnose(obj, seed=seed, progress=progress, **sizes)
        land = landscape(obj, dg, seed=seed, progress=progress, **lands)
        return dg, land

    points: list[tuple[str, int, Any, Any]] = []
    with stage(state, "diagnosing the initialisation"):
        dg, land = examine(net)
        points.append(("initialisation", 0, dg, land))

    # The stalled point: the smallest full-batch gradient while the loss is
    # still on the plateau it started on (θ_k is saved before update k).
    loss0 = dg.loss
    snapshot = {"step": 0, "state": copy.deepcopy(net.state_dict())}
    best: dict[str, Any] = {"grad": float("inf"), "step": None, "state": None}

    def watch(k: int, history: Any) -> None:
        if history.loss[k] > 0.98 * loss0 and history.grad_norm[k] < best["grad"]:
            best.update(grad=history.grad_norm[k], step=k, state=snapshot["state"])
        snapshot.update(step=k + 1, state=copy.deepcopy(net.state_dict()))

    with stage(state, f"training ({steps} steps of gradient descent)"):
        history = train(
            net,
            data,
            loss="cross_entropy",
            optimizer="sgd",
            lr=lr,
            steps=steps,
            seed=seed,
            track={"sharpness", "lambda_min"},
            track_every=max(1, steps // 10),
            test_data=test,
            progress=progress,
            callback=watch,
        )
    if best["state"] is not None:
        stalled = copy.deepcopy(net)
        stalled.load_state_dict(best["state"])
        with stage(state, f"diagnosing the stalled point (step {best['step']})"):
            dg, land = examine(stalled)
            points.append(("stalled", int(best["step"]), dg, land))
        save_checkpoint(
            out / "stalled.ckpt",
            stalled,
            data_spec=data_spec,
            loss="cross_entropy",
            meta={"demo": "stalled point", "step": int(best["step"]), "seed": seed},
        )
    with stage(state, "diagnosing the end of training"):
        dg, land = examine(net)
        points.append(("end", history.num_steps, dg, land))

    settings = {
        "command": "demo",
        "model": net.critpoint_spec,
        "init_scale": INIT_SCALE,
        "data": data_spec,
        "test_data": {"name": "digits", "kwargs": {"split": "test"}},
        "quick": quick,
        "num_samples": len(data),
        "loss": "cross_entropy",
        "optimizer": "sgd",
        "lr": lr,
        "steps": steps,
        "seed": seed,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "checkpoint": str(out / "model.ckpt"),
    }
    save_checkpoint(
        out / "model.ckpt",
        net,
        data_spec=data_spec,
        loss="cross_entropy",
        history=plain(history.to_dict()),
        meta=plain({"demo": settings}),
    )
    with stage(state, "writing the report"):
        page = build_report(
            [ReportEntry(label, d, ls, step) for label, step, d, ls in points],
            out,
            history=history.to_dict(),
            title="critpoint demo: an MLP on the digits, from initialisation to the end of training",
            settings=settings,
            dpi=50 if quick else 110,
        )
    elapsed = time.perf_counter() - t0

    lines = [
        f"Demo: MLP 64 → {width} → 10 ({sum(p.numel() for p in net.parameters()):,} parameters) "
        f"on digits ({len(data):,} samples), gradient descent with η = {lr:g} from weights × "
        f"{INIT_SCALE:g}.",
        "",
    ]
    for label, step, d, _ in points:
        lines.append(
            field_line(f"{label.capitalize()}", f"step {step}: {d.headline()}")
        )
        lines.append(
            field_line(
                "",
                f"loss {num(d.loss, 4)}, gradient norm {num(d.grad_norm, 3)}, "
                f"λ_min {num(d.lambda_min, 4)}, λ_max {num(d.lambda_max, 4)}, "
                f"minimum ratio {num(d.minimum_ratio, 4)}",
            )
        )
    if history.test_accuracy:
        lines.append(
            field_line(
                "Accuracy",
                f"{100 * history.accuracy[-1]:.1f}% train, {100 * history.test_accuracy[-1]:.1f}% test",
            )
        )
    lines += [
        "",
        field_line("Report", str(page)),
        field_line("Checkpoint", str(out / "model.ckpt")),
        field_line("Next", f"critpoint diagnose {out / 'model.ckpt'}"),
        field_line("", f"critpoint escape {out / 'stalled.ckpt'} -o escaped.ckpt")
        if best["state"] is not None
        else "",
        "",
        f"Done in {elapsed:.1f} s.",
    ]
    if not state.quiet:
        click.echo("\n".join(line for line in lines if line is not None))
