"""Helpers shared by the commands (no torch import at module level)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from critpoint_cli.options import State

EXIT_NOT_CONVERGED = 3


def start(state: State) -> None:
    """Per-command set-up: debug logging when ``--debug`` was given."""
    if state.debug:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("critpoint").setLevel(logging.DEBUG)


@contextmanager
def stage(state: State, text: str) -> Iterator[None]:
    """Announce a long step on standard error when progress is shown."""
    t0 = time.perf_counter()
    if state.show_progress():
        click.echo(f"{text} …", err=True)
    yield
    if state.show_progress():
        click.echo(f"{text}: done in {time.perf_counter() - t0:.1f} s", err=True)


def escaped_name(checkpoint: str) -> str:
    """``dir/model.ckpt`` → ``dir/model-escaped.ckpt``."""
    p = Path(checkpoint)
    return str(p.with_name(f"{p.stem}-escaped{p.suffix or '.ckpt'}"))


def plain(value: object) -> object:
    """A JSON round trip: plain ``str``/``float``/``list``/``dict`` only.

    Checkpoints are read with ``weights_only=True``, which refuses ``str``
    subclasses such as ``torch.__version__`` (a ``TorchVersion``); a round trip
    through JSON turns every such value into a plain type.
    """
    import json

    return json.loads(json.dumps(value, default=str))
