"""Curvature of the full training loss along training."""

from __future__ import annotations

from typing import Any

from critpoint.errors import InputError

__all__ = ["TRACKABLE"]

#: Curvature quantities :func:`train` can track.
TRACKABLE: tuple[str, ...] = ("sharpness", "lambda_min", "minimum_ratio")


def _normalise_track(track: Any) -> list[str]:
    if track is None:
        return []
    items = [track] if isinstance(track, str) else track
    try:
        names = list(items)
    except TypeError:
        names = None
    if names is None or not all(isinstance(t, str) for t in names):
        msg = f"track must be None or a set of names from {list(TRACKABLE)}; got {track!r}"
        raise InputError(msg)
    unknown = sorted(set(names) - set(TRACKABLE))
    if unknown:
        msg = f"cannot track {unknown}; choose from {list(TRACKABLE)}"
        raise InputError(msg)
    return [t for t in TRACKABLE if t in names]
