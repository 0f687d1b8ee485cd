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
    from critpoint_cli.render import Output, field_line, num

    state = get_state(ctx)
    start(state)
    out = Output(json_path, state.quiet)
    t0 = time.perf_counter()

    import critpoint as cp
    from critpoint.io.checkpoint import save_checkpoint
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
    steps = []
    loss_before = None
    with stage(state, "escape steps"):
        for i in range(max_steps):
            step = cp.escape_saddle(
                obj, max_step=max_step, seed=state.seed + i, k=k, tol=tol
            )
            if loss_before is None:
                loss_before = step.loss_before
            steps.append(step)
            if not step.taken:
                break
    assert loss_before is not None
    loss_after = steps[-1].loss_after
    taken = [s for s in steps if s.taken]

    ckpt = setup.checkpoint
    meta = dict(ckpt.meta) if ckpt is not None else {}
    meta["escape"] = {
        "from": checkpoint,
        "loss_before": loss_before,
        "loss_after": loss_after,
        "steps": [s.to_dict() for s in steps],
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

    document = {
        "schema": "critpoint.escape",
        "schema_version": 1,
        "critpoint_version": cp.__version__,
        "torch_version": _torch_version(),
        "checkpoint": checkpoint,
        "output": out_path,
        "loss_before": loss_before,
        "loss_after": loss_after,
        "num_steps_taken": len(taken),
        "steps": [s.to_dict() for s in steps],
        "settings": {
            **setup.settings,
            "command": "escape",
            "param_globs": list(params) or None,
            "max_steps": max_steps,
            "max_step": max_step,
            "k": k,
            "tol": tol,
            "output": out_path,
        },
        "elapsed_seconds": round(elapsed, 3),
    }
    out.json(document)

    lines = [f"{checkpoint}: {setup.describe()}", ""]
    for i, s in enumerate(steps, 1):
        if s.taken:
            lines.append(
                field_line(
                    f"Step {i}",
                    f"λ_min = {num(s.eigenvalue, 4)} ± {num(s.eigenvalue_error, 2)}; moved "
                    f"{num(s.step_size, 4)}; loss {num(s.loss_before)} → {num(s.loss_after)} "
                    f"(predicted change {num(s.predicted_change, 4)}, actual {num(s.actual_change, 4)})",
                )
            )
        else:
            lines.append(field_line(f"Step {i}", f"stopped: {s.reason}."))
    lines.append("")
    lines.append(
        field_line(
            "Loss",
            f"{num(loss_before)} → {num(loss_after)} after {len(taken)} escape "
            f"step{'s' if len(taken) != 1 else ''}",
        )
    )
    lines.append(field_line("Written", out_path))
    lines.append(field_line("Next", f"critpoint diagnose {out_path}"))
    out.result("\n".join(lines))
    out.written()


def _torch_version() -> str:
    import torch

    return str(torch.__version__)
