"""Checkpoints: what they hold, how they are written, and what a file means.

A critpoint checkpoint is a plain dict that ``torch.load(weights_only=True)``
reads without running code::

    {"format": "critpoint-checkpoint", "version": 1,
     "state_dict": {name: tensor}, "model_spec": {"name": ..., "kwargs": {...}},
     "data_spec": ..., "loss": "cross_entropy", "history": {"loss": [...]},
     "meta": {...}, "critpoint_version": "...", "torch_version": "..."}

or, for a path ending in ``.safetensors``, the tensors in a safetensors file
with everything else as JSON in its metadata under the key ``"critpoint"``.

:func:`load_checkpoint` also reads what others save: a plain state dict (flat,
or under ``"state_dict"`` / ``"model_state_dict"`` / ``"model"``), a plain
safetensors file, a PyTorch Lightning ``.ckpt``, a Hugging Face
``save_pretrained`` folder (through ``transformers``, see
:mod:`critpoint.io.huggingface`), and — only with ``trust=True``, because they
are pickles that can run code — whole pickled modules and ``torch.export``
programs (``.pt2``). TorchScript is refused: it is deprecated and
``torch.func`` cannot run it.

Weights saved from a wrapper (a LightningModule's ``model.``, ``torch.compile``'s
``_orig_mod.``, ``DataParallel``'s ``module.``) load into the bare model: the
one common prefix is removed and :attr:`Checkpoint.notes` says so (see
:mod:`critpoint.io.keys`).

The bytes are read in :mod:`critpoint.io._safe_load` (the one module that
calls ``torch.load``); this module decides what the objects mean.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from critpoint._files import write_with_atomic
from critpoint._version import __version__
from critpoint.errors import CheckpointError, InputError
from critpoint.io._safe_load import RawFile, read_checkpoint_file, safetensors_module
from critpoint.io.huggingface import is_pretrained_dir, load_pretrained
from critpoint.io.keys import fit_keys
from critpoint.losses import builtin_loss_name, get_loss
from critpoint.models import check_materialised, model_from_spec, probe_builtin
from critpoint.specs import dtype_name, resolve_relative

logger = logging.getLogger("critpoint")

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "load_checkpoint",
    "load_state_dict_strict",
    "save_checkpoint",
]

FORMAT = "critpoint-checkpoint"
VERSION = 1
_SAFETENSORS_KEY = "critpoint"
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")

CheckpointFormat = Literal[
    "critpoint", "state_dict", "safetensors", "module", "export", "huggingface"
]
PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------ the result


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """What a checkpoint file holds.

    Attributes
    ----------
    state_dict : dict of str to Tensor
        Parameter and buffer tensors by name, on ``map_location``.
    model_spec : dict or None
        ``{"name": ..., "kwargs": {...}}`` for :func:`critpoint.models.model_from_spec`.
    data_spec : object or None
        How the data was made (a name, a path or a dict), as saved.
    loss : str or None
        Loss name (``"cross_entropy"``, ``"mse"``, ``"bce"``, ``"module:function"``).
    history : dict or None
        Training curves, e.g. ``{"loss": [...], "lr": [...]}``.
    meta : dict
        Free-form metadata; for a plain state dict, its other primitive entries.
    format : {"critpoint", "state_dict", "safetensors", "module", "export", "huggingface"}
        ``"critpoint"``: written by :func:`save_checkpoint` (either file type);
        ``"state_dict"``: a plain ``torch.save`` of tensors (a Lightning
        ``.ckpt`` included); ``"safetensors"``: a safetensors file without
        critpoint metadata; ``"module"``: a whole pickled ``nn.Module``
        (trusted); ``"export"``: a ``torch.export`` program (trusted);
        ``"huggingface"``: a ``save_pretrained`` folder, loaded by ``transformers``.
    module : nn.Module or None
        The model for ``"module"``, ``"export"`` and ``"huggingface"``.
    path : str
        The file read.
    critpoint_version, torch_version : str or None
        Versions that wrote a critpoint checkpoint.
    trusted : bool
        Whether the specs it stores may name code. ``False`` unless it was
        loaded with ``trust=True``: ``model_spec``, ``data_spec`` and ``loss``
        are data read from a file, so :meth:`build_model`, :func:`critpoint.data.checkpoint_data`
        and :meth:`get_loss` accept only critpoint's built-in names in them
        (a spec passed as an argument is the caller's and always accepted).
    notes : list of str
        What loading adapted or recognised, as sentences for people: the
        kind of file (a Lightning checkpoint, a Hugging Face model) and a
        prefix removed from the tensor names. :meth:`build_model` and
        :meth:`load_into` add the renaming they did (each also logged on the
        ``critpoint`` logger).
    """

    state_dict: dict[str, torch.Tensor]
    model_spec: dict[str, Any] | None = None
    data_spec: Any = None
    loss: str | None = None
    history: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    format: CheckpointFormat = "state_dict"
    module: nn.Module | None = None
    path: str = ""
    critpoint_version: str | None = None
    torch_version: str | None = None
    trusted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """``"checkpoint 'path'"``, for messages."""
        return f"checkpoint {self.path!r}"

    def build_model(
        self, model_spec: Mapping[str, Any] | str | None = None, *, trust: bool = False
    ) -> nn.Module:
        """Rebuild the model and load the weights strictly.

        Parameters
        ----------
        model_spec : dict or str, optional
            Overrides the stored spec (needed for plain state dicts); it is the
            caller's, so a user factory it names runs. Without either, a
            trusted module (``format`` ``"module"`` / ``"export"``) is
            returned as it is.
        trust : bool
            Let the *stored* spec name code (``module:factory``,
            ``file.py:factory``). Without it (or ``load_checkpoint(...,
            trust=True)``) a stored spec may name only a built-in model.

        Returns
        -------
        nn.Module
            A fresh model holding the checkpoint's weights. When the floating
            tensors of the state dict have another dtype than the built model
            (e.g. float64 weights, spec without ``dtype``), the model is cast to
            the state dict's dtype so no precision is lost.

        Raises
        ------
        UnsafeCheckpointError
            The stored spec names code and neither the checkpoint nor the call
            is trusted.
        CheckpointError
            No spec is known, or the keys, shapes or dtypes do not match the model.
        """
        if model_spec is not None:
            spec, trusted = model_spec, True
        else:
            spec, trusted = self.model_spec, trust or self.trusted
            if trusted:
                spec = self.resolve(spec, "model file")
        if spec is None:
            if self.module is not None:
                check_materialised(self.module, self.source)
                return self.module
            msg = (
                f"checkpoint {self.path!r} has no model spec; pass one, e.g. "
                "build_model({'name': 'mlp', 'kwargs': {'widths': [32]}}) or --model "
                "package.module:factory"
            )
            raise CheckpointError(msg)
        probe = probe_builtin(spec)
        if probe is not None:
            # Shapes first, on the meta device: a spec asking for a huge model
            # that does not fit the weights is refused before any allocation.
            _check_fits(probe, self.state_dict, self.path)
        model = model_from_spec(spec, trust=trusted, source=self.source)
        dtypes = {t.dtype for t in self.state_dict.values() if t.is_floating_point()}
        params = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if len(dtypes) == 1 and params and params != dtypes:
            model = model.to(dtypes.pop())
        return self.load_into(model)

    def get_loss(
        self, *, trust: bool = False, num_classes: int | None = None
    ) -> Callable[..., Any]:
        """The stored loss as a function (see :func:`critpoint.losses.get_loss`).

        ``trust`` lets the stored name be code (``module:function``); without
        it only built-in losses are accepted.
        """
        if self.loss is None:
            msg = f"{self.source} does not store its loss; pass one (--loss)"
            raise CheckpointError(msg)
        trusted = trust or self.trusted
        return get_loss(
            self.resolve(self.loss, "loss file") if trusted else self.loss,
            num_classes=num_classes,
            trust=trusted,
            source=self.source,
        )

    def resolve(self, spec: Any, what: str = "model file") -> Any:
        """``spec`` with a relative path in it read from the checkpoint's folder.

        Parameters
        ----------
        spec : str or dict
            A spec stored in this checkpoint (``"d.npz"``, ``"m.py:make"``,
            ``{"name": ..., ...}``); names that are not paths are unchanged.
        what : str
            ``"data file"``, ``"model file"`` or ``"loss file"``, for messages.

        Raises
        ------
        InputError
            The path does not exist in the checkpoint's folder.
        """
        base = Path(self.path).parent
        if isinstance(spec, str):
            return resolve_relative(spec, base, self.source, what)
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            name = resolve_relative(spec["name"], base, self.source, what)
            return {**spec, "name": name}
        return spec

    def load_into(self, model: nn.Module) -> nn.Module:
        """Load the weights into ``model`` strictly (see :func:`load_state_dict_strict`).

        A prefix removed from the file's names is added to :attr:`notes`.
        """
        note = load_state_dict_strict(model, self.state_dict, source=self.path)
        if note is not None and note not in self.notes:
            self.notes.append(note)
        return model

    def to_dict(self) -> dict[str, Any]:
        """Everything but the tensors, plus their shapes and dtypes (JSON-able)."""
        return {
            "path": self.path,
            "format": self.format,
            "model_spec": self.model_spec,
            "data_spec": self.data_spec,
            "loss": self.loss,
            "history": self.history,
            "meta": self.meta,
            "critpoint_version": self.critpoint_version,
            "torch_version": self.torch_version,
            "trusted": self.trusted,
            "notes": list(self.notes),
            "tensors": {
                k: {
                    "shape": list(v.shape),
                    "dtype": dtype_name(v.dtype),
                }
                for k, v in self.state_dict.items()
            },
            "num_parameters": sum(v.numel() for v in self.state_dict.values()),
        }


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> str | None:
    """Load ``state_dict`` into ``model``, or explain what does not fit.

    When every name of the file carries one prefix the model's names lack
    (``model.`` from PyTorch Lightning, ``_orig_mod.`` from ``torch.compile``,
    ``module.`` from ``DataParallel``), or the reverse, the prefix is changed
    and the change is logged (see :func:`critpoint.io.keys.fit_keys`).

    Returns
    -------
    str or None
        The renaming done, as a sentence, or ``None``.

    Raises
    ------
    CheckpointError
        Showing the first few missing keys, extra keys and keys whose shapes
        or dtype kinds differ, and the likely cause.
    """
    sd, note = _check_fits(model, state_dict, source)
    model.load_state_dict(sd, strict=True)
    if note is not None:
        logger.info("%s: %s", source, note)
    return note


def _check_fits(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict under the model's names, and the renaming done; raise if it does not fit.

    Only names, shapes and dtype kinds are compared, so ``model`` may live on
    the ``meta`` device (built without memory, to check a spec before the
    real model is allocated).
    """
    fit = fit_keys(model.state_dict(), state_dict, source, type(model).__name__)
    return fit.state_dict, fit.note


# ---------------------------------------------------------------------- saving


def _plain(value: Any, where: str) -> Any:
    """Convert to the types weights_only loading and JSON both accept.

    Not :func:`critpoint._json.clean`: a checkpoint header is stored data, not
    a published JSON document, so it keeps NaN and ±Inf (a diverged training
    curve reads back as it was), turns tensors, NumPy arrays, dtypes, paths
    and objects with ``to_dict()`` into plain values, and *refuses* anything
    else (an optimizer, a module) instead of passing it on, because
    ``torch.load(weights_only=True)`` could not read it back.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__) would need unpickling
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if (
        hasattr(value, "item")
        and hasattr(value, "dtype")
        and getattr(value, "ndim", None) == 0
    ):
        return value.item()  # NumPy scalars
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return value.tolist()  # NumPy arrays
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _plain(value.to_dict(), where)
    msg = (
        f"{where}: {type(value).__name__} cannot be stored safely in a checkpoint; use "
        "numbers, strings, booleans, None, lists and dicts"
    )
    raise InputError(msg)


def _loss_to_str(loss: Any) -> str | None:
    if loss is None or isinstance(loss, str):
        return loss
    name = builtin_loss_name(loss)
    if name is not None:
        return name
    module = getattr(loss, "__module__", None)
    qualname = getattr(loss, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}:{qualname}"
    msg = f"loss {loss!r} has no importable name; pass its name ('mse', 'package.module:function')"
    raise InputError(msg)


def save_checkpoint(
    path: PathLike,
    model: nn.Module | Mapping[str, torch.Tensor],
    model_spec: Mapping[str, Any] | None = None,
    data_spec: Any = None,
    loss: str | Callable[..., Any] | None = None,
    history: Any = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save a model's weights with everything needed to rebuild it.

    Parameters
    ----------
    path : str or PathLike
        Target file. A ``.safetensors`` suffix writes safetensors (tensors, and
        the rest as JSON metadata under ``"critpoint"``); anything else writes a
        ``torch.save`` dict of primitive types and tensors. The file is written
        whole (see :mod:`critpoint._files`): a temporary name in the same
        folder, then a rename that keeps a replaced file's permissions; a
        symbolic link's target is written, a device or FIFO straight through.
    model : nn.Module or dict of str to Tensor
        The model (its ``state_dict()`` is saved) or a state dict.
    model_spec : dict, optional
        ``{"name": ..., "kwargs": {...}}``; by default the spec that
        :func:`critpoint.models.build_model` recorded on the model, if any.
    data_spec : object, optional
        A data name, path or dict (JSON-able).
    loss : str or callable, optional
        The loss name; a built-in or importable function is stored by name.
    history : dict or object with ``to_dict()``, optional
        Training curves (lists of numbers).
    meta : dict, optional
        Anything else JSON-able (step, seed, optimizer settings...).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if isinstance(model, nn.Module):
        state = model.state_dict()
        if model_spec is None:
            model_spec = getattr(model, "critpoint_spec", None)
    elif isinstance(model, Mapping):
        state = model
    else:
        msg = f"save_checkpoint needs an nn.Module or a state dict; got {type(model).__name__}"
        raise InputError(msg)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            msg = f"state dict entry {k!r} is {type(v).__name__}, not a tensor"
            raise InputError(msg)
        # A detached CPU copy: no autograd history, no shared storage (safetensors
        # refuses tied tensors), nothing that changes if training goes on.
        tensors[str(k)] = v.detach().to("cpu", copy=True).contiguous()

    header = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": _plain(model_spec, "model_spec"),
        "data_spec": _plain(data_spec, "data_spec"),
        "loss": _loss_to_str(loss),
        "history": _plain(history, "history"),
        "meta": _plain(dict(meta) if meta is not None else {}, "meta"),
        "critpoint_version": __version__,
        "torch_version": str(torch.__version__),
    }
    if path.suffix.lower() == ".safetensors":
        save_file = safetensors_module().save_file
        metadata = {_SAFETENSORS_KEY: json.dumps(header)}
        write_with_atomic(
            path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata)
        )
    else:
        obj = {**header, "state_dict": tensors}
        write_with_atomic(path, lambda tmp: torch.save(obj, tmp))
    return path


# --------------------------------------------------------------------- loading


def load_checkpoint(
    path: PathLike, trust: bool = False, map_location: Any = "cpu"
) -> Checkpoint:
    """Read a checkpoint without running code from it (unless ``trust=True``).

    Parameters
    ----------
    path : str or PathLike
        A critpoint checkpoint, a plain state dict (``torch.save``), a
        safetensors file, or — with ``trust=True`` — a pickled module or a
        ``torch.export`` program (``.pt2``).
    trust : bool
        Allow unpickling code objects, and let the specs the file stores
        (model, data, loss) name code (``module:function``,
        ``file.py:function``), which :meth:`Checkpoint.build_model` and the
        command line then import and run. Only for files you made yourself.
        Files that load safely are always loaded the safe way, whatever
        ``trust`` says; without it, stored specs may name only critpoint's
        built-ins (see :attr:`Checkpoint.trusted`).
    map_location : str or torch.device
        Where to put the tensors (``"cpu"`` by default: no GPU memory spike).

    Returns
    -------
    Checkpoint

    Raises
    ------
    UnsafeCheckpointError
        The file needs code to unpickle and ``trust`` is False; the message
        names the objects and the fixes.
    CheckpointError
        Missing, empty, damaged or unrecognised file, TorchScript, a newer
        checkpoint version, or no state dict inside.
    """
    path = Path(path)
    if path.is_dir():
        ckpt = _interpret_folder(path, trust, map_location)
    else:
        ckpt = _interpret_raw(read_checkpoint_file(path, trust, map_location), path)
    return replace(ckpt, trusted=bool(trust))


def _interpret_folder(path: Path, trust: bool, map_location: Any) -> Checkpoint:
    """A Hugging Face ``save_pretrained`` folder, read by ``transformers``."""
    if not is_pretrained_dir(path):
        msg = (
            f"checkpoint {str(path)!r} is a folder without config.json, so it is not a "
            "Hugging Face model folder; give the checkpoint file inside it"
        )
        raise CheckpointError(msg)
    found = load_pretrained(path, trust=trust, map_location=map_location)
    notes = [
        f"a Hugging Face model folder, loaded with transformers "
        f"{found.meta['transformers_version']} as {found.architecture}"
    ]
    loss = None
    if found.causal_lm:
        loss = "causal_lm"
        notes.append(
            "a causal language model: its default loss is causal_lm (next-token "
            "cross-entropy)"
        )
    return Checkpoint(
        state_dict=dict(found.model.state_dict()),
        loss=loss,
        meta=found.meta,
        format="huggingface",
        module=found.model,
        path=str(path),
        notes=notes,
    )


def _interpret_raw(raw: RawFile, path: Path) -> Checkpoint:
    if raw.kind == "export":
        return Checkpoint(
            state_dict=dict(raw.obj.state_dict()),
            format="export",
            module=raw.obj,
            path=str(path),
        )
    if raw.kind == "safetensors":
        return _interpret_safetensors(raw.obj, raw.metadata, path)
    return _interpret(raw.obj, path)


def _is_tensor_mapping(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
        )
    )


def _holds_tensor(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a tensor or an array of more than one number (optimizer states...)."""
    if isinstance(value, torch.Tensor):
        return value.numel() > 1
    if hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        return True  # NumPy arrays
    if depth > 50:
        return False  # deeper than any metadata: judged by its top only
    if isinstance(value, Mapping):
        return any(_holds_tensor(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v, depth + 1) for v in value)
    return False


def _primitive_meta(obj: Mapping[Any, Any], skip: str) -> dict[str, Any]:
    """The other entries of a checkpoint dict that are plain data (epoch, step, settings).

    Entries holding tensors (optimizer states, learning-rate schedulers, EMA
    weights) or objects are left out: they are training state, not metadata,
    and would be large.
    """
    meta = {}
    for k, v in obj.items():
        if k == skip or _holds_tensor(v):
            continue
        try:
            meta[str(k)] = _plain(v, "meta")
        except InputError:
            continue  # modules, optimizers...: not metadata
    return meta


#: Entries by which a dict is a PyTorch Lightning checkpoint.
_LIGHTNING_KEYS = (
    "pytorch-lightning_version",
    "global_step",
    "optimizer_states",
    "lr_schedulers",
    "hyper_parameters",
    "loops",
)


def _container_notes(obj: Mapping[Any, Any], key: str) -> list[str]:
    """What kind of file a dict holding a state dict under ``key`` is, for :attr:`Checkpoint.notes`."""
    if key != "state_dict" or not any(k in obj for k in _LIGHTNING_KEYS):
        return []
    where = []
    for name, label in (("epoch", "epoch"), ("global_step", "global step")):
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            where.append(f"{label} {value}")
    detail = f" ({', '.join(where)})" if where else ""
    return [f"a PyTorch Lightning checkpoint{detail}: the weights under 'state_dict'"]


def _interpret(obj: Any, path: Path) -> Checkpoint:
    where = str(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > VERSION:
            msg = (
                f"checkpoint {where!r} has format version {version!r}; this critpoint reads "
                f"version {VERSION}. Upgrade critpoint"
            )
            raise CheckpointError(msg)
        state = obj.get("state_dict")
        if not isinstance(state, Mapping):
            msg = f"checkpoint {where!r} has no 'state_dict'; it is damaged — save it again"
            raise CheckpointError(msg)
        _check_header(obj, where)
        return Checkpoint(
            state_dict=_tensor_dict(state, where),
            model_spec=obj.get("model_spec"),
            data_spec=obj.get("data_spec"),
            loss=obj.get("loss"),
            history=obj.get("history"),
            meta=dict(obj.get("meta") or {}),
            format="critpoint",
            path=where,
            critpoint_version=obj.get("critpoint_version"),
            torch_version=obj.get("torch_version"),
        )
    if isinstance(obj, nn.Module):  # only reachable with trust=True
        return Checkpoint(
            state_dict=dict(obj.state_dict()), format="module", module=obj, path=where
        )
    if _is_tensor_mapping(obj):
        return Checkpoint(state_dict=dict(obj), format="state_dict", path=where)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            value = obj.get(key)
            if isinstance(value, nn.Module):
                return Checkpoint(
                    state_dict=dict(value.state_dict()),
                    meta=_primitive_meta(obj, key),
                    format="module",
                    module=value,
                    path=where,
                )
            if _is_tensor_mapping(value):
                return Checkpoint(
                    state_dict=dict(value),
                    meta=_primitive_meta(obj, key),
                    format="state_dict",
                    path=where,
                    notes=_container_notes(obj, key),
                )
        keys = sorted(map(str, obj))
        msg = (
            f"no state dict found in {where!r}: expected a mapping of names to tensors, or one "
            f"under {list(_STATE_DICT_KEYS)}; top-level keys are {keys}"
        )
        raise CheckpointError(msg)
    msg = (
        f"no state dict found in {where!r}: it holds a {type(obj).__name__}; save "
        "model.state_dict() instead"
    )
    raise CheckpointError(msg)


#: The types each header entry of a critpoint checkpoint may have.
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "model_spec": (Mapping, str),
    "data_spec": (Mapping, str),
    "loss": (str,),
    "history": (Mapping,),
    "meta": (Mapping,),
    "critpoint_version": (str,),
    "torch_version": (str,),
}


def _check_header(obj: Mapping[str, Any], where: str) -> None:
    """Refuse header entries of the wrong type (a damaged or hand-edited file)."""
    for key, types in _HEADER_TYPES.items():
        value = obj.get(key)
        if value is not None and not isinstance(value, types):
            wanted = " or ".join(
                "a dict" if t is Mapping else f"a {t.__name__}" for t in types
            )
            msg = (
                f"checkpoint {where!r} is damaged: its {key!r} is a {type(value).__name__} "
                f"({str(value)[:80]!r}), not {wanted}; save it again"
            )
            raise CheckpointError(msg)
    for key in ("model_spec", "data_spec"):
        value = obj.get(key)
        if isinstance(value, Mapping) and not isinstance(value.get("name"), str):
            msg = (
                f"checkpoint {where!r} is damaged: its {key!r} has no string 'name' "
                f"({str(dict(value))[:80]!r}); save it again"
            )
            raise CheckpointError(msg)
    if isinstance(obj.get("meta"), Mapping) and not all(
        isinstance(k, str) for k in obj["meta"]
    ):
        msg = (
            f"checkpoint {where!r} is damaged: its 'meta' has keys that are not strings"
        )
        raise CheckpointError(msg)


def _tensor_dict(state: Mapping[Any, Any], where: str) -> dict[str, torch.Tensor]:
    """The state dict, refusing entries that are not named tensors."""
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            msg = (
                f"checkpoint {where!r} is damaged: state dict entry {str(k)[:60]!r} is a "
                f"{type(v).__name__}, not a tensor; save it again"
            )
            raise CheckpointError(msg)
    return dict(state)


def _interpret_safetensors(
    state: dict[str, torch.Tensor], metadata: Mapping[str, str], path: Path
) -> Checkpoint:
    text = metadata.get(_SAFETENSORS_KEY)
    if text is None:
        meta = {k: v for k, v in metadata.items() if k != "format"}
        return Checkpoint(
            state_dict=dict(state), meta=meta, format="safetensors", path=str(path)
        )
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = f"safetensors file {str(path)!r} has damaged critpoint metadata: {exc}"
        raise CheckpointError(msg) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        msg = (
            f"safetensors file {str(path)!r} has damaged critpoint metadata: expected a "
            f"JSON object with format {FORMAT!r}; save it again"
        )
        raise CheckpointError(msg)
    return _interpret({**header, "state_dict": state}, path)
