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
from critpoint.losses import LossFn, builtin_loss_name, get_loss
from critpoint.losses import loss_name as loss_name_of

__all__ = ["check_data_against_model"]


def _first_layer(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
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
        The loss the objective will use; decides which targets fit.

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

    state = ModelState(model)  # mode flags and buffers (a forward may write them)
    try:
        set_mode(model, False)
        with torch.no_grad():
            outputs = model(x)
    except Exception as exc:
        raise InputError(_forward_message(model, x, name, exc)) from exc
    finally:
        state.restore()
    if not isinstance(outputs, torch.Tensor):
        msg = (
            f"model returned {type(outputs).__name__}, not a tensor; wrap it so that it returns "
            "the outputs the loss takes, or pass batch_loss= to Objective"
        )
        raise InputError(msg)
    if outputs.dim() == 0 or outputs.shape[0] != x.shape[0]:
        msg = (
            f"model output has shape {tuple(outputs.shape)} for {x.shape[0]} input samples; "
            "the first output dimension must index samples"
        )
        raise InputError(msg)

    key = loss_name_of(loss_name)
    # Only critpoint's own losses have known target rules (a user's function
    # that happens to be called "mse" is not checked as if it were ours).
    _check_targets(builtin_loss_name(loss_name) or "", outputs, y, y_all, name)
    loss_fn = loss_name if callable(loss_name) else get_loss(loss_name)
    try:
        value = loss_fn(outputs, y)
    except Exception as exc:
        msg = (
            f"loss {key!r} failed on model outputs {tuple(outputs.shape)} {outputs.dtype} and "
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


def _forward_message(
    model: nn.Module, x: torch.Tensor, name: str, exc: Exception
) -> str:
    first = _first_layer(model)
    got = f"data {name!r} has inputs of shape {tuple(x.shape[1:])} per sample"
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
