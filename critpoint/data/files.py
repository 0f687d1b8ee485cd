"""Data files: ``.pt`` / ``.pth`` (a ``torch.save``-d dict) and ``.npz`` archives.

Both hold tensors ``inputs`` and ``targets`` and never code: ``.pt`` files are
read by :func:`critpoint.io._safe_load.load_tensor_dict` (``weights_only``),
``.npz`` archives with ``allow_pickle=False`` after their directory is
checked for sizes (:func:`critpoint.io._safe_load.check_archive`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critpoint.data.base import Data, Task, data_from_arrays
from critpoint.errors import InputError
from critpoint.io._safe_load import check_archive, load_tensor_dict
from critpoint.specs import DATA_FILE_SUFFIXES

__all__ = ["is_data_file", "read_data_file"]


def is_data_file(name: str) -> bool:
    """Whether ``name`` ends in a data-file suffix (``.pt``, ``.pth``, ``.npz``)."""
    return Path(name).suffix.lower() in DATA_FILE_SUFFIXES


def read_data_file(
    name: str,
    options: Mapping[str, Any],
    dtype: torch.dtype | None,
    task: Task | None,
    num_classes: int | None,
) -> Data:
    """Read the data file ``name`` as :class:`~critpoint.data.Data`.

    Parameters
    ----------
    name : str
        The path, as the spec gives it (shown in messages).
    options : dict
        The spec's other options: a file takes none.
    dtype : torch.dtype or None
        Floating dtype of the inputs (``None`` keeps the file's).
    task, num_classes
        As in :func:`critpoint.data.load_data`.

    Raises
    ------
    InputError
        Options given, a missing or empty file, a file that needs code to
        read, or contents that are not ``inputs`` / ``targets`` tensors.
    """
    path = Path(name)
    if options:
        msg = f"data file {name!r} takes no options; got {sorted(options)}"
        raise InputError(msg)
    if not path.is_file():
        msg = f"data file {name!r} not found; check the path (relative to {Path.cwd()})"
        raise InputError(msg)
    if path.stat().st_size == 0:
        msg = f"data file {name!r} is empty (0 bytes); re-create it"
        raise InputError(msg)
    arrays = _read_npz(path) if path.suffix.lower() == ".npz" else _read_pt(path)
    return data_from_arrays(arrays, name, dtype, task, num_classes, from_file=True)


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
