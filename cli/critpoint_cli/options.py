"""Shared state and option decorators of the ``critpoint`` command.

Nothing here imports torch or critpoint: ``critpoint --help`` must answer
fast. The global options (``--device``, ``--dtype``, ``--seed``, ``--debug``,
``--quiet``, ``--progress``) can be given before the command name or after
it; the value given last on the line wins.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
#: ``Objective(bn=...)``: the functions a model with BatchNorm layers can be analysed as.
BN_MODES = ("eval", "train", "recalibrate")


@dataclass
class State:
    """Settings shared by the root group and every command (``ctx.obj``).

    Attributes
    ----------
    device : {"auto", "cpu", "cuda"}
        Where to compute; ``auto`` is CUDA when available.
    dtype : {"float32", "float64"} or None
        Precision of the analysis; ``None`` keeps the model's.
    seed : int
        Seed of every random vector and of model initialisation.
    debug : bool
        Show tracebacks and debug logs.
    quiet : bool
        No progress bars and no messages besides results and errors.
    progress : bool or None
        Force progress bars on or off; ``None`` shows them when standard
        error is a terminal.
    bn : {"eval", "train", "recalibrate"} or None
        The BatchNorm mode of the analysis (``--bn``); ``None`` is ``eval``.
    """

    device: str = "auto"
    dtype: str | None = None
    seed: int = 0
    debug: bool = False
    quiet: bool = False
    progress: bool | None = None
    bn: str | None = None

    def show_progress(self) -> bool:
        """Whether to draw progress bars (always on standard error)."""
        if self.quiet:
            return False
        if self.progress is not None:
            return self.progress
        stream = sys.stderr
        return bool(stream is not None and stream.isatty())


def get_state(ctx: click.Context | None = None) -> State:
    """The shared :class:`State` of the current invocation."""
    ctx = ctx or click.get_current_context()
    return ctx.ensure_object(State)


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or value is False:
            return value
        setattr(get_state(ctx), name, value)
        return value

    return callback


def global_options(f: F) -> F:
    """Add ``--device``, ``--dtype``, ``--seed``, ``--debug``, ``--quiet``, ``--progress``.

    Used on the root group and on every command, so both
    ``critpoint --seed 1 diagnose X`` and ``critpoint diagnose X --seed 1`` work.
    """
    decorators = [
        click.option(
            "--device",
            type=click.Choice(DEVICES),
            default=None,
            expose_value=False,
            callback=_store("device"),
            help="Where to compute: auto (CUDA when available), cpu or cuda.  [default: auto]",
        ),
        click.option(
            "--dtype",
            type=click.Choice(DTYPES),
            default=None,
            expose_value=False,
            callback=_store("dtype"),
            help="Precision of the analysis (a copy of the model is cast).  [default: the model's]",
        ),
        click.option(
            "--seed",
            type=click.IntRange(min=0, max=2**63 - 1),
            default=None,
            expose_value=False,
            callback=_store("seed"),
            help="Seed of every random vector (and of model initialisation).  [default: 0]",
        ),
        click.option(
            "--debug",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_store("debug"),
            help="Show full tracebacks and debug logs.",
        ),
        click.option(
            "-q",
            "--quiet",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_store("quiet"),
            help="No progress bars and no messages besides results and errors.",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            expose_value=False,
            callback=_store("progress"),
            help="Progress bars on standard error.  [default: when it is a terminal]",
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


class JsonObject(click.ParamType):
    """A JSON object given on the command line, e.g. ``'{"widths": [32]}'``."""

    name = "JSON"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, Any]:
        """Parse the text into a dict (a usage error otherwise)."""
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(
                f"{value!r} is not valid JSON ({exc.msg}); write e.g. "
                """'{"widths": [32], "batchnorm": true}'""",
                param,
                ctx,
            )
        if not isinstance(parsed, dict):
            self.fail(
                f"{value!r} must be a JSON object ({{...}}), got {type(parsed).__name__}",
                param,
                ctx,
            )
        return parsed


JSON_OBJECT = JsonObject()


def model_options(f: F) -> F:
    """``--model``, ``--model-kwargs``, ``--data``, ``--data-kwargs``, ``--loss``, ``--batch-loss``, batching."""
    decorators = [
        click.option(
            "--model",
            "model",
            metavar="SPEC",
            default=None,
            help="Model: a built-in name (mlp, cnn, two_weight, deep_linear), "
            "package.module:factory or path/to/file.py:factory (imported and run: it is "
            "your code). [default: the checkpoint's]",
        ),
        click.option(
            "--model-kwargs",
            type=JSON_OBJECT,
            default=None,
            help="""Keyword arguments of the model factory as JSON, e.g. '{"widths": [32]}'.""",
        ),
        click.option(
            "--data",
            "data",
            metavar="SPEC",
            default=None,
            help="Data: digits, teacher, two_weight, a file.pt / file.npz (keys inputs, "
            "targets; or input_ids for token data: integer inputs stay integer), or "
            "package.module:function / path/to/file.py:function (imported and "
            "run: it is your code). [default: the checkpoint's; a relative path in it is "
            "read from the checkpoint's folder]",
        ),
        click.option(
            "--data-kwargs",
            type=JSON_OBJECT,
            default=None,
            help="""Options of the data set or function as JSON, e.g. '{"split": "test"}'.""",
        ),
        click.option(
            "--loss",
            metavar="NAME",
            default=None,
            help="cross_entropy, mse, bce, causal_lm (next-token cross-entropy of a "
            "language model on token ids) or package.module:function / "
            "path/to/file.py:function taking (outputs, targets) (imported and run: it is "
            "your code; only the built-in losses have their targets checked). [default: "
            "the checkpoint's, else cross_entropy for class labels, mse otherwise]",
        ),
        click.option(
            "--batch-loss",
            metavar="SPEC",
            default=None,
            help="Instead of --loss: package.module:function or path/to/file.py:function "
            "taking (model, batch) and returning the batch's mean loss, for batches that "
            "are not (inputs, targets) pairs (dicts) or a model that computes its own loss "
            "(imported and run: it is your code).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Samples per forward pass (memory only: the loss is always the mean over all samples).",
        ),
        click.option(
            "--max-samples",
            type=click.IntRange(min=1),
            default=None,
            help="Use a random subset of this many samples (drawn with --seed).",
        ),
        click.option(
            "--bn",
            type=click.Choice(BN_MODES),
            default=None,
            expose_value=False,
            callback=_store("bn"),
            help="BatchNorm: eval (the running statistics, as deployed), train (each "
            "batch's own statistics, as training sees; depends on --batch-size) or "
            "recalibrate (eval mode with the statistics re-estimated over the data on a "
            "copy, as torch.optim.swa_utils.update_bn does). The diagnosis warns when the "
            "eval-mode and batch-statistics losses differ by more than 5 %.  [default: eval]",
        ),
        click.option(
            "--trust-checkpoint",
            is_flag=True,
            default=False,
            help="Run code the checkpoint names: allow files that need code to unpickle, "
            "and model / data / loss specs in the file that name package.module:function or "
            "file.py:function (without it a file may name only built-ins). Only for files "
            "you made: this runs arbitrary code.",
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def solver_options(f: F) -> F:
    """``-k``, ``--tol``, ``--max-matvecs``, ``--density/--no-density``, ``--trace/--no-trace``."""
    decorators = [
        click.option(
            "-k",
            "k",
            type=click.IntRange(min=2),
            default=6,
            show_default=True,
            help="Eigenpairs to find, from both ends of the spectrum.",
        ),
        click.option(
            "--tol",
            type=click.FloatRange(min=0, min_open=True),
            default=1e-4,
            show_default=True,
            help="Relative residual tolerance of the eigensolver.",
        ),
        click.option(
            "--max-matvecs",
            type=click.IntRange(min=1),
            default=None,
            help="The most Hessian-vector products a diagnosis spends, every one counted "
            "(symmetry probe, density and trace first, the eigensolver the rest; "
            "exit code 3 if the eigensolver runs out; --per-layer's batched run "
            "is bounded by its steps instead).",
        ),
        click.option(
            "--density/--no-density",
            default=True,
            show_default=True,
            help="Estimate the eigenvalue density and the minimum ratio (SLQ).",
        ),
        click.option(
            "--trace/--no-trace",
            default=True,
            show_default=True,
            help="Estimate the trace of the Hessian (Hutch++ or Hutchinson, whichever suits the spectrum).",
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def json_option(f: F) -> F:
    """``--json PATH`` (``-`` for standard output)."""
    return click.option(
        "--json",
        "json_path",
        metavar="PATH",
        default=None,
        help="Write the result as JSON to PATH; '-' prints it on standard output and nothing else goes there.",
    )(f)
