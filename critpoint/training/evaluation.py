"""The full-data loss and accuracy at the evaluation points of training."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["EVAL_CHUNK", "FullDataEvaluation"]

#: Samples per forward pass when the full training or test data is evaluated.
EVAL_CHUNK = 4096


class FullDataEvaluation:
    """Mean loss (and accuracy) of a model over all samples of ``(x, y)``.

    Parameters
    ----------
    model : nn.Module
        The model, evaluated at its current parameters on every call and
        left as it was (mode flags, buffers).
    loss_fn : callable
        ``loss_fn(outputs, targets)``, the mean loss of a batch.
    x, y : torch.Tensor
        Inputs ``(N, ...)`` and targets ``(N, ...)`` on the model's device.
    classification : bool
        Also count the samples whose largest output is the target's class.
    train_mode : bool
        Evaluate with BatchNorm in train mode (batch statistics); see
        :meth:`__call__`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        classification: bool,
        train_mode: bool,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.x = x
        self.y = y
        self.classification = classification
        self.train_mode = train_mode

    def __call__(self) -> tuple[float, float | None]:
        """``(loss, accuracy)`` at the current parameters (accuracy ``None`` unless classification)."""
        model, x, y = self.model, self.x, self.y
        modes = [(m, m.training) for m in model.modules()]
        buffers = (
            {name: b.clone() for name, b in model.named_buffers()}
            if self.train_mode
            else {}
        )
        total = 0.0
        correct = 0
        n = int(x.shape[0])
        try:
            model.train(self.train_mode)
            with torch.no_grad():
                for start in range(0, n, EVAL_CHUNK):
                    xb = x[start : start + EVAL_CHUNK]
                    yb = y[start : start + EVAL_CHUNK]
                    out = model(xb)
                    total += float(self.loss_fn(out, yb)) * int(xb.shape[0])
                    if self.classification:
                        correct += int((out.argmax(dim=1) == yb).sum())
        finally:
            for m, mode in modes:
                m.training = mode
            if buffers:
                with torch.no_grad():
                    for name, b in model.named_buffers():
                        b.copy_(buffers[name])
        return total / n, (correct / n if self.classification else None)
