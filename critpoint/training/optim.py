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

from critpoint.errors import InputError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "STEP_GAMMA",
    "STEP_MILESTONES",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
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
