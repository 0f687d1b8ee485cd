"""``python -m critpoint_cli`` (used under ``torchrun``)."""

from critpoint_cli.main import cli

if __name__ == "__main__":
    cli()
