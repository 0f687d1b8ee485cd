"""``critpoint diagnose a.pt b.pt c.pt``: each diagnosed alike, one comparison written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import click

from critpoint_cli.commands._common import check_paths
from critpoint_cli.options import get_state


def compare_checkpoints(
    ctx: click.Context,
    checkpoints: Sequence[str],
    diagnose_one: Callable[..., Any],
    **options: Any,
) -> None:
    """Diagnose every checkpoint with the same options, then print and write the comparison.

    Each checkpoint's verdict is printed as ``critpoint diagnose`` prints it
    alone (the numbers are the same: the same function computes them); then
    a table with a row per checkpoint. ``--json`` gets the comparison's
    ``critpoint.report`` document (each entry the checkpoint's diagnosis
    document), ``--report DIR`` its HTML page with the trends. Exit code 3
    when a solve did not converge, after everything is written.
    """
    from critpoint.errors import ConvergenceError
    from critpoint.report.comparison import (
        comparison_table,
        merge_reports,
        unique_labels,
    )
    from critpoint.report.document import ReportDocument
    from critpoint_cli.render import Output

    state = get_state(ctx)
    json_path = options.pop("json_path")
    report_dir = options.pop("report_dir")
    outputs = [("--json", json_path)]
    check_paths(outputs, [("a checkpoint", c) for c in checkpoints], report_dir)
    out = Output(json_path, state.quiet)
    labels = unique_labels(checkpoints)
    docs = []
    failed: list[str] = []
    for i, (path, label) in enumerate(zip(checkpoints, labels, strict=True)):
        if i:
            out.result("")
        out.info(f"[{i + 1}/{len(checkpoints)}] {path}")
        one = diagnose_one(
            ctx,
            path,
            **options,
            json_path=None,
            report_dir=None,
            comparing=True,
            repeats=len(checkpoints) if i == 0 else 0,
        )
        if one is None:
            return  # not rank 0: it neither prints nor writes
        document, setup, unconverged = one
        # The entry of its document: the step it stored included.
        entry = replace(ReportDocument.from_dict(document).entries[0], label=label)
        history = setup.checkpoint.history if setup.checkpoint is not None else None
        docs.append(
            ReportDocument(
                title=label,
                entries=[entry],
                history=dict(history) if history else None,
                settings=dict(document.get("settings") or {}),
                source=path,
            )
        )
        failed += [f"{label} ({what})" for what in unconverged]
    merged = merge_reports(
        docs, title=f"critpoint comparison of {len(docs)} checkpoints"
    )
    out.result("\nAll checkpoints:\n" + comparison_table(merged.entries))
    out.json(merged.to_dict())
    if report_dir is not None:
        from critpoint.report import render_report

        page = render_report(merged, report_dir)
        out.info(f"Comparison report written to {page}")
    elif json_path is None:
        out.info("Add --report DIR for the comparison report (HTML, JSON, figures).")
    out.written()
    if failed:
        msg = (
            "the eigensolver did not converge for "
            + ", ".join(failed)
            + " (tol {:g}); the results above use the looser bounds it reached. "
            "Raise --max-matvecs or loosen --tol.".format(options["tol"])
        )
        raise ConvergenceError(msg, partial=merged.to_dict())
