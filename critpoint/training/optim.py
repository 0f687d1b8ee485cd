"""Optimizers by name and learning-rate schedules, built from ``torch.optim``.

Nothing here re-implements an optimizer: ``"sgd"``, ``"momentum"`` and
``"nesterov"`` are :class:`torch.optim.SGD`, ``"rmsprop"`` is
:class:`torch.optim.RMSprop`, ``"adam"`` :class:`torch.optim.Adam` and
``"adamw"`` :class:`torch.optim.AdamW`; every schedule is a
:class:`torch.optim.lr_scheduler.LambdaLR` with the closed-form multiplier of
:func:`lr_factor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from critpoint._checks import finite_float, integer, positive_int
from critpoint.errors import InputError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "STEP_GAMMA",
    "STEP_MILESTONES",
    "check_lr",
    "check_schedule",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "resolve_optimizer",
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

#: Fractions of the post-warm-up steps at which the ``"step"`` schedule
#: multiplies the learning rate by :data:`STEP_GAMMA`.
STEP_MILESTONES: tuple[float, ...] = (0.5, 0.75)
#: Decay factor of the ``"step"`` schedule at each milestone.
STEP_GAMMA = 0.1


def resolve_optimizer(
    name: str | type[torch.optim.Optimizer],
) -> tuple[str, type[torch.optim.Optimizer]]:
    """``(key, class)`` of an optimizer name of :data:`OPTIMIZERS` or a ``torch.optim`` class.

    A class gives its own ``__name__`` as the key.

    Raises
    ------
    InputError
        For an unknown name or anything else.
    """
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


def check_lr(lr: Any) -> float:
    """A learning rate as a ``float``: finite and > 0."""
    return finite_float(lr, "lr", minimum=0.0, strict=True, hint="e.g. lr=0.1")


def check_schedule(schedule: Any) -> str:
    """A schedule name of :data:`SCHEDULES`, normalised (case, spaces)."""
    if not isinstance(schedule, str) or schedule.strip().lower() not in SCHEDULES:
        msg = f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}"
        raise InputError(msg)
    return schedule.strip().lower()


def _decay_rate(value: Any, name: str) -> float:
    """A momentum-like rate in ``[0, 1)``."""
    rate = finite_float(value, name, minimum=0.0)
    if rate >= 1.0:
        msg = f"{name} must be a number in [0, 1), got {value!r}"
        raise InputError(msg)
    return rate


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
    key, cls = resolve_optimizer(name)
    lr = check_lr(lr)
    momentum = _decay_rate(momentum, "momentum")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        msg = f"betas must be two numbers in [0, 1), e.g. (0.9, 0.999); got {betas!r}"
        raise InputError(msg)
    betas = (_decay_rate(betas[0], "betas[0]"), _decay_rate(betas[1], "betas[1]"))
    weight_decay = finite_float(weight_decay, "weight_decay", minimum=0.0)
    options: dict[str, Any] = {"lr": lr}
    if key == "sgd":
        options.update(momentum=0.0, weight_decay=weight_decay)
    elif key in ("momentum", "nesterov"):
        if momentum == 0.0 and key == "nesterov":
            msg = "nesterov needs momentum > 0; use optimizer='sgd' for plain gradient descent"
            raise InputError(msg)
        options.update(
            momentum=momentum,
            nesterov=key == "nesterov",
            weight_decay=weight_decay,
        )
    elif key == "rmsprop":
        options.update(weight_decay=weight_decay)
    elif key in ("adam", "adamw"):
        options.update(betas=betas, weight_decay=weight_decay)
    options.update(kwargs)
    try:
        return cls(params, **options)
    except (TypeError, ValueError) as exc:
        msg = (
            f"optimizer {key!r} ({cls.__name__}) rejected the options {options}: {exc}"
        )
        raise InputError(msg) from exc


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
    schedule = check_schedule(schedule)
    total = positive_int(total_steps, "total_steps")
    warmup = integer(warmup_steps, "warmup_steps", minimum=0)
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
