"""Demo training with ``torch.optim``, learning-rate schedules and curvature tracking.

:func:`train` runs a standard PyTorch training loop on in-memory data: a
``torch.optim`` optimizer picked by name, a per-step learning-rate schedule
from ``torch.optim.lr_scheduler``, full-batch gradient descent or shuffled
minibatches, and — optionally, every few steps — the curvature of the *full*
training loss at the current parameters: the sharpness (top Hessian
eigenvalue), the most negative eigenvalue and the minimum ratio, computed
matrix-free with critpoint's Lanczos and stochastic Lanczos quadrature. It
returns a :class:`History` that :func:`critpoint.checkpoint.save_checkpoint`
stores next to the weights.

Nothing here re-implements an optimizer: ``"sgd"``, ``"momentum"`` and
``"nesterov"`` are :class:`torch.optim.SGD`, ``"rmsprop"`` is
:class:`torch.optim.RMSprop`, ``"adam"`` :class:`torch.optim.Adam` and
``"adamw"`` :class:`torch.optim.AdamW`; every schedule is a
:class:`torch.optim.lr_scheduler.LambdaLR` with the closed-form multiplier of
:func:`lr_factor`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from critpoint._version import __version__
from critpoint.errors import InputError, NonFiniteError

logger = logging.getLogger("critpoint")

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TRACKABLE",
    "History",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "train",
]

#: Optimizer names and the ``torch.optim`` class each one builds.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "nesterov": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

#: Learning-rate schedule names (see :func:`lr_factor`).
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step", "linear")

#: Curvature quantities :func:`train` can track.
TRACKABLE: tuple[str, ...] = ("sharpness", "lambda_min", "minimum_ratio")

#: Fractions of the post-warm-up steps at which the ``"step"`` schedule
#: multiplies the learning rate by :data:`STEP_GAMMA`.
STEP_MILESTONES: tuple[float, ...] = (0.5, 0.75)
#: Decay factor of the ``"step"`` schedule at each milestone.
STEP_GAMMA = 0.1

#: Samples per forward pass when the full training or test data is evaluated.
EVAL_CHUNK = 4096

HISTORY_SCHEMA = "critpoint-history"
HISTORY_VERSION = 1


# ------------------------------------------------------------------ history


@dataclass
class History:
    """What happened during :func:`train`, step by step.

    Step ``k`` names the parameters θ_k after ``k`` updates (θ_0 is the
    starting point). The per-step lists have one entry per update; the
    evaluation and tracking lists have one entry per evaluation / tracking
    point, whose step numbers are in ``eval_step`` and ``track_step``.

    Attributes
    ----------
    step : list of int
        ``0, 1, …, T−1``: the update index.
    epoch : list of int
        Epoch (0-based) of each update.
    loss : list of float
        Minibatch training loss at θ_k, i.e. the loss whose gradient made
        update ``k`` (for full-batch training, the full training loss).
    grad_norm : list of float
        Euclidean norm of that minibatch gradient, over all trainable parameters.
    lr : list of float
        Learning rate of update ``k`` (of the first parameter group).
    eval_step : list of int
        Steps at which the full training data (and the test data) were
        evaluated; always includes 0 and the final step.
    full_loss : list of float
        Mean loss over all training samples at each ``eval_step``.
    accuracy : list of float
        Training accuracy at each ``eval_step`` (classification only; empty
        otherwise).
    test_loss, test_accuracy : list of float
        The same on ``test_data`` (empty without test data; accuracy only for
        classification).
    track_step : list of int
        Steps at which the curvature was tracked; always includes 0 and the
        final step when tracking is on.
    sharpness : list of float
        Largest Hessian eigenvalue of the full training loss at each
        ``track_step`` (if tracked).
    lambda_min : list of float
        Smallest (most negative) Hessian eigenvalue (if tracked).
    minimum_ratio : list of float
        ``1 −`` the SLQ mass of eigenvalues below ``−eig_rtol·scale`` (if tracked).
    track_matvecs : list of int
        Hessian-vector products spent at each tracking point.
    settings : dict
        Every setting of the run (optimizer, learning rate, schedule, batch
        size, seed, tracking options, …), JSON-able.
    stop_reason : str
        ``"completed"``, ``"stop_loss"`` (the full training loss reached
        ``stop_loss``) or ``"callback"`` (the callback returned True).
    """

    step: list[int] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    full_loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    track_step: list[int] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    lambda_min: list[float] = field(default_factory=list)
    minimum_ratio: list[float] = field(default_factory=list)
    track_matvecs: list[int] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = "completed"

    @property
    def num_steps(self) -> int:
        """Number of updates made (the final parameters are θ at this step)."""
        return len(self.step)

    @property
    def final_loss(self) -> float:
        """Full training loss at the final parameters (``nan`` before any evaluation)."""
        if self.full_loss:
            return self.full_loss[-1]
        if self.loss:
            return self.loss[-1]
        return math.nan

    @property
    def final_sharpness(self) -> float | None:
        """Sharpness at the last tracking point, or ``None`` if not tracked."""
        return self.sharpness[-1] if self.sharpness else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary (what :func:`~critpoint.checkpoint.save_checkpoint` stores)."""
        out: dict[str, Any] = {"schema": HISTORY_SCHEMA, "version": HISTORY_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                _json_copy(value) if isinstance(value, (list, dict)) else value
            )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuild a history written by :meth:`to_dict`.

        Raises
        ------
        InputError
            If ``data`` is not such a dictionary (wrong schema, unknown keys,
            lists of different lengths than their step lists).
        """
        if not isinstance(data, Mapping):
            msg = f"a History dictionary must be a dict; got {type(data).__name__}"
            raise InputError(msg)
        schema = data.get("schema", HISTORY_SCHEMA)
        if schema != HISTORY_SCHEMA:
            msg = f"not a training history: schema is {schema!r}, expected {HISTORY_SCHEMA!r}"
            raise InputError(msg)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"schema", "version"})
        if unknown:
            msg = (
                f"unknown History field(s) {unknown}; known fields are {sorted(names)}"
            )
            raise InputError(msg)
        kwargs: dict[str, Any] = {}
        for name in names:
            if name not in data:
                continue
            value = data[name]
            if name == "stop_reason":
                kwargs[name] = str(value)
            elif name == "settings":
                if not isinstance(value, Mapping):
                    msg = (
                        f"History 'settings' must be a dict; got {type(value).__name__}"
                    )
                    raise InputError(msg)
                kwargs[name] = _json_copy(dict(value))
            else:
                if not isinstance(value, (list, tuple)):
                    msg = f"History field {name!r} must be a list; got {type(value).__name__}"
                    raise InputError(msg)
                cast = (
                    int
                    if name.endswith("step") or name in ("epoch", "track_matvecs")
                    else float
                )
                kwargs[name] = [cast(v) for v in value]
        history = cls(**kwargs)
        history._check_lengths()
        return history

    def _check_lengths(self) -> None:
        groups = {
            "step": ("epoch", "loss", "grad_norm", "lr"),
            "eval_step": ("full_loss", "accuracy", "test_loss", "test_accuracy"),
            "track_step": ("sharpness", "lambda_min", "minimum_ratio", "track_matvecs"),
        }
        for key, members in groups.items():
            n = len(getattr(self, key))
            for name in members:
                m = len(getattr(self, name))
                if m not in (0, n) or (key == "step" and m != n):
                    msg = f"History field {name!r} has {m} entries but {key!r} has {n}"
                    raise InputError(msg)


def _json_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_copy(v) for v in value]
    return value


# ---------------------------------------------------------- optimizer, schedule


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(value: Any, what: str, minimum: int = 1, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        msg = f"{what} must be {kind}; got {value!r}{hint}"
        raise InputError(msg)
    return int(value)


def _optimizer_class(name: str | type[torch.optim.Optimizer]) -> tuple[str, type]:
    if isinstance(name, type) and issubclass(name, torch.optim.Optimizer):
        return name.__name__, name
    if isinstance(name, str):
        key = name.strip().lower()
        if key in OPTIMIZERS:
            return key, OPTIMIZERS[key]
    msg = (
        f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)} "
        "or pass a torch.optim.Optimizer subclass"
    )
    raise InputError(msg)


def make_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    name: str | type[torch.optim.Optimizer] = "sgd",
    lr: float = 0.1,
    *,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build a ``torch.optim`` optimizer by name.

    Parameters
    ----------
    params : iterable of tensors or parameter groups
        What to optimise, e.g. ``model.parameters()``.
    name : str or torch.optim.Optimizer subclass
        ``"sgd"`` (plain: ``SGD`` with no momentum), ``"momentum"`` (``SGD``
        with heavy-ball ``momentum``), ``"nesterov"`` (``SGD`` with Nesterov
        momentum), ``"rmsprop"`` (``RMSprop``, no momentum unless given in
        ``kwargs``), ``"adam"`` (``Adam``), ``"adamw"`` (``AdamW``). A class is
        called as ``name(params, lr=lr, **kwargs)``.
    lr : float
        Learning rate (the peak one when a schedule is used), > 0.
    momentum : float
        Momentum in ``[0, 1)`` of ``"momentum"`` and ``"nesterov"``.
    betas : (float, float)
        Moment decay rates of ``"adam"`` and ``"adamw"``, each in ``[0, 1)``.
    weight_decay : float
        L2 penalty (decoupled for ``"adamw"``), ≥ 0. Note that ``"adamw"``
        gets ``0.0`` too unless given (torch's own default is 0.01).
    **kwargs
        Further options of the torch class (``eps``, ``alpha``, ``amsgrad``, …).

    Returns
    -------
    torch.optim.Optimizer
    """
    key, cls = _optimizer_class(name)
    _check_lr(lr)
    if not (_is_number(momentum) and 0.0 <= momentum < 1.0):
        msg = f"momentum must be a number in [0, 1); got {momentum!r}"
        raise InputError(msg)
    if (
        not isinstance(betas, (tuple, list))
        or len(betas) != 2
        or not all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)
    ):
        msg = f"betas must be two numbers in [0, 1), e.g. (0.9, 0.999); got {betas!r}"
        raise InputError(msg)
    if not (
        _is_number(weight_decay) and weight_decay >= 0 and math.isfinite(weight_decay)
    ):
        msg = f"weight_decay must be a finite number >= 0; got {weight_decay!r}"
        raise InputError(msg)
    options: dict[str, Any] = {"lr": float(lr)}
    if key == "sgd":
        options.update(momentum=0.0, weight_decay=weight_decay)
    elif key in ("momentum", "nesterov"):
        if momentum == 0.0 and key == "nesterov":
            msg = "nesterov needs momentum > 0; use optimizer='sgd' for plain gradient descent"
            raise InputError(msg)
        options.update(
            momentum=float(momentum),
            nesterov=key == "nesterov",
            weight_decay=weight_decay,
        )
    elif key == "rmsprop":
        options.update(weight_decay=weight_decay)
    elif key in ("adam", "adamw"):
        options.update(
            betas=(float(betas[0]), float(betas[1])), weight_decay=weight_decay
        )
    options.update(kwargs)
    try:
        return cls(params, **options)
    except (TypeError, ValueError) as exc:
        msg = (
            f"optimizer {key!r} ({cls.__name__}) rejected the options {options}: {exc}"
        )
        raise InputError(msg) from exc


