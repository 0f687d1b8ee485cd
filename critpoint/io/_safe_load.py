"""Reading files that may hold code: the only module that calls ``torch.load``.

Every checkpoint and data file critpoint reads passes through here before its
bytes become objects:

* :func:`check_file` refuses a missing, non-regular or empty file;
* :func:`check_archive` reads a zip archive's directory (a ``torch.save`` file,
  an ``.npz``) and refuses compression bombs and declared sizes beyond the
  free memory before anything is inflated;
* :func:`read_checkpoint_file` sniffs the format (zip or legacy ``torch.save``,
  safetensors, a ``torch.export`` program, TorchScript) and reads it with
  ``torch.load(weights_only=True)`` or safetensors; a pickle that needs code
  is refused naming the objects it needs (found statically by
  :func:`unsafe_globals`, never by running it), and is unpickled only with
  ``trust=True``;
* :func:`load_tensor_dict` reads a ``torch.save``-d dict of tensors (a data
  file) and never runs code.

What the objects mean (a critpoint checkpoint, a plain state dict, a pickled
module) is decided in :mod:`critpoint.io.checkpoint`.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from critpoint import _memory
from critpoint.errors import CheckpointError, InputError, UnsafeCheckpointError
from critpoint.specs import on_sys_path

__all__ = [
    "RawFile",
    "check_archive",
    "check_file",
    "first_line",
    "load_tensor_dict",
    "read_checkpoint_file",
    "safetensors_module",
    "sniff",
    "unsafe_globals",
]

PathLike = str | os.PathLike[str]


def first_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, for one-line error messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def check_file(path: Path, what: str, error: type[Exception]) -> None:
    """Refuse a path that does not exist, is not a file, or is empty.

    Parameters
    ----------
    path : Path
    what : str
        ``"checkpoint"`` or ``"data file"``, for messages.
    error : type
        The exception to raise.
    """
    if not path.exists():
        msg = (
            f"{what} {str(path)!r} not found; check the path (relative to {Path.cwd()})"
        )
        raise error(msg)
    if not path.is_file():
        msg = f"{what} {str(path)!r} is not a file"
        raise error(msg)
    if path.stat().st_size == 0:
        msg = f"{what} {str(path)!r} is empty (0 bytes); the save was probably interrupted — save it again"
        raise error(msg)


# --------------------------------------------------------------- zip archives


#: An entry inflating to more than this, at more than _BOMB_RATIO times its
#: compressed size, is refused unread: torch.save never compresses (entries
#: are stored), so only a crafted file has one.
_BOMB_BYTES = 16 << 20
_BOMB_RATIO = 100


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def check_archive(
    path: Path, what: str, error: type[Exception], compressed_ok: bool
) -> list[str]:
    """Read a zip archive's directory and refuse it before anything is inflated.

    Parameters
    ----------
    path : Path
        A zip archive (a ``torch.save`` file or an ``.npz``).
    what : str
        ``"checkpoint"`` or ``"data file"``, for messages.
    error : type
        The exception to raise.
    compressed_ok : bool
        Whether compressed entries are normal (``np.savez_compressed``); if
        not, an entry compressed more than 100-fold to over 16 MiB is refused.

    Returns
    -------
    list of str
        The entry names.

    Raises
    ------
    error
        A damaged directory; declared sizes larger than the free memory; a
        compression bomb.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # BadZipFile, OSError, UnicodeDecodeError in names...
        msg = f"{what} {str(path)!r} is a damaged zip archive ({first_line(exc)}); save it again"
        raise error(msg) from None
    declared = sum(i.file_size for i in infos)
    free = _memory.free_host_memory()
    if free and declared > free:
        msg = (
            f"{what} {str(path)!r} declares {_gib(declared)} of contents, more than the "
            f"{_gib(free)} of free memory, so it was not read; free memory or check the file"
        )
        raise error(msg)
    for i in infos:
        ratio = i.file_size / max(i.compress_size, 1)
        if (
            not compressed_ok
            and i.compress_type != zipfile.ZIP_STORED
            and i.file_size > _BOMB_BYTES
            and ratio > _BOMB_RATIO
        ):
            msg = (
                f"{what} {str(path)!r} holds {i.filename!r} compressed {ratio:.0f}-fold to "
                f"{_gib(i.file_size)}; torch.save never compresses, so this file was not "
                "made by it and was not inflated"
            )
            raise error(msg)
    return [i.filename for i in infos]


