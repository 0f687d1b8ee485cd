"""Many checkpoints in one report: the numbers against the training step, a table.

A training run's folder of checkpoints diagnosed one by one gives one
:class:`~critpoint.report.ReportEntry` each; this module shows them side by
side: :func:`plot_trend` draws the loss, λ_min, λ_max and the minimum ratio
against the step stored in each checkpoint (or their order when some have
none), :func:`comparison_table` is the text table ``critpoint diagnose a.pt
b.pt`` prints, and :func:`merge_reports` joins saved reports into one
(``critpoint report a.json b.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from critpoint.errors import InputError
from critpoint.report.document import ReportDocument, ReportEntry
from critpoint.report.text import num

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "by_step",
    "checkpoint_axis",
    "comparison_table",
    "merge_reports",
    "plot_trend",
    "unique_labels",
]


def unique_labels(paths: Sequence[str]) -> list[str]:
    """Short names for files: their base names, or the paths given when two share one."""
    names = [Path(p).name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def checkpoint_axis(entries: Sequence[ReportEntry]) -> tuple[np.ndarray, str]:
    """Where each entry sits on the x axis, and the axis's label.

    The stored training steps (:attr:`ReportEntry.step`) when every entry has
    one and they differ, else the order given: ``1, 2, …``.

    Returns
    -------
    (ndarray of shape (len(entries),), str)
    """
    steps = [e.step for e in entries]
    if all(s is not None for s in steps) and len(set(steps)) == len(steps):
        return np.array(steps, dtype=float), "training step (stored in the checkpoint)"
    return np.arange(
        1, len(entries) + 1, dtype=float
    ), "checkpoint (in the order given)"


def _panel(
    ax: Axes,
    x: np.ndarray,
    y: Sequence[float | None],
    err: Sequence[float | None] | None,
    title: str,
    *,
    zero_line: bool = False,
) -> None:
    values = np.array([np.nan if v is None else float(v) for v in y])
    errors = None
    if err is not None:
        errors = np.array([0.0 if e is None else float(e) for e in err])
    if not np.isfinite(values).any():
        ax.text(
            0.5,
            0.5,
            "not computed",
            ha="center",
            va="center",
            color="0.45",
            transform=ax.transAxes,
        )
    order = np.argsort(x, kind="stable")  # the line follows the steps
    ax.errorbar(
        x[order],
        values[order],
        yerr=errors[order] if errors is not None else None,
        fmt="o-",
        color="black",
        ms=4,
        capsize=3,
    )
    if zero_line:
        ax.axhline(0.0, color="0.45", ls="--", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.grid(True, color="0.85", lw=0.6)


def plot_trend(entries: Sequence[ReportEntry]) -> Figure:
    """Loss, λ_min, λ_max and the minimum ratio of each checkpoint, against its step.

    Four panels sharing the x axis of :func:`checkpoint_axis`; the
    eigenvalues carry their error bounds as bars, the loss is on a log scale
    when every loss is positive. Along the checkpoints' order the ticks are
    their labels (up to 12).

    Parameters
    ----------
    entries : sequence of ReportEntry

    Returns
    -------
    matplotlib.figure.Figure
    """
    from critpoint.report.figures import EIGEN_UNITS, new_figure_grid

    x, xlabel = checkpoint_axis(entries)
    fig, grid = new_figure_grid(2, 2, 9.0, 6.0)
    dgs = [e.diagnosis for e in entries]
    (loss_ax, ratio_ax), (min_ax, max_ax) = grid
    _panel(loss_ax, x, [d.loss for d in dgs], None, "loss")
    losses = [d.loss for d in dgs]
    if all(v is not None and np.isfinite(v) and v > 0 for v in losses) and (
        max(losses) > 10 * min(losses)
    ):
        loss_ax.set_yscale("log")
    _panel(
        ratio_ax,
        x,
        [d.minimum_ratio for d in dgs],
        None,
        "minimum ratio",
    )
    _panel(
        min_ax,
        x,
        [d.lambda_min for d in dgs],
        [d.lambda_min_error for d in dgs],
        f"λ_min ({EIGEN_UNITS})",
        zero_line=True,
    )
    _panel(
        max_ax,
        x,
        [d.lambda_max for d in dgs],
        [d.lambda_max_error for d in dgs],
        f"λ_max ({EIGEN_UNITS})",
    )
    ordered = xlabel.startswith("checkpoint")
    for ax in (min_ax, max_ax):
        ax.set_xlabel(xlabel)
    for row in grid:
        for ax in row:
            if ordered and len(entries) <= 12:
                ax.set_xticks(x)
                ax.set_xticklabels(
                    [e.label for e in entries], rotation=30, ha="right", fontsize=8
                )
    return fig


def comparison_table(entries: Sequence[ReportEntry]) -> str:
    """One row per checkpoint: step, verdict, loss, λ_min, λ_max, minimum ratio, HVPs."""
    head = (
        "checkpoint",
        "step",
        "kind",
        "loss",
        "λ_min ± bound",
        "λ_max ± bound",
        "min. ratio",
        "HVPs",
    )
    rows: list[tuple[str, ...]] = [head]
    for e in entries:
        dg = e.diagnosis
        rows.append(
            (
                e.label,
                "" if e.step is None else f"{e.step:,}",
                dg.kind,
                num(dg.loss, 6),
                f"{num(dg.lambda_min, 4)} ± {num(dg.lambda_min_error, 1)}",
                f"{num(dg.lambda_max, 4)} ± {num(dg.lambda_max_error, 1)}",
                num(dg.minimum_ratio, 4),
                f"{dg.num_matvecs:,}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {1, 3, 4, 5, 6, 7}
    out = []
    for j, row in enumerate(rows):
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i])
            for i, c in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def by_step(entries: Sequence[ReportEntry]) -> list[ReportEntry]:
    """The entries in the order of their training steps when each has its own, else as given."""
    steps = [e.step for e in entries]
    if all(s is not None for s in steps) and len(set(steps)) == len(steps):
        return sorted(entries, key=lambda e: e.step)  # type: ignore[arg-type,return-value]
    return list(entries)


def merge_reports(
    docs: Sequence[ReportDocument],
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> ReportDocument:
    """One report of every entry of several: in the order of their steps, or as given.

    The entries are sorted by their training step when every entry stores
    one and no two share it (:func:`by_step`); a shell's ``run/*.pt`` puts
    ``step-100`` before ``step-20``.

    Parameters
    ----------
    docs : sequence of ReportDocument
        Saved reports or diagnoses (:func:`~critpoint.report.load_report`).
    labels : sequence of str, optional
        A label per document, used for a document of one entry (the file it
        came from, say); entries of a report of several keep their own.
    title : str, optional
        Default: ``"critpoint comparison of N points"``.

    Returns
    -------
    ReportDocument
        Per-layer results only when a single document had them; the
        training history of the last point (by step) that has one (the
        longest run, in a training run's folder); the settings of each
        document under ``"sources"``.

    Raises
    ------
    InputError
        No document.
    """
    if not docs:
        msg = "a comparison needs at least one report or diagnosis"
        raise InputError(msg)
    if labels is not None and len(labels) != len(docs):
        msg = f"got {len(labels)} labels for {len(docs)} documents"
        raise InputError(msg)
    entries: list[ReportEntry] = []
    history_of: dict[int, dict[str, Any] | None] = {}
    for i, doc in enumerate(docs):
        for entry in doc.entries:
            if labels is not None and len(doc.entries) == 1:
                entry = replace(entry, label=labels[i])
            entries.append(entry)
            history_of[id(entry)] = doc.history
    entries = by_step(entries)
    histories = [history_of[id(e)] for e in entries if history_of[id(e)]]
    layered = [d.per_layer for d in docs if d.per_layer]
    sources: list[dict[str, Any]] = [
        {"source": d.source, "title": d.title, "settings": d.settings} for d in docs
    ]
    return ReportDocument(
        title=title or f"critpoint comparison of {len(entries)} points",
        entries=entries,
        per_layer=layered[0] if len(docs) == 1 and layered else None,
        history=histories[-1] if histories else None,
        settings={"command": "compare", "sources": sources},
    )
