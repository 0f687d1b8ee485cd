"""Figures of a diagnosis, drawn on explicit matplotlib ``Figure``/``Axes`` objects.

No pyplot state is touched, so the figures are safe headless and in threads,
and they are readable in grey-scale print: markers, hatching and line styles
carry the meaning, colour maps are monotonic in lightness.

Every function takes the plain results (:class:`~critpoint.Diagnosis`,
:class:`~critpoint.Landscape`, a training-history dict), never a
model, so a report can be re-drawn from its JSON.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from critpoint.report.text import num, ratio_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from critpoint.analysis.diagnosis import Diagnosis
    from critpoint.surface import Landscape, LossPlane, LossSlice

__all__ = [
    "EIGEN_UNITS",
    "figure_to_png",
    "new_figure",
    "new_figure_grid",
    "plot_block_intervals",
    "plot_landscape",
    "plot_per_layer",
    "plot_plane",
    "plot_slice",
    "plot_spectra",
    "plot_spectrum",
    "plot_training",
]

#: Unit of a Hessian eigenvalue: loss per squared parameter unit.
EIGEN_UNITS = "loss / parameter²"
_INK = "black"
_GREY = "0.45"
_LIGHT = "0.75"
#: Layout engine of every figure.
LAYOUT = "constrained"


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    """A fresh ``Figure`` with one ``Axes`` (Agg canvas, no pyplot).

    Parameters
    ----------
    width, height : float
        Size in inches.

    Returns
    -------
    (Figure, Axes)
    """
    fig, axes = new_figure_grid(1, 1, width, height)
    return fig, axes[0][0]


def new_figure_grid(
    nrows: int, ncols: int, width: float, height: float
) -> tuple[Figure, list[list[Axes]]]:
    """A fresh ``Figure`` with an ``nrows × ncols`` grid of ``Axes`` (no pyplot).

    Parameters
    ----------
    nrows, ncols : int
        Grid shape.
    width, height : float
        Size of the whole figure in inches.

    Returns
    -------
    (Figure, list of list of Axes)
        ``axes[i][j]`` is row ``i``, column ``j``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=LAYOUT)
    FigureCanvasAgg(fig)
    axes = [
        [fig.add_subplot(nrows, ncols, i * ncols + j + 1) for j in range(ncols)]
        for i in range(nrows)
    ]
    return fig, axes


