"""What loaded data is: :class:`Data` (tensors in memory) or :class:`DataSource`.

Also how tensors and arrays become :class:`Data`: the checks every file
reader and user function goes through (a sample dimension, matching lengths,
real dtypes, class labels in range), and the task guessed from the targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from critpoint.errors import InputError
from critpoint.losses import IGNORE_INDEX
from critpoint.specs import parse_dtype

__all__ = [
    "FORMAT_HINT",
    "Data",
    "DataSource",
    "Task",
    "as_tensor",
    "data_from_arrays",
    "data_from_tensors",
]

Task = Literal["classification", "regression"]

#: How a data file or a user function should hold its tensors, for messages.
FORMAT_HINT = (
    "save a dict {'inputs': tensor (N, ...), 'targets': tensor (N, ...)} (for a "
    "language model, {'input_ids': int64 tensor (N, T)})"
)


@dataclass(frozen=True, eq=False)
class Data:
    """An in-memory data set: all inputs and targets as two tensors.

    Attributes
    ----------
    inputs : Tensor, shape (N, ...)
        Floating point features, or ``int64`` ids (token ids of shape
        ``(N, T)`` for a language model); the first dimension indexes samples.
    targets : Tensor, shape (N,) or (N, ...)
        ``int64`` class labels for classification: one per sample ``(N,)``,
        or one per position ``(N, T)`` (the token ids of a language model;
        -100 marks positions without a label), floating values for regression.
    task : {"classification", "regression"}
    num_classes : int or None
        Number of classes for classification (labels are in ``[0, C)``; for
        token ids, the largest id + 1).
    name : str
        Where the data came from (a built-in name or a path), for messages.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    task: Task
    num_classes: int | None
    name: str

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(inputs, targets)``, the form ``Objective`` takes."""
        return self.inputs, self.targets

    def subset(self, max_samples: int | None, seed: int | None = None) -> Data:
        """Return at most ``max_samples`` samples.

        Parameters
        ----------
        max_samples : int or None
            ``None`` or a number ≥ ``len(self)`` returns ``self``.
        seed : int, optional
            ``None`` keeps the first ``max_samples`` samples (deterministic and
            order-preserving); an int draws a random subset from a local
            generator seeded with it.
        """
        if max_samples is None or max_samples >= len(self):
            return self
        if (
            isinstance(max_samples, bool)
            or not isinstance(max_samples, int)
            or max_samples < 1
        ):
            msg = f"max_samples must be a positive integer or None; got {max_samples!r}"
            raise InputError(msg)
        if seed is None:
            idx = torch.arange(max_samples)
        else:
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(self), generator=gen)[:max_samples].sort().values
        return Data(
            self.inputs[idx], self.targets[idx], self.task, self.num_classes, self.name
        )

    def to(
        self,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> Data:
        """Cast the floating tensors to ``dtype`` and move both to ``device``.

        Integer class labels and token ids keep their ``int64`` dtype.
        """
        dt = parse_dtype(dtype)

        def conv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dt if t.is_floating_point() else None)

        return Data(
            conv(self.inputs),
            conv(self.targets),
            self.task,
            self.num_classes,
            self.name,
        )

    def __repr__(self) -> str:
        return (
            f"Data(name={self.name!r}, n={len(self)}, inputs={tuple(self.inputs.shape)} "
            f"{self.inputs.dtype}, targets={tuple(self.targets.shape)} {self.targets.dtype}, "
            f"task={self.task!r}, num_classes={self.num_classes})"
        )


@dataclass(frozen=True, eq=False)
class DataSource:
    """A user's ``Dataset`` or ``DataLoader``, returned as it is.

    Attributes
    ----------
    kind : {"dataset", "dataloader", "iterable"}
        What the user's function returned: a map-style ``Dataset``, a
        ``DataLoader``, or another iterable of ``(inputs, targets)`` batches
        (a one-shot iterator, e.g. a generator, is turned into a list so that
        it can be passed over many times).
    obj : object
        The object itself, for ``Objective(model, loss, obj)``.
    name : str
        The ``module:function`` it came from.
    """

    kind: Literal["dataset", "dataloader", "iterable"]
    obj: Any
    name: str

    def first_batch(self, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Return up to ``n`` samples as stacked ``(inputs, targets)`` tensors."""
        if self.kind == "dataset":
            try:
                size = len(self.obj)
            except TypeError:
                size = n
            items = [self.obj[i] for i in range(min(n, size))]
            if not items:
                msg = f"data {self.name!r}: the Dataset is empty; it must hold at least one sample"
                raise InputError(msg)
            xs, ys = zip(*(_pair(item, self.name) for item in items), strict=True)
            return torch.stack([torch.as_tensor(x) for x in xs]), torch.stack(
                [torch.as_tensor(y) for y in ys]
            )
        for batch in self.obj:
            x, y = _pair(batch, self.name)
            return torch.as_tensor(x)[:n], torch.as_tensor(y)[:n]
        msg = f"data {self.name!r}: the {self.kind} yields no batches; it must yield (inputs, targets)"
        raise InputError(msg)


