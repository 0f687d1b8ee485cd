"""``critpoint demo``: :func:`critpoint.demo.run_demo`, and its summary printed."""

from __future__ import annotations

import time
from pathlib import Path

import click

from critpoint_cli.commands._common import stage, start
from critpoint_cli.options import get_state, global_options


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
    from critpoint.report.text import field_line, num, ratio_text

    state = get_state(ctx)
    start(state)
    t0 = time.perf_counter()

    from critpoint.demo import INIT_SCALE, run_demo
    from critpoint.specs import parse_dtype
    from critpoint_cli.loading import resolve_device

    result = run_demo(
        out_dir,
        steps=steps,
        lr=lr,
        quick=quick,
        seed=state.seed,
        device=resolve_device(state.device),
        dtype=parse_dtype(state.dtype),
        progress=state.show_progress(),
        stage=lambda text: stage(state, text),
    )
    elapsed = time.perf_counter() - t0

    out = Path(out_dir)
    history = result.history
    lines = [
        f"Demo: MLP 64 → {result.width} → 10 ({result.num_params:,} parameters) "
        f"on digits ({result.num_samples:,} samples), gradient descent with η = {lr:g} "
        f"from weights × {INIT_SCALE:g}.",
        "",
    ]
    for point in result.points:
        d = point.diagnosis
        lines.append(
            field_line(point.label.capitalize(), f"step {point.step}: {d.headline()}")
        )
        lines.append(
            field_line(
                "",
                f"loss {num(d.loss, 4)}, gradient norm {num(d.grad_norm, 3)}, "
                f"λ_min {num(d.lambda_min, 4)}, λ_max {num(d.lambda_max, 4)}, "
                f"minimum ratio {ratio_text(d)}",
            )
        )
    train_acc, test_acc = history.final_accuracy, history.final_test_accuracy
    if train_acc is not None and test_acc is not None:
        lines.append(
            field_line(
                "Accuracy",
                f"{100 * train_acc:.1f}% train, {100 * test_acc:.1f}% test",
            )
        )
    lines += [
        "",
        field_line("Report", str(result.report)),
        field_line("Checkpoint", str(out / "model.ckpt")),
        field_line("Next", f"critpoint diagnose {out / 'model.ckpt'}"),
        field_line("", f"critpoint escape {out / 'stalled.ckpt'} -o escaped.ckpt")
        if result.stalled_checkpoint is not None
        else "",
        "",
        f"Done in {elapsed:.1f} s.",
    ]
    if not state.quiet:
        click.echo("\n".join(lines))