# ------------------------------------------------------------------- pickles


def sniff(path: Path) -> tuple[str, list[str]]:
    """The kind of a checkpoint file, from its first bytes.

    Returns
    -------
    (kind, names) : (str, list of str)
        ``kind`` is ``"zip"`` (a ``torch.save`` archive, a TorchScript or
        ``torch.export`` one: ``names`` lists its entries, checked by
        :func:`check_archive`), ``"safetensors"`` or ``"other"`` (a legacy
        ``torch.save`` stream, or not a checkpoint at all).
    """
    if zipfile.is_zipfile(path):
        return "zip", check_archive(path, "checkpoint", CheckpointError, False)
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8:
            return "safetensors", []
    return "other", []


def unsafe_globals(path: Path, is_zip: bool) -> list[str]:
    """Name the code objects a pickle needs, without running it.

    Parameters
    ----------
    path : Path
        A ``torch.save`` file.
    is_zip : bool
        Whether it is the zip format (torch lists its globals) or the legacy
        stream (disassembled here with :mod:`pickletools`).

    Returns
    -------
    list of str
        Sorted dotted names outside what ``weights_only`` loading allows;
        empty when none could be found.
    """
    if is_zip:
        try:
            return sorted(
                torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            )
        except Exception:
            return []
    return _scan_legacy_pickle(path)


def _scan_legacy_pickle(path: Path) -> list[str]:
    """Globals in a legacy (non-zip) ``torch.save`` stream, found statically.

    The legacy format is several pickles in a row (magic number, protocol,
    system info, the object); :mod:`pickletools` disassembles them without
    executing anything.
    """
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # private API: fall back to "anything outside torch"
        allowed = None
    found: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(4):
            strings: list[str] = []
            memo: dict[int, Any] = {}
            try:
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL":
                        found.add(".".join(str(arg).split(" ", 1)))
                    elif isinstance(arg, str) and "UNICODE" in op.name:
                        strings.append(arg)
                    elif op.name == "MEMOIZE" and strings:
                        memo[len(memo)] = strings[-1]
                    elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                        memo[int(arg)] = strings[-1]
                    elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(
                        memo.get(int(arg)), str
                    ):
                        strings.append(memo[int(arg)])
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.add(f"{strings[-2]}.{strings[-1]}")
            except Exception:
                break
    found = {_py3_name(g) for g in found}
    if allowed is None:
        return sorted(
            g for g in found if not g.startswith(("torch.", "collections.OrderedDict"))
        )
    return sorted(found - allowed)


def _py3_name(name: str) -> str:
    """Map Python 2 names of protocol-2 pickles (``__builtin__.set``) to Python 3."""
    module, _, attr = name.rpartition(".")
    try:
        from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
    except ImportError:
        return name
    if (module, attr) in NAME_MAPPING:
        module, attr = NAME_MAPPING[(module, attr)]
    else:
        module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{attr}"


def _refuse_unsafe(path: Path, names: list[str]) -> UnsafeCheckpointError:
    listed = ", ".join(names) if names else "(objects that could not be listed)"
    msg = (
        f"checkpoint {str(path)!r} needs code to unpickle — {listed} — and unpickling "
        "can run arbitrary code, so it was not loaded. Fixes: (1) re-save only the "
        "weights: torch.save(model.state_dict(), path) or critpoint.save_checkpoint(path, "
        "model); (2) save as safetensors (path ending in .safetensors); (3) if you made this "
        "file yourself and trust it, pass trust=True (--trust-checkpoint on the command line)"
    )
    return UnsafeCheckpointError(msg)