def figure_to_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (no timestamp or software metadata: reproducible).

    Parameters
    ----------
    fig : Figure
    dpi : int
        Resolution in dots per inch.

    Returns
    -------
    bytes
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _own_axes(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    if ax is None:
        return new_figure(width, height)
    fig = ax.get_figure()
    assert fig is not None
    return fig, ax  # type: ignore[return-value]


# -------------------------------------------------------------------- spectrum


def plot_spectrum(
    diagnosis: Diagnosis,
    ax: Axes | None = None,
    label: str | None = None,
    *,
    compact: bool = False,
    legend: bool = True,
) -> Figure:
    """The eigenvalue density (SLQ, log scale) with the extreme Ritz values and error bars.

    The density is the Gaussian-smoothed stochastic-Lanczos estimate, in
    eigenvalues per unit eigenvalue (normalised to 1), on a logarithmic axis
    so that the small negative mass of a saddle and the outliers stay
    visible next to the bulk at zero. The mass clearly below zero (beyond the
    zero tolerance ``τ``) is hatched. The Ritz values found by Lanczos are
    drawn above the curve with their rigorous error bounds as horizontal
    error bars, and ``λ = 0`` is a dashed line. The title gives the verdict
    and the minimum ratio.

    Parameters
    ----------
    diagnosis : Diagnosis
        The result of :func:`critpoint.diagnose` (or ``Diagnosis.from_dict``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    label : str, optional
        Name of the point, put in front of the title.
    compact : bool
        Smaller fonts and no legend (for small multiples).
    legend : bool
        Draw the legend (below the axes).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _own_axes(ax, 7.0, 3.6)
    values = np.asarray(diagnosis.eigenvalues, dtype=float)
    errors = np.nan_to_num(np.asarray(diagnosis.eigenvalue_errors, dtype=float))
    lo = float(min(np.nanmin(values), 0.0))
    hi = float(max(np.nanmax(values), 0.0))
    dens = diagnosis.density
    if dens is not None:
        s_lo, s_hi = dens.support
        lo, hi = min(lo, s_lo), max(hi, s_hi)
    width = max(hi - lo, 1e-12, 1e-6 * max(abs(lo), abs(hi)))
    grid = np.linspace(lo - 0.06 * width, hi + 0.06 * width, 1200)
    tau = float(diagnosis.zero_tol) if math.isfinite(diagnosis.zero_tol) else 0.0
    if dens is not None:
        pdf = np.asarray(dens.pdf(grid), dtype=float)
        peak = float(pdf.max()) if pdf.size and pdf.max() > 0 else 1.0
        floor = peak * 1e-6
        shown = np.maximum(pdf, floor)
        ax.plot(grid, shown, color=_INK, lw=1.4, label="eigenvalue density (SLQ)")
        neg = grid < -tau
        if neg.any() and (diagnosis.negative_fraction or 0.0) > 0:
            pct = 100 * float(diagnosis.negative_fraction or 0.0)
            ax.fill_between(
                grid[neg],
                floor,
                shown[neg],
                facecolor="none",
                edgecolor=_GREY,
                hatch="////",
                lw=0.0,
                label=f"clearly negative: {pct:.3g}% of the spectrum",
            )
        top = peak
    else:
        floor, top = 1e-3, 1.0
        ax.text(
            0.5,
            0.5,
            "no density estimate (run with density=True / --density)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color=_GREY,
        )
    mark_y = top * 6.0
    ax.errorbar(
        values,
        np.full(values.shape, mark_y),
        xerr=errors,
        fmt="v",
        color=_INK,
        mfc="white",
        ms=5 if compact else 6,
        capsize=4,
        elinewidth=1.5,
        label="extreme eigenvalues ± error bound (Lanczos)",
    )
    ax.axvline(0.0, color=_GREY, ls="--", lw=1, label="λ = 0")
    ax.set_yscale("log")
    ax.set_ylim(floor, top * 300)
    ax.set_xlim(grid[0], grid[-1])
    tiny = "x-small" if compact else "small"
    for x, err, name, side in (
        (diagnosis.lambda_min, diagnosis.lambda_min_error, "λ_min", "left"),
        (diagnosis.lambda_max, diagnosis.lambda_max_error, "λ_max", "right"),
    ):
        if not math.isfinite(x):
            continue
        ax.annotate(
            f"{name} = {num(x, 4)} ± {num(err, 2)}",
            xy=(x, mark_y),
            xytext=(0, 7),
            textcoords="offset points",
            ha=side,
            va="bottom",
            fontsize=tiny,
        )
    size = "small" if compact else "medium"
    ax.set_xlabel(f"eigenvalue λ of the Hessian ({EIGEN_UNITS})", fontsize=size)
    ax.set_ylabel("density (per unit λ, log)", fontsize=size)
    kind = diagnosis.kind
    if kind == "degenerate" and diagnosis.side == "positive":
        kind = "degenerate (flat minimum)"
    title = f"{label}: {kind}" if label else kind
    if diagnosis.minimum_ratio is not None:
        title += f" — minimum ratio {ratio_text(diagnosis)}"
    if not diagnosis.converged:
        title += " [unconverged: wide bounds]"
    ax.set_title(title, fontsize=size)
    if compact:
        ax.tick_params(labelsize="x-small")
    elif legend:
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=2,
            fontsize="small",
            frameon=False,
        )
    return fig


def plot_spectra(entries: Sequence[tuple[str, Diagnosis]]) -> Figure:
    """The spectra of several points, one panel each, stacked.

    Parameters
    ----------
    entries : sequence of (label, Diagnosis)

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = max(len(entries), 1)
    fig, axes = new_figure_grid(n, 1, 7.5, 2.7 * n + 0.6)
    for i, (row, (label, dg)) in enumerate(zip(axes, entries, strict=False)):
        plot_spectrum(
            dg,
            ax=row[0],
            label=label if len(entries) > 1 else None,
            legend=i == len(entries) - 1,
        )
    return fig


# ------------------------------------------------------------------- landscape


def plot_slice(
    sl: LossSlice,
    ax: Axes | None = None,
    *,
    name: str = "u",
    escape: Mapping[str, float] | None = None,
    compact: bool = False,
) -> Figure:
    """The loss along one direction, with its second-order model.

    Parameters
    ----------
    sl : LossSlice
        From :func:`critpoint.loss_slice`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    name : str
        Name of the direction in labels (``"u_min"``).
    escape : dict, optional
        ``{"step": α, "loss_after": L}``: marks the escape step.
    compact : bool
        Smaller fonts.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _own_axes(ax, 5.0, 3.6)
    a, losses = sl.offsets, sl.losses
    ax.plot(a, losses, "-", color=_INK, lw=1.6, label="loss L(θ + α·u)")
    ax.plot(a, losses, ".", color=_INK, ms=3)
    if sl.curvature is not None:
        curv = sl.curvature
        ax.plot(
            a,
            sl.quadratic(),
            "--",
            color=_GREY,
            lw=1.3,
            label=f"quadratic model (curvature {num(curv, 3)})",
        )
    ax.axhline(sl.loss0, color=_LIGHT, ls=":", lw=1)
    ax.plot([0.0], [sl.loss0], "o", color=_INK, mfc="white", ms=6, label="θ (here)")
    if escape is not None and "step" in escape and "loss_after" in escape:
        ax.plot(
            [escape["step"]],
            [escape["loss_after"]],
            "s",
            color=_INK,
            ms=6,
            label=f"escape step α = {num(escape['step'], 3)} ("
            + (
                "the line search's"
                if escape.get("line_search")
                else "quadratic model's length"
            )
            + ")",
        )
    finite = losses[np.isfinite(losses)]
    if finite.size:
        span = float(finite.max() - finite.min())
        pad = 0.12 * span if span > 0 else 0.05 * max(abs(float(finite.max())), 1e-12)
        ax.set_ylim(float(finite.min()) - pad, float(finite.max()) + pad)
    ax.set_xlim(float(a[0]), float(a[-1]))
    size = "small" if compact else "medium"
    ax.set_xlabel(f"distance α along {name} (parameter units)", fontsize=size)
    ax.set_ylabel("mean loss", fontsize=size)
    ax.legend(loc="best", fontsize="x-small" if compact else "small", framealpha=0.9)
    return fig


def plot_plane(
    plane: LossPlane,
    ax: Axes | None = None,
    *,
    escape: Mapping[str, float] | None = None,
    names: tuple[str, str] = ("u_min", "u_max"),
    compact: bool = False,
) -> Figure:
    """Contours of the loss on the plane of two directions, with the escape step.

    Parameters
    ----------
    plane : LossPlane
        From :func:`critpoint.loss_plane`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    escape : dict, optional
        ``{"a": ..., "b": ..., "predicted_change": ...}``: drawn as an arrow
        from the centre.
    names : (str, str)
        Names of the two directions in the axis labels.
    compact : bool
        Smaller fonts.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.patheffects as pe

    fig, ax = _own_axes(ax, 5.5, 4.2)
    z = np.asarray(plane.losses, dtype=float)
    finite = z[np.isfinite(z)]
    if finite.size and float(finite.max()) > float(finite.min()):
        # Levels at quantiles of the values: each band covers about the same
        # area, so a saddle in a shallow middle is not lost next to steep walls.
        levels = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, 16)))
        if levels.size < 3:
            levels = np.linspace(float(finite.min()), float(finite.max()), 16)
        filled = ax.contourf(plane.a, plane.b, z, levels=levels, cmap="viridis")
        lines = ax.contour(
            plane.a, plane.b, z, levels=levels[2:-1:3], colors=_INK, linewidths=0.7
        )
        ax.clabel(lines, fmt="%.3g", fontsize="x-small")
        # Equal-area bands get equal space on the colour bar.
        cbar = fig.colorbar(filled, ax=ax, spacing="uniform")
        cbar.set_ticks(levels[::3])
        cbar.set_ticklabels([f"{x:.3g}" for x in levels[::3]])
        cbar.set_label("mean loss (bands: equal areas)", fontsize="small")
    ax.plot(
        [0.0],
        [0.0],
        "o",
        color="white",
        mec=_INK,
        ms=8,
        label=f"θ (here), loss {num(plane.loss0, 4)}",
    )
    outline = [pe.withStroke(linewidth=4, foreground="white")]
    if escape is not None and abs(escape.get("a", 0.0)) + abs(escape.get("b", 0.0)) > 0:
        ax.annotate(
            "",
            xy=(escape["a"], escape["b"]),
            xytext=(0.0, 0.0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": _INK,
                "lw": 2.2,
                "mutation_scale": 16,
                "path_effects": outline,
            },
        )
        text = f"escape step: predicted ΔL {num(escape.get('predicted_change'), 3)}"
        if escape.get("loss_after") is not None:
            text += f", actual {num(escape['loss_after'] - plane.loss0, 3)}"
        ax.plot([], [], "-", color=_INK, lw=2.2, label=text)
    size = "small" if compact else "medium"
    ax.set_xlabel(f"a along {names[0]} (parameter units)", fontsize=size)
    ax.set_ylabel(f"b along {names[1]} (parameter units)", fontsize=size)
    ax.legend(loc="lower left", fontsize="x-small", framealpha=0.9)
    return fig


