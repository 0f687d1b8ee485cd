"""``critpoint diagnose CHECKPOINT``: minimum, saddle or flat, with error bars."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
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

#: Batches a ``--max-samples`` subset is split into (without ``--batch-size``), so
#: that the standard errors over batches of the verdict's numbers can be measured.
SAMPLED_BATCHES = 8


@click.command()
@click.argument("checkpoints", metavar="CHECKPOINT...", nargs=-1, required=True)
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
    help="Also diagnose each layer's block of the Hessian (all layers in one batched "
    "pass): λ_min, λ_max, trace and density per layer, a table, a figure and the "
    "heterogeneity between the layers' spectra.",
)
@solver_options
@click.option(
    "--memory",
    metavar="SIZE",
    default=None,
    help="Memory the diagnosis may take, e.g. 8GB or 512MiB; the Lanczos basis, the density's "
    "reorthogonalisation and the trace are chosen to fit, or it stops before starting. "
    "[default: half the free memory where it runs]",
)
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
def diagnose(ctx: click.Context, checkpoints: tuple[str, ...], **options: Any) -> None:
    """Diagnose the point a checkpoint sits at: minimum, saddle, maximum or degenerate.

    CHECKPOINT is a file written by `critpoint train` or critpoint.save_checkpoint
    (it knows its model, data and loss), a plain state dict / safetensors /
    Lightning .ckpt file given with --model and --data, or a Hugging Face
    save_pretrained folder given with --data (read with transformers).

    Several checkpoints (a training run's folder: run/*.pt) are diagnosed one
    by one with the same options and compared: a table with a row each, and
    with --report DIR one report of them all (the loss, λ_min, λ_max and the
    minimum ratio against the step stored in each checkpoint, or their
    order); --json writes that comparison's document.

    \b
    Examples:
      critpoint diagnose critpoint-demo/model.ckpt
      critpoint diagnose weights.pt --model my_model.py:make --data data.npz --loss mse
      critpoint diagnose model.ckpt --per-layer --report report/
      critpoint diagnose model.ckpt --json - | jq .kind
      critpoint diagnose run/step-*.pt --report run-report/
    """  # noqa: D301 (click's \b marks a verbatim block)
    if len(checkpoints) == 1:
        diagnose_one(ctx, checkpoints[0], **options)
        return
    from critpoint_cli.commands.compare import compare_checkpoints

    compare_checkpoints(ctx, checkpoints, diagnose_one, **options)


def diagnose_one(
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
    memory: str | None,
    json_path: str | None,
    report_dir: str | None,
    *,
    comparing: bool = False,
    repeats: int = 1,
) -> tuple[dict[str, Any], Any, list[str]] | None:
    """One checkpoint's diagnosis: computed, printed, written.

    ``comparing``: one of several (:mod:`critpoint_cli.commands.compare`):
    nothing is written (``json_path`` and ``report_dir`` are ``None``) and an
    unconverged solve is returned, not raised. ``repeats``: the estimate said
    up front is for this many checkpoints (``0``: said already).

    Returns
    -------
    (dict, Setup, list of str) or None
        The ``diagnose --json`` document, what was loaded, and what did not
        converge; ``None`` on a rank other than 0.
    """
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
    sampled = max_samples is not None
    if sampled and batch_size is None:
        # A sample's error is measured over its batches: eight of them at least.
        setup.batch_size = max(1, -(-max_samples // SAMPLED_BATCHES))
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
        "memory": memory,
        "sampled": sampled,
    }
    groups = cp.layer_groups(setup.model, globs) if per_layer else None
    with stage(state, f"diagnosing {obj.num_params:,} parameters"):
        announce = _announcer(
            state,
            obj,
            options,
            groups,
            setup.model,
            landscape=report_dir is not None and obj.num_params >= 2,
            repeats=repeats,
        )
        with _summary_carries_warnings(out):
            dg = cp.diagnose(obj, **options, on_plan=announce)

    layers = None
    if groups is not None:
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
        "memory": memory,
        "sampled": sampled,
        "report": report_dir,
    }
    label = Path(checkpoint).name
    history = setup.checkpoint.history if setup.checkpoint is not None else None
    step = setup.checkpoint.step if setup.checkpoint is not None else None
    from critpoint.distributed import is_main, launched_by_torchrun

    if launched_by_torchrun():
        import torch.distributed as dist

        settings["world_size"] = dist.get_world_size()
        if not is_main():
            return (
                None  # every rank holds the same numbers; only rank 0 prints and writes
            )

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

    # Every product the command spent: the whole model's, each layer's, the landscape's.
    products = dg.num_matvecs + sum(x.diagnosis.num_matvecs for x in layers or [])
    products += land.num_matvecs if land is not None else 0
    document = diagnosis_document(
        dg,
        label=label,
        settings=settings,
        landscape=land,
        per_layer=layers,
        history=history,
        elapsed_seconds=round(elapsed, 3),
        total_matvecs=products,
        # The training step stored in the checkpoint: where it sits in a comparison.
        step=step[1] if step is not None else None,
        step_key=step[0] if step is not None else None,
        per_layer_blocks=_blocks_summary(layers),
    )
    out.json(document)

    what = setup.describe()
    if globs:
        what += f"; parameters {', '.join(globs)} ({obj.num_params:,})"
    hint = None
    if dg.escape_direction is not None and dg.critical:  # else the advice is to train
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
        f"\n\n{products:,} Hessian-vector products"
        + (
            f" ({dg.num_matvecs:,} for the whole model)"
            if products != dg.num_matvecs
            else ""
        )
        + f"; {elapsed - t_setup:.1f} s (+ {t_setup:.1f} s to load)."
    )
    if dg.sampling is not None:
        se = dg.sampling
        used = "in the verdict's error bars" if se["used"] else "not in the verdict"
        text += (
            f"\nSampling error over {se['num_batches']} batches (one standard error): "
            f"λ_min ±{se['lambda_min']:.3g}, λ_max ±{se['lambda_max']:.3g}, "
            f"gradient norm ±{se['grad_norm']:.3g} ({used})."
        )
    if dg.memory is not None:
        from critpoint.analysis.memory import MemoryPlan

        text += "\n" + MemoryPlan.from_dict(dg.memory).describe() + "."
    out.result(text)
    if report_dir is not None:
        out.info(f"Report written to {page}")
    out.written()

    unconverged = [] if dg.converged else ["the whole model"]
    unconverged += [x.name for x in layers or [] if not x.diagnosis.converged]
    if unconverged and not comparing:
        # Exit code 3: everything above was written; the error carries it.
        msg = (
            "the eigensolver did not converge for "
            + ", ".join(unconverged)
            + f" (tol {tol:g}); the results above use the looser bounds it reached. "
            "Raise --max-matvecs or loosen --tol."
        )
        raise ConvergenceError(msg, partial=document)
    return document, setup, unconverged


def _announcer(
    state: Any,
    obj: Any,
    options: dict[str, Any],
    groups: list[Any] | None,
    model: Any,
    *,
    landscape: bool,
    repeats: int = 1,
) -> Any:
    """The ``on_plan`` callback: the whole command's estimate on standard error, if long.

    The whole model's plan is extended by the layers' batched run
    (``--per-layer``) and the landscape's loss evaluations (``--report``),
    priced at the whole model's measured product and gradient (a block-masked
    product costs no less); for ``repeats`` checkpoints alike (``0``: say
    nothing).
    """
    from critpoint.analysis.plan import block_phases, landscape_phases

    def announce(plan: Any) -> None:
        if groups:
            sizes = dict(model.named_parameters())
            layer_sizes = [
                (g.name, sum(sizes[p].numel() for p in g.params)) for g in groups
            ]
            # diagnose_layers runs every layer's block in one batched pass.
            plan = plan.extend(block_phases(layer_sizes))
        if landscape:
            plan = plan.extend(landscape_phases())
        if repeats > 1:
            plan = plan.repeated(repeats, "checkpoints")
        if repeats < 1 or state.quiet or not plan.worth_announcing:
            return
        click.echo(f"Planned: {plan.summary()}{_shorten(plan, obj, options)}", err=True)

    return announce


def _shorten(plan: Any, obj: Any, options: dict[str, Any]) -> str:
    """``; --no-density or --max-samples 1024 to shorten``: the options that cut the most."""
    ways = []
    largest = plan.largest()
    products = {p.name: p.products for p in plan.phases if not p.spent}
    if options["density"] and products.get("density", 0) * 3 >= plan.products:
        ways.append("--no-density")
    if options["trace"] and products.get("trace", 0) * 3 >= plan.products:
        ways.append("--no-trace")
    if largest is not None and largest.name.endswith("layers in one pass"):
        ways.append("without --per-layer")
    samples = obj.num_samples
    if samples > 1024:
        ways.append("--max-samples 1024")
    elif samples >= 64:
        ways.append(f"--max-samples {samples // 2}")
    return f"; {' or '.join(ways)} to shorten" if ways else ""


@contextlib.contextmanager
def _summary_carries_warnings(out: Any) -> Iterator[None]:
    """Drop the log warnings the printed result repeats (its "Warning" rows).

    ``out`` is the command's :class:`~critpoint_cli.render.Output`; with
    ``--json -`` no result text is printed, and the log keeps them.
    """
    from critpoint.analysis.diagnose import REPORTED

    def keep(record: logging.LogRecord) -> bool:
        return out.json_to_stdout or not hasattr(record, REPORTED)

    log = logging.getLogger("critpoint")
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _blocks_summary(layers: Any) -> dict[str, Any] | None:
    """What the layers' blocks share (heterogeneity, counts), for the JSON document."""
    if layers is None or getattr(layers, "spectra", None) is None:
        return None
    summary = layers.to_dict()
    summary.pop("layers")
    return summary
