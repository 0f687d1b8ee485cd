"""The built-in data sets: ``digits``, ``two_weight`` and ``teacher``.

``digits``
    scikit-learn's bundled 8×8 digits (1797 samples, no download), standardised
    per pixel with training-split statistics, split by a fixed stratified seed.
``two_weight``
    The single sample ``x = 1, y = 1`` of the two-weight lecture example.
``teacher``
    A synthetic teacher–student problem: a random tanh network labels
    Gaussian inputs (regression outputs or class labels), from a seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from critpoint._checks import positive_int
from critpoint.data.base import Data, Task
from critpoint.errors import InputError

__all__ = ["DATASETS", "digits", "teacher", "two_weight"]


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as (x float64 (1797, 64) in 0..16, y int64 (1797,)), fresh copies."""
    x, y = _digits_raw()
    return x.copy(), y.copy()


def digits(
    split: Literal["train", "test", "all"] = "train",
    test_fraction: float = 0.25,
    split_seed: int = 0,
    preprocess: Literal["standardize", "unit", "none"] = "standardize",
    num_classes: int = 10,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """scikit-learn's 8×8 digits: inputs ``(N, 64)``, labels ``(N,)`` int64."""
    if split not in ("train", "test", "all"):
        msg = f"digits split must be 'train', 'test' or 'all'; got {split!r}"
        raise InputError(msg)
    if not 0.0 < test_fraction < 1.0:
        msg = f"digits test_fraction must be in (0, 1); got {test_fraction!r}"
        raise InputError(msg)
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or not 2 <= num_classes <= 10
    ):
        msg = f"digits num_classes must be an integer in [2, 10] (keeps digits 0..C-1); got {num_classes!r}"
        raise InputError(msg)
    x, y = _digits_arrays()
    keep = y < num_classes
    x, y = x[keep], y[keep]

    # Stratified split with the legacy RandomState, whose stream NumPy freezes,
    # so the split is the same on every NumPy version.
    rng = np.random.RandomState(split_seed)
    is_test = np.zeros(len(y), dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        members = members[rng.permutation(len(members))]
        is_test[members[: round(test_fraction * len(members))]] = True

    if preprocess == "standardize":
        train = x[~is_test]
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        constant = std < 1e-12
        # Pixels constant on the training set carry no information: set them
        # to 0 everywhere instead of dividing by zero.
        x = (x - mean) / np.where(constant, 1.0, std)
        x[:, constant] = 0.0
    elif preprocess == "unit":
        x = x / 16.0
    elif preprocess != "none":
        msg = f"digits preprocess must be 'standardize', 'unit' or 'none'; got {preprocess!r}"
        raise InputError(msg)

    sel = {"train": ~is_test, "test": is_test, "all": np.ones(len(y), dtype=bool)}[
        split
    ]
    return Data(
        torch.from_numpy(x[sel]).to(dtype),
        torch.from_numpy(y[sel]),
        "classification",
        num_classes,
        "digits" if split == "train" else f"digits[{split}]",
    )


def two_weight(dtype: torch.dtype = torch.float32) -> Data:
    """The single sample ``x = 1, y = 1``: inputs and targets ``(1, 1)``."""
    one = torch.ones(1, 1, dtype=dtype)
    return Data(one, one.clone(), "regression", None, "two_weight")


def teacher(
    task: Task = "regression",
    n_samples: int = 256,
    in_features: int = 8,
    hidden: int = 16,
    out_features: int = 1,
    num_classes: int = 3,
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Teacher–student data from a random one-hidden-layer tanh network.

    ``x ~ N(0, I)``; the teacher computes ``f(x) = A tanh(W x)`` with
    ``W ~ N(0, 1/in_features)`` and ``A ~ N(0, 1/hidden)`` (scaled so that
    ``f(x)`` is O(1)). Regression targets are ``f(x) + noise·ε`` with shape
    ``(N, out_features)``; classification labels are ``argmax(f(x) + noise·ε)``
    over ``num_classes`` outputs, shape ``(N,)``. Everything is drawn from a
    local generator seeded with ``seed``.
    """
    if task not in ("regression", "classification"):
        msg = f"teacher task must be 'regression' or 'classification'; got {task!r}"
        raise InputError(msg)
    n_samples = positive_int(n_samples, "teacher n_samples")
    in_features = positive_int(in_features, "teacher in_features")
    hidden = positive_int(hidden, "teacher hidden")
    outputs = positive_int(
        num_classes if task == "classification" else out_features,
        "teacher out_features / num_classes",
    )
    if task == "classification" and outputs < 2:
        msg = f"teacher classification needs num_classes >= 2; got {outputs}"
        raise InputError(msg)
    if not noise >= 0.0:
        msg = f"teacher noise must be >= 0; got {noise!r}"
        raise InputError(msg)
    gen = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    w = torch.randn(hidden, in_features, generator=gen, dtype=f64) / in_features**0.5
    a = torch.randn(outputs, hidden, generator=gen, dtype=f64) / hidden**0.5
    x = torch.randn(n_samples, in_features, generator=gen, dtype=f64)
    f = torch.tanh(x @ w.T) @ a.T
    f = f + noise * torch.randn(f.shape, generator=gen, dtype=f64)
    if task == "classification":
        return Data(x.to(dtype), f.argmax(dim=1), task, outputs, "teacher")
    return Data(x.to(dtype), f.to(dtype), task, None, "teacher")


#: Built-in data sets by name.
DATASETS: dict[str, Callable[..., Data]] = {
    "digits": digits,
    "two_weight": two_weight,
    "teacher": teacher,
}
