"""Helpers shared by the commands (no torch import at module level)."""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click

from critpoint_cli.options import State


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


def spec_files(**specs: str | None) -> list[tuple[str, str | None]]:
    """The files that ``--model``/``--data``/``--loss`` style specs read, as inputs.

    ``spec_files(data="d.npz", model="m.py:make")`` →
    ``[("--data", "d.npz"), ("--model", "m.py")]``; built-in names give nothing.
    """
    from critpoint.specs import spec_path

    found: list[tuple[str, str | None]] = []
    for option, spec in specs.items():
        parts = spec_path(spec) if isinstance(spec, str) else None
        if parts is not None:
            found.append((f"--{option.replace('_', '-')}", parts[0]))
    return found


def check_paths(
    outputs: Sequence[tuple[str, str | None]],
    inputs: Sequence[tuple[str, str | None]],
    report_dir: str | None = None,
) -> None:
    """Refuse, before any work, an output that is an input or another output.

    A report folder counts as the files it will hold.
    """
    from critpoint._files import check_outputs
    from critpoint.report.html import REPORT_FILES

    outs = list(outputs)
    if report_dir is not None:
        outs += [("the report file", os.path.join(report_dir, n)) for n in REPORT_FILES]
    check_outputs(outs, inputs)


def shell_command(*words: str) -> str:
    """A command line to copy: every word quoted for a POSIX shell where needed."""
    return " ".join(shlex.quote(w) for w in words)


def escaped_name(checkpoint: str) -> str:
    """``dir/model.ckpt`` → ``dir/model-escaped.ckpt`` (a ``.pt2`` program → ``.ckpt``)."""
    p = Path(checkpoint)
    suffix = p.suffix if p.suffix and p.suffix.lower() != ".pt2" else ".ckpt"
    return str(p.with_name(f"{p.stem}-escaped{suffix}"))
