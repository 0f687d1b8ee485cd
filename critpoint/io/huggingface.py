"""Hugging Face model folders (``save_pretrained``): read through ``transformers``.

A folder with ``config.json`` and ``model.safetensors`` (or sharded
safetensors with an index) is a Hugging Face model. The model class is the one
``config.json`` names under ``architectures``, looked up in ``transformers``
itself: the file chooses among the classes of a library installed by the
user, it never brings code of its own. Two things are refused without
``trust=True`` (``--trust-checkpoint``):

* custom code (``auto_map`` in ``config.json``: modelling files in the folder
  or on the Hub, run by ``trust_remote_code``);
* pickled weights (``pytorch_model.bin``), which unpickle objects.

Nothing is ever downloaded (``local_files_only=True``). ``transformers`` is an
optional dependency: ``pip install 'critpoint[hf]'``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from critpoint.errors import CheckpointError, UnsafeCheckpointError

__all__ = ["PRETRAINED_CONFIG", "Pretrained", "is_pretrained_dir", "load_pretrained"]

#: The file that makes a folder a Hugging Face model.
PRETRAINED_CONFIG = "config.json"
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
#: Largest config.json read (a config is a few KiB).
_MAX_CONFIG_BYTES = 16 * 2**20


@dataclass(frozen=True, eq=False)
class Pretrained:
    """A model read from a ``save_pretrained`` folder.

    Attributes
    ----------
    model : nn.Module
        The ``transformers`` model, in eval mode, with ``use_cache`` off (the
        analysis never generates, so a key/value cache is only cost).
    architecture : str
        The class name ``config.json`` gives (``"GPT2LMHeadModel"``).
    causal_lm : bool
        Whether it is a causal language model (its natural loss is
        :func:`critpoint.losses.causal_lm`).
    meta : dict
        ``architecture``, ``model_type`` and the ``transformers`` versions.
    """

    model: nn.Module
    architecture: str
    causal_lm: bool
    meta: dict[str, Any] = field(default_factory=dict)


def is_pretrained_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``config.json``."""
    path = Path(path)
    return path.is_dir() and (path / PRETRAINED_CONFIG).is_file()


def _read_config(path: Path) -> dict[str, Any]:
    file = path / PRETRAINED_CONFIG
    if file.stat().st_size > _MAX_CONFIG_BYTES:
        msg = f"{str(file)!r} is larger than 16 MiB: not a model configuration"
        raise CheckpointError(msg)
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        msg = f"{str(file)!r} is not valid JSON ({exc}); save the model again with save_pretrained"
        raise CheckpointError(msg) from None
    if not isinstance(config, dict):
        msg = f"{str(file)!r} holds a {type(config).__name__}, not a JSON object; save the model again"
        raise CheckpointError(msg)
    return config


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        msg = (
            "a Hugging Face model folder (config.json + model.safetensors) is read with the "
            "transformers package, which is not installed: pip install 'critpoint[hf]'"
        )
        raise CheckpointError(msg) from None
    return transformers


def _architecture(config: dict[str, Any], file: Path) -> str:
    names = config.get("architectures")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n.isidentifier() for n in names)
    ):
        msg = (
            f"{str(file)!r} names no model class under 'architectures' (found "
            f"{names!r}), so critpoint cannot tell which model it is; save the model with "
            "its head (e.g. GPT2LMHeadModel.save_pretrained), or load it in Python and "
            "pass the module to critpoint.Objective"
        )
        raise CheckpointError(msg)
    return names[0]


def _is_causal_lm(transformers: Any, architecture: str) -> bool:
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        )
    except ImportError:  # a transformers without the mapping: judge by the name
        return architecture.endswith(("ForCausalLM", "LMHeadModel"))
    names = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return architecture in names


@contextlib.contextmanager
def _quiet_progress(transformers: Any) -> Iterator[None]:
    """No ``transformers`` progress bar while loading (critpoint draws its own); restored after."""
    tf_logging = getattr(getattr(transformers, "utils", None), "logging", None)
    toggles = ("is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar")
    if tf_logging is None or not all(hasattr(tf_logging, t) for t in toggles):
        yield
        return
    was_on = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            tf_logging.enable_progress_bar()


