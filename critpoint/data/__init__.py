"""Data sets by name, user data files and functions, and a model/data check.

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

The modules: :mod:`~critpoint.data.base` (:class:`Data`, :class:`DataSource`,
tensors to Data), :mod:`~critpoint.data.builtin` (the built-in sets),
:mod:`~critpoint.data.files` (``.pt`` / ``.npz``), :mod:`~critpoint.data.load`
(specs to data) and :mod:`~critpoint.data.check`.
"""

from critpoint.data.base import Data, DataSource
from critpoint.data.builtin import DATASETS
from critpoint.data.check import check_data_against_model
from critpoint.data.load import checkpoint_data, data_from_spec, load_data

__all__ = [
    "DATASETS",
    "Data",
    "DataSource",
    "check_data_against_model",
    "checkpoint_data",
    "data_from_spec",
    "load_data",
]
