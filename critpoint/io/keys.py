"""A file's tensor names against a model's: one wrapper prefix removed, mismatches explained.

Weights are often saved from a wrapper around the model, so every name carries
one prefix the model's names lack: ``model.`` (a PyTorch Lightning module's
attribute), ``_orig_mod.`` (``torch.compile``), ``module.`` (``DataParallel``,
``DistributedDataParallel``). :func:`fit_keys` renames the file's tensors when
the two sets of names differ by exactly one such prefix, and says what it did;
otherwise it raises one error that shows the first few differences and the
likely cause, never every name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from critpoint.errors import CheckpointError
from critpoint.specs import dtype_name

__all__ = ["KeyFit", "fit_keys"]

#: Names shown per list in a mismatch message.
SHOWN = 5
#: How deep prefixes are looked for when explaining a mismatch.
_DEPTH = 3

#: Where the common prefixes come from, for the note.
_KNOWN_PREFIXES = {
    "model.": "as PyTorch Lightning saves the model held by a LightningModule",
    "_orig_mod.": "as torch.compile's wrapper names the compiled model's weights",
    "module.": "as DataParallel / DistributedDataParallel save the wrapped model",
}


@dataclass(frozen=True)
class KeyFit:
    """The file's tensors under the model's names.

    Attributes
    ----------
    state_dict : dict of str to Tensor
        The tensors, renamed to the model's names (the same tensor objects).
    note : str or None
        What was renamed, as a sentence (``None`` when the names matched).
    """

    state_dict: dict[str, torch.Tensor]
    note: str | None = None


def _dot_prefixes(key: str, depth: int | None = None) -> list[str]:
    """``"a.b.c"`` → ``["a.", "a.b."]`` (up to ``depth`` levels), never the whole key."""
    parts = key.split(".")[:-1]
    if depth is not None:
        parts = parts[:depth]
    return [".".join(parts[: i + 1]) + "." for i in range(len(parts))]


def _common_prefixes(keys: Iterable[str]) -> list[str]:
    """The dot-prefixes every key shares, shortest first, ``""`` included."""
    keys = list(keys)
    if not keys:
        return [""]
    shared = set(_dot_prefixes(keys[0]))
    for key in keys[1:]:
        shared &= set(_dot_prefixes(key))
    return ["", *sorted(shared, key=len)]


def _rename(keys: Iterable[str], strip: str, add: str) -> dict[str, str]:
    """``{old: add + old[len(strip):]}`` for the keys that start with ``strip``."""
    return {k: add + k[len(strip) :] for k in keys if k.startswith(strip)}


def _note(strip: str, add: str, every: bool = True) -> str:
    """The renaming as a sentence; ``every=False`` when only some names carried the prefix."""
    names = "every tensor name of the file" if every else "the file's tensor names"
    if strip and not add:
        parts = [f"{part}." for part in strip.split(".")[:-1]]
        known = [_KNOWN_PREFIXES[part] for part in parts if part in _KNOWN_PREFIXES]
        why = " and ".join(known) or "as a wrapper module names the model inside it"
        return f"removed the prefix {strip!r} from {names} ({why})"
    if add and not strip:
        return (
            f"added the prefix {add!r} to {names} (the model wraps the network the "
            "weights were saved from)"
        )
    return f"replaced the prefix {strip!r} of {names} by {add!r}"


def _wide_prefixes(keys: list[str]) -> set[str]:
    """``""`` and the dot-prefixes (a few levels deep) that at least half the keys share."""
    counts: dict[str, int] = {}
    for k in keys:
        for p in _dot_prefixes(k, _DEPTH):
            counts[p] = counts.get(p, 0) + 1
    return {""} | {p for p, c in counts.items() if 2 * c >= len(keys)}


def _best_alignment(
    given: Iterable[str], expected: set[str]
) -> tuple[str, str, dict[str, str]]:
    """The prefix change under which most of the file's names are the model's.

    Only prefixes that at least half the names share on each side are tried:
    a wrapper's prefix is on (nearly) every name.
    """
    given = list(given)
    best = ("", "", {k: k for k in given})
    best_overlap = len(set(given) & expected)
    for strip in sorted(_wide_prefixes(given), key=len):
        for add in sorted(_wide_prefixes(list(expected)), key=len):
            if not strip and not add:
                continue
            mapping = _rename(given, strip, add)
            overlap = len(set(mapping.values()) & expected)
            if overlap > best_overlap:
                best, best_overlap = (strip, add, mapping), overlap
    return best


def fit_keys(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    source: str,
    model_name: str | None = None,
) -> KeyFit:
    """Match the file's tensors to the model's names, or explain why they do not fit.

    Parameters
    ----------
    expected : mapping of str to Tensor
        The model's state dict (only names, shapes and dtypes are read, so it
        may live on the ``meta`` device).
    given : mapping of str to Tensor
        The file's state dict.
    source : str
        The file, for messages.
    model_name : str, optional
        The model's class name, for messages.

    Returns
    -------
    KeyFit
        The file's tensors under the model's names. When every name of the
        file carries one prefix the model's lack (``model.``, ``_orig_mod.``,
        ``module.``...), or the reverse, the prefix is changed and
        :attr:`KeyFit.note` says so.

    Raises
    ------
    CheckpointError
        The names, shapes or dtype kinds differ: the message shows the first
        few of each and the likely cause.
    """
    want = set(expected)
    have = set(given)
    exact = _exact_renaming(have, want)
    if exact is not None:
        strip, add = exact
        mapping = _rename(have, strip, add)
        sd = {mapping[k]: v for k, v in given.items()}
        shapes, kinds = _shape_and_kind(expected, sd)
        if not shapes and not kinds:
            return KeyFit(sd, _note(strip, add) if strip or add else None)
        aligned = (strip, add, True) if strip or add else None
        raise CheckpointError(
            _message(source, model_name, [], [], shapes, kinds, aligned, len(want))
        )
    strip, add, mapping = _best_alignment(have, want)
    renamed = {mapping[k]: given[k] for k in mapping}
    extra = sorted(k for k in have if k not in mapping)  # without the prefix
    extra += sorted(set(renamed) - want)
    missing = sorted(want - set(renamed))
    shapes, kinds = _shape_and_kind(expected, renamed)
    every = all(k.startswith(strip) for k in have)
    aligned = (strip, add, every) if strip or add else None
    common = len(want & set(renamed))
    raise CheckpointError(
        _message(source, model_name, missing, extra, shapes, kinds, aligned, common)
    )


def _exact_renaming(have: set[str], want: set[str]) -> tuple[str, str] | None:
    """``(strip, add)``: the one prefix change that turns ``have`` into ``want``, or None."""
    if have == want:
        return "", ""
    for strip in _common_prefixes(have):
        for add in _common_prefixes(want):
            if (strip or add) and set(_rename(have, strip, add).values()) == want:
                return strip, add
    return None


def _shape_and_kind(
    expected: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    both = sorted(set(sd) & set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in both
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    kinds = [
        f"{k}: checkpoint {dtype_name(sd[k].dtype)} vs model {dtype_name(expected[k].dtype)}"
        for k in both
        if _dtype_kind(sd[k]) != _dtype_kind(expected[k])
    ]
    return shapes, kinds


def _dtype_kind(t: torch.Tensor) -> str:
    if t.is_complex():
        return "complex"
    if t.is_floating_point():
        return "float"
    return "bool" if t.dtype == torch.bool else "int"


def _shown(items: list[str]) -> str:
    """The first :data:`SHOWN` items, and how many more there are."""
    head = ", ".join(repr(x) for x in items[:SHOWN])
    more = len(items) - SHOWN
    return f"[{head}{f', … {more} more' if more > 0 else ''}]"


def _is_norm_statistic(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in (
        "running_mean",
        "running_var",
        "num_batches_tracked",
    )


def _likely_cause(
    missing: list[str],
    extra: list[str],
    shapes: list[str],
    matched: bool,
) -> str:
    if not matched:
        return (
            "no tensor name of the file is one of the model's, even after removing a "
            "prefix: the weights were saved from another architecture"
        )
    if any(_is_norm_statistic(k) for k in missing) and not any(
        _is_norm_statistic(k) for k in extra
    ):
        return (
            "the model has normalisation layers (BatchNorm) the file lacks: it was "
            "probably trained without them"
        )
    if any(_is_norm_statistic(k) for k in extra) and not any(
        _is_norm_statistic(k) for k in missing
    ):
        return (
            "the file has BatchNorm statistics the model lacks: it was probably "
            "trained with batchnorm"
        )
    if shapes and not missing and not extra:
        return (
            "the same layers with other sizes: the model was built with other widths, "
            "channels or vocabulary than it was trained with"
        )
    if shapes:
        return (
            "other layers and sizes: the model was built with other widths or depth "
            "than it was trained with"
        )
    if extra and not missing:
        return (
            "the file holds tensors the model does not have (another part of the "
            "training module: a loss's weights, a metric, an EMA copy)"
        )
    if missing and not extra:
        return "the file lacks some of the model's tensors (a layer added since?)"
    return "the model has other layers than the one the weights were saved from"


def _message(
    source: str,
    model_name: str | None,
    missing: list[str],
    extra: list[str],
    shapes: list[str],
    kinds: list[str],
    aligned: tuple[str, str, bool] | None,
    common: int,
) -> str:
    parts = []
    if aligned is not None:
        parts.append(
            "compared after the renaming that fits most names: "
            + _note(aligned[0], aligned[1], every=aligned[2])
        )
    if missing:
        parts.append(
            f"{len(missing)} missing keys (in the model, not the file): {_shown(missing)}"
        )
    if extra:
        parts.append(
            f"{len(extra)} extra keys (in the file, not the model): {_shown(extra)}"
        )
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_shown(shapes)}")
    if kinds:
        parts.append(
            f"{len(kinds)} dtype mismatches (complex or integer weights are not loaded "
            f"into floating tensors, nor the reverse): {_shown(kinds)}"
        )
    cause = (
        _likely_cause(missing, extra, shapes, common > 0)
        if missing or extra or shapes
        else None
    )
    named = f" ({model_name})" if model_name else ""
    text = f"the weights in {source!r} do not fit the model{named}: " + "; ".join(parts)
    if cause is not None:
        text += f". Likely cause: {cause}"
    return text + (
        ". Build the model with the spec it was trained with (widths, channels, "
        "batchnorm...: --model / --model-kwargs)"
    )