def load_pretrained(
    path: str | Path, *, trust: bool = False, map_location: Any = "cpu"
) -> Pretrained:
    """Load a ``save_pretrained`` folder with ``transformers``, never downloading.

    Parameters
    ----------
    path : str or Path
        The folder (``config.json`` and ``model.safetensors``).
    trust : bool
        Allow custom modelling code (``auto_map``, run with
        ``trust_remote_code=True``) and pickled weights (``pytorch_model.bin``).
    map_location : str or torch.device
        Where to put the model.

    Returns
    -------
    Pretrained

    Raises
    ------
    UnsafeCheckpointError
        Custom code or pickled weights without ``trust``.
    CheckpointError
        ``transformers`` missing (the message names the ``hf`` extra), a
        damaged ``config.json``, an architecture this ``transformers`` does
        not have, no weights, or ``transformers`` failing to load them.
    """
    path = Path(path)
    config = _read_config(path)
    file = path / PRETRAINED_CONFIG
    architecture = _architecture(config, file)
    custom = config.get("auto_map")
    if custom is not None and not trust:
        msg = (
            f"{str(file)!r} names custom modelling code (auto_map: "
            f"{json.dumps(custom)[:160]}), which transformers would run from the folder or "
            "the Hub; a file does not choose code for critpoint. If you trust this "
            "model's code, pass --trust-checkpoint (trust=True in Python)"
        )
        raise UnsafeCheckpointError(msg)
    present = {
        name for name in (*_SAFE_WEIGHTS, *_PICKLED_WEIGHTS) if (path / name).is_file()
    }
    if not present:
        msg = (
            f"Hugging Face model folder {str(path)!r} holds no weights "
            f"({' or '.join(_SAFE_WEIGHTS)}); save them with model.save_pretrained(folder)"
        )
        raise CheckpointError(msg)
    safe = bool(present & set(_SAFE_WEIGHTS))
    if not safe and not trust:
        msg = (
            f"the weights in {str(path)!r} are a pickle ({', '.join(sorted(present))}), "
            "which can run code when loaded, so they were not loaded. Re-save them as "
            "safetensors (model.save_pretrained(folder) writes model.safetensors), or, if "
            "you made this file and trust it, pass --trust-checkpoint (trust=True in Python)"
        )
        raise UnsafeCheckpointError(msg)

    transformers = _transformers()
    options: dict[str, Any] = {"local_files_only": True}
    if safe:
        options["use_safetensors"] = True
    if custom is not None:
        # Only reachable with trust: the folder's own code, via the Auto class
        # auto_map names for this architecture.
        auto = next(
            (
                key
                for key, value in custom.items()
                if isinstance(value, str) and value.endswith(f".{architecture}")
            ),
            "AutoModel",
        )
        cls = getattr(transformers, auto, None) or transformers.AutoModel
        options["trust_remote_code"] = True
    else:
        cls = getattr(transformers, architecture, None)
        base = transformers.PreTrainedModel
        if not (isinstance(cls, type) and issubclass(cls, base)):
            msg = (
                f"{str(file)!r} names the architecture {architecture!r}, which is not a "
                f"model class of transformers {transformers.__version__}; upgrade "
                "transformers, or load the model in Python and pass it to critpoint.Objective"
            )
            raise CheckpointError(msg)
    try:
        with _quiet_progress(transformers):
            model = cls.from_pretrained(str(path), **options)
    except Exception as exc:  # transformers' own errors: the folder is the input
        text = " ".join(str(exc).split())[:300]
        msg = (
            f"transformers could not load {str(path)!r} as {architecture}: "
            f"{type(exc).__name__}: {text}"
        )
        raise CheckpointError(msg) from exc
    if not isinstance(model, nn.Module):
        msg = f"transformers returned a {type(model).__name__} for {str(path)!r}, not a torch module"
        raise CheckpointError(msg)
    model.eval()
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "use_cache"):
        model_config.use_cache = False
    if map_location is not None:
        model = model.to(map_location)
    meta = {
        "architecture": architecture,
        "model_type": config.get("model_type"),
        "saved_with_transformers": config.get("transformers_version"),
        "transformers_version": transformers.__version__,
    }
    return Pretrained(
        model, architecture, _is_causal_lm(transformers, architecture), meta
    )
