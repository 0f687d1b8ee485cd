"""Entry point of the ``critpoint`` command.

Imports stay lazy: ``critpoint --help`` (and every command's ``--help``)
answers without importing torch; the library is imported inside the command
callbacks. Errors become one line on standard error and an exit code:

* 0 — success, whatever the verdict;
* 1 — an error (``critpoint: error: <what is wrong and how to fix it>``);
* 2 — a usage error (bad option or argument);
* 3 — a solver did not converge (partial results are still written): the
  command raises :class:`critpoint.ConvergenceError` after writing them, and
  it is shown as a warning.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from critpoint_cli.commands.demo import demo
from critpoint_cli.commands.diagnose import diagnose
from critpoint_cli.commands.escape import escape
from critpoint_cli.commands.report import report
from critpoint_cli.commands.train import train
from critpoint_cli.options import get_state, global_options

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_CONVERGED = 3


def one_line(text: str) -> str:
    """Collapse a message to one line."""
    return " ".join(str(text).split())


def error_message(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for an exception that escaped a command."""
    errors = _critpoint_errors()
    if errors is not None and isinstance(exc, errors.ConvergenceError):
        return one_line(str(exc)), EXIT_NOT_CONVERGED
    if errors is not None and isinstance(exc, errors.CritpointError):
        return one_line(str(exc) or type(exc).__name__), EXIT_ERROR
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename!r}" if exc.filename else ""
        return f"{exc.strerror}{where}", EXIT_ERROR
    text = one_line(str(exc))
    return (
        f"unexpected {type(exc).__name__}{': ' + text if text else ''} "
        "(run with --debug for the traceback, and please report it)",
        EXIT_ERROR,
    )


def _critpoint_errors() -> Any:
    """``critpoint.errors`` if the library was imported (it was, if it raised)."""
    import sys

    if "critpoint" not in sys.modules:
        return None
    import critpoint.errors

    return critpoint.errors


def _finish_distributed(wait: bool) -> None:
    """Close a torchrun process group a command opened, so no rank aborts at exit."""
    import sys

    if "critpoint.distributed" in sys.modules:
        sys.modules["critpoint.distributed"].finish(wait=wait)


class CritpointGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map exceptions to messages and exit codes."""
        try:
            result = self._invoke_and_close(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit):
            raise
        except click.exceptions.Abort:
            raise
        except Exception as exc:
            state = get_state(ctx)
            message, code = error_message(exc)
            # An unconverged solver is an outcome, not a fault: its results were
            # written, so a warning and exit code 3, never a traceback.
            if state.debug and code != EXIT_NOT_CONVERGED:
                raise
            from critpoint_cli.render import printable

            kind = "warning" if code == EXIT_NOT_CONVERGED else "error"
            click.echo(printable(f"critpoint: {kind}: {message}"), err=True)
            ctx.exit(code)
        return result

    def _invoke_and_close(self, ctx: click.Context) -> Any:
        # Every rank passes a barrier after a command that ran to its end (an
        # exit code such as 3 included); a failing rank closes its group at
        # once rather than wait for the others.
        try:
            result = super().invoke(ctx)
        except click.exceptions.Exit:
            _finish_distributed(wait=True)
            raise
        except BaseException as exc:
            errors = _critpoint_errors()
            ran_to_end = errors is not None and isinstance(exc, errors.ConvergenceError)
            _finish_distributed(wait=ran_to_end)
            raise
        _finish_distributed(wait=True)
        return result


EPILOG = """\b
Exit codes: 0 success (whatever the verdict), 1 error, 2 usage error,
3 a solver did not converge (partial results still written).

\b
Quick start:
  critpoint demo -o critpoint-demo
  critpoint diagnose critpoint-demo/model.ckpt
"""


@click.group(
    cls=CritpointGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.version_option(package_name="critpoint", prog_name="critpoint")
@global_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Where am I on the loss surface? Diagnose a checkpoint: minimum, saddle or flat.

    critpoint computes Hessian-vector products of the exact full-data loss,
    finds the extreme eigenvalues with error bounds, estimates the eigenvalue
    density, and says what kind of point the model sits at and which way is down.
    """
    state = get_state(ctx)
    if state.debug:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("critpoint").setLevel(logging.DEBUG)


cli.add_command(diagnose)
cli.add_command(escape)
cli.add_command(report)
cli.add_command(train)
cli.add_command(demo)