def _check_lr(lr: Any) -> None:
    if not (_is_number(lr) and math.isfinite(lr) and lr > 0):
        msg = f"lr must be a positive finite number such as 0.1; got {lr!r}"
        raise InputError(msg)


def _check_schedule(schedule: Any) -> str:
    if not isinstance(schedule, str) or schedule.strip().lower() not in SCHEDULES:
        msg = f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}"
        raise InputError(msg)
    return schedule.strip().lower()


def lr_factor(
    schedule: str, total_steps: int, warmup_steps: int = 0
) -> Callable[[int], float]:
    """The learning-rate multiplier ``f(t)`` of a schedule, in closed form.

    The learning rate of update ``t`` (0-based) is ``lr · f(t)``. A linear
    warm-up gives ``f(t) = (t + 1) / W`` for ``t < W = warmup_steps``; after it,
    with ``s = t − W`` and ``S = max(total_steps − W, 1)``:

    ``"constant"``
        ``f = 1``.
    ``"cosine"``
        ``f = ½ (1 + cos(π s / S))``, from 1 down to 0 at the end.
    ``"linear"``
        ``f = 1 − s / S``.
    ``"step"``
        ``f = 0.1^j`` where ``j`` counts the milestones ``round(0.5·S)`` and
        ``round(0.75·S)`` already reached.

    Parameters
    ----------
    schedule : {"constant", "cosine", "step", "linear"}
    total_steps : int
        Number of updates in the run, ≥ 1.
    warmup_steps : int
        Length of the linear warm-up, ≥ 0.

    Returns
    -------
    callable
        ``f(t) -> float`` for integer ``t ≥ 0`` (``t ≥ total_steps`` gives the
        value at the end).
    """
    schedule = _check_schedule(schedule)
    total = _check_int(total_steps, "total_steps")
    warmup = _check_int(warmup_steps, "warmup_steps", minimum=0)
    span = max(total - warmup, 1)
    milestones = [round(frac * span) for frac in STEP_MILESTONES]

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        s = min(t - warmup, span)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * s / span))
        if schedule == "linear":
            return 1.0 - s / span
        if schedule == "step":
            return STEP_GAMMA ** sum(s >= m for m in milestones)
        return 1.0

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` with the multiplier of :func:`lr_factor`.

    Call ``scheduler.step()`` after every ``optimizer.step()``.

    Returns
    -------
    torch.optim.lr_scheduler.LambdaLR
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(schedule, total_steps, warmup_steps)
    )


# ------------------------------------------------------------------- helpers


def _as_pair(
    data: Any, what: str
) -> tuple[torch.Tensor, torch.Tensor, bool, int | None]:
    """``(inputs, targets, is_classification, num_classes)`` of Data or a tensor pair."""
    from critpoint.data import Data

    if isinstance(data, Data):
        return (
            data.inputs,
            data.targets,
            data.task == "classification",
            data.num_classes,
        )
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        x, y = data
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            msg = (
                f"{what}: inputs and targets must hold the same number of samples; got "
                f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
            raise InputError(msg)
        classification = not y.is_floating_point() and y.ndim == 1
        num_classes = int(y.max()) + 1 if classification and y.numel() else None
        return x, y, classification, num_classes
    msg = (
        f"{what} must be a critpoint Data (load_data('digits')) or an (inputs, targets) "
        f"pair of tensors; got {type(data).__name__}"
    )
    raise InputError(msg)


def _place(
    x: torch.Tensor, y: torch.Tensor, like: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move to the model's device; cast floating tensors to its dtype."""
    if like is None:
        return x, y
    conv = lambda t: t.to(  # noqa: E731
        device=like.device, dtype=like.dtype if t.is_floating_point() else None
    )
    return conv(x), conv(y)


def _evaluate(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    classification: bool,
    train_mode: bool,
) -> tuple[float, float | None]:
    """Mean loss (and accuracy) over all samples, leaving the model as it was."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = (
        {name: b.clone() for name, b in model.named_buffers()} if train_mode else {}
    )
    total = 0.0
    correct = 0
    n = int(x.shape[0])
    try:
        model.train(train_mode)
        with torch.no_grad():
            for start in range(0, n, EVAL_CHUNK):
                xb, yb = x[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
                out = model(xb)
                total += float(loss_fn(out, yb)) * int(xb.shape[0])
                if classification:
                    correct += int((out.argmax(dim=1) == yb).sum())
    finally:
        for m, mode in modes:
            m.training = mode
        if buffers:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
    return total / n, (correct / n if classification else None)


def _normalise_track(track: Any) -> list[str]:
    if track is None:
        return []
    items = [track] if isinstance(track, str) else track
    try:
        names = list(items)
    except TypeError:
        names = None
    if names is None or not all(isinstance(t, str) for t in names):
        msg = f"track must be None or a set of names from {list(TRACKABLE)}; got {track!r}"
        raise InputError(msg)
    unknown = sorted(set(names) - set(TRACKABLE))
    if unknown:
        msg = f"cannot track {unknown}; choose from {list(TRACKABLE)}"
        raise InputError(msg)
    return [t for t in TRACKABLE if t in names]


def _batches(
    n: int, batch_size: int, full_batch: bool, drop_last: bool, gen: torch.Generator
) -> Iterator[tuple[int, torch.Tensor | None]]:
    """Yield ``(epoch, indices)`` forever; ``indices`` is None for the full batch."""
    epoch = 0
    stop = n - batch_size + 1 if drop_last else n
    while True:
        if full_batch:
            yield epoch, None
        else:
            perm = torch.randperm(n, generator=gen)
            for start in range(0, stop, batch_size):
                yield epoch, perm[start : start + batch_size]
        epoch += 1


def _nonfinite(
    what: str, step: int, epoch: int, lr: float, history: History
) -> NonFiniteError:
    msg = (
        f"the {what} became non-finite at step {step} (epoch {epoch}, lr={lr:.3g}): "
        f"the iterates diverged. Use a smaller learning rate (e.g. lr={lr / 2:.3g}), "
        "a warm-up (warmup_steps=...), or float64 for the model"
    )
    err = NonFiniteError(msg)
    err.history = history  # type: ignore[attr-defined]
    return err


# --------------------------------------------------------------------- train


def train(
    model: nn.Module,
    data: Any,
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
    optimizer: str | type[torch.optim.Optimizer] = "sgd",
    lr: float = 0.1,
    batch_size: int | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    seed: int = 0,
    track: Iterable[str] | str | None = None,
    track_every: int | None = None,
    track_tol: float = 1e-3,
    test_data: Any = None,
    progress: bool = False,
    callback: Callable[[int, History], Any] | None = None,
    *,
    drop_last: bool = False,
    eval_every: int | None = None,
    stop_loss: float | None = None,
    track_probes: int = 4,
    track_lanczos_steps: int = 40,
    eig_rtol: float = 1e-3,
    track_train_mode: bool = False,
    optimizer_kwargs: Mapping[str, Any] | None = None,
) -> History:
    """Train ``model`` in place with a ``torch.optim`` optimizer, optionally tracking curvature.

    Parameters
    ----------
    model : torch.nn.Module
        The model, trained in place (its initialisation is the caller's
        business, e.g. ``build_model(..., seed=0)``). It is in train mode
        during the updates; its train/eval flags are restored at the end.
    data : Data or (inputs, targets)
        Training data held in memory. Floating tensors are cast to the model's
        dtype and moved to its device.
    loss : str or callable
        ``"cross_entropy"``, ``"mse"`` (one-hot targets for class labels),
        ``"bce"`` or ``module:function`` (see :func:`critpoint.data.get_loss`),
        or ``loss(outputs, targets) -> mean loss``.
    optimizer : str or torch.optim.Optimizer subclass
        ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"rmsprop"``, ``"adam"``,
        ``"adamw"`` (see :func:`make_optimizer`).
    lr : float
        Peak learning rate, > 0.
    batch_size : int, optional
        Minibatch size; shuffled every epoch, the last batch of an epoch may
        be short. ``None`` (or ≥ the number of samples) is full-batch
        gradient descent: one update per epoch on the exact training loss.
    drop_last : bool
        Skip the short last minibatch of each epoch (as ``DataLoader`` does):
        a batch of a few samples makes one large noisy step. Every epoch
        draws a fresh permutation, so no sample is left out for good.
    epochs, steps : int, optional
        Length of the run: at most one of them (``epochs=1`` if neither).
    momentum : float
        Momentum of ``"momentum"`` and ``"nesterov"``.
    betas : (float, float)
        Of ``"adam"`` and ``"adamw"``.
    warmup_steps : int
        Linear warm-up of the learning rate over this many updates.
    schedule : {"constant", "cosine", "step", "linear"}
        Per-update schedule after the warm-up (closed forms in :func:`lr_factor`).
    weight_decay : float
        L2 penalty passed to the optimizer.
    seed : int
        Seed of the minibatch order (a local ``torch.Generator``), of the
        Lanczos / SLQ start vectors, and of the CPU random stream used by the
        forward pass (dropout), which runs inside ``torch.random.fork_rng``:
        the caller's global random state is the same before and after.
    track : set of str, optional
        Curvature of the full training loss to record: ``"sharpness"`` (top
        Hessian eigenvalue, Lanczos ``which="LA"``, ``k=1``, tolerance
        ``track_tol``), ``"lambda_min"`` (``which="SA"``) and
        ``"minimum_ratio"`` (``1 −`` the SLQ mass below ``−eig_rtol·scale``,
        with ``track_probes`` probes of ``track_lanczos_steps`` steps).
    track_every : int, optional
        Track every this many updates (plus at step 0 and the final step);
        default ``max(1, T // 10)`` for ``T`` updates, about 11 points.
    track_tol : float
        Relative residual tolerance of the Lanczos runs.
    test_data : Data or (inputs, targets), optional
        Evaluated (loss, accuracy) at each evaluation point.
    progress : bool
        Show a ``tqdm`` progress bar over the updates.
    callback : callable, optional
        ``callback(step, history)`` after every update, with ``step`` the
        index of the update just made (``history.step[-1]``). Returning
        ``True`` stops training; the final point is then evaluated and tracked.
    eval_every : int, optional
        Evaluate the full training (and test) data every this many updates,
        plus at step 0 and the final step; default ``max(1, T // 50)``.
    stop_loss : float, optional
        Stop as soon as the full training loss at an evaluation point is
        ≤ this (compare models at matched training loss).
    track_probes, track_lanczos_steps : int
        SLQ size for ``"minimum_ratio"``.
    eig_rtol : float
        Relative zero tolerance of the minimum ratio, as in :func:`critpoint.diagnose`.
    track_train_mode : bool
        Evaluate the full-data loss, accuracy and Hessian with BatchNorm in
        train mode (batch statistics of the whole data, running statistics
        left alone; ``Objective(train_mode=True)``). Default: eval mode, the
        library's default, which uses the running statistics. Dropout is on
        in train mode too, and the Hessian's symmetry probe then refuses it
        (:class:`~critpoint.NonDeterministicError`).
    optimizer_kwargs : dict, optional
        Further options of the torch optimizer (``eps``, ``alpha``, …).

    Returns
    -------
    History
        Per-update loss, gradient norm and learning rate; full-data loss
        and accuracy at the evaluation points; curvature at the tracking points.

    Raises
    ------
    InputError
        For an unknown optimizer or schedule, a bad learning rate, both
        ``epochs`` and ``steps``, data that is not in memory, and the like.
    NonFiniteError
        When the training loss becomes NaN or infinite (the message names the
        step and suggests a smaller learning rate); the partial history is in
        the exception's ``history`` attribute.

    Notes
    -----
    Cost of tracking, in Hessian-vector products (HVPs) on the full training
    data, each about two to three times a full-data gradient: the sharpness
    and ``lambda_min`` each take one Lanczos run, typically 10–60 HVPs at
    ``track_tol=1e-3`` (more when the top eigenvalues are close together);
    the minimum ratio takes ``track_probes × track_lanczos_steps`` HVPs
    (160 by default, in ``track_lanczos_steps`` batched passes); the first
    tracking point adds a 3-HVP symmetry probe. The exact count of every
    point is in ``History.track_matvecs``. The Hessian is taken in the
    model's own dtype (a float64 model gives float64 curvature).

    Examples
    --------
    >>> import critpoint as cp
    >>> from critpoint.data import load_data
    >>> from critpoint.models import build_model
    >>> from critpoint.training import train
    >>> model = build_model("mlp", widths=[16], seed=0)
    >>> h = train(model, load_data("digits"), optimizer="adam", lr=1e-2, steps=20,
    ...           batch_size=64, track={"sharpness"})
    >>> len(h.step), h.track_step[-1]
    (20, 20)
    """
    if not isinstance(model, nn.Module):
        msg = f"model must be a torch.nn.Module; got {type(model).__name__}"
        raise InputError(msg)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        msg = "the model has no trainable parameters (requires_grad=True); nothing to train"
        raise InputError(msg)
    x, y, classification, num_classes = _as_pair(data, "data")
    n = int(x.shape[0])
    if n == 0:
        msg = "data holds no samples; give at least one"
        raise InputError(msg)
    x, y = _place(x, y, params[0])
    test = None
    if test_data is not None:
        tx, ty, _, _ = _as_pair(test_data, "test_data")
        tx, ty = _place(tx, ty, params[0])
        test = (tx, ty)

    opt_name, opt_cls = _optimizer_class(optimizer)
    _check_lr(lr)
    schedule = _check_schedule(schedule)
    if epochs is not None and steps is not None:
        msg = f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})"
        raise InputError(msg)
    if batch_size is not None:
        _check_int(
            batch_size, "batch_size", hint="; use None for full-batch gradient descent"
        )
    full_batch = batch_size is None or batch_size >= n
    bs = n if full_batch else int(batch_size)  # type: ignore[arg-type]
    if not isinstance(drop_last, bool):
        msg = f"drop_last must be True or False; got {drop_last!r}"
        raise InputError(msg)
    steps_per_epoch = n // bs if drop_last else math.ceil(n / bs)
    if steps is not None:
        total = _check_int(steps, "steps")
    else:
        total = _check_int(1 if epochs is None else epochs, "epochs") * steps_per_epoch
    warmup_steps = _check_int(warmup_steps, "warmup_steps", minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"seed must be an int; got {seed!r}"
        raise InputError(msg)
    tracked = _normalise_track(track)
    if track_every is None:
        track_every = max(1, total // 10)
    track_every = _check_int(track_every, "track_every")
    if eval_every is None:
        eval_every = max(1, total // 50)
    eval_every = _check_int(eval_every, "eval_every")
    if not (_is_number(track_tol) and track_tol >= 0 and math.isfinite(track_tol)):
        msg = f"track_tol must be a finite number >= 0; got {track_tol!r}"
        raise InputError(msg)
    if not (_is_number(eig_rtol) and eig_rtol >= 0 and math.isfinite(eig_rtol)):
        msg = f"eig_rtol must be a finite number >= 0; got {eig_rtol!r}"
        raise InputError(msg)
    track_probes = _check_int(track_probes, "track_probes")
    track_lanczos_steps = _check_int(track_lanczos_steps, "track_lanczos_steps")
    if stop_loss is not None and not (
        _is_number(stop_loss) and math.isfinite(stop_loss)
    ):
        msg = f"stop_loss must be a finite number or None; got {stop_loss!r}"
        raise InputError(msg)
    if callback is not None and not callable(callback):
        msg = f"callback must be callable as callback(step, history); got {type(callback).__name__}"
        raise InputError(msg)
    if not isinstance(progress, bool):
        msg = f"progress must be True or False; got {progress!r}"
        raise InputError(msg)
    if optimizer_kwargs is not None and not isinstance(optimizer_kwargs, Mapping):
        msg = f"optimizer_kwargs must be a dict; got {type(optimizer_kwargs).__name__}"
        raise InputError(msg)

    from critpoint.data import _loss_name, get_loss

    if isinstance(loss, str):
        loss_fn = get_loss(loss, num_classes if classification else None)
    elif callable(loss):
        loss_fn = loss
    else:
        msg = f"loss must be a name such as 'cross_entropy' or a callable; got {loss!r}"
        raise InputError(msg)

    opt = make_optimizer(
        params,
        opt_cls if opt_name not in OPTIMIZERS else opt_name,
        lr,
        momentum=momentum,
        betas=tuple(betas),  # type: ignore[arg-type]
        weight_decay=weight_decay,
        **dict(optimizer_kwargs or {}),
    )
    scheduler = make_scheduler(opt, schedule, total, warmup_steps)

    settings: dict[str, Any] = {
        "optimizer": opt_name,
        "optimizer_class": f"{type(opt).__module__}.{type(opt).__qualname__}",
        "lr": float(lr),
        "momentum": float(momentum) if opt_name in ("momentum", "nesterov") else None,
        "betas": [float(b) for b in betas] if opt_name in ("adam", "adamw") else None,
        "weight_decay": float(weight_decay),
        "optimizer_kwargs": _json_copy(dict(optimizer_kwargs or {})),
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "batch_size": None if full_batch else bs,
        "full_batch": full_batch,
        "drop_last": drop_last,
        "epochs": epochs,
        "steps": steps,
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "num_samples": n,
        "num_params": sum(p.numel() for p in params),
        "dtype": str(params[0].dtype).removeprefix("torch."),
        "loss": _loss_name(loss),
        "seed": seed,
        "track": tracked,
        "track_every": track_every,
        "track_tol": float(track_tol),
        "track_probes": track_probes,
        "track_lanczos_steps": track_lanczos_steps,
        "eig_rtol": float(eig_rtol),
        "track_train_mode": bool(track_train_mode),
        "eval_every": eval_every,
        "stop_loss": None if stop_loss is None else float(stop_loss),
        "critpoint_version": __version__,
        "torch_version": str(torch.__version__),
    }
    history = History(settings=settings)

    objective = None
    if tracked:
        from critpoint.objective import Objective

        objective = Objective(model, loss_fn, (x, y), train_mode=track_train_mode)
    first_track = True

    def do_track(k: int) -> None:
        nonlocal first_track
        from critpoint.analysis import minimum_ratio, zero_tolerance
        from critpoint.linalg.lanczos import eigsh
        from critpoint.linalg.slq import spectral_density

        assert objective is not None
        H = objective.hessian(check=first_track)
        first_track = False
        top = bottom = None
        if "sharpness" in tracked:
            top = float(
                eigsh(
                    H,
                    k=1,
                    which="LA",
                    tol=track_tol,
                    seed=seed,
                    return_eigenvectors=False,
                ).eigenvalues[-1]
            )
            history.sharpness.append(top)
        if "lambda_min" in tracked:
            bottom = float(
                eigsh(
                    H,
                    k=1,
                    which="SA",
                    tol=track_tol,
                    seed=seed,
                    return_eigenvectors=False,
                ).eigenvalues[0]
            )
            history.lambda_min.append(bottom)
        if "minimum_ratio" in tracked:
            dens = spectral_density(
                H,
                num_probes=track_probes,
                num_steps=min(track_lanczos_steps, objective.num_params),
                seed=seed,
            )
            # The rule's zero tolerance, from the best ends known here: the
            # density's extreme nodes (Ritz values) and any eigsh run above.
            lo, hi = dens.support
            tau = zero_tolerance(
                min(lo, bottom if bottom is not None else lo),
                max(hi, top if top is not None else hi),
                eig_rtol,
            )
            history.minimum_ratio.append(minimum_ratio(dens, tau)[0])
        history.track_step.append(k)
        history.track_matvecs.append(int(H.num_matvecs))

    def do_eval(k: int) -> None:
        full, acc = _evaluate(model, loss_fn, x, y, classification, track_train_mode)
        if not math.isfinite(full):
            epoch = k // steps_per_epoch
            raise _nonfinite(
                "full training loss", k, epoch, opt.param_groups[0]["lr"], history
            )
        history.eval_step.append(k)
        history.full_loss.append(full)
        if acc is not None:
            history.accuracy.append(acc)
        if test is not None:
            t_loss, t_acc = _evaluate(
                model, loss_fn, *test, classification, track_train_mode
            )
            history.test_loss.append(t_loss)
            if t_acc is not None:
                history.test_accuracy.append(t_acc)

    gen = torch.Generator().manual_seed(seed)
    device = params[0].device
    fork_devices = [device] if device.type == "cuda" else []
    modes = [(m, m.training) for m in model.modules()]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="train", unit="step", leave=False)
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
            batches = _batches(n, bs, full_batch, drop_last, gen)
            k = 0
            stop = None
            while True:
                final = k == total or stop is not None
                if k % eval_every == 0 or final:
                    do_eval(k)
                    if (
                        stop_loss is not None
                        and history.full_loss[-1] <= stop_loss
                        and not final
                    ):
                        stop, final = "stop_loss", True
                if tracked and (k % track_every == 0 or final):
                    do_track(k)
                if final:
                    break
                epoch, idx = next(batches)
                xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                model.train()
                opt.zero_grad(set_to_none=True)
                value = loss_fn(model(xb), yb)
                current_lr = float(opt.param_groups[0]["lr"])
                if not bool(torch.isfinite(value)):
                    raise _nonfinite("training loss", k, epoch, current_lr, history)
                value.backward()
                sq = sum(
                    float(p.grad.detach().double().pow(2).sum())
                    for p in params
                    if p.grad is not None
                )
                history.step.append(k)
                history.epoch.append(epoch)
                history.loss.append(float(value.detach()))
                history.grad_norm.append(math.sqrt(sq))
                history.lr.append(current_lr)
                opt.step()
                scheduler.step()
                if bar is not None:
                    bar.update(1)
                    if k % 10 == 0:
                        bar.set_postfix(loss=f"{history.loss[-1]:.4g}")
                if callback is not None and callback(k, history) is True:
                    stop = "callback"
                k += 1
            history.stop_reason = stop or "completed"
    finally:
        for m, mode in modes:
            m.training = mode
        if bar is not None:
            bar.close()
    logger.debug(
        "trained %d steps (%s, lr=%g): final loss %.4g",
        history.num_steps,
        opt_name,
        lr,
        history.final_loss,
    )
    return history
