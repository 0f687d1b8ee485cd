"""JSON documents: strict values, one header, one way to write and to check them.

Every JSON document critpoint writes (a diagnosis, a report, a training
history, an escape or training record) starts with the same header — its
schema name and version, the critpoint and torch versions — and holds strict
JSON only: NaN and ±Inf become ``null``, tuples become lists, NumPy and 0-d
torch scalars become Python numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from critpoint._version import __version__
from critpoint.errors import InputError

__all__ = ["check_header", "clean", "dumps", "header"]


def clean(value: Any) -> Any:
    """A copy of ``value`` that strict JSON accepts, recursively.

    Non-finite floats become ``None``; mappings get ``str`` keys; tuples and
    lists become lists; NumPy scalars and 0-d tensors become Python numbers;
    ``str`` subclasses (``torch.__version__``) become plain ``str``. Other
    values are returned as they are (``json`` then decides).
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return clean(value.item())  # NumPy scalars, 0-d tensors
    return value


def header(schema: str, version: int) -> dict[str, Any]:
    """The first keys of every critpoint JSON document.

    Parameters
    ----------
    schema : str
        Dotted document name, e.g. ``"critpoint.diagnosis"``.
    version : int
        The document's schema version.

    Returns
    -------
    dict
        ``{"schema", "schema_version", "critpoint_version", "torch_version"}``.
    """
    import torch

    return {
        "schema": schema,
        "schema_version": int(version),
        "critpoint_version": __version__,
        "torch_version": str(torch.__version__),
    }


def check_header(
    data: Any,
    schema: str,
    version: int,
    source: str = "document",
    *,
    aliases: tuple[str, ...] = (),
) -> int:
    """Check that ``data`` is a document of ``schema`` this critpoint can read.

    Parameters
    ----------
    data : object
        The parsed JSON document.
    schema : str
        The expected schema name.
    version : int
        The newest schema version this critpoint reads.
    source : str
        What to call the document in messages (a file name).
    aliases : tuple of str
        Older names of the same schema that are still read.

    Returns
    -------
    int
        The document's schema version (1 where an old document gave none).

    Raises
    ------
    InputError
        Not a mapping, another schema, or a newer version.
    """
    if not isinstance(data, Mapping):
        msg = f"{source} is not a critpoint {schema} document: it holds a {type(data).__name__}, not a JSON object"
        raise InputError(msg)
    found = data.get("schema")
    if found != schema and found not in aliases:
        msg = f"{source} is not a critpoint {schema} document (its schema is {found!r})"
        raise InputError(msg)
    got = data.get("schema_version", data.get("version", 1))
    if isinstance(got, bool) or not isinstance(got, int) or got < 1:
        msg = f"{source} has schema_version {got!r}; expected a positive integer"
        raise InputError(msg)
    if got > version:
        msg = (
            f"{source} has {schema} schema_version {got}; this critpoint reads up to "
            f"version {version}. Upgrade critpoint"
        )
        raise InputError(msg)
    return got


def dumps(document: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``document`` (see :func:`clean`)."""
    return json.dumps(clean(document), indent=indent, allow_nan=False)
