"""Losses by name: the registry of built-in losses and how names find them.

:func:`get_loss` turns ``cross_entropy``, ``mse``, ``bce``, ``causal_lm`` (and
a few aliases) or ``package.module:function`` / ``path/file.py:function`` into
a function ``(outputs, targets) -> mean loss``; :func:`builtin_loss_name` and
:func:`loss_name` go the other way, for what a checkpoint or a settings record
stores. :func:`get_batch_loss` names a ``batch_loss(model, batch)`` for
batches that are not ``(inputs, targets)`` pairs (dicts, a model that computes
its own loss).

The built-in losses take the model's outputs as a tensor, or as an output
object with a ``logits`` field (what Hugging Face models return), so such
models need no wrapper (:func:`logits_of`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from critpoint.errors import InputError
from critpoint.specs import load_object

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "BatchLossFn",
    "LossFn",
    "bce",
    "builtin_loss_name",
    "causal_lm",
    "cross_entropy",
    "get_batch_loss",
    "get_loss",
    "logits_of",
    "loss_name",
    "mse",
]

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
BatchLossFn = Callable[[nn.Module, Any], torch.Tensor]

#: Target value of a position no loss is taken at (padding), as in
#: ``F.cross_entropy`` and Hugging Face's ``labels``.
IGNORE_INDEX = -100


def logits_of(outputs: Any) -> torch.Tensor:
    """The tensor a built-in loss is taken of: ``outputs`` or its ``logits``.

    Parameters
    ----------
    outputs : Tensor, or an object or dict with a ``logits`` tensor
        What the model returned; a Hugging Face ``ModelOutput`` has ``.logits``.

    Raises
    ------
    InputError
        Anything else (a tuple, an output without logits), with the fix.
    """
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = (
        outputs.get("logits")
        if isinstance(outputs, Mapping)
        else getattr(outputs, "logits", None)
    )
    if isinstance(logits, torch.Tensor):
        return logits
    msg = (
        f"the model returned a {type(outputs).__name__}, neither a tensor nor an output "
        "with a 'logits' tensor, so the built-in losses cannot use it; give your own "
        "--loss module:function taking these outputs, or --batch-loss file.py:fn "
        "(batch_loss=fn(model, batch) in Python) returning the batch's loss"
    )
    raise InputError(msg)


def _match_shape(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reshape ``(N,)`` targets to ``(N, 1)`` outputs (same numel), never broadcast."""
    if targets.shape != outputs.shape and targets.numel() == outputs.numel():
        return targets.reshape(outputs.shape)
    return targets


def cross_entropy(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, mean over samples (``F.cross_entropy``).

    Parameters
    ----------
    outputs : Tensor, shape (N, C), or an output with ``.logits``
        Logits.
    targets : Tensor, shape (N,)
        ``int64`` labels in ``[0, C)`` (or class probabilities of shape ``(N, C)``).
    """
    return F.cross_entropy(logits_of(outputs), targets)


def causal_lm(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a causal language model, mean over sequences.

    Position ``t`` of the logits predicts token ``t + 1``: the targets are the
    sequence's own token ids (the model's ``input_ids``, as Hugging Face's
    ``labels``), and the loss shifts them. Targets equal to
    :data:`IGNORE_INDEX` (-100, padding) are not predicted.

    Each sequence's loss is the mean over its predicted tokens, and the loss
    of a batch is the mean over its sequences. So every sequence is one
    sample, and the objective's mean over all samples (a batch weighted by its
    number of sequences) is the same whatever the batching, padding included.
    Without padding every sequence predicts ``T - 1`` tokens, and this is the
    plain mean over all predicted tokens, equal to Hugging Face's ``loss`` for
    ``labels=input_ids``; with padding, Hugging Face's loss averages the
    tokens of a batch instead (which depends on the batching).

    Parameters
    ----------
    outputs : Tensor, shape (N, T, V), or an output with ``.logits``
        Logits over a vocabulary of ``V`` tokens at each of ``T`` positions.
    targets : Tensor, shape (N, T)
        ``int64`` token ids in ``[0, V)``, or -100 where nothing is predicted.

    Returns
    -------
    Tensor, shape ()
        ``(1/N) Σ_i (1/|P_i|) Σ_{t ∈ P_i} −log softmax(logits[i, t−1])[targets[i, t]]``
        where ``P_i`` are the positions ``t ≥ 1`` of sequence ``i`` whose
        target is not -100. A sequence with no predicted token counts 0
        (:func:`critpoint.data.check_data_against_model` refuses such data).
    """
    logits = logits_of(outputs)
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        msg = (
            f"causal_lm needs logits of shape (N, T, V) and token ids of shape (N, T); got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
        raise InputError(msg)
    predicted = logits[:, :-1]
    nxt = targets[:, 1:]
    per_token = F.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]),
        nxt.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).reshape(nxt.shape)
    counts = (nxt != IGNORE_INDEX).sum(1).clamp_min(1).to(per_token.dtype)
    return (per_token.sum(1) / counts).mean()


