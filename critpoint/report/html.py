"""The report directory: ``report.html`` (self-contained), ``diagnosis.json`` and PNGs.

:func:`build_report` takes labelled diagnoses (with their loss landscapes),
an optional training history and per-layer diagnoses, draws the figures,
and writes a directory that reads offline: the HTML embeds every figure as a
base64 PNG and tabulates the numbers; ``diagnosis.json`` holds everything the
page was drawn from, so :func:`render_report` re-draws it without the model.
The folder is written as a unit (see :func:`critpoint._files.write_folder`):
figures and JSON first, ``report.html`` last, stale figures removed.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from critpoint._files import write_folder
from critpoint._text import printable
from critpoint.analysis.diagnosis import with_error
from critpoint.errors import InputError
from critpoint.linalg.blocks import heterogeneity, js_distances
from critpoint.report import figures
from critpoint.report.document import (
    LayerEntry,
    ReportDocument,
    ReportEntry,
    entries_from,
)
from critpoint.report.text import num

if TYPE_CHECKING:
    from critpoint.analysis.diagnosis import Diagnosis

__all__ = ["REPORT_FILES", "build_report", "fmt", "render_report"]

#: Most spectra drawn in one report (the others are in the table and the trends).
MAX_SPECTRA = 8

#: Names of the files a report directory may hold.
REPORT_FILES = (
    "report.html",
    "diagnosis.json",
    "spectrum.png",
    "landscape.png",
    "per_layer.png",
    "training.png",
    "trend.png",
)


def fmt(x: Any, digits: int = 6) -> str:
    """Format a number as the report does: ``digits`` significant digits, "n/a" if missing."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    return html.escape(num(x, digits))


def _pm(value: float, error: float | None) -> str:
    return f"{fmt(value)} ± {fmt(error, 2)}"


def _with_error(value: float | None, error: float | None) -> str:
    if value is None:
        return "n/a"
    return html.escape(with_error(value, error))


def _bn_cell(dg: Diagnosis) -> str:
    """The BatchNorm mode; with both losses, and flagged, when they differ."""
    text = html.escape(dg.bn_mode)
    check = dg.batchnorm
    if check is None:
        return text
    text += (
        f" (eval-mode loss {fmt(check.eval_loss, 4)}, batch statistics "
        f"{fmt(check.batch_loss, 4)})"
    )
    if check.lagging:
        text = f"<span class='warn'>{text}: differ by {100 * check.gap:.3g} %</span>"
    return text


def _step_cell(dg: Diagnosis) -> str:
    """The escape step the advice quotes: its length and measured change."""
    step = dg.escape_step
    if step is None:
        return "none"
    if not step.lowers_loss:
        return f"no decrease in {len(step.trials)} trials"
    return (
        f"α = {fmt(step.step_size, 4)}: loss {fmt(step.loss_before, 4)} → "
        f"{fmt(step.loss_after, 4)} (change {fmt(step.actual_change, 3)}; quadratic model "
        f"{fmt(step.predicted_change, 3)})"
    )


