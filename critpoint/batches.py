"""The batches protocol: data as a re-iterable sequence of batches, counted and placed.

An :class:`~critpoint.Objective` reads its data once per product, so it needs
a view it can iterate again and again (:class:`Batches`), the number of
samples in each batch (:func:`batch_count`: a mean loss is weighted by it) and
a way to put a batch where the analysis runs (:func:`move`). Nothing here
knows about models or losses.

A batch is any nesting of tuples, lists and mappings holding tensors; its
samples run along the leading dimension of its first tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from critpoint import _checks
from critpoint.errors import InputError

__all__ = [
    "DEFAULT_DATASET_BATCH",
    "DEFAULT_TENSOR_BATCH",
    "Batches",
    "batch_count",
    "move",
]

#: Tensors given as one ``(inputs, targets)`` pair are split into batches of
#: this many samples when ``batch_size`` is not given (bounds peak memory).
DEFAULT_TENSOR_BATCH = 4096
#: Batch size of the DataLoader built around a ``Dataset``.
DEFAULT_DATASET_BATCH = 256


def batch_count(batch: Any) -> int:
    """Number of samples in a batch: the length of its first tensor.

    Parameters
    ----------
    batch : tensor, tuple, list or mapping
        A batch; nested containers are searched depth first.

    Returns
    -------
    int

    Raises
    ------
    InputError
        If the batch holds no tensor with a leading sample dimension.
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return int(value.shape[0])
    if isinstance(batch, (tuple, list)):
        for value in batch:
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return int(value.shape[0])
            if isinstance(value, (Mapping, tuple, list)):
                return batch_count(value)
    msg = (
        f"cannot tell how many samples a batch of type {type(batch).__name__} holds; "
        "critpoint weights each batch by the length of its first tensor, so give batches "
        "that contain at least one tensor with a leading sample dimension"
    )
    raise InputError(msg)


def move(batch: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """Move every tensor of a batch to ``device``; cast floating ones to ``dtype``.

    Parameters
    ----------
    batch : tensor, tuple, list, mapping or other
        Containers are rebuilt with their tensors moved; anything else is
        returned as it is.
    device : torch.device
        Where the tensors go.
    dtype : torch.dtype or None
        Floating tensors are cast to it; ``None`` keeps their dtype. Integer
        tensors (class labels, token ids) keep theirs.

    Returns
    -------
    The batch, with the structure it came in.
    """
    if isinstance(batch, torch.Tensor):
        if dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device=device)
    if isinstance(batch, Mapping):
        return {key: move(value, device, dtype) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(move(value, device, dtype) for value in batch)
    if isinstance(batch, list):
        return [move(value, device, dtype) for value in batch]
    return batch


def _is_tensor_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


class Batches:
    """A re-iterable view of the data as batches (an objective reads it many times).

    Parameters
    ----------
    data : tuple of tensors, Data, Dataset or iterable of batches
        ``(inputs, targets)`` tensors with a leading sample dimension (or a
        :class:`critpoint.data.Data`), a ``torch.utils.data.Dataset`` with a
        length, or a re-iterable of batches such as a ``DataLoader`` or a list.
    batch_size : int, optional
        Samples per batch for a tensor pair (default
        :data:`DEFAULT_TENSOR_BATCH`) or for the ``DataLoader`` built around
        a ``Dataset`` (default :data:`DEFAULT_DATASET_BATCH`); an iterable of
        batches keeps its own.

    Raises
    ------
    InputError
        For empty data, a tensor pair of unequal lengths, a one-shot iterator
        (a generator cannot be read twice), or anything else.
    """

    def __init__(self, data: Any, batch_size: int | None = None) -> None:
        if batch_size is not None:
            batch_size = _checks.positive_int(
                batch_size, "batch_size", "or leave it as None for the default"
            )
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None
        self._iterable: Iterable[Any] | None = None
        if callable(getattr(data, "as_tuple", None)):  # critpoint.data.Data
            data = data.as_tuple()
        elif hasattr(data, "kind") and hasattr(data, "obj"):  # a data source
            data = data.obj
        if _is_tensor_pair(data):
            inputs, targets = data
            if inputs.shape[0] != targets.shape[0]:
                msg = (
                    f"inputs and targets must hold the same number of samples, got "
                    f"{inputs.shape[0]} inputs and {targets.shape[0]} targets"
                )
                raise InputError(msg)
            if inputs.shape[0] == 0:
                msg = "the data set is empty (0 samples); give at least one sample"
                raise InputError(msg)
            self._pair = (inputs, targets)
            self._batch_size = batch_size or DEFAULT_TENSOR_BATCH
        elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
            if len(data) == 0:  # type: ignore[arg-type]
                msg = "the Dataset is empty (len 0); give at least one sample"
                raise InputError(msg)
            self._iterable = torch.utils.data.DataLoader(
                data, batch_size=batch_size or DEFAULT_DATASET_BATCH, shuffle=False
            )
        elif isinstance(data, Iterable) and not isinstance(
            data, (str, bytes, torch.Tensor)
        ):
            if iter(data) is data:
                msg = (
                    "data is a one-shot iterator (a generator?), but the objective reads the "
                    "data once per product; pass a list of batches, a DataLoader or a Dataset"
                )
                raise InputError(msg)
            self._iterable = data
        else:
            msg = (
                f"data must be an (inputs, targets) pair of tensors, a Dataset, or a "
                f"re-iterable of batches such as a DataLoader; got {type(data).__name__}"
            )
            raise InputError(msg)

    def __iter__(self) -> Iterator[Any]:
        """The batches as given (a tensor pair is sliced, nothing is copied)."""
        if self._pair is not None:
            inputs, targets = self._pair
            n = inputs.shape[0]
            for start in range(0, n, self._batch_size):
                yield (
                    inputs[start : start + self._batch_size],
                    targets[start : start + self._batch_size],
                )
        else:
            assert self._iterable is not None
            yield from self._iterable

    @property
    def count(self) -> int | None:
        """Number of batches, when known without reading the data (``None`` otherwise)."""
        if self._pair is not None:
            return -(-self._pair[0].shape[0] // self._batch_size)
        try:
            return len(self._iterable)  # type: ignore[arg-type]
        except TypeError:  # an iterable without a length
            return None

    def first(self) -> Any:
        """The first batch, as given.

        Raises
        ------
        InputError
            If the data yield no batch.
        """
        try:
            return next(iter(self))
        except StopIteration:
            msg = "the data yields no batch; give at least one sample"
            raise InputError(msg) from None

    def placed(
        self, device: torch.device, dtype: torch.dtype | None
    ) -> Iterator[tuple[int, Any]]:
        """``(samples, batch)`` for every batch, moved to ``device`` (see :func:`move`)."""
        for raw in self:
            batch = move(raw, device, dtype)
            yield batch_count(batch), batch
