"""``critpoint escape CHECKPOINT -o OUT``: step along negative curvature, save the result."""

from __future__ import annotations

import time
from typing import Any

import click

from critpoint_cli.commands._common import check_paths, spec_files, stage, start
from critpoint_cli.options import get_state, global_options, json_option, model_options


@click.command()
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.option(
    "-o",
    "--output",
    "out_path",
    metavar="OUT",
    required=True,
    help="Where to write the moved checkpoint (a critpoint checkpoint; .safetensors works too).",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most escape steps; stops earlier once no clearly negative curvature is left.",
)
@click.option(
    "--max-step",
    "max_step",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Longest single step (Euclidean norm in parameter space). "
    "[default: √(2·loss/|λ_min|), then backtracking]",
)
@click.option(
    "--params",
    "params",
    multiple=True,
    metavar="GLOB",
    help="Move only the parameters matching GLOB (repeat for several).",
)
@model_options
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=2),
    default=6,
    show_default=True,
    help="Eigenpairs to find, from both ends (as `critpoint diagnose -k`: the same "
    "solve, so a step is taken exactly where diagnose offers an escape direction).",
)
@click.option(
    "--tol",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-4,
    show_default=True,
    help="Relative residual tolerance of the eigensolver.",
)
@json_option
@global_options
@click.pass_context
def escape(
    ctx: click.Context,
    checkpoint: str,
    out_path: str,
    max_steps: int,
    max_step: float | None,
    params: tuple[str, ...],
    model: str | None,
    model_kwargs: dict[str, Any] | None,
    data: str | None,
    data_kwargs: dict[str, Any] | None,
    loss: str | None,
    batch_loss: str | None,
    batch_size: int | None,
    max_samples: int | None,
    trust_checkpoint: bool,
    k: int,
    tol: float,
    json_path: str | None,
) -> None:
    """Leave a saddle: step along the most negative curvature while there is some.

    Each step finds the eigenvector of the most negative Hessian eigenvalue,
    orients it downhill and moves along it as far as the real loss keeps
    falling (backtracking on the quadratic model's prediction). The moved
    model is written to OUT with the loss before and after, even when no step
    was taken.

    \b
    Example:
      critpoint escape critpoint-demo/stalled.ckpt -o escaped.ckpt
      critpoint diagnose escaped.ckpt
    """  # noqa: D301 (click's \b marks a verbatim block)
    from critpoint_cli.render import Output

    state = get_state(ctx)
    start(state)
    out = Output(json_path, state.quiet)
    t0 = time.perf_counter()

    import critpoint as cp
    from critpoint.io.checkpoint import save_checkpoint
    from critpoint.report.text import escape_text, field_line
    from critpoint_cli import loading

    outputs = [("-o", out_path), ("--json", json_path)]
    inputs = [
        ("the checkpoint", checkpoint),
        *spec_files(model=model, data=data, loss=loss, batch_loss=batch_loss),
    ]
    check_paths(outputs, inputs)
    setup = loading.load_setup(
        state,
        checkpoint,
        model,
        model_kwargs,
        data,
        data_kwargs,
        loss,
        batch_size,
        max_samples,
        trust_checkpoint,
        batch_loss=batch_loss,
    )
    check_paths(outputs, spec_files(data=setup.data_spec["name"]))
    obj = setup.objective(list(params) or None)
    with stage(state, "escape steps"):
        run = cp.escape_until(
            obj,
            max_steps,
            max_step,
            state.seed,
            k=k,
            tol=tol,
            progress=state.show_progress(),
        )

    ckpt = setup.checkpoint
    meta = dict(ckpt.meta) if ckpt is not None else {}
    meta["escape"] = {
        "from": checkpoint,
        "loss_before": run.loss_before,
        "loss_after": run.loss_after,
        "steps": [s.to_dict() for s in run.steps],
        "seed": state.seed,
    }
    save_checkpoint(
        out_path,
        setup.model,
        model_spec=loading.model_spec_for(out_path, setup.model_spec),
        data_spec=loading.data_spec_for(out_path, setup.data_spec),
        loss=loading.loss_for(out_path, setup.loss_name),
        history=ckpt.history if ckpt is not None else None,
        meta=meta,
    )
    elapsed = time.perf_counter() - t0

    document = run.to_dict()
    document.update(
        checkpoint=checkpoint,
        output=out_path,
        settings={
            **setup.settings,
            **run.settings,
            "command": "escape",
            "param_globs": list(params) or None,
            "output": out_path,
        },
        elapsed_seconds=round(elapsed, 3),
    )
    out.json(document)

    lines = [f"{checkpoint}: {setup.describe()}", "", escape_text(run)]
    lines.append(field_line("Written", out_path))
    lines.append(field_line("Next", f"critpoint diagnose {out_path}"))
    out.result("\n".join(lines))
    out.written()