def _torchscript_error(path: Path) -> CheckpointError:
    msg = (
        f"checkpoint {str(path)!r} is a TorchScript archive. TorchScript is deprecated and "
        "torch.func (which critpoint uses for Hessian-vector products) cannot run scripted "
        "modules. Re-save the weights of the original model: "
        "torch.save(model.state_dict(), 'model.pt') or save it as safetensors"
    )
    return CheckpointError(msg)


def _torch_load(path: Path, map_location: Any, weights_only: bool) -> Any:
    return torch.load(path, map_location=map_location, weights_only=weights_only)


@dataclass(frozen=True, eq=False)
class RawFile:
    """A checkpoint file read safely, not yet interpreted.

    Attributes
    ----------
    kind : {"pickle", "safetensors", "export"}
        How it was read.
    obj : object
        ``"pickle"``: what ``torch.load`` returned (with ``weights_only=True``
        unless the file needed code and the caller trusted it);
        ``"safetensors"``: the dict of tensors; ``"export"``: the
        ``nn.Module`` of a ``torch.export`` program (trusted only).
    metadata : dict of str to str
        The safetensors metadata (empty otherwise).
    """

    kind: Literal["pickle", "safetensors", "export"]
    obj: Any
    metadata: dict[str, str] = field(default_factory=dict)


def read_checkpoint_file(path: Path, trust: bool, map_location: Any) -> RawFile:
    """Read a checkpoint file without running code from it (unless ``trust``).

    Parameters
    ----------
    path : Path
    trust : bool
        Allow unpickling code objects and ``torch.export`` programs. Files
        that load safely are read the safe way whatever ``trust`` says.
    map_location : str or torch.device
        Where to put the tensors.

    Returns
    -------
    RawFile

    Raises
    ------
    UnsafeCheckpointError
        The file needs code and ``trust`` is False; the message names the
        objects and the fixes.
    CheckpointError
        Missing, empty, damaged or unrecognised file; TorchScript.
    """
    check_file(path, "checkpoint", CheckpointError)
    kind, names = sniff(path)

    if kind == "zip" and any(
        "/code/" in n or n.endswith("constants.pkl") for n in names
    ):
        raise _torchscript_error(path)
    is_export = path.suffix.lower() == ".pt2" or (
        kind == "zip" and any(n.endswith("archive_format") for n in names)
    )
    if is_export:
        return RawFile("export", _load_export(path, trust))
    if path.suffix.lower() == ".safetensors" or kind == "safetensors":
        state, metadata = _read_safetensors(path, map_location)
        return RawFile("safetensors", state, metadata)

    try:
        obj = _torch_load(path, map_location, weights_only=True)
    except pickle.UnpicklingError:
        unsafe = unsafe_globals(path, kind == "zip")
        if not unsafe and kind != "zip":
            with open(path, "rb") as f:
                head = f.read(8)
            msg = (
                f"{str(path)!r} is not a checkpoint: it is neither a torch.save file nor "
                f"safetensors (it starts with bytes {head!r}). Point to the right file, "
                "or save it again with critpoint.save_checkpoint or torch.save(state_dict)"
            )
            raise CheckpointError(msg) from None
        if not trust:
            raise _refuse_unsafe(path, unsafe) from None
        try:
            # The classes a pickle names live in modules its writer could
            # import: often files next to the checkpoint.
            with on_sys_path(path.resolve().parent):
                obj = _torch_load(path, map_location, weights_only=False)
        except ModuleNotFoundError as exc2:
            raise _missing_module(path, exc2) from exc2
        except Exception as exc2:
            msg = f"checkpoint {str(path)!r} could not be loaded even with trust=True: {exc2}"
            raise CheckpointError(msg) from exc2
    except Exception as exc:
        # The file is torch.load's only input: whatever it raises (KeyError and
        # IndexError from a damaged pickle, RuntimeError from a damaged archive)
        # says the file is damaged.
        msg = f"checkpoint {str(path)!r} is damaged or not a checkpoint: {first_line(exc)}"
        raise CheckpointError(msg) from None
    return RawFile("pickle", obj)