def plot_landscape(landscape: Landscape, label: str | None = None) -> Figure:
    """Three panels: slices along the ``λ_min`` and ``λ_max`` eigenvectors, and their plane.

    Parameters
    ----------
    landscape : Landscape
        From :func:`critpoint.landscape`.
    label : str, optional
        Name of the point, put in front of the titles.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = new_figure_grid(1, 3, 15.0, 4.2)
    add_landscape_row(landscape, axes[0], label)
    return fig


def add_landscape_row(
    landscape: Landscape, axes: Sequence[Axes], label: str | None = None
) -> None:
    """Draw :func:`plot_landscape`'s three panels on the given ``axes`` (a row of 3)."""
    prefix = f"{label}: " if label else ""
    plot_slice(landscape.slice_min, ax=axes[0], name="u_min", escape=landscape.escape)
    axes[0].set_title(
        f"{prefix}along u_min, λ_min = {num(landscape.lambda_min, 4)}",
        fontsize="medium",
    )
    plot_slice(landscape.slice_max, ax=axes[1], name="u_max")
    axes[1].set_title(
        f"{prefix}along u_max, λ_max = {num(landscape.lambda_max, 4)}",
        fontsize="medium",
    )
    if landscape.plane is not None:
        plot_plane(landscape.plane, ax=axes[2], escape=landscape.escape)
        axes[2].set_title(f"{prefix}plane of u_min and u_max", fontsize="medium")
    else:
        axes[2].set_axis_off()