def _pair(item: Any, name: str) -> tuple[Any, Any]:
    if isinstance(item, Mapping) and "inputs" in item and "targets" in item:
        return item["inputs"], item["targets"]
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    msg = (
        f"data {name!r}: a sample or batch must be an (inputs, targets) pair or a dict with "
        f"'inputs' and 'targets'; got {type(item).__name__}"
    )
    raise InputError(msg)


# ------------------------------------------------------- tensors to Data


def as_tensor(value: Any, key: str, name: str) -> torch.Tensor:
    """``value`` (a tensor or a numeric NumPy array) as a tensor, for entry ``key`` of data ``name``."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            msg = (
                f"data {name!r}: {key!r} has dtype {value.dtype} (not numeric); store numbers, "
                "e.g. float32 inputs and int64 class labels or float targets"
            )
            raise InputError(msg)
        return torch.from_numpy(np.ascontiguousarray(value))
    msg = f"data {name!r}: {key!r} must be a tensor or array; got {type(value).__name__}. {FORMAT_HINT}"
    raise InputError(msg)


def data_from_arrays(
    arrays: Mapping[str, Any],
    name: str,
    dtype: torch.dtype | None,
    task: Task | None,
    num_classes: int | None,
    from_file: bool = False,
) -> Data:
    """:class:`Data` from a mapping with entries ``inputs`` and ``targets``.

    Parameters
    ----------
    arrays : mapping
        ``"inputs"`` and ``"targets"`` as tensors or numeric NumPy arrays
        (other keys are ignored). Token data may use Hugging Face's names
        instead: ``"input_ids"`` for the inputs, and ``"labels"`` for the
        targets; without labels the targets are the ids themselves (what a
        causal language model predicts, see :func:`critpoint.losses.causal_lm`).
    name : str
        Where they came from, for messages.
    dtype, task, num_classes
        As in :func:`data_from_tensors`.
    from_file : bool
        Whether ``arrays`` was read from a data file (says so in messages).
    """
    if "inputs" not in arrays and "input_ids" in arrays:
        ids = arrays["input_ids"]
        labels = arrays.get("labels", arrays.get("targets", ids))
        arrays = {"inputs": ids, "targets": labels}
    missing = [k for k in ("inputs", "targets") if k not in arrays]
    if missing:
        where = "data file" if from_file else "data"
        msg = (
            f"{where} {name!r} has no key(s) {missing}; keys found: {sorted(map(str, arrays))}. "
            f"Rename them or {FORMAT_HINT}"
        )
        raise InputError(msg)
    return data_from_tensors(
        as_tensor(arrays["inputs"], "inputs", name),
        as_tensor(arrays["targets"], "targets", name),
        name,
        dtype,
        task,
        num_classes,
    )


def data_from_tensors(
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    dtype: torch.dtype | None,
    task: Task | None,
    num_classes: int | None,
) -> Data:
    """:class:`Data` from inputs and targets, checked.

    Parameters
    ----------
    x : Tensor, shape (N, ...)
        Inputs: floating features, or integer ids (kept integer, as
        ``int64``: token ids go to an embedding, and a float cast would make
        them features); bool inputs become float32.
    y : Tensor, shape (N,) or (N, ...)
        Targets: integer class labels (classification), one per sample or
        one per position (``(N, T)`` token ids, -100 where nothing is
        predicted), or real values.
    name : str
        Where they came from, for messages.
    dtype : torch.dtype or None
        Floating dtype of floating inputs and of regression targets (``None``
        keeps theirs); integer ids stay ``int64``.
    task : {"classification", "regression"} or None
        ``None`` guesses from the targets: integers are class labels.
    num_classes : int or None
        For classification; ``None`` takes the largest label + 1.

    Raises
    ------
    InputError
        No sample dimension, lengths that differ, no samples, complex or
        non-numeric dtypes, labels that are not integers in range (-100,
        no label, is allowed in per-position labels only).
    """
    if x.dim() == 0 or y.dim() == 0:
        msg = (
            f"data {name!r}: inputs and targets need a first (sample) dimension; got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
        raise InputError(msg)
    if x.shape[0] != y.shape[0]:
        msg = (
            f"data {name!r}: inputs have {x.shape[0]} samples but targets have {y.shape[0]} "
            f"(shapes {tuple(x.shape)} and {tuple(y.shape)}); the first dimensions must agree"
        )
        raise InputError(msg)
    if x.shape[0] == 0:
        msg = f"data {name!r} is empty (0 samples); it must hold at least one sample"
        raise InputError(msg)
    for key, t in (("inputs", x), ("targets", y)):
        if t.is_complex() or not (
            t.is_floating_point() or t.dtype == torch.bool or _is_int(t)
        ):
            msg = f"data {name!r}: {key!r} has dtype {t.dtype}; use real floats (or int64 labels)"
            raise InputError(msg)
    if x.dtype == torch.bool:
        x = x.to(torch.float32)
    elif _is_int(x):
        x = x.to(torch.int64)  # ids (nn.Embedding takes int64); the model decides
    if y.dtype == torch.bool:
        y = y.to(torch.float32)

    if task is None:
        task = "classification" if _is_int(y) else "regression"
    if task == "classification":
        if not _is_int(y):
            msg = (
                f"data {name!r}: classification targets must be integer class labels; got "
                f"{y.dtype}. Convert them with targets.long() or pass task='regression'"
            )
            raise InputError(msg)
        y = y.to(torch.int64)
        labelled = y[y != IGNORE_INDEX] if y.dim() > 1 else y
        if labelled.numel() == 0:
            msg = f"data {name!r}: every target is {IGNORE_INDEX} (ignored); there is nothing to predict"
            raise InputError(msg)
        lo, hi = int(labelled.min()), int(labelled.max())
        if lo < 0:
            also = (
                f" or {IGNORE_INDEX} (a position without a label)"
                if y.dim() > 1
                else ""
            )
            msg = f"data {name!r}: class labels must be >= 0{also}; found {lo}"
            raise InputError(msg)
        if num_classes is None:
            num_classes = hi + 1
        elif hi >= num_classes:
            msg = f"data {name!r}: label {hi} is out of range for num_classes={num_classes}"
            raise InputError(msg)
    elif task == "regression":
        num_classes = None
        if not y.is_floating_point():
            y = y.to(torch.float32)
        if dtype is not None:
            y = y.to(dtype)
    else:
        msg = f"task must be 'classification' or 'regression'; got {task!r}"
        raise InputError(msg)
    if dtype is not None and x.is_floating_point():
        x = x.to(dtype)
    return Data(x, y, task, num_classes, name)


def _is_int(t: torch.Tensor) -> bool:
    return t.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
