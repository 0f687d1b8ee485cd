"""Data sets by name, user data files, and a model/data check.

:func:`load_data` understands

``digits``
    scikit-learn's bundled 8×8 digits (1797 samples, no download), standardised
    per pixel with training-split statistics, split by a fixed stratified seed.
``two_weight``
    The single sample ``x = 1, y = 1`` of the two-weight lecture example.
``teacher``
    A synthetic teacher–student problem: a random tanh network labels
    Gaussian inputs (regression outputs or class labels), from a seed.
``path.pt`` / ``path.pth``
    A ``torch.save``-d dict with tensors ``inputs`` and ``targets`` (read with
    ``weights_only=True``).
``path.npz``
    NumPy arrays ``inputs`` and ``targets`` (read with ``allow_pickle=False``).
``package.module:function`` / ``path/file.py:function``
    A function returning an ``(inputs, targets)`` pair (→ :class:`Data`), a
    ``Dataset`` or a ``DataLoader`` (→ :class:`DataSource`, passed on as is).
    It is the caller's code and runs because the caller named it; a spec read
    from a file (:func:`data_from_spec` with ``trust=False``) may name only the
    built-in sets and data files.

:func:`check_data_against_model` runs one forward pass on two samples to turn
shape and dtype mistakes into clear errors before any Hessian work starts
(losses are named in :mod:`critpoint.losses`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from critpoint.errors import InputError
from critpoint.io._safe_load import check_archive, load_tensor_dict
from critpoint.losses import LossFn, builtin_loss_name, get_loss
from critpoint.losses import loss_name as loss_name_of
from critpoint.specs import DATA_FILE_SUFFIXES, load_object, parse_dtype

__all__ = [
    "DATASETS",
    "Data",
    "DataSource",
    "check_data_against_model",
    "data_from_spec",
    "load_data",
]

Task = Literal["classification", "regression"]


# --------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class Data:
    """An in-memory data set: all inputs and targets as two tensors.

    Attributes
    ----------
    inputs : Tensor, shape (N, ...)
        Floating point features; the first dimension indexes samples.
    targets : Tensor, shape (N,) or (N, ...)
        ``int64`` class labels of shape ``(N,)`` for classification, floating
        values for regression.
    task : {"classification", "regression"}
    num_classes : int or None
        Number of classes for classification (labels are in ``[0, C)``).
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

        Integer class labels keep their ``int64`` dtype.
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


# ------------------------------------------------------------------- built-ins


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


