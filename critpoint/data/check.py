"""One forward pass on two samples: shape and dtype mistakes as clear errors.

:func:`check_data_against_model` runs before any Hessian work starts, so a
model that does not fit its data, or targets that do not fit the loss, fail
at once with a message that says what to change.
"""

from __future__ import annotations

import torch
from torch import nn

from critpoint._model_state import ModelState, set_mode
from critpoint.data.base import Data, DataSource
from critpoint.errors import InputError
from critpoint.losses import (
    IGNORE_INDEX,
    LossFn,
    builtin_loss_name,
    get_loss,
    logits_of,
)
from critpoint.losses import loss_name as loss_name_of

__all__ = ["check_data_against_model"]


def _first_layer(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)):
            return m
    return None


def check_data_against_model(
    model: nn.Module,
    data: Data | DataSource | tuple[torch.Tensor, torch.Tensor],
    loss_name: str | LossFn = "cross_entropy",
) -> None:
    """Run one forward pass on two samples and explain any mismatch.

    The model is run in eval mode under ``no_grad`` (so BatchNorm running
    statistics are not touched) and its train/eval flags are restored. The
    inputs are cast to the model's parameter dtype and device for this check.

    Parameters
    ----------
    model : nn.Module
    data : Data, DataSource or (inputs, targets)
        For :class:`Data` and tensor pairs the label range is checked on all
        samples; for a ``DataSource`` on its first samples.
    loss_name : str or callable
        The loss the objective will use. For critpoint's built-in losses the
        model's outputs (a tensor, or an output object with ``.logits``) and
        the targets are checked against what the loss needs; a user's loss
        is only called once on them (it takes what it takes).

    Raises
    ------
    InputError
        With expected versus received shapes or dtypes, and the fix.
    """
    if isinstance(data, Data):
        x_all, y_all, name = data.inputs, data.targets, data.name
        x, y = x_all[:2], y_all[:2]
    elif isinstance(data, DataSource):
        x, y = data.first_batch(2)
        x_all, y_all, name = x, y, data.name
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x_all, y_all = (torch.as_tensor(t) for t in data)
        x, y, name = x_all[:2], y_all[:2], "(inputs, targets)"
    else:
        msg = f"data must be Data, DataSource or an (inputs, targets) pair; got {type(data).__name__}"
        raise InputError(msg)

    param = next(iter(model.parameters()), None)
    if x.is_floating_point() and param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    elif param is not None:
        x = x.to(device=param.device)
    y = y.to(device=x.device)

    first = _first_layer(model)
    if isinstance(first, nn.Embedding) and _is_integer(x_all) and x_all.numel():
        lo, hi = int(x_all.min()), int(x_all.max())
        if lo < 0 or hi >= first.num_embeddings:
            msg = (
                f"the model's embedding ({first}) takes token ids in [0, "
                f"{first.num_embeddings}); data {name!r} has ids in [{lo}, {hi}]. Use the "
                "tokenizer the model was trained with, or a model with a larger vocabulary"
            )
            raise InputError(msg)

    state = ModelState(model)  # mode flags and buffers (a forward may write them)
    try:
        set_mode(model, False)
        with torch.no_grad():
            outputs = model(x)
    except Exception as exc:
        raise InputError(_forward_message(model, x, name, exc)) from exc
    finally:
        state.restore()
    key = loss_name_of(loss_name)
    # Only critpoint's own losses have known output and target rules: a loss
    # from a file or module is the user's and takes what the model returns (a
    # user's function that happens to be called "mse" is not checked as ours).
    builtin = builtin_loss_name(loss_name)
    if builtin is not None:
        logits = logits_of(outputs)
        if logits.dim() == 0 or logits.shape[0] != x.shape[0]:
            msg = (
                f"model output has shape {tuple(logits.shape)} for {x.shape[0]} input "
                "samples; the first output dimension must index samples"
            )
            raise InputError(msg)
        _check_targets(builtin, logits, y, y_all, name)
    loss_fn = loss_name if callable(loss_name) else get_loss(loss_name)
    try:
        value = loss_fn(outputs, y)
    except InputError:
        raise
    except Exception as exc:
        msg = (
            f"loss {key!r} failed on model outputs {_described(outputs)} and "
            f"targets {tuple(y.shape)} {y.dtype} of data {name!r}: {type(exc).__name__}: {exc}"
        )
        raise InputError(msg) from exc
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = (
            tuple(value.shape)
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        msg = f"loss {key!r} must return a scalar mean loss; got {shape}. Reduce it with .mean()"
        raise InputError(msg)


def _described(outputs: object) -> str:
    """``(2, 10) torch.float32`` for a tensor, the type (and its logits) otherwise."""
    if isinstance(outputs, torch.Tensor):
        return f"{tuple(outputs.shape)} {outputs.dtype}"
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return (
            f"{type(outputs).__name__} with logits {tuple(logits.shape)} {logits.dtype}"
        )
    return type(outputs).__name__


def _forward_message(
    model: nn.Module, x: torch.Tensor, name: str, exc: Exception
) -> str:
    first = _first_layer(model)
    got = f"data {name!r} has inputs of shape {tuple(x.shape[1:])} per sample"
    error = f"({type(exc).__name__}: {exc})"
    if isinstance(first, nn.Embedding) and x.is_floating_point():
        return (
            f"the model starts with an embedding ({first}), which takes integer token ids, "
            f"but {got} of dtype {x.dtype}; store the ids as int64. {error}"
        )
    if isinstance(first, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not (
        x.is_floating_point() or x.is_complex()
    ):
        return (
            f"the model's first layer {first} takes floating inputs, but {got} of dtype "
            f"{x.dtype}: integer inputs are kept as ids (for an embedding). Store "
            "features as floats (e.g. x.astype(np.float32) / 255 for 8-bit images). "
            f"{error}"
        )
    if isinstance(first, nn.Linear):
        features = int(x[0].numel()) if x.dim() > 1 else 1
        return (
            f"the model's first layer expects {first.in_features} input features but {got} "
            f"({features} features); use a model with in_features={features} or the matching "
            f"data. ({type(exc).__name__}: {exc})"
        )
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return (
            f"the model's first layer {first} expects {first.in_channels} input channels but "
            f"{got}; check the image shape. ({type(exc).__name__}: {exc})"
        )
    return f"the model cannot run on the inputs: {got}. ({type(exc).__name__}: {exc})"


def _check_targets(
    key: str, outputs: torch.Tensor, y: torch.Tensor, y_all: torch.Tensor, name: str
) -> None:
    out_shape = tuple(outputs.shape)
    if key == "cross_entropy":
        if outputs.dim() < 2:
            msg = (
                f"cross_entropy needs outputs of shape (N, C) (logits); the model returns "
                f"{out_shape}. Use a model with C >= 2 outputs, or the bce loss for one logit"
            )
            raise InputError(msg)
        c = outputs.shape[1]
        if not y.is_floating_point() and y.dim() >= 2:
            if tuple(y.shape) == out_shape and _is_one_hot(y_all):
                msg = (
                    f"cross_entropy needs class labels of shape (N,); data {name!r} has "
                    f"one-hot rows of width {c}. Store labels (targets.argmax(1)), or "
                    "float class probabilities"
                )
                raise InputError(msg)
            msg = (
                f"cross_entropy takes one class label per sample (N,); data {name!r} has "
                f"integer targets of shape {tuple(y.shape[1:])} per sample and the model "
                f"returns {out_shape}. Token ids of a language model? Use --loss causal_lm "
                "(next-token cross-entropy); for anything else give your own --loss"
            )
            raise InputError(msg)
        if y.is_floating_point():
            if y.shape == outputs.shape:
                return  # class probabilities, as F.cross_entropy accepts
            msg = (
                f"cross_entropy needs integer class labels in [0, {c}); data {name!r} has "
                f"{y.dtype} targets of shape {tuple(y.shape[1:])} per sample. Convert labels "
                "with targets.long(), or use the mse loss for real-valued targets"
            )
            raise InputError(msg)
        _check_labels(y_all, c, key, name, out_shape)
    elif key == "causal_lm":
        _check_tokens(outputs, y_all, name)
    elif key in ("mse", "bce"):
        if (
            not y.is_floating_point()
            and (y.dim() == 1 and outputs.dim() == 2)
            and key == "mse"
        ):
            _check_labels(y_all, outputs.shape[1], key, name, out_shape)
            return
        if y.shape != outputs.shape and y.numel() != outputs.numel():
            msg = (
                f"{key} targets must have the model's output shape {out_shape[1:]} per sample"
                f"{' (or be class labels of shape (N,))' if key == 'mse' else ''}; data {name!r} "
                f"has targets of shape {tuple(y.shape[1:])} per sample"
            )
            raise InputError(msg)
        if (
            key == "bce"
            and y.numel()
            and (float(y_all.min()) < 0 or float(y_all.max()) > 1)
        ):
            msg = f"bce targets must lie in [0, 1]; data {name!r} has values in [{float(y_all.min())}, {float(y_all.max())}]"
            raise InputError(msg)


def _check_labels(
    y: torch.Tensor, c: int, key: str, name: str, out_shape: tuple[int, ...]
) -> None:
    if y.dim() != 1:
        msg = f"{key} class labels must have shape (N,); data {name!r} has targets {tuple(y.shape)}"
        raise InputError(msg)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= c:
        msg = (
            f"{key} needs class labels in [0, {c}) for model outputs {out_shape}; data {name!r} "
            f"has labels in [{lo}, {hi}]. Use a model with {hi + 1} outputs"
        )
        raise InputError(msg)


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _is_one_hot(y: torch.Tensor) -> bool:
    """Whether integer rows ``(N, C)`` each hold one 1 and zeros."""
    return bool(y.dim() == 2 and ((y == 0) | (y == 1)).all() and (y.sum(1) == 1).all())


def _check_tokens(logits: torch.Tensor, y: torch.Tensor, name: str) -> None:
    """Token ids ``(N, T)`` for logits ``(N, T, V)``: shapes, range, something to predict."""
    if logits.dim() != 3:
        msg = (
            f"causal_lm needs logits of shape (N, T, V) (a vocabulary of V at each of T "
            f"positions); the model returns {tuple(logits.shape)}"
        )
        raise InputError(msg)
    if y.is_floating_point() or y.dim() != 2 or y.shape[1] != logits.shape[1]:
        msg = (
            f"causal_lm needs int64 token ids of shape (N, T) = (N, {logits.shape[1]}) as "
            f"targets (the input ids themselves); data {name!r} has {y.dtype} targets of "
            f"shape {tuple(y.shape[1:])} per sample"
        )
        raise InputError(msg)
    if y.shape[1] < 2:
        msg = f"causal_lm predicts each token from the ones before it; data {name!r} has sequences of length {y.shape[1]}, give at least 2 tokens"
        raise InputError(msg)
    labelled = y[y != IGNORE_INDEX]
    vocab = logits.shape[2]
    if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= vocab):
        msg = (
            f"causal_lm needs token ids in [0, {vocab}) for the model's vocabulary of {vocab} "
            f"(or {IGNORE_INDEX} for padding); data {name!r} has ids in "
            f"[{int(labelled.min())}, {int(labelled.max())}]"
        )
        raise InputError(msg)
    empty = ((y[:, 1:] != IGNORE_INDEX).sum(1) == 0).nonzero().flatten()
    if empty.numel():
        msg = (
            f"causal_lm: {empty.numel()} sequence(s) of data {name!r} (the first is number "
            f"{int(empty[0])}) have no token to predict (all but the first are {IGNORE_INDEX}); "
            "drop them"
        )
        raise InputError(msg)