def mse(
    outputs: Any, targets: torch.Tensor, num_classes: int | None = None
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
    outputs = logits_of(outputs)
    if not targets.is_floating_point() and targets.dim() == outputs.dim() - 1:
        # Integer labels (N,) for outputs (N, C): the square loss on one-hot rows.
        width = num_classes if num_classes is not None else outputs.shape[-1]
        targets = F.one_hot(targets.long(), width)
    return F.mse_loss(outputs, _match_shape(outputs, targets).to(outputs.dtype))


def bce(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, mean over all elements.

    Parameters
    ----------
    outputs : Tensor
        Logits of any shape.
    targets : Tensor
        Values in [0, 1] with the shape of ``outputs`` (``(N,)`` also works
        for ``(N, 1)`` outputs); integer 0/1 labels are cast to float.
    """
    outputs = logits_of(outputs)
    return F.binary_cross_entropy_with_logits(
        outputs, _match_shape(outputs, targets).to(outputs.dtype)
    )


#: Built-in losses by name; each maps ``(outputs, targets)`` to a mean loss.
LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "bce": bce,
    "causal_lm": causal_lm,
}

_ALIASES = {
    "ce": "cross_entropy",
    "crossentropy": "cross_entropy",
    "bce_with_logits": "bce",
    "clm": "causal_lm",
    "next_token": "causal_lm",
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
        ``"bce"``, ``"causal_lm"`` (next-token cross-entropy), or ``package.module:function`` / ``path/file.py:function``
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


def get_batch_loss(
    name: str | BatchLossFn, *, trust: bool = True, source: str | None = None
) -> BatchLossFn:
    """Return ``batch_loss(model, batch) -> loss of the batch`` for a name.

    For batches a ``loss_fn(outputs, targets)`` cannot take: dicts of
    tensors, a model that computes its own loss (a Hugging Face model called
    with ``labels`` returns ``.loss``). The objective weights each batch by
    its number of samples (the length of its first tensor), so the function
    returns the batch's *mean* loss per sample (see
    :class:`critpoint.Objective`).

    Parameters
    ----------
    name : str or callable
        ``package.module:function`` or ``path/file.py:function`` (imported
        and run: the caller's code); a callable is returned as it is.
    trust : bool
        ``False``: the name was read from a file, and code is refused
        (:class:`~critpoint.errors.UnsafeCheckpointError`); there are no
        built-in batch losses.
    source : str, optional
        Where the name was read, for messages.

    Raises
    ------
    InputError
        Not a ``module:function`` / ``file.py:function`` name, or not callable.
    """
    if callable(name):
        return name
    if not isinstance(name, str) or ":" not in name:
        msg = (
            f"a batch loss is a function named 'package.module:function' or "
            f"'path/to/file.py:function' taking (model, batch); got {name!r}"
        )
        raise InputError(msg)
    fn = load_object(name, what="batch loss function", trust=trust, source=source)
    if not callable(fn):
        msg = f"batch loss {name!r} is not callable ({type(fn).__name__})"
        raise InputError(msg)
    return fn


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