def plot_landscapes(entries: Sequence[tuple[str, Landscape]]) -> Figure:
    """:func:`plot_landscape` for several points, one row each.

    Parameters
    ----------
    entries : sequence of (label, Landscape)

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = max(len(entries), 1)
    fig, axes = new_figure_grid(n, 3, 15.0, 4.0 * n + 0.3)
    for row, (label, land) in zip(axes, entries, strict=False):
        add_landscape_row(land, row, label if len(entries) > 1 else None)
    return fig


# -------------------------------------------------------------------- training


def _series(history: Mapping[str, Any], key: str) -> np.ndarray | None:
    values = history.get(key)
    if not isinstance(values, (list, tuple)) or not values:
        return None
    try:
        arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if np.isfinite(arr).any() else None


def _x_for(history: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    x = _series(history, key)
    if x is not None and x.size == n:
        return x
    return np.arange(n, dtype=float)


def training_panels(history: Mapping[str, Any]) -> list[str]:
    """Which panels :func:`plot_training` will draw for a history (possibly none)."""
    panels = []
    if (
        _series(history, "loss") is not None
        or _series(history, "full_loss") is not None
    ):
        panels.append("loss")
    if _series(history, "accuracy") is not None:
        panels.append("accuracy")
    if _series(history, "grad_norm") is not None:
        panels.append("grad_norm")
    if _series(history, "sharpness") is not None:
        panels.append("sharpness")
    if _series(history, "lambda_min") is not None:
        panels.append("lambda_min")
    if _series(history, "minimum_ratio") is not None:
        panels.append("minimum_ratio")
    return panels


def plot_training(
    history: Mapping[str, Any], marks: Sequence[tuple[float, str]] = ()
) -> Figure:
    """Training curves: loss, accuracy, gradient norm and the tracked curvature.

    The sharpness panel shows ``λ_max`` of the Hessian along training with the
    line ``2/η`` (η the learning rate at each step): gradient descent on a
    quadratic is stable only while ``λ_max < 2/η`` (the "edge of stability").

    Parameters
    ----------
    history : dict
        ``History.to_dict()`` of :func:`critpoint.training.train`: per update
        ``step``, ``loss``, ``grad_norm``, ``lr``; at the steps ``eval_step``
        ``full_loss``, ``accuracy``, ``test_loss``, ``test_accuracy``; at the
        steps ``track_step`` the tracked ``sharpness``, ``lambda_min``,
        ``minimum_ratio``. Missing or empty keys are skipped.
    marks : sequence of (step, label)
        Steps to mark with a vertical line (the diagnosed points).

    Returns
    -------
    matplotlib.figure.Figure
    """
    panels = training_panels(history) or ["loss"]
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    fig, grid = new_figure_grid(nrows, ncols, 6.0 * ncols, 3.0 * nrows + 0.3)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    loss = _series(history, "loss")
    n_steps = 0 if loss is None else loss.size
    step = _x_for(history, "step", n_steps)
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "loss":
            full = _series(history, "full_loss")
            test = _series(history, "test_loss")
            curves = [c for c in (loss, full, test) if c is not None]
            positive = all(bool(np.nanmin(c) > 0) for c in curves)
            full_batch = bool((history.get("settings") or {}).get("full_batch"))
            if loss is not None and not (full_batch and full is not None):
                ax.plot(
                    step,
                    loss,
                    "-",
                    color=_GREY if full is not None else _INK,
                    lw=0.9,
                    label="loss of each step's batch",
                )
            if full is not None:
                ax.plot(
                    _x_for(history, "eval_step", full.size),
                    full,
                    "o-",
                    color=_INK,
                    ms=2.5,
                    lw=1.2,
                    label="training loss (all samples)",
                )
            if test is not None:
                ax.plot(
                    _x_for(history, "eval_step", test.size),
                    test,
                    "s--",
                    color=_INK,
                    mfc="white",
                    ms=2.5,
                    lw=1.0,
                    label="test loss",
                )
            if positive:
                ax.set_yscale("log")
            ax.set_ylabel("mean loss" + (" (log)" if positive else ""))
            ax.set_title("loss")
        elif panel == "accuracy":
            acc = _series(history, "accuracy")
            assert acc is not None
            ax.plot(
                _x_for(history, "eval_step", acc.size),
                100 * acc,
                "o-",
                color=_INK,
                ms=2.5,
                lw=1.2,
                label="training",
            )
            test = _series(history, "test_accuracy")
            if test is not None:
                ax.plot(
                    _x_for(history, "eval_step", test.size),
                    100 * test,
                    "s--",
                    color=_INK,
                    mfc="white",
                    ms=2.5,
                    lw=1.0,
                    label="test",
                )
            ax.set_ylabel("accuracy (%)")
            ax.set_title("accuracy")
        elif panel == "grad_norm":
            gn = _series(history, "grad_norm")
            assert gn is not None
            ax.plot(_x_for(history, "step", gn.size), gn, "-", color=_INK, lw=1.0)
            if np.nanmin(gn) > 0:
                ax.set_yscale("log")
            ax.set_ylabel("‖∇L‖ (log)")
            full_batch = bool((history.get("settings") or {}).get("full_batch"))
            ax.set_title(
                "gradient norm" + ("" if full_batch else " (of each step's batch)")
            )
        elif panel == "sharpness":
            sh = _series(history, "sharpness")
            assert sh is not None
            ts = _x_for(history, "track_step", sh.size)
            ax.plot(ts, sh, "o-", color=_INK, ms=3, lw=1.3, label="λ_max (sharpness)")
            lr = _series(history, "lr")
            if lr is not None and np.nanmin(lr) > 0:
                x = _x_for(history, "step", lr.size)
                ax.plot(x, 2.0 / lr, "--", color=_GREY, lw=1.3, label="2/η")
                top = max(float(np.nanmax(sh)), float(np.nanmin(2.0 / lr))) * 1.15
                ax.set_ylim(0.0, top)
            ax.set_ylabel(f"eigenvalue ({EIGEN_UNITS})")
            ax.set_title("sharpness and the 2/η stability line")
        elif panel == "lambda_min":
            lm = _series(history, "lambda_min")
            assert lm is not None
            ts = _x_for(history, "track_step", lm.size)
            ax.plot(ts, lm, "s-", color=_INK, ms=3, lw=1.3, label="λ_min")
            ax.axhline(0.0, color=_GREY, ls="--", lw=1)
            ax.set_ylabel(f"eigenvalue ({EIGEN_UNITS})")
            ax.set_title("most negative curvature λ_min")
        elif panel == "minimum_ratio":
            mr = _series(history, "minimum_ratio")
            assert mr is not None
            ts = _x_for(history, "track_step", mr.size)
            ax.plot(ts, mr, "^-", color=_INK, ms=3, lw=1.3)
            ax.set_ylim(min(0.9, float(np.nanmin(mr)) - 0.01), 1.005)
            ax.set_ylabel("fraction not clearly negative")
            ax.set_title("minimum ratio")
        ax.set_xlabel("training step")
        last = max([float(np.nanmax(step))] if step.size else [0.0])
        for i, (x, text) in enumerate(marks):
            ax.axvline(x, color=_GREY, ls=":", lw=1)
            right = last > 0 and x > 0.8 * last
            ax.annotate(
                text,
                xy=(x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-2 if right else 2, -2 - 9 * (i % 3)),
                textcoords="offset points",
                ha="right" if right else "left",
                va="top",
                fontsize="x-small",
                color=_INK,
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="x-small", framealpha=0.9)
    return fig


# ------------------------------------------------------------------- per layer


def plot_per_layer(layers: Sequence[tuple[str, Diagnosis]]) -> Figure:
    """Small multiples: the spectrum of each layer's Hessian block.

    Parameters
    ----------
    layers : sequence of (name, Diagnosis)
        One diagnosis per layer (``Objective(params=...)`` of that layer).

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = max(len(layers), 1)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, grid = new_figure_grid(nrows, ncols, 4.6 * ncols, 3.0 * nrows + 0.2)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    for ax, (name, dg) in zip(axes, layers, strict=False):
        plot_spectrum(dg, ax=ax, label=name, compact=True)
    return fig


