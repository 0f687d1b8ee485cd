"""``critpoint train``: train a built-in or user model and write a checkpoint."""

from __future__ import annotations

import time
from typing import Any

import click

from critpoint_cli.commands._common import check_paths, spec_files, stage, start
from critpoint_cli.options import JSON_OBJECT, get_state, global_options, json_option

# The library's names (critpoint.training: OPTIMIZERS, SCHEDULES, TRACKABLE),
# spelled out so that `critpoint train --help` needs no torch import; a test
# checks that they agree.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "linear")
TRACKABLE = ("sharpness", "lambda_min", "minimum_ratio")
DEFAULT_STEPS = 300
#: Schema name and version of the --json document.
TRAIN_SCHEMA = "critpoint.train"
TRAIN_SCHEMA_VERSION = 1


@click.command()
@click.option(
    "-o",
    "--output",
    "out_path",
    metavar="CKPT",
    default="model.ckpt",
    show_default=True,
    help="Checkpoint to write (model spec, data spec, loss and history included; "
    ".safetensors works too).",
)
@click.option(
    "--model",
    "model",
    metavar="SPEC",
    default="mlp",
    show_default=True,
    help="mlp, cnn, two_weight, deep_linear, package.module:factory or "
    "path/to/file.py:factory (imported and run: it is your code).",
)
@click.option(
    "--model-kwargs",
    type=JSON_OBJECT,
    default=None,
    help="""Options of the model as JSON, e.g. '{"widths": [64, 64], "activation": "tanh"}'.""",
)
@click.option(
    "--batchnorm", is_flag=True, default=False, help="Add BatchNorm to mlp / cnn."
)
@click.option(
    "--data",
    "data",
    metavar="SPEC",
    default="digits",
    show_default=True,
    help="digits, teacher, two_weight, file.pt / file.npz, or module:function "
    "(imported and run: it is your code).",
)
@click.option(
    "--data-kwargs",
    type=JSON_OBJECT,
    default=None,
    help="""Options of the data as JSON, e.g. '{"n_samples": 512}' for teacher.""",
)
@click.option(
    "--test-data",
    metavar="SPEC",
    default=None,
    help="Data to evaluate on while training. [default: the digits test split when --data is digits]",
)
@click.option(
    "--max-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Train on a random subset of this many samples (drawn with --seed).",
)
@click.option(
    "--loss",
    metavar="NAME",
    default=None,
    help="cross_entropy, mse, bce or package.module:function (imported and run: it is "
    "your code). [default: cross_entropy for class labels, mse otherwise]",
)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    default="sgd",
    show_default=True,
    help="A torch.optim optimizer (momentum and nesterov are SGD with momentum).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.1,
    show_default=True,
    help="Peak learning rate η.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Minibatch size. [default: full batch, i.e. gradient descent]",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Passes over the data."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help=f"Updates. [default: {DEFAULT_STEPS} when --epochs is not given]",
)
@click.option(
    "--momentum",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.9,
    show_default=True,
    help="Momentum of the momentum and nesterov optimizers.",
)
@click.option(
    "--warmup-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Linear learning-rate warm-up over this many updates.",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="constant",
    show_default=True,
    help="Learning-rate schedule after the warm-up.",
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="L2 penalty of the optimizer.",
)
@click.option(
    "--track",
    type=click.Choice(TRACKABLE),
    multiple=True,
    help="Curvature to record along training (repeat for several): the sharpness "
    "λ_max, λ_min, the minimum ratio.",
)
@click.option(
    "--track-every",
    type=click.IntRange(min=1),
    default=None,
    help="Track the curvature every this many updates. [default: about 11 points]",
)
@json_option
@global_options
@click.pass_context
def train(
    ctx: click.Context,
    out_path: str,
    model: str,
    model_kwargs: dict[str, Any] | None,
    batchnorm: bool,
    data: str,
    data_kwargs: dict[str, Any] | None,
    test_data: str | None,
    max_samples: int | None,
    loss: str | None,
    optimizer: str,
    lr: float,
    batch_size: int | None,
    epochs: int | None,
    steps: int | None,
    momentum: float,
    warmup_steps: int,
    schedule: str,
    weight_decay: float,
    track: tuple[str, ...],
    track_every: int | None,
    json_path: str | None,
) -> None:
    """Train a model and write a checkpoint that `critpoint diagnose` understands.

    With no options it trains the small MLP on the 8×8 digits by full-batch
    gradient descent, in seconds. The checkpoint stores the model spec, the
    data spec, the loss and the training history (with the tracked curvature),
    so `critpoint diagnose CKPT` needs no other option.

    \b
    Examples:
      critpoint train -o model.ckpt
      critpoint train --optimizer adam --lr 0.01 --batch-size 64 --epochs 20 \\
          --track sharpness --track lambda_min -o adam.ckpt
      critpoint train --model cnn --batchnorm --steps 500 -o cnn.ckpt
    """  # noqa: D301 (click's \b marks a verbatim block)
    from critpoint_cli.render import Output

    state = get_state(ctx)
    start(state)
    out = Output(json_path, state.quiet)
    if epochs is not None and steps is not None:
        raise click.UsageError("give --epochs or --steps, not both")
    if epochs is None and steps is None:
        steps = DEFAULT_STEPS
    t0 = time.perf_counter()

    from critpoint._json import header
    from critpoint.data import Data
    from critpoint.errors import InputError
    from critpoint.io.checkpoint import save_checkpoint
    from critpoint.report.text import field_line, num
    from critpoint.training import train as run_training
    from critpoint_cli import loading

    check_paths(
        [("-o", out_path), ("--json", json_path)],
        spec_files(model=model, data=data, test_data=test_data, loss=loss),
    )
    kwargs = dict(model_kwargs or {})
    if batchnorm:
        kwargs["batchnorm"] = True
    setup = loading.load_setup(
        state,
        None,
        model,
        kwargs,
        data,
        data_kwargs,
        loss,
        batch_size,
        max_samples,
        False,
    )
    if not isinstance(setup.data, Data):
        msg = f"critpoint train needs data held in memory (tensors); {data!r} is a {setup.data.kind}"
        raise InputError(msg)
    test = None
    test_spec = None
    if test_data is not None:
        test_spec = loading.normalise_data_spec(test_data)
    elif (
        setup.data_spec["name"] == "digits" and "split" not in setup.data_spec["kwargs"]
    ):
        test_spec = loading.normalise_data_spec(
            {"name": "digits", "kwargs": {**setup.data_spec["kwargs"], "split": "test"}}
        )
    if test_spec is not None:
        test = loading.load_data_spec(test_spec, loading.model_dtype(setup.model))
    net = setup.model.to(device=setup.device, dtype=setup.dtype)

    with stage(state, "training"):
        history = run_training(
            net,
            setup.data,
            loss=setup.loss_name,
            optimizer=optimizer,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            steps=steps,
            momentum=momentum,
            warmup_steps=warmup_steps,
            schedule=schedule,
            weight_decay=weight_decay,
            seed=state.seed,
            track=set(track) or None,
            track_every=track_every,
            test_data=test,
            progress=state.show_progress(),
        )
    spec = setup.model_spec
    model_spec = getattr(net, "critpoint_spec", None) or spec
    settings = {
        **setup.settings,
        "command": "train",
        "test_data": test_spec,
        "optimizer": optimizer,
        "lr": lr,
        "epochs": epochs,
        "steps": steps,
        "momentum": momentum,
        "warmup_steps": warmup_steps,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "track": sorted(track),
        "track_every": track_every,
        "output": out_path,
    }
    save_checkpoint(
        out_path,
        net,
        model_spec=loading.model_spec_for(out_path, model_spec),
        data_spec=loading.data_spec_for(out_path, setup.data_spec),
        loss=loading.loss_for(out_path, setup.loss_name),
        history=history,
        meta={"train": settings},
    )
    elapsed = time.perf_counter() - t0

    out.json(
        {
            **header(TRAIN_SCHEMA, TRAIN_SCHEMA_VERSION),
            "output": out_path,
            "final_loss": history.final_loss,
            "final_accuracy": history.final_accuracy,
            "final_test_accuracy": history.final_test_accuracy,
            "num_steps": history.num_steps,
            "stop_reason": history.stop_reason,
            "settings": settings,
            "history": history.to_dict(),
            "elapsed_seconds": round(elapsed, 3),
        }
    )
    first = history.full_loss[0] if history.full_loss else float("nan")
    lines = [setup.describe(), ""]
    lines.append(
        field_line(
            "Trained",
            f"{history.num_steps} steps of {optimizer} (lr {lr:g}"
            + (f", batch {batch_size}" if batch_size else ", full batch")
            + f", {schedule} schedule) in {elapsed:.1f} s",
        )
    )
    lines.append(field_line("Loss", f"{num(first, 5)} → {num(history.final_loss, 5)}"))
    if history.final_accuracy is not None:
        acc = f"{100 * history.final_accuracy:.1f}%"
        if history.final_test_accuracy is not None:
            acc += f" (test {100 * history.final_test_accuracy:.1f}%)"
        lines.append(field_line("Accuracy", acc))
    if history.sharpness:
        lines.append(
            field_line(
                "Sharpness",
                f"λ_max = {num(history.sharpness[-1], 4)} at the end (2/η = {num(2 / lr, 4)})",
            )
        )
    if history.lambda_min:
        lines.append(
            field_line("λ_min", f"{num(history.lambda_min[-1], 4)} at the end")
        )
    lines.append(field_line("Written", out_path))
    lines.append(field_line("Next", f"critpoint diagnose {out_path}"))
    out.result("\n".join(lines))
    out.written()
