"""Figures of a diagnosis, drawn on explicit matplotlib ``Figure``/``Axes`` objects.

No pyplot state is touched, so the figures are safe headless and in threads,
and they are readable in grey-scale print (markers and line styles carry the
meaning, not colour alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    """A fresh ``Figure`` with one ``Axes`` (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def plot_spectrum(diagnosis: Any, ax: Axes | None = None) -> Figure:
    """The eigenvalue density with the extreme Ritz values and their error bars.

    Parameters
    ----------
    diagnosis : Diagnosis
        The result of :func:`critpoint.diagnose`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if ax is None:
        fig, ax = new_figure()
    else:
        fig = ax.get_figure()
    values = np.asarray(diagnosis.eigenvalues, dtype=float)
    errors = np.asarray(diagnosis.eigenvalue_errors, dtype=float)
    lo = float(min(values.min(), 0.0))
    hi = float(max(values.max(), 0.0))
    dens = diagnosis.density
    if dens is not None:
        s_lo, s_hi = dens.support
        lo, hi = min(lo, s_lo), max(hi, s_hi)
    width = max(hi - lo, 1e-12)
    grid = np.linspace(lo - 0.05 * width, hi + 0.05 * width, 800)
    floor = 1e-6
    if dens is not None:
        pdf = np.asarray(dens.pdf(grid), dtype=float)
        ax.semilogy(
            grid, np.maximum(pdf, floor), color="0.2", lw=1.5, label="density (SLQ)"
        )
        top = max(float(pdf.max()), 10 * floor)
    else:
        top = 1.0
    y_marks = np.full(values.shape, top * 2.0)
    ax.errorbar(
        values,
        y_marks,
        xerr=errors,
        fmt="v",
        color="black",
        ms=6,
        capsize=3,
        label="extreme eigenvalues ± bound",
    )
    ax.axvline(0.0, color="0.4", ls="--", lw=1, label="zero")
    ax.set_yscale("log")
    ax.set_ylim(floor, top * 6)
    ax.set_xlabel("eigenvalue of the Hessian (loss units per parameter unit²)")
    ax.set_ylabel("spectral density (log scale)")
    title = f"{diagnosis.kind}"
    if diagnosis.minimum_ratio is not None:
        title += f" — minimum ratio {diagnosis.minimum_ratio:.3f}"
    ax.set_title(title)
    ax.legend(loc="upper center", fontsize="small")
    return fig
