"""From a spec string to an object: the one place where a name becomes an import.

A *spec* names a model factory, a data function or a loss: a built-in name
(``"mlp"``, ``"digits"``, ``"mse"``), ``package.module:attr`` or
``path/file.py:attr``. The last two are code. :func:`load_object` is the only
function in critpoint that imports a module or runs a file for a spec, and it
takes a ``trust`` flag that every caller must state:

* a spec the user gives (a Python argument, ``--model`` on the command line)
  is trusted: the user named the code, so it runs;
* a spec read from a file (a checkpoint's ``model_spec`` / ``data_spec`` /
  ``loss``, safetensors metadata) is data, not an instruction: it may name only
  what ships with critpoint, unless the user passes ``trust=True``
  (``--trust-checkpoint``). Anything else is refused with
  :class:`~critpoint.errors.UnsafeCheckpointError` showing the spec and the
  two ways on.

This module also normalises data specs, resolves the relative data paths a
checkpoint stores (against the checkpoint's folder, never the current one), and
turns dtype names into ``torch.dtype`` and back (:func:`parse_dtype`,
:func:`dtype_name`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from critpoint.errors import InputError, UnsafeCheckpointError

__all__ = [
    "DATA_FILE_SUFFIXES",
    "dtype_name",
    "is_code_spec",
    "load_object",
    "normalise_data_spec",
    "on_sys_path",
    "parse_dtype",
    "refuse_untrusted",
    "relative_to",
    "resolve_relative",
    "spec_path",
]

#: Suffixes of the data files critpoint reads (tensors only, never code).
DATA_FILE_SUFFIXES = (".pt", ".pth", ".npz")

#: The command-line option that names each kind of spec, for messages.
_OPTIONS = {
    "model factory": "--model",
    "data function": "--data",
    "loss function": "--loss",
    "batch loss function": "--batch-loss",
}


def is_code_spec(name: Any) -> bool:
    """Whether ``name`` has the form of code (``module:attr`` or ``file.py:attr``)."""
    return isinstance(name, str) and ":" in name


def _shown(spec: Any, limit: int = 240) -> str:
    """The spec as one line of JSON (shortened), for messages."""
    try:
        text = json.dumps(spec, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(spec)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def refuse_untrusted(
    what: str,
    spec: Any,
    source: str | None,
    builtins: Iterable[str] = (),
) -> UnsafeCheckpointError:
    """The error for code named by a spec that was read from a file.

    Parameters
    ----------
    what : str
        ``"model factory"``, ``"data function"`` or ``"loss function"``.
    spec : object
        The whole spec as read (shown in the message).
    source : str or None
        Where it was read, e.g. ``"checkpoint 'model.ckpt'"``.
    builtins : iterable of str
        The built-in names that are allowed.

    Returns
    -------
    UnsafeCheckpointError
        To raise; its one-line message shows the spec and the two ways on.
    """
    where = source or "a file"
    option = _OPTIONS.get(what, "the option")
    names = ", ".join(sorted(builtins))
    allowed = f" ({names})" if names else ""
    msg = (
        f"{where} names code as its {what}: {_shown(spec)}. A spec read from a file may "
        f"name only what ships with critpoint{allowed}, so it was not run. Either give it "
        f"yourself on the command line ({option} SPEC runs the code you name; in Python, "
        "pass the spec as an argument), or, if you made this file and trust it, pass "
        "--trust-checkpoint (trust=True in Python)"
    )
    return UnsafeCheckpointError(msg)


def _is_file_spec(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def load_object(
    spec: str,
    what: str = "object",
    *,
    trust: bool,
    source: str | None = None,
    shown: Any = None,
    builtins: Iterable[str] = (),
) -> Any:
    """Import the object named by ``package.module:attr`` or ``path/file.py:attr``.

    Parameters
    ----------
    spec : str
        ``module:attr`` (``attr`` may be dotted, ``Class.method``) or a path to
        a Python file, then ``:attr``. The split is at the *last* colon, so
        Windows drive letters work.
    what : str
        What the object is for, used in messages (``"model factory"``, ...).
    trust : bool
        Whether the caller's user named this code. ``False`` (a spec read from
        a file) refuses before anything is imported.
    source : str, optional
        Where an untrusted spec was read, for the message.
    shown : object, optional
        The whole spec to show when refusing (default: ``spec``).
    builtins : iterable of str
        The built-in names the refusal lists as allowed.

    Returns
    -------
    object
        The attribute. A file is executed once per process (cached in
        ``sys.modules`` under a name derived from its resolved path), and only
        because the caller named it; while it runs, its folder is first on
        ``sys.path`` (:func:`on_sys_path`), so it can import the modules next
        to it.

    Raises
    ------
    UnsafeCheckpointError
        ``trust`` is False.
    InputError
        The spec is malformed, the module or file cannot be imported, or the
        attribute is missing.
    """
    if not isinstance(spec, str):
        msg = f"{what} must be named by a string; got {_shown(spec)}"
        raise InputError(msg)
    if not trust:
        raise refuse_untrusted(what, spec if shown is None else shown, source, builtins)
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        msg = f"{what} {spec!r} must look like 'package.module:name' or 'path/to/file.py:name'"
        raise InputError(msg)
    if _is_file_spec(target):
        module = _load_file_module(Path(target), spec, what)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            msg = (
                f"cannot import module {target!r} for {what} {spec!r}: {exc}. Install it, "
                "run from the folder that holds it, or give a file path 'path/to/file.py:name'"
            )
            raise InputError(msg) from exc
        except Exception as exc:  # the user's module failed while importing
            msg = f"{what} {spec!r}: importing {target!r} failed: {type(exc).__name__}: {exc}"
            raise InputError(msg) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = sorted(n for n in vars(module) if not n.startswith("_"))
            msg = f"{what} {spec!r}: {target!r} has no attribute {attr!r}; it defines {names}"
            raise InputError(msg) from None
    return obj


@contextmanager
def on_sys_path(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the duration of the block.

    A user's ``model.py`` imports the modules next to it (``from layers import
    Block``), and a trusted pickle names the modules its classes came from, as
    the script that wrote it could import them. The entry is removed again on
    exit (what the block imported stays in ``sys.modules``, as any import does).

    Parameters
    ----------
    folder : str or PathLike
        The folder of the file being loaded.
    """
    entry = os.fspath(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        # Removing the first equal entry leaves the list the block meant to
        # leave, even if it added the same folder itself.
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _load_file_module(path: Path, spec: str, what: str) -> Any:
    if not path.is_file():
        msg = (
            f"{what} {spec!r}: file {str(path)!r} not found; give an existing .py file"
        )
        raise InputError(msg)
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()
    mod_name = f"_critpoint_user_{resolved.stem}_{digest[:12]}"
    mtime = resolved.stat().st_mtime_ns
    cached = sys.modules.get(mod_name)
    if cached is not None and getattr(cached, "__critpoint_mtime__", None) == mtime:
        return cached
    module_spec = importlib.util.spec_from_file_location(mod_name, resolved)
    if module_spec is None or module_spec.loader is None:
        msg = f"{what} {spec!r}: cannot load {str(path)!r} as a Python module"
        raise InputError(msg)
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running, as importlib does, so that dataclasses and
    # pickling of objects defined in the file can find the module.
    sys.modules[mod_name] = module
    try:
        with on_sys_path(resolved.parent):
            module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        msg = f"{what} {spec!r}: running {str(path)!r} failed: {type(exc).__name__}: {exc}"
        raise InputError(msg) from exc
    module.__critpoint_mtime__ = mtime  # type: ignore[attr-defined]
    return module


# ------------------------------------------------------------------ data specs


def normalise_data_spec(spec: Any) -> dict[str, Any]:
    """A data spec as ``{"name", "kwargs", "max_samples", "subset_seed"}``.

    Accepts a bare name or path, ``{"name": ..., "kwargs": {...}}``, or the
    flat form ``{"name": "digits", "split": "test"}`` (other keys are options).

    Raises
    ------
    InputError
        Anything else (a number, a list, a dict without a string name, options
        that are not a dict, a subset size that is not a positive integer).
    """
    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, str):
        if not spec.strip():
            msg = "the data spec is empty; name a data set, a file or a function"
            raise InputError(msg)
        return {"name": spec, "kwargs": {}, "max_samples": None, "subset_seed": None}
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        special = {"name", "kwargs", "max_samples", "subset_seed"}
        options = spec.get("kwargs") or {}
        if not isinstance(options, Mapping) or not all(
            isinstance(k, str) for k in options
        ):
            msg = f"data spec {_shown(spec)}: 'kwargs' must be a dict of options"
            raise InputError(msg)
        kwargs = dict(options)
        kwargs.update({str(k): v for k, v in spec.items() if k not in special})
        max_samples = spec.get("max_samples")
        if max_samples is not None and (
            isinstance(max_samples, bool)
            or not isinstance(max_samples, int)
            or max_samples < 1
        ):
            msg = f"data spec {_shown(spec)}: 'max_samples' must be a positive integer"
            raise InputError(msg)
        subset_seed = spec.get("subset_seed")
        if subset_seed is not None and (
            isinstance(subset_seed, bool)
            or not isinstance(subset_seed, int)
            or not 0 <= subset_seed < 2**63
        ):
            msg = f"data spec {_shown(spec)}: 'subset_seed' must be an integer in [0, 2**63)"
            raise InputError(msg)
        return {
            "name": spec["name"],
            "kwargs": kwargs,
            "max_samples": max_samples,
            "subset_seed": subset_seed,
        }
    msg = (
        f"the data spec {_shown(spec)} is not understood; give --data NAME (and "
        '--data-kwargs), or store {"name": ..., "kwargs": {...}}'
    )
    raise InputError(msg)


