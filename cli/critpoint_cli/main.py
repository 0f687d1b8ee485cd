"""Entry point of the ``critpoint`` command.

Imports stay lazy: ``critpoint --help`` answers without importing torch.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="critpoint", prog_name="critpoint")
def cli() -> None:
    """Where am I on the loss surface? Diagnose a checkpoint: minimum, saddle or flat."""