def _verdict(dg: Diagnosis) -> str:
    return html.escape(dg.headline())


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #111; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #999; padding-bottom: 0.2em; margin-top: 1.8em; }
p.meta { color: #444; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #aaa; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #eee; }
td.text, th.text { text-align: left; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.7em; overflow-x: auto;
      white-space: pre-wrap; font-size: 0.88em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #333; font-size: 0.92em; margin-top: 0.3em; }
.warn { color: #000; font-weight: bold; }
@media print { body { max-width: none; } h2 { page-break-after: avoid; } figure { page-break-inside: avoid; } }
"""


def _img(png: bytes, alt: str, caption: str, name: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{caption} (also in <code>{html.escape(name)}</code>)</figcaption></figure>"
    )


def _summary_table(entries: Sequence[ReportEntry]) -> str:
    head = (
        "<tr><th class='text'>point</th><th class='text'>verdict</th><th>loss</th>"
        "<th>gradient norm</th><th>λ_min ± bound</th><th>λ_max ± bound</th>"
        "<th>minimum ratio ± s.e.</th><th>negative fraction ± s.e.</th><th>trace ± s.e.</th>"
        "<th class='text'>BatchNorm</th><th class='text'>escape step (measured)</th>"
        "<th>parameters</th><th>HVPs</th><th>converged</th></tr>"
    )
    rows = []
    for e in entries:
        dg = e.diagnosis
        tr = _pm(dg.trace.value, dg.trace.stderr) if dg.trace is not None else "n/a"
        rows.append(
            "<tr>"
            f"<td class='text'>{html.escape(e.label)}</td>"
            f"<td class='text'>{_verdict(dg)}</td>"
            f"<td>{fmt(dg.loss)}</td>"
            f"<td>{fmt(dg.grad_norm)}</td>"
            f"<td>{_pm(dg.lambda_min, dg.lambda_min_error)}</td>"
            f"<td>{_pm(dg.lambda_max, dg.lambda_max_error)}</td>"
            f"<td>{_with_error(dg.minimum_ratio, dg.minimum_ratio_stderr)}</td>"
            f"<td>{_with_error(dg.negative_fraction, dg.negative_fraction_stderr)}</td>"
            f"<td>{tr}</td>"
            f"<td class='text'>{_bn_cell(dg)}</td>"
            f"<td class='text'>{_step_cell(dg)}</td>"
            f"<td>{fmt(dg.num_params)}</td>"
            f"<td>{fmt(dg.num_matvecs)}</td>"
            f"<td>{fmt(dg.converged)}</td>"
            "</tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def _landscape_table(entries: Sequence[ReportEntry]) -> str:
    rows = []
    for e in entries:
        land = e.landscape
        if land is None:
            continue
        esc = land.escape
        esc_text = (
            ("line search " if esc and esc.get("line_search") else "")
            + f"step {fmt(esc.get('step'), 4)}: loss {fmt(e.diagnosis.loss, 4)} → "
            f"{fmt(esc.get('loss_after'), 4)} (predicted change {fmt(esc.get('predicted_change'), 4)})"
            if esc
            else "none (no clearly negative curvature)"
        )
        rows.append(
            "<tr>"
            f"<td class='text'>{html.escape(e.label)}</td>"
            f"<td>{fmt(land.settings.get('radius_min'), 4)}</td>"
            f"<td>{fmt(land.settings.get('radius_max'), 4)}</td>"
            f"<td class='text'>{esc_text}</td>"
            "</tr>"
        )
    if not rows:
        return ""
    head = (
        "<tr><th class='text'>point</th><th>half-width along u_min</th>"
        "<th>half-width along u_max</th><th class='text'>escape step</th></tr>"
    )
    return "<table>" + head + "".join(rows) + "</table>"


def _layer_table(layers: Sequence[LayerEntry]) -> str:
    head = (
        "<tr><th class='text'>layer</th><th class='text'>type</th><th>parameters</th>"
        "<th class='text'>verdict</th><th>λ_min ± bound</th><th>λ_max ± bound</th>"
        "<th>minimum ratio</th><th>trace ± s.e.</th><th>converged</th></tr>"
    )
    rows = []
    for layer in layers:
        dg = layer.diagnosis
        tr = _pm(dg.trace.value, dg.trace.stderr) if dg.trace is not None else "n/a"
        rows.append(
            "<tr>"
            f"<td class='text'><code>{html.escape(layer.name)}</code></td>"
            f"<td class='text'>{html.escape(layer.module_type)}</td>"
            f"<td>{fmt(dg.num_params)}</td>"
            f"<td class='text'>{html.escape(dg.kind)}</td>"
            f"<td>{_pm(dg.lambda_min, dg.lambda_min_error)}</td>"
            f"<td>{_pm(dg.lambda_max, dg.lambda_max_error)}</td>"
            f"<td>{fmt(dg.minimum_ratio)}</td>"
            f"<td>{tr}</td>"
            f"<td>{fmt(dg.converged)}</td>"
            "</tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def spec_text(spec: Any) -> str:
    """A model or data spec as ``name(key=value, ...)``; other values as JSON."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        options = dict(spec.get("kwargs") or {})
        options.update(
            {
                k: v
                for k, v in spec.items()
                if k not in ("name", "kwargs") and v is not None
            }
        )
        inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items())
        return f"{spec['name']}({inner})" if inner else spec["name"]
    return json.dumps(spec, default=str)


def _settings_text(doc: ReportDocument) -> str:
    blocks: dict[str, Any] = {"report": doc.settings}
    for e in doc.entries:
        blocks[e.label] = e.diagnosis.settings
    return json.dumps(blocks, indent=2, default=str)


def _meta_line(doc: ReportDocument, versions: Mapping[str, Any]) -> str:
    s = doc.settings
    parts = []
    for key, name in (
        ("checkpoint", "checkpoint"),
        ("model", "model"),
        ("data", "data"),
        ("loss", "loss"),
    ):
        value = s.get(key)
        if value not in (None, ""):
            parts.append(f"{name} <code>{html.escape(spec_text(value))}</code>")
    parts.append(
        f"critpoint {html.escape(str(versions.get('critpoint_version')))}, "
        f"torch {html.escape(str(versions.get('torch_version')))}"
    )
    return "; ".join(parts)


def render_report(doc: ReportDocument, out_dir: str | Path, dpi: int = 110) -> Path:
    """Draw the figures and write the report directory for a document.

    Parameters
    ----------
    doc : ReportDocument
        What to show (see :func:`build_report`).
    out_dir : str or Path
        Directory to write (created if needed). Everything is drawn and written
        to a sibling folder first; a new directory is then renamed into place,
        an existing one gets the figures and ``diagnosis.json`` first and
        ``report.html`` last, and loses the report figures this report no
        longer has. Other files in it are not touched.
    dpi : int
        Resolution of the PNG figures.

    Returns
    -------
    Path
        The path of ``report.html``.

    Raises
    ------
    InputError
        A document read from a file (:func:`load_report`) holds numbers that
        cannot be drawn; the message names the file.
    """
    out = Path(out_dir)
    try:
        files = _render(doc, dpi)
    except (
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
    ) as exc:
        if doc.source is None:
            raise  # computed here, not read: a bug, with its traceback
        detail = " ".join(str(exc).split())[:200]
        msg = (
            f"diagnosis file {doc.source!r} holds numbers that cannot be drawn "
            f"({type(exc).__name__}: {detail}); it is damaged — write it again with "
            "critpoint diagnose --report or --json"
        )
        raise InputError(msg) from exc
    # As a unit: figures and JSON first, report.html last, stale figures removed.
    write_folder(out, files, owned=REPORT_FILES, last="report.html")
    return out / "report.html"


def _render(doc: ReportDocument, dpi: int) -> dict[str, bytes]:
    """Every file of the report folder, drawn in memory."""
    data = doc.to_dict()
    pngs: dict[str, bytes] = {}
    sections: list[str] = []
    entries = doc.entries
    many = len(entries) > 1

    if many:
        from critpoint.report.comparison import checkpoint_axis, plot_trend

        fig = plot_trend(entries)
        pngs["trend.png"] = figures.figure_to_png(fig, dpi)
        along = checkpoint_axis(entries)[1]
        sections.append(
            "<h2>Across the points</h2>"
            + _img(
                pngs["trend.png"],
                "loss, λ_min, λ_max and minimum ratio of each point",
                f"The loss, the minimum ratio and the extreme eigenvalues (with their "
                f"error bounds as bars) of each point, against the {html.escape(along)}. "
                "The dashed line is λ = 0: λ_min below it is negative curvature.",
                "trend.png",
            )
        )

    # Many points (a run's checkpoints): the spectra of a few spread evenly.
    picked = np.linspace(0, len(entries) - 1, min(len(entries), MAX_SPECTRA))
    shown = [entries[i] for i in sorted({round(float(x)) for x in picked})]
    fig = figures.plot_spectra([(e.label, e.diagnosis) for e in shown])
    pngs["spectrum.png"] = figures.figure_to_png(fig, dpi)
    some = (
        f"The spectra of {len(shown)} of the {len(entries)} points, spread evenly. "
        if len(shown) < len(entries)
        else ""
    )
    sections.append(
        "<h2>Eigenvalue spectrum</h2>"
        + _img(
            pngs["spectrum.png"],
            "eigenvalue density of the Hessian",
            some
            + "Density of the Hessian's eigenvalues (stochastic Lanczos quadrature, "
            "Gaussian-smoothed, log scale); triangles are the extreme eigenvalues found by "
            "Lanczos with their rigorous error bounds as horizontal bars; the hatched mass is "
            "clearly negative (descent directions); the dashed line is λ = 0. The minimum ratio "
            "is the fraction of eigenvalues that are not clearly negative.",
            "spectrum.png",
        )
    )

    lands = [(e.label, e.landscape) for e in entries if e.landscape is not None]
    if lands:
        fig = figures.plot_landscapes(lands)
        pngs["landscape.png"] = figures.figure_to_png(fig, dpi)
        sections.append(
            "<h2>Loss landscape</h2>"
            + _img(
                pngs["landscape.png"],
                "loss along the extreme eigenvectors and on their plane",
                "Left and middle: the mean loss along the unit eigenvectors u_min and "
                "u_max of λ_min and λ_max (both oriented downhill), with the quadratic model "
                "L + gᵀu·α + ½λα² dashed. Right: contours of the loss on the plane they span; "
                "the arrow is the escape step along negative curvature, when there is one. "
                "Distances are Euclidean, in parameter units; the axes have their own scales.",
                "landscape.png",
            )
            + _landscape_table(entries)
        )

    if doc.per_layer:
        fig = figures.plot_block_intervals(
            [(x.name, x.diagnosis) for x in doc.per_layer],
            _heterogeneity(doc.per_layer),
        )
        pngs["per_layer.png"] = figures.figure_to_png(fig, dpi)
        sections.append(
            "<h2>Per layer</h2><p>Each layer's diagonal block of the Hessian (the "
            "curvature with the other layers held fixed), diagnosed on its own.</p>"
            + _layer_table(doc.per_layer)
            + _img(
                pngs["per_layer.png"],
                "interval of eigenvalues of each layer's Hessian block",
                "Each layer's block: its eigenvalues lie in the bar [λ_min, λ_max] "
                "(whiskers: error bounds), the diamond is the mean eigenvalue tr/n, the "
                "grey ticks are the density's quadrature nodes (darker: more mass). "
                "Heterogeneity: the mean Jensen–Shannon distance between the blocks' "
                "densities, each scaled by its own largest |eigenvalue| (0: the same "
                "shape; 1: disjoint).",
                "per_layer.png",
            )
        )

    if doc.history and figures.training_panels(doc.history):
        marks = [(float(e.step), e.label) for e in entries if e.step is not None]
        fig = figures.plot_training(doc.history, marks)
        pngs["training.png"] = figures.figure_to_png(fig, dpi)
        sections.append(
            "<h2>Training</h2>"
            + _img(
                pngs["training.png"],
                "training curves",
                "Training curves stored in the checkpoint. The sharpness (λ_max) is drawn "
                "against the 2/η line (η the learning rate): gradient descent is stable "
                "on a quadratic only below it. Dotted lines mark the diagnosed points.",
                "training.png",
            )
        )

    verdicts = "".join(
        (f"<h3>{html.escape(e.label)}</h3>" if many else "")
        + f"<pre>{html.escape(e.summary or e.diagnosis.summary())}</pre>"
        + (
            ""
            if e.diagnosis.converged
            else "<p class='warn'>The eigensolver did not converge: the error bounds are loose.</p>"
        )
        + (
            f"<p class='warn'>BatchNorm: {html.escape(e.diagnosis.batchnorm.warning() or '')}.</p>"
            if e.diagnosis.batchnorm is not None and e.diagnosis.batchnorm.lagging
            else ""
        )
        for e in entries
    )
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(doc.title)}</h1>"
        f"<p class='meta'>{_meta_line(doc, data)}</p>"
        "<h2>Summary</h2>"
        + _summary_table(entries)
        + "<h2>Verdict</h2>"
        + verdicts
        + "".join(sections)
        + "<h2>Settings</h2><details><summary>every setting, seeds included</summary>"
        f"<pre>{html.escape(_settings_text(doc))}</pre></details>"
        "<p class='meta'>Files: "
        + ", ".join(
            f"<code>{name}</code>" for name in ["diagnosis.json", *sorted(pngs)]
        )
        + ". Re-render with <code>critpoint report diagnosis.json -o DIR</code>.</p>"
        "</body></html>\n"
    )
    return {
        **pngs,
        "diagnosis.json": (doc.to_json() + "\n").encode("utf-8"),
        "report.html": printable(page).encode("utf-8"),
    }


