"""``critpoint report DIAGNOSIS.json -o DIR``: re-render a report without recomputing."""

from __future__ import annotations

import click

from critpoint_cli.commands._common import check_paths, start
from critpoint_cli.options import get_state, global_options


@click.command()
@click.argument("diagnosis", metavar="DIAGNOSIS.json")
@click.option(
    "-o",
    "--output",
    "out_dir",
    metavar="DIR",
    required=True,
    help="Directory to write report.html, diagnosis.json and the figures to.",
)
@click.option(
    "--title", default=None, help="Title of the page. [default: the stored one]"
)
@click.option(
    "--dpi",
    type=click.IntRange(min=30, max=600),
    default=110,
    show_default=True,
    help="Resolution of the PNG figures.",
)
@global_options
@click.pass_context
def report(
    ctx: click.Context, diagnosis: str, out_dir: str, title: str | None, dpi: int
) -> None:
    """Re-render a report from a saved diagnosis, without the model or the data.

    DIAGNOSIS.json is the diagnosis.json of a report directory, or the output
    of `critpoint diagnose --json FILE`. Everything is drawn from the numbers
    stored in it (spectra, loss slices, per-layer results, training curves).

    \b
    Example:
      critpoint report critpoint-demo/diagnosis.json -o demo-report
    """  # noqa: D301 (click's \b marks a verbatim block)
    state = get_state(ctx)
    start(state)
    from dataclasses import replace

    from critpoint.report import load_report, render_report

    check_paths([], [("the diagnosis file", diagnosis)], report_dir=out_dir)
    doc = load_report(diagnosis)
    if title is not None:
        doc = replace(doc, title=title)
    page = render_report(doc, out_dir, dpi=dpi)
    if not state.quiet:
        labels = ", ".join(e.label for e in doc.entries)
        from critpoint_cli.render import printable

        click.echo(printable(f"Report of {labels} written to {page}"))