def _missing_module(path: Path, exc: ModuleNotFoundError) -> CheckpointError:
    """The error for a trusted pickle whose classes live in a module not found."""
    name = exc.name or str(exc)
    msg = (
        f"checkpoint {str(path)!r} holds objects defined in the module {name!r}, which "
        "cannot be imported from here nor from the checkpoint's folder; run critpoint "
        f"from the folder that holds {name.split('.')[0]}.py (or add that folder to "
        "PYTHONPATH), or save model.state_dict() instead and pass --model"
    )
    return CheckpointError(msg)


def safetensors_module() -> Any:
    """``safetensors.torch``, or a clear error naming the extra to install."""
    try:
        import safetensors.torch
    except ImportError:
        msg = "safetensors files need the safetensors package: pip install 'critpoint[safetensors]'"
        raise CheckpointError(msg) from None
    return safetensors.torch


def _read_safetensors(
    path: Path, map_location: Any
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file."""
    st = safetensors_module()
    from safetensors import safe_open

    device = str(map_location) if map_location is not None else "cpu"
    try:
        state = st.load_file(str(path), device=device)
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # SafetensorError is not exported under a stable name
        msg = f"{str(path)!r} is not a readable safetensors file: {first_line(exc)}"
        raise CheckpointError(msg) from None
    return dict(state), dict(metadata)


def _load_export(path: Path, trust: bool) -> torch.nn.Module:
    """The module of a ``torch.export`` program: an unpickler, so trusted only."""
    if not trust:
        msg = (
            f"{str(path)!r} is a torch.export program (.pt2); loading it unpickles objects and "
            "can run code, so it was not loaded. Fixes: (1) re-save the weights: "
            "torch.save(model.state_dict(), path) and pass the model spec; (2) save as "
            "safetensors; (3) if you made this file yourself and trust it, pass trust=True "
            "(--trust-checkpoint on the command line)"
        )
        raise UnsafeCheckpointError(msg)
    try:
        with on_sys_path(path.resolve().parent):
            return torch.export.load(str(path)).module()
    except ModuleNotFoundError as exc:
        raise _missing_module(path, exc) from exc
    except Exception as exc:
        msg = (
            f"torch.export program {str(path)!r} could not be loaded: {first_line(exc)}"
        )
        raise CheckpointError(msg) from exc


# ---------------------------------------------------------------- data files


def load_tensor_dict(path: PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a ``torch.save``-d dict (e.g. ``{"inputs": ..., "targets": ...}``) safely.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save`` of a dict of tensors.
    map_location : str or torch.device
        Where to put the tensors.

    Returns
    -------
    dict
        The dict as stored (values: tensors or primitive types).

    Raises
    ------
    InputError
        Missing, empty or damaged file; a file that needs code to unpickle
        (never loaded); or an object that is not a dict.
    """
    path = Path(path)
    check_file(path, "data file", InputError)
    hint = "save it with torch.save({'inputs': x, 'targets': y}, path)"
    if zipfile.is_zipfile(path):
        check_archive(path, "data file", InputError, False)
    try:
        obj = _torch_load(path, map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        names = unsafe_globals(path, zipfile.is_zipfile(path))
        what = (
            f"needs code to unpickle ({', '.join(names)})"
            if names
            else f"is not readable ({first_line(exc)})"
        )
        msg = f"data file {str(path)!r} {what}, so it was not loaded; {hint} with plain tensors"
        raise InputError(msg) from None
    except Exception as exc:  # torch.load's only input is the file: it is damaged
        msg = f"data file {str(path)!r} is damaged or not a torch.save file ({first_line(exc)}); {hint}"
        raise InputError(msg) from None
    if not isinstance(obj, Mapping):
        msg = (
            f"data file {str(path)!r} holds a {type(obj).__name__}, not a dict; {hint}"
        )
        raise InputError(msg)
    return {str(k): v for k, v in obj.items()}
