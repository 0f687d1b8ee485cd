"""Where the command's output goes: text on standard output, JSON, messages, warnings.

The text itself is the library's (:mod:`critpoint.report.text`), the JSON is
the library's documents (:mod:`critpoint._json`): this module only routes
them. No torch import at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click


def printable(text: str) -> str:
    """``text`` with file names that are not UTF-8 shown with replacement characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        from critpoint._text import printable as replace

        return replace(text)
    return text


class Output:
    """Where messages go: standard output, unless JSON is printed there.

    With ``--json -`` the JSON document is the only thing on standard output;
    messages then go to standard error (and nowhere with ``--quiet``).
    """

    def __init__(self, json_path: str | None, quiet: bool) -> None:
        self.json_to_stdout = json_path == "-"
        self.json_path = json_path
        self.quiet = quiet

    def result(self, text: str) -> None:
        """The main result text (the verdict): standard output unless JSON is there."""
        if self.json_to_stdout:
            return
        click.echo(printable(text))

    def info(self, text: str) -> None:
        """A side message (files written...): hidden with --quiet."""
        if self.quiet:
            return
        click.echo(printable(text), err=self.json_to_stdout)

    def warn(self, text: str) -> None:
        """A warning: always on standard error."""
        click.echo(printable(f"critpoint: warning: {text}"), err=True)

    def json(self, document: Mapping[str, Any]) -> None:
        """Write the JSON document to the --json target, if any."""
        if self.json_path is None:
            return
        from critpoint._json import dumps

        text = dumps(document)
        if self.json_to_stdout:
            click.echo(text)
            return
        from critpoint._files import write_text_atomic

        write_text_atomic(self.json_path, text + "\n")

    def written(self) -> None:
        """Say where the JSON went (after the result text)."""
        if self.json_path is not None and not self.json_to_stdout:
            self.info(f"JSON written to {self.json_path}")