def build_report(
    entries: Sequence[ReportEntry | tuple[str, Diagnosis] | Diagnosis],
    out_dir: str | Path,
    history: Mapping[str, Any] | None = None,
    per_layer: Sequence[LayerEntry] | None = None,
    title: str = "critpoint report",
    settings: Mapping[str, Any] | None = None,
    dpi: int = 110,
) -> Path:
    """Write a report directory comparing one or more diagnosed points.

    Parameters
    ----------
    entries : sequence
        :class:`ReportEntry` (label, diagnosis, optional landscape and
        training step), ``(label, Diagnosis)`` pairs or bare diagnoses.
    out_dir : str or Path
        Directory to write: ``report.html``, ``diagnosis.json``,
        ``spectrum.png`` and, when there is something to show,
        ``landscape.png``, ``per_layer.png``, ``training.png``.
    history : dict, optional
        Training curves (``History.to_dict()``), drawn with the sharpness
        against ``2/η`` and the entries' steps marked.
    per_layer : sequence of LayerEntry, optional
        Per-layer diagnoses: a table and small-multiple spectra.
    title : str
        Title of the page.
    settings : dict, optional
        The settings that produced the report (checkpoint, model, data,
        loss, seed...), shown and stored.
    dpi : int
        Resolution of the PNG figures.

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    doc = ReportDocument(
        title=title,
        entries=entries_from(entries),
        per_layer=list(per_layer) if per_layer is not None else None,
        history=dict(history) if history is not None else None,
        settings=dict(settings or {}),
    )
    return render_report(doc, out_dir, dpi=dpi)


def _heterogeneity(layers: Sequence[LayerEntry]) -> float | None:
    """The blocks' heterogeneity from their densities (``None`` if one is missing)."""
    densities = [x.diagnosis.density for x in layers]
    if len(densities) < 2 or any(d is None for d in densities):
        return None
    return heterogeneity(js_distances(densities))  # type: ignore[arg-type]