def plot_block_intervals(
    layers: Sequence[tuple[str, Diagnosis]],
    heterogeneity: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Every block's spectrum at a glance: ``[λ_min, λ_max]`` per block on one axis.

    One row per block: a bar from ``λ_min`` to ``λ_max`` (whiskers: their
    error bounds), the mean eigenvalue ``tr/n`` as a diamond (where the trace
    is known) and, behind the bar, the block's density as a grey strip whose
    darkness is its mass. The eigenvalue axis is symmetric-logarithmic, so
    blocks whose curvatures differ by orders of magnitude share it; zero is a
    vertical line.

    Parameters
    ----------
    layers : sequence of (name, Diagnosis)
        One diagnosis per block (:func:`critpoint.diagnose_layers`).
    heterogeneity : float, optional
        The blocks' heterogeneity score, for the title.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = max(len(layers), 1)
    fig, ax = _own_axes(ax, 7.0, 1.2 + 0.38 * rows)
    scale = max(
        [max(abs(dg.lambda_min), abs(dg.lambda_max)) for _, dg in layers] or [1.0]
    )
    small = [
        max(abs(dg.lambda_min), abs(dg.lambda_max)) for _, dg in layers if dg.lambda_max
    ]
    linthresh = max(min(small or [scale]) * 1e-2, scale * 1e-8, 1e-300)
    for i, (_, dg) in enumerate(layers):
        y = rows - 1 - i
        if dg.density is not None:
            nodes = dg.density.nodes.numpy().reshape(-1)
            weights = dg.density.weights.numpy().reshape(-1) / dg.density.num_probes
            keep = weights > 1e-3
            ax.scatter(
                nodes[keep],
                np.full(keep.sum(), y),
                s=60,
                marker="|",
                c=np.clip(1 - 4 * weights[keep], 0.2, 0.85).astype(str),
                zorder=1,
            )
        ax.plot([dg.lambda_min, dg.lambda_max], [y, y], color=_INK, lw=2.5, zorder=2)
        ax.errorbar(
            [dg.lambda_min, dg.lambda_max],
            [y, y],
            xerr=[dg.lambda_min_error, dg.lambda_max_error],
            fmt="o",
            color=_INK,
            ms=4,
            capsize=3,
            zorder=3,
            label="[λ_min, λ_max] ± bound" if i == 0 else None,
        )
        if dg.trace is not None and dg.num_params:
            ax.plot(
                [dg.trace.value / dg.num_params],
                [y],
                marker="D",
                color="white",
                mec=_INK,
                ms=6,
                zorder=4,
                label="mean eigenvalue tr/n" if i == 0 else None,
            )
    ax.axvline(0.0, color=_GREY, lw=0.8, ls="--", zorder=0)
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.3)
    if layers:
        lo = min(dg.lambda_min - dg.lambda_min_error for _, dg in layers)
        hi = max(dg.lambda_max + dg.lambda_max_error for _, dg in layers)
        ax.set_xlim(min(lo * 1.5, -linthresh), max(hi * 1.5, linthresh))
    ax.set_yticks(range(rows))
    ax.set_yticklabels(
        [f"{name} ({dg.num_params:,})" for name, dg in layers][::-1] or [""]
    )
    ax.set_xlabel(f"eigenvalue of the block ({EIGEN_UNITS}; symmetric log scale)")
    title = "Per-block Hessian spectra"
    if heterogeneity is not None:
        title += f" (heterogeneity {heterogeneity:.3f})"
    ax.set_title(title)
    if layers:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small")
    ax.set_ylim(-0.7, rows - 0.3)
    return fig