def spec_path(name: str) -> tuple[str, str] | None:
    """The file a data spec names, as ``(path, tail)``; ``None`` if it names none.

    ``"d.npz"`` → ``("d.npz", "")``; ``"dir/f.py:make"`` → ``("dir/f.py", ":make")``;
    built-in names and ``package.module:function`` → ``None``.
    """
    if is_code_spec(name):
        target, _, attr = name.rpartition(":")
        return (target, f":{attr}") if _is_file_spec(target) else None
    if Path(name).suffix.lower() in DATA_FILE_SUFFIXES:
        return name, ""
    return None


def resolve_relative(
    name: str,
    base_dir: str | Path | None,
    source: str,
    what: str = "data file",
) -> str:
    """Resolve a relative path a spec read from a file names, against that file's folder.

    Parameters
    ----------
    name : str
        A spec: only data files (``.pt``, ``.pth``, ``.npz``) and the file
        part of ``file.py:function`` are paths; other names are returned
        unchanged.
    base_dir : str, Path or None
        The folder of the file the spec was read from; ``None`` leaves
        relative paths relative to the current folder.
    source : str
        Where the spec was read, for the message.
    what : str
        What the path is (``"data file"``, ``"model file"``...), for the message.

    Returns
    -------
    str
        The spec with its path resolved (unchanged when absolute or not a path).

    Raises
    ------
    InputError
        A relative path that does not exist in ``base_dir``.
    """
    parts = spec_path(name)
    if base_dir is None or parts is None:
        return name
    path_text, tail = parts
    path = Path(path_text)
    if path.is_absolute():
        return name
    resolved = Path(base_dir) / path
    if not resolved.exists():
        option = {"data file": "--data", "model file": "--model", "loss file": "--loss"}
        msg = (
            f"{source} names the {what} {path_text!r}, a path relative to its own folder, "
            f"but {str(resolved)!r} does not exist; put the file there or give "
            f"{option.get(what, 'the option')} PATH"
        )
        raise InputError(msg)
    return f"{resolved}{tail}"


