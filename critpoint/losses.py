"""Losses by name: the registry of built-in losses and how names find them.

:func:`get_loss` turns ``cross_entropy``, ``mse``, ``bce`` (and a few
aliases) or ``package.module:function`` / ``path/file.py:function`` into a
function ``(outputs, targets) -> mean loss``; :func:`builtin_loss_name` and
:func:`loss_name` go the other way, for what a checkpoint or a settings record
stores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from critpoint.errors import InputError
from critpoint.specs import load_object

__all__ = [
    "LOSSES",
    "LossFn",
    "bce",
    "builtin_loss_name",
    "cross_entropy",
    "get_loss",
    "loss_name",
    "mse",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _match_shape(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reshape ``(N,)`` targets to ``(N, 1)`` outputs (same numel), never broadcast."""
    if targets.shape != outputs.shape and targets.numel() == outputs.numel():
        return targets.reshape(outputs.shape)
    return targets


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, mean over samples (``F.cross_entropy``).

    Parameters
    ----------
    outputs : Tensor, shape (N, C)
        Logits.
    targets : Tensor, shape (N,)
        ``int64`` labels in ``[0, C)`` (or class probabilities of shape ``(N, C)``).
    """
    return F.cross_entropy(outputs, targets)


def mse(
    outputs: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Mean squared error over samples *and* outputs (``F.mse_loss``).

    Integer targets are class labels and are one-hot encoded to the output
    width (or ``num_classes``), the "square loss for classification" of Hui &
    Belkin and Cohen et al. Note the mean runs over all ``N·C`` elements, so
    the loss (and its Hessian) is ``1/C`` times the per-sample sum of squares
    averaged over samples.

    Parameters
    ----------
    outputs : Tensor, shape (N, C) or (N, ...)
    targets : Tensor
        Same shape as ``outputs`` (``(N,)`` also works for ``(N, 1)``
        outputs), or ``(N,)`` integer labels.
    num_classes : int, optional
        One-hot width; the default is ``outputs.shape[-1]``.
    """
    if not targets.is_floating_point() and targets.dim() == outputs.dim() - 1:
        # Integer labels (N,) for outputs (N, C): the square loss on one-hot rows.
        width = num_classes if num_classes is not None else outputs.shape[-1]
        targets = F.one_hot(targets.long(), width)
    return F.mse_loss(outputs, _match_shape(outputs, targets).to(outputs.dtype))


def bce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, mean over all elements.

    Parameters
    ----------
    outputs : Tensor
        Logits of any shape.
    targets : Tensor
        Values in [0, 1] with the shape of ``outputs`` (``(N,)`` also works
        for ``(N, 1)`` outputs); integer 0/1 labels are cast to float.
    """
    return F.binary_cross_entropy_with_logits(
        outputs, _match_shape(outputs, targets).to(outputs.dtype)
    )


#: Built-in losses by name; each maps ``(outputs, targets)`` to a mean loss.
LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": mse, "bce": bce}

_ALIASES = {
    "ce": "cross_entropy",
    "crossentropy": "cross_entropy",
    "bce_with_logits": "bce",
}


def _loss_key(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def get_loss(
    name: str | LossFn,
    num_classes: int | None = None,
    *,
    trust: bool = True,
    source: str | None = None,
) -> LossFn:
    """Return the loss function ``(outputs, targets) -> mean loss`` for a name.

    Parameters
    ----------
    name : str or callable
        ``"cross_entropy"`` (also ``"cross-entropy"``, ``"ce"``), ``"mse"``,
        ``"bce"``, or ``package.module:function`` / ``path/file.py:function``
        (imported and run: the caller's code). An ``nn.Module`` class named
        this way (``torch.nn:MSELoss``) is instantiated without arguments. A
        callable is returned as it is.
    num_classes : int, optional
        For ``mse`` with integer labels: the one-hot width (default: the
        output width).
    trust : bool
        ``True`` (default): the caller names the loss. ``False``: the name was
        read from a file and may name only a built-in loss; code raises
        :class:`~critpoint.errors.UnsafeCheckpointError`.
    source : str, optional
        Where the name was read, for messages.

    Returns
    -------
    callable
        A module-level function (picklable, with a ``__name__``).
    """
    if callable(name):
        return name
    if not isinstance(name, str):
        msg = f"loss must be a name or a callable; got {name!r}"
        raise InputError(msg)
    if not name.strip():
        msg = f"the loss name is empty; choose one of {sorted(LOSSES)} or name a function 'package.module:function'"
        raise InputError(msg)
    key = _loss_key(name)
    if key in LOSSES:
        fn = LOSSES[key]
        if key == "mse" and num_classes is not None:
            part = functools.partial(mse, num_classes=num_classes)
            part.__name__ = "mse"  # type: ignore[attr-defined]
            return part
        return fn
    if ":" in name:
        obj = load_object(
            name, what="loss function", trust=trust, source=source, builtins=LOSSES
        )
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            try:
                obj = obj()
            except Exception as exc:
                msg = f"loss {name!r}: {obj.__name__}() failed: {type(exc).__name__}: {exc}"
                raise InputError(msg) from exc
        if not callable(obj):
            msg = f"loss function {name!r} is not callable ({type(obj).__name__})"
            raise InputError(msg)
        return obj
    msg = (
        f"unknown loss {name!r}; built-in losses are {sorted(LOSSES)}, or name your own "
        "as 'package.module:function' or 'path/to/file.py:function'"
    )
    raise InputError(msg)


def builtin_loss_name(loss: str | LossFn) -> str | None:
    """The built-in name of ``loss`` (a name, a built-in or a partial of one), else None.

    Only critpoint's own losses have a built-in name: a user's function that
    happens to be called ``mse`` has none.
    """
    if isinstance(loss, str):
        key = _loss_key(loss)
        return key if key in LOSSES else None
    fn = loss.func if isinstance(loss, functools.partial) else loss
    for key, value in LOSSES.items():
        if fn is value:
            return key
    return None


def loss_name(loss: str | LossFn) -> str:
    """A name for ``loss``, for settings and messages.

    The built-in name when it has one (``"CE"`` → ``"cross_entropy"``), else
    the string as given, else the function's ``__name__`` (or its type's).
    """
    key = builtin_loss_name(loss)
    if key is not None:
        return key
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", type(loss).__name__)
