"""``critpoint report DIAGNOSIS.json -o DIR``: re-render a report without recomputing."""

from __future__ import annotations

import click

from critpoint_cli.commands._common import check_paths, start
from critpoint_cli.options import get_state, global_options


@click.command()
@click.argument("diagnoses", metavar="DIAGNOSIS.json...", nargs=-1, required=True)
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
    ctx: click.Context,
    diagnoses: tuple[str, ...],
    out_dir: str,
    title: str | None,
    dpi: int,
) -> None:
    """Re-render a report from a saved diagnosis, without the model or the data.

    DIAGNOSIS.json is the diagnosis.json of a report directory, or the output
    of `critpoint diagnose --json FILE`. Everything is drawn from the numbers
    stored in it (spectra, loss slices, per-layer results, training curves).
    Several files make one comparison report: a row and a point on the trends
    (loss, λ_min, λ_max, minimum ratio) per diagnosis, in the order given.

    \b
    Examples:
      critpoint report critpoint-demo/diagnosis.json -o demo-report
      critpoint report a.json b.json c.json -o comparison
    """  # noqa: D301 (click's \b marks a verbatim block)
    state = get_state(ctx)
    start(state)
    from dataclasses import replace

    from critpoint.report import load_report, render_report

    check_paths([], [("a diagnosis file", d) for d in diagnoses], report_dir=out_dir)
    docs = [load_report(d) for d in diagnoses]
    if len(docs) == 1:
        doc = docs[0]
    else:
        from critpoint.report.comparison import merge_reports, unique_labels

        # The points' own labels (their checkpoints), or the files' when two share one.
        own = [e.label for d in docs for e in d.entries]
        same = len(set(own)) < len(own) and all(len(d.entries) == 1 for d in docs)
        doc = merge_reports(docs, labels=unique_labels(diagnoses) if same else None)
    if title is not None:
        doc = replace(doc, title=title)
    page = render_report(doc, out_dir, dpi=dpi)
    if not state.quiet:
        labels = ", ".join(e.label for e in doc.entries)
        from critpoint_cli.render import printable

        click.echo(printable(f"Report of {labels} written to {page}"))