def relative_to(output: str | Path, name: str) -> str:
    """A spec as a file at ``output`` should store it: its path relative to that file's folder.

    The inverse of :func:`resolve_relative`: a path given relative to the
    current folder is rewritten relative to the folder of ``output``, so the
    stored spec is read back from there; absolute paths and names stay.
    """
    parts = spec_path(name)
    if parts is None or Path(parts[0]).is_absolute():
        return name
    target, tail = parts
    folder = Path(output).absolute().parent
    return os.path.relpath(Path(target).absolute(), folder) + tail


# ---------------------------------------------------------------------- dtypes


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A floating ``torch.dtype`` from itself or its name.

    Parameters
    ----------
    dtype : torch.dtype, str or None
        ``torch.float64``, ``"float64"``, ``"torch.float64"`` or a torch alias
        such as ``"double"``; ``None`` stays ``None``.

    Returns
    -------
    torch.dtype or None

    Raises
    ------
    InputError
        An unknown name, or a dtype that is not floating (integer, bool, complex).
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            msg = (
                f"dtype must be a floating type such as float32 or float64; got {dtype}"
            )
            raise InputError(msg)
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        msg = f"unknown dtype {dtype!r}; use 'float32' or 'float64'"
        raise InputError(msg)
    return value


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a dtype as files and JSON store it: ``torch.float32`` → ``"float32"``.

    The inverse of :func:`parse_dtype` for floating dtypes; any dtype has a
    name (``"int64"``, ``"complex64"``...).
    """
    return str(dtype).removeprefix("torch.")
