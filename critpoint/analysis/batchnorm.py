"""Which function a model with BatchNorm is analysed as, and whether its statistics lag.

A model with BatchNorm layers computes two functions: in eval mode it
normalises by its running statistics (what a deployed model computes), in
train mode by each batch's own statistics (what training minimises). After
short training, or with a momentum that averages over many steps, the running
statistics lag behind the weights, and the two differ: a ResNet trained to a
loss of 3e-5 can have an eval-mode loss of 12.76, and a Hessian that describes
a point training never visited. :func:`check_batchnorm` measures both losses
(one extra pass over the data; two with ``bn="recalibrate"``) and
:class:`BatchNormCheck` says which one was analysed and warns, with both
numbers, when they differ by more than :data:`BN_GAP_RTOL`.

The threshold, 5 %: the batch-statistics loss of the objective's batches (up
to thousands of samples) differs from the full-data one by the sampling
noise of the statistics, ``O(1/√batch)`` relative — about 3 % for a batch of
a thousand; beyond a few percent the two functions are not the same function
up to noise, so the curvature of one says little about the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from critpoint.objective import Objective

__all__ = ["BN_GAP_RTOL", "BatchNormCheck", "bn_mode_text", "check_batchnorm"]

#: Relative difference of the eval-mode and batch-statistics losses above which
#: a diagnosis warns (see the module's text for the choice).
BN_GAP_RTOL = 0.05


def bn_mode_text(mode: str, num_layers: int | None = None) -> str:
    """The BatchNorm mode in words: which statistics normalise.

    Parameters
    ----------
    mode : {"eval", "train", "recalibrate"}
    num_layers : int, optional
        BatchNorm layers with running statistics; ``0`` says that the modes agree.

    Returns
    -------
    str
    """
    if num_layers == 0:
        return f"{mode} mode (no BatchNorm layer: every mode is the same function)"
    layers = (
        ""
        if num_layers is None
        else f" of {num_layers} BatchNorm layer{'s' if num_layers != 1 else ''}"
    )
    return {
        "eval": f"eval mode: the running statistics{layers}",
        "train": f"train mode: each batch's own statistics{layers}",
        "recalibrate": f"eval mode with the statistics{layers} re-estimated over the data",
    }.get(mode, f"{mode} mode")


@dataclass(frozen=True)
class BatchNormCheck:
    """The eval-mode and batch-statistics losses of a model with BatchNorm layers.

    Attributes
    ----------
    mode : {"eval", "train", "recalibrate"}
        The function the diagnosis analysed (``Objective.bn``).
    num_layers : int
        BatchNorm layers with running statistics.
    eval_loss : float
        Eval mode with the model's own running statistics.
    batch_loss : float
        Batch statistics (train mode, running statistics frozen), in the
        objective's batches.
    recalibrated_loss : float or None
        Eval mode with the statistics re-estimated over the data (the loss
        analysed with ``bn="recalibrate"``; ``None`` otherwise).
    rtol : float
        The warning threshold on :attr:`gap`.
    """

    mode: str
    num_layers: int
    eval_loss: float
    batch_loss: float
    recalibrated_loss: float | None = None
    rtol: float = BN_GAP_RTOL

    @property
    def gap(self) -> float:
        """``|eval − batch| / max(|eval|, |batch|)``: 0 when both are 0."""
        scale = max(abs(self.eval_loss), abs(self.batch_loss))
        if scale == 0:
            return 0.0
        return abs(self.eval_loss - self.batch_loss) / scale

    @property
    def lagging(self) -> bool:
        """The two losses differ by more than :attr:`rtol`: the running statistics lag."""
        return not self.gap <= self.rtol  # a NaN loss warns too

    def describe(self) -> str:
        """The mode and both losses, in one clause."""
        text = (
            f"{bn_mode_text(self.mode, self.num_layers)}; eval-mode loss "
            f"{self.eval_loss:.4g}, batch-statistics loss {self.batch_loss:.4g}"
        )
        if self.recalibrated_loss is not None:
            text += f", recalibrated {self.recalibrated_loss:.4g}"
        return text

    def warning(self) -> str | None:
        """What the gap means and what to do, with both numbers; ``None`` without a gap."""
        if not self.lagging:
            return None
        both = (
            f"the eval-mode loss {self.eval_loss:.4g} (running statistics) and the "
            f"batch-statistics loss {self.batch_loss:.4g} differ by {100 * self.gap:.3g} %"
        )
        if self.mode == "eval":
            return (
                f"{both}: the running statistics lag behind the weights, so the function "
                "analysed is not the one training minimised; bn='recalibrate' "
                "(--bn recalibrate) analyses the deployed model with statistics "
                "re-estimated over the data, bn='train' (--bn train) the function "
                "training sees"
            )
        if self.mode == "train":
            return (
                f"{both}: the function analysed (batch statistics) is not the one the "
                "model computes when deployed, whose running statistics lag; "
                "bn='recalibrate' (--bn recalibrate) analyses the deployed model with "
                "statistics re-estimated over the data"
            )
        recal = (
            ""
            if self.recalibrated_loss is None
            else f"; with them re-estimated, as analysed here, the loss is "
            f"{self.recalibrated_loss:.4g}"
        )
        return (
            f"{both}: the model's own running statistics lag behind its weights{recal}; "
            "recalibrate them before deploying (torch.optim.swa_utils.update_bn)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (non-finite numbers are cleaned by the caller)."""
        return {
            "mode": self.mode,
            "num_layers": self.num_layers,
            "eval_loss": self.eval_loss,
            "batch_loss": self.batch_loss,
            "recalibrated_loss": self.recalibrated_loss,
            "gap": self.gap,
            "rtol": self.rtol,
            "lagging": self.lagging,
            "warning": self.warning(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchNormCheck:
        """Rebuild from :meth:`to_dict`."""

        def num(key: str) -> float:
            value = data.get(key)
            return float("nan") if value is None else float(value)

        recal = data.get("recalibrated_loss")
        return cls(
            mode=str(data["mode"]),
            num_layers=int(data["num_layers"]),
            eval_loss=num("eval_loss"),
            batch_loss=num("batch_loss"),
            recalibrated_loss=None if recal is None else float(recal),
            rtol=float(data.get("rtol", BN_GAP_RTOL)),
        )


def check_batchnorm(obj: Objective, loss: float) -> BatchNormCheck | None:
    """Both losses of a model with BatchNorm layers, at the objective's point.

    Parameters
    ----------
    obj : Objective
        Its :attr:`~critpoint.Objective.bn` mode is what was analysed.
    loss : float
        The objective's own loss there (already measured: not evaluated again).

    Returns
    -------
    BatchNormCheck or None
        ``None`` when the model has no BatchNorm layer with running
        statistics (every mode is the same function). Costs one pass over
        the data (the other mode's loss), two for ``bn="recalibrate"``.
    """
    layers = obj.batchnorm_layers
    if not layers:
        return None
    recalibrated = None
    if obj.bn == "eval":
        eval_loss, batch_loss = loss, obj.loss(bn="train")
    elif obj.bn == "train":
        eval_loss, batch_loss = obj.loss(bn="eval"), loss
    else:
        eval_loss, batch_loss = obj.loss(bn="eval"), obj.loss(bn="train")
        recalibrated = loss
    return BatchNormCheck(
        mode=obj.bn,
        num_layers=len(layers),
        eval_loss=float(eval_loss),
        batch_loss=float(batch_loss),
        recalibrated_loss=None if recalibrated is None else float(recalibrated),
    )
