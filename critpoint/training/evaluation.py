"""The full-data loss and accuracy at the evaluation points of training.

The loss is :meth:`critpoint.Objective.loss` — the one full-data loss of the
library, the same function whose Hessian the tracking takes — and the
accuracy is counted in the same forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from critpoint.errors import NonFiniteError
from critpoint.objective import Objective, resolve_reduction

__all__ = ["EVAL_CHUNK", "FullDataEvaluation"]

#: Samples per forward pass when the full training or test data is evaluated.
EVAL_CHUNK = 4096


class FullDataEvaluation:
    """The loss (and accuracy) of a model over all samples of ``(x, y)``.

    The loss is ``Objective(model, loss_fn, (x, y), train_mode=train_mode,
    batch_size=EVAL_CHUNK).loss()``, so it means exactly what the Hessian
    of the tracked curvature is taken of:

    * the mean of ``loss_fn`` over all samples, each batch weighted by its
      size (the exact sum for a loss with ``reduction="sum"``);
    * ``train_mode=False`` (the default of training's evaluation): eval mode,
      BatchNorm normalises with its running statistics and dropout is off;
    * ``train_mode=True``: train mode; BatchNorm normalises each batch of
      ``EVAL_CHUNK`` samples (the whole data when it is smaller) by that
      batch's own statistics, and its running statistics are neither used
      nor updated; dropout is on;
    * the model's mode flags and every buffer are as they were after a call.

    Parameters
    ----------
    model : nn.Module
        The model, evaluated at its current parameters on every call.
    loss_fn : callable
        ``loss_fn(outputs, targets)``, the loss of a batch.
    x, y : torch.Tensor
        Inputs ``(N, ...)`` and targets ``(N, ...)`` on the model's device.
    classification : bool
        Also count the samples whose largest output is the target's class.
    train_mode : bool
        See above.
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
        self.loss_fn = loss_fn
        self.classification = classification
        self.num_samples = int(x.shape[0])
        self._correct = 0
        # The accuracy rides along in the objective's own forward passes: its
        # batch loss counts the correct predictions of the outputs it makes.
        self.objective = Objective(
            model,
            data=(x, y),
            batch_loss=self._batch_loss,
            train_mode=train_mode,
            batch_size=EVAL_CHUNK,
            reduction=resolve_reduction(loss_fn, None),
            hvp_cache=None,
        )

    def _batch_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch[0], batch[1]
        outputs = model(inputs)
        if self.classification:
            self._correct += int((outputs.argmax(dim=1) == targets).sum())
        return self.loss_fn(outputs, targets)

    def __call__(self) -> tuple[float, float | None]:
        """``(loss, accuracy)`` at the model's current parameters.

        The accuracy is ``None`` unless ``classification``. A loss that is
        NaN or infinite gives ``(nan, nan)`` (``(nan, None)``): the caller
        decides what a diverged run means.
        """
        self._correct = 0
        try:
            loss = self.objective.loss()
        except NonFiniteError:
            return math.nan, (math.nan if self.classification else None)
        accuracy = self._correct / self.num_samples if self.classification else None
        return loss, accuracy
