"""``critpoint diagnose CHECKPOINT``: minimum, saddle or flat, with error bars."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from critpoint_cli.commands._common import (
    check_paths,
    escaped_name,
    shell_command,
    spec_files,
    stage,
    start,
)
from critpoint_cli.options import (
    get_state,
    global_options,
    json_option,
    model_options,
    solver_options,
)


@click.command()
@click.argument("checkpoint", metavar="CHECKPOINT")
@model_options
@click.option(
    "--params",
    "params",
    multiple=True,
    metavar="GLOB",
    help="Diagnose only the parameters matching GLOB (repeat for several), e.g. 'net.0.*'.",
)
@click.option(
    "--per-layer",
    is_flag=True,
    default=False,
    help="Also diagnose each layer's parameters on their own and tabulate them.",
)
@solver_options
@json_option
@click.option(
    "--report",
    "report_dir",
    metavar="DIR",
    default=None,
    help="Write a report to DIR: report.html (self-contained), diagnosis.json, figures (PNG), "
    "with loss slices along the extreme eigenvectors.",
)
@global_options
@click.pass_context
def diagnose(
    ctx: click.Context,
    checkpoint: str,
    model: str | None,
    model_kwargs: dict[str, Any] | None,
    data: str | None,
    data_kwargs: dict[str, Any] | None,
    loss: str | None,
    batch_loss: str | None,
    batch_size: int | None,
    max_samples: int | None,
    trust_checkpoint: bool,
    params: tuple[str, ...],
    per_layer: bool,
    k: int,
    tol: float,
    max_matvecs: int | None,
    density: bool,
    trace: bool,
    json_path: str | None,
    report_dir: str | None,
) -> None:
    """Diagnose the point a checkpoint sits at: minimum, saddle, maximum or degenerate.

    CHECKPOINT is a file written by `critpoint train` or critpoint.save_checkpoint
    (it knows its model, data and loss), a plain state dict / safetensors /
    Lightning .ckpt file given with --model and --data, or a Hugging Face
    save_pretrained folder given with --data (read with transformers).

    \b
    Examples:
      critpoint diagnose critpoint-demo/model.ckpt
      critpoint diagnose weights.pt --model my_model.py:make --data data.npz --loss mse
      critpoint diagnose model.ckpt --per-layer --report report/
      critpoint diagnose model.ckpt --json - | jq .kind
    """  # noqa: D301 (click's \b marks a verbatim block)
    from critpoint_cli.render import Output

    state = get_state(ctx)
    start(state)
    out = Output(json_path, state.quiet)
    t0 = time.perf_counter()

    import critpoint as cp
    from critpoint.errors import ConvergenceError, InputError
    from critpoint.report.document import diagnosis_document
    from critpoint.report.text import diagnosis_text, layer_table
    from critpoint_cli import loading

    outputs = [("--json", json_path)]
    inputs = [
        ("the checkpoint", checkpoint),
        *spec_files(model=model, data=data, loss=loss, batch_loss=batch_loss),
    ]
    check_paths(outputs, inputs, report_dir)
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
    # The checkpoint's own data file is known only now.
    check_paths(outputs, spec_files(data=setup.data_spec["name"]), report_dir)
    t_setup = time.perf_counter() - t0
    globs = list(params) or None
    obj = setup.objective(globs)
    given = ctx.get_parameter_source("k") is not click.core.ParameterSource.DEFAULT
    if given and k > obj.num_params:  # the default adapts to tiny models
        msg = (
            f"-k {k} asks for more eigenpairs than the {obj.num_params:,} parameters "
            f"diagnosed; give -k {obj.num_params} or less"
        )
        raise InputError(msg)
    progress = state.show_progress()
    options = {
        "k": k,
        "density": density,
        "trace": trace,
        "seed": state.seed,
        "progress": progress,
        "tol": tol,
        "max_matvecs": max_matvecs,
    }
    with stage(state, f"diagnosing {obj.num_params:,} parameters"):
        dg = cp.diagnose(obj, **options)

    layers = None
    if per_layer:
        groups = cp.layer_groups(setup.model, globs)
        with stage(state, f"diagnosing {len(groups)} layers"):
            # One batched pass over the data per step serves every layer's block.
            layers = cp.diagnose_layers(obj, groups, **options)

    land = None
    if report_dir is not None and obj.num_params >= 2:
        with stage(state, "loss slices along the extreme eigenvectors"):
            land = cp.landscape(obj, dg, seed=state.seed, tol=tol, progress=progress)
    elapsed = time.perf_counter() - t0

    settings = {
        **dg.settings,
        **setup.settings,
        "command": "diagnose",
        "param_globs": globs,
        "per_layer": per_layer,
        "k": k,
        "tol": tol,
        "max_matvecs": max_matvecs,
        "density": density,
        "trace": trace,
        "report": report_dir,
    }
    label = Path(checkpoint).name
    history = setup.checkpoint.history if setup.checkpoint is not None else None
    from critpoint.distributed import is_main, launched_by_torchrun

    if launched_by_torchrun():
        import torch.distributed as dist

        settings["world_size"] = dist.get_world_size()
        if not is_main():
            return  # every rank holds the same numbers; only rank 0 prints and writes

    if report_dir is not None:
        from critpoint.report import ReportEntry, build_report

        with stage(state, "writing the report"):
            page = build_report(
                [ReportEntry(label, dg, land)],
                report_dir,
                history=history,
                per_layer=layers,
                title=f"critpoint diagnosis of {label}",
                settings=settings,
            )

    document = diagnosis_document(
        dg,
        label=label,
        settings=settings,
        landscape=land,
        per_layer=layers,
        history=history,
        elapsed_seconds=round(elapsed, 3),
        per_layer_blocks=_blocks_summary(layers),
    )
    out.json(document)

    what = setup.describe()
    if globs:
        what += f"; parameters {', '.join(globs)} ({obj.num_params:,})"
    hint = None
    if dg.escape_direction is not None:
        extra = " (with the same --model/--data options)" if model or data else ""
        command = shell_command(
            "critpoint", "escape", checkpoint, "-o", escaped_name(checkpoint)
        )
        hint = f"Try: {command}{extra}"
    text = diagnosis_text(dg, header=f"{checkpoint}: {what}", hint=hint)
    if layers is not None:
        text += "\n\nPer layer (each layer's block of the Hessian on its own):\n"
        text += layer_table(layers)
        if getattr(layers, "heterogeneity", None) is not None:
            text += (
                f"\nHeterogeneity between the blocks' spectra: {layers.heterogeneity:.3f} "
                "(mean Jensen-Shannon distance of their densities, each scaled by its "
                "largest |eigenvalue|; 0 = the same shape, 1 = disjoint); "
                f"{layers.num_matvecs:,} products in {layers.num_passes:,} batched passes."
            )
    text += (
        f"\n\n{dg.num_matvecs:,} Hessian-vector products; {elapsed - t_setup:.1f} s "
        f"(+ {t_setup:.1f} s to load)."
    )
    out.result(text)
    if report_dir is not None:
        out.info(f"Report written to {page}")
    out.written()

    unconverged = [] if dg.converged else ["the whole model"]
    unconverged += [x.name for x in layers or [] if not x.diagnosis.converged]
    if unconverged:
        # Exit code 3: everything above was written; the error carries it.
        msg = (
            "the eigensolver did not converge for "
            + ", ".join(unconverged)
            + f" (tol {tol:g}); the results above use the looser bounds it reached. "
            "Raise --max-matvecs or loosen --tol."
        )
        raise ConvergenceError(msg, partial=document)


def _blocks_summary(layers: Any) -> dict[str, Any] | None:
    """What the layers' blocks share (heterogeneity, counts), for the JSON document."""
    if layers is None or getattr(layers, "spectra", None) is None:
        return None
    summary = layers.to_dict()
    summary.pop("layers")
    return summary