def _digits(
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


def _two_weight(dtype: torch.dtype = torch.float32) -> Data:
    """The single sample ``x = 1, y = 1``: inputs and targets ``(1, 1)``."""
    one = torch.ones(1, 1, dtype=dtype)
    return Data(one, one.clone(), "regression", None, "two_weight")


def _teacher(
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
    for what, v in [
        ("n_samples", n_samples),
        ("in_features", in_features),
        ("hidden", hidden),
    ]:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            msg = f"teacher {what} must be a positive integer; got {v!r}"
            raise InputError(msg)
    outputs = num_classes if task == "classification" else out_features
    if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
        msg = f"teacher out_features / num_classes must be a positive integer; got {outputs!r}"
        raise InputError(msg)
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
    "digits": _digits,
    "two_weight": _two_weight,
    "teacher": _teacher,
}

_FILE_SUFFIXES = DATA_FILE_SUFFIXES


def load_data(
    spec: str | Path,
    *,
    dtype: torch.dtype | str | None = torch.float32,
    task: Task | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> Data | DataSource:
    """Load a data set by name, from a file, or from a user function.

    Parameters
    ----------
    spec : str or Path
        ``"digits"``, ``"two_weight"``, ``"teacher"``, a ``.pt``/``.pth`` or
        ``.npz`` file, or ``package.module:function`` /
        ``path/file.py:function`` (imported and run: the caller's code; for a
        spec read from a file use :func:`data_from_spec` with ``trust=False``).
    dtype : torch.dtype or str, optional
        Floating dtype of the inputs (and of regression targets), float32 by
        default. ``None`` keeps what a file stores.
    task : {"classification", "regression"}, optional
        For files and tensor pairs: overrides the guess from the target dtype
        (integer → classification, floating → regression).
    num_classes : int, optional
        For files and tensor pairs: the number of classes (default: largest
        label + 1). For ``digits`` and ``teacher`` it is the built-in option.
    **kwargs
        Options of the built-in set (``digits``: ``split``, ``test_fraction``,
        ``split_seed``, ``preprocess``; ``teacher``: ``task``, ``n_samples``,
        ``in_features``, ``hidden``, ``out_features``, ``noise``, ``seed``) or
        keyword arguments of the user's function.

    Returns
    -------
    Data or DataSource
        :class:`Data` for in-memory tensors; :class:`DataSource` wrapping a
        user ``Dataset`` / ``DataLoader`` / iterable of batches as it is.
    """
    options = dict(kwargs)
    if task is not None:
        options["task"] = task
    if num_classes is not None:
        options["num_classes"] = num_classes
    return _load_data(spec, options, dtype=dtype, trust=True)


def data_from_spec(
    spec: Any,
    *,
    dtype: torch.dtype | str | None = torch.float32,
    trust: bool = True,
    source: str | None = None,
    base_dir: str | Path | None = None,
) -> Data | DataSource:
    """Load the data a spec describes (as a checkpoint stores it).

    Parameters
    ----------
    spec : str or dict
        A name or path, ``{"name": ..., "kwargs": {...}}`` (optionally with
        ``"max_samples"`` and ``"subset_seed"``: a random subset), or the
        flat form ``{"name": "digits", "split": "test"}``; see
        :func:`critpoint.specs.normalise_data_spec`.
    dtype : torch.dtype or str, optional
        Floating dtype of the inputs, as in :func:`load_data`.
    trust : bool
        ``True`` (default): the caller names the spec, so a user function
        (``module:function``, ``file.py:function``) is imported and run.
        ``False``: the spec was read from a file and may name only built-in
        data sets and data files; code raises
        :class:`~critpoint.errors.UnsafeCheckpointError`.
    source : str, optional
        Where the spec was read (``"checkpoint 'm.ckpt'"``), for messages.
    base_dir : str or Path, optional
        The folder of the file the spec was read from: relative data paths are
        resolved against it (never the current folder), and must exist there.

    Returns
    -------
    Data or DataSource
    """
    from critpoint.specs import normalise_data_spec, resolve_relative

    normal = normalise_data_spec(spec)
    name = normal["name"]
    if base_dir is not None:
        name = resolve_relative(name, base_dir, source or "the data spec")
    data = _load_data(
        name,
        normal["kwargs"],
        dtype=dtype,
        trust=trust,
        source=source,
        shown=spec,
    )
    max_samples = normal["max_samples"]
    if max_samples is not None:
        if not isinstance(data, Data):
            msg = (
                f"max_samples needs in-memory data (tensors); data {name!r} is a "
                f"{data.kind}: subset it in your data function instead"
            )
            raise InputError(msg)
        data = data.subset(max_samples, seed=normal["subset_seed"])
    return data


def _load_data(
    spec: Any,
    options: Mapping[str, Any],
    *,
    dtype: torch.dtype | str | None,
    trust: bool,
    source: str | None = None,
    shown: Any = None,
) -> Data | DataSource:
    """:func:`load_data` with the trust of the spec stated (see critpoint.specs)."""
    kwargs = dict(options)
    kwargs.pop("dtype", None)  # the caller's precision wins over a stored one
    task = kwargs.pop("task", None)
    num_classes = kwargs.pop("num_classes", None)
    torch_dtype = parse_dtype(dtype)
    if not isinstance(spec, (str, Path)):
        msg = f"a data spec must be a name or a path; got {spec!r}"
        raise InputError(msg)
    name = str(spec)
    if not name.strip():
        msg = "the data spec is empty; name a data set (digits, teacher, two_weight), a file or a function"
        raise InputError(msg)
    if name in DATASETS:
        options = dict(kwargs)
        if torch_dtype is not None:
            options["dtype"] = torch_dtype
        if name == "teacher" and task is not None:
            options["task"] = task
        if num_classes is not None and name in ("digits", "teacher"):
            options["num_classes"] = num_classes
        try:
            return DATASETS[name](**options)
        except TypeError as exc:
            msg = f"data {name!r} does not accept {sorted(options)}: {exc}"
            raise InputError(msg) from exc

    path = Path(name)
    suffix = path.suffix.lower()
    if suffix in _FILE_SUFFIXES:
        if kwargs:
            msg = f"data file {name!r} takes no options; got {sorted(kwargs)}"
            raise InputError(msg)
        if not path.is_file():
            msg = f"data file {name!r} not found; check the path (relative to {Path.cwd()})"
            raise InputError(msg)
        if path.stat().st_size == 0:
            msg = f"data file {name!r} is empty (0 bytes); re-create it"
            raise InputError(msg)
        arrays = _read_npz(path) if suffix == ".npz" else _read_pt(path)
        return _make_data(arrays, name, torch_dtype, task, num_classes, from_file=True)

    if ":" in name:
        fn = load_object(
            name,
            what="data function",
            trust=trust,
            source=source,
            shown=shown if shown is not None else name,
            builtins=[*DATASETS, "file.pt", "file.npz"],
        )
        if not callable(fn):
            msg = f"data function {name!r} is not callable ({type(fn).__name__})"
            raise InputError(msg)
        try:
            result = fn(**kwargs)
        except InputError:
            raise
        except Exception as exc:  # the user's code: name it and what it raised
            msg = f"data function {name!r} raised {type(exc).__name__} when called with {kwargs}: {exc}"
            raise InputError(msg) from exc
        return _wrap_user_result(result, name, torch_dtype, task, num_classes)

    msg = (
        f"unknown data {name!r}; built-in data sets are {sorted(DATASETS)}; or give a "
        "file 'data.pt' (dict of tensors 'inputs', 'targets'), 'data.npz' (arrays "
        "'inputs', 'targets'), or a function 'package.module:function' / "
        "'path/to/file.py:function' returning (inputs, targets), a Dataset or a DataLoader"
    )
    raise InputError(msg)


_FORMAT_HINT = "save a dict {'inputs': tensor (N, ...), 'targets': tensor (N, ...)}"


def _read_pt(path: Path) -> Mapping[str, Any]:
    return load_tensor_dict(path)


def _read_npz(path: Path) -> dict[str, Any]:
    hint = (
        "Store plain numeric arrays, e.g. np.savez(path, inputs=x.astype(np.float32), "
        "targets=y.astype(np.int64))"
    )
    check_archive(path, "data file", InputError, compressed_ok=True)
    try:
        with np.load(path, allow_pickle=False) as archive:
            out = {}
            for key in archive.files:
                out[key] = archive[key]
            return out
    except ValueError as exc:
        # NumPy raises ValueError for object arrays when allow_pickle=False.
        msg = f"data file {str(path)!r} holds object arrays (or is not a valid .npz): {exc}. {hint}"
        raise InputError(msg) from None
    except Exception as exc:  # BadZipFile, zlib.error, OSError...: the file is damaged
        detail = " ".join(str(exc).split()) or type(exc).__name__
        msg = f"data file {str(path)!r} is not a readable .npz archive ({detail}); re-create it with np.savez"
        raise InputError(msg) from None


def _as_tensor(value: Any, key: str, name: str) -> torch.Tensor:
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
    msg = f"data {name!r}: {key!r} must be a tensor or array; got {type(value).__name__}. {_FORMAT_HINT}"
    raise InputError(msg)


def _make_data(
    arrays: Mapping[str, Any],
    name: str,
    dtype: torch.dtype | None,
    task: Task | None,
    num_classes: int | None,
    from_file: bool = False,
) -> Data:
    missing = [k for k in ("inputs", "targets") if k not in arrays]
    if missing:
        where = "data file" if from_file else "data"
        msg = (
            f"{where} {name!r} has no key(s) {missing}; keys found: {sorted(map(str, arrays))}. "
            f"Rename them or {_FORMAT_HINT}"
        )
        raise InputError(msg)
    return _tensors_to_data(
        _as_tensor(arrays["inputs"], "inputs", name),
        _as_tensor(arrays["targets"], "targets", name),
        name,
        dtype,
        task,
        num_classes,
    )


def _tensors_to_data(
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    dtype: torch.dtype | None,
    task: Task | None,
    num_classes: int | None,
) -> Data:
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
    if x.dtype == torch.bool or _is_int(x):
        x = x.to(torch.float32)
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
        if y.dim() != 1:
            msg = (
                f"data {name!r}: class labels must have shape (N,); got {tuple(y.shape)}. "
                "Use labels, not one-hot rows (targets.argmax(1))"
            )
            raise InputError(msg)
        y = y.to(torch.int64)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            msg = f"data {name!r}: class labels must be >= 0; found {lo}"
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
    if dtype is not None:
        x = x.to(dtype)
    return Data(x, y, task, num_classes, name)


def _is_int(t: torch.Tensor) -> bool:
    return t.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _wrap_user_result(
    result: Any,
    name: str,
    dtype: torch.dtype | None,
    task: Task | None,
    num_classes: int | None,
) -> Data | DataSource:
    if isinstance(result, Data):
        return result
    if isinstance(result, Mapping):
        return _make_data(result, name, dtype, task, num_classes)
    if isinstance(result, tuple) and len(result) == 2:
        x, y = (
            _as_tensor(v, k, name)
            for k, v in zip(("inputs", "targets"), result, strict=True)
        )
        return _tensors_to_data(x, y, name, dtype, task, num_classes)
    if isinstance(result, torch.utils.data.DataLoader):
        return DataSource("dataloader", result, name)
    if isinstance(result, torch.utils.data.Dataset) and hasattr(result, "__getitem__"):
        try:
            empty = len(result) == 0  # type: ignore[arg-type]
        except TypeError:
            empty = False
        if empty:
            msg = f"data function {name!r} returned an empty Dataset; it must hold at least one sample"
            raise InputError(msg)
        return DataSource("dataset", result, name)
    if isinstance(result, Iterator):
        # A one-shot generator would be exhausted after the first pass, and the
        # objective passes over the data once per Hessian-vector product.
        result = list(result)
    if isinstance(result, Iterable) and not isinstance(
        result, (str, bytes, torch.Tensor)
    ):
        return DataSource("iterable", result, name)
    msg = (
        f"data function {name!r} returned {type(result).__name__}; return an (inputs, targets) "
        "pair of tensors, a dict with 'inputs' and 'targets', a Dataset or a DataLoader"
    )
    raise InputError(msg)


# ------------------------------------------------------------ model/data check


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

    from critpoint._model_state import ModelState, set_mode

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
