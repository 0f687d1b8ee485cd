"""From a spec to data: :func:`load_data` (the caller's spec) and :func:`data_from_spec`.

A spec is a built-in name (:mod:`critpoint.data.builtin`), a data file
(:mod:`critpoint.data.files`), or ``package.module:function`` /
``path/file.py:function``: the caller's code, run because the caller named
it; a spec read from a file (``data_from_spec(..., trust=False)``) may name
only the built-in sets and data files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from critpoint.data.base import (
    Data,
    DataSource,
    Task,
    as_tensor,
    data_from_arrays,
    data_from_tensors,
)
from critpoint.data.builtin import DATASETS
from critpoint.data.files import is_data_file, read_data_file
from critpoint.errors import CheckpointError, InputError
from critpoint.specs import (
    load_object,
    normalise_data_spec,
    parse_dtype,
    resolve_relative,
)

__all__ = ["data_from_spec", "load_data"]


if TYPE_CHECKING:
    from critpoint.io.checkpoint import Checkpoint


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
        Floating dtype of floating inputs (and of regression targets),
        float32 by default. ``None`` keeps what a file stores. Integer inputs
        (token ids) stay integer, as ``int64``.
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


def checkpoint_data(
    checkpoint: Checkpoint,
    data_spec: Any = None,
    *,
    trust: bool = False,
    dtype: torch.dtype | str | None = torch.float32,
) -> Data | DataSource:
    """Load the data a checkpoint was trained on (or ``data_spec``).

    Parameters
    ----------
    checkpoint : Checkpoint
        From :func:`critpoint.load_checkpoint`; its ``data_spec`` is file data.
    data_spec : str or dict, optional
        Overrides the stored spec; the caller's, so a function it names runs.
    trust : bool
        Let the stored spec name code (``module:function``). Without it (and
        unless the checkpoint was loaded with ``trust=True``) a stored spec may
        name only built-in sets and data files.
    dtype : torch.dtype or str, optional
        Floating dtype of the inputs.

    Returns
    -------
    Data or DataSource

    Notes
    -----
    A relative data path in the stored spec is read from the checkpoint's
    folder, not the current one; it must exist there.
    """
    if data_spec is not None:
        return data_from_spec(data_spec, dtype=dtype, trust=True)
    if checkpoint.data_spec is None:
        msg = f"{checkpoint.source} does not say which data it was trained on; pass a data spec (--data)"
        raise CheckpointError(msg)
    return data_from_spec(
        checkpoint.data_spec,
        dtype=dtype,
        trust=trust or checkpoint.trusted,
        source=checkpoint.source,
        base_dir=Path(checkpoint.path).parent,
    )


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

    if is_data_file(name):
        return read_data_file(name, kwargs, torch_dtype, task, num_classes)

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


def _check_loader(loader: torch.utils.data.DataLoader, name: str) -> None:
    """Refuse a DataLoader that does not give every sample once per pass.

    The objective is the mean loss over *all* samples, read once per
    Hessian-vector product; ``drop_last=True`` leaves the last partial batch
    out (other samples on every pass when the loader shuffles, which makes
    the products disagree).
    """
    if getattr(loader, "drop_last", False):
        try:
            left_out = len(loader.dataset) % (loader.batch_size or 1)  # type: ignore[arg-type]
        except TypeError:  # an IterableDataset: its length is unknown
            left_out = None
        if left_out == 0:
            return  # the batches tile the data: nothing is dropped
        sampler = getattr(loader, "sampler", None)
        shuffled = isinstance(sampler, torch.utils.data.RandomSampler)
        what = (
            "different samples on every pass (it shuffles), so no two Hessian-vector "
            "products see the same data"
            if shuffled
            else "the samples of the last partial batch, so the loss is not over all samples"
        )
        msg = (
            f"data function {name!r} returned a DataLoader with drop_last=True, which leaves "
            f"out {what}; return it with drop_last=False (critpoint weights a short last "
            "batch exactly; shuffling is not needed either)"
        )
        raise InputError(msg)


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
        return data_from_arrays(result, name, dtype, task, num_classes)
    if isinstance(result, tuple) and len(result) == 2:
        x, y = (
            as_tensor(v, k, name)
            for k, v in zip(("inputs", "targets"), result, strict=True)
        )
        return data_from_tensors(x, y, name, dtype, task, num_classes)
    if isinstance(result, torch.utils.data.DataLoader):
        _check_loader(result, name)
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
