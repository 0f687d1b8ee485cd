"""Reports of results: the JSON document, the HTML page, plain text, figures.

* :mod:`critpoint.report.document` — :class:`ReportDocument` (labelled
  diagnoses, landscapes, per-layer results, history), its JSON and
  :func:`load_report`; :func:`diagnosis_document`, the ``diagnose --json`` one;
* :mod:`critpoint.report.html` — :func:`build_report` writes a directory with a
  self-contained ``report.html``, the ``diagnosis.json`` it was drawn from
  and the figures as PNG; :func:`render_report` re-draws it from that JSON;
* :mod:`critpoint.report.text` — the plain-text summaries and tables the
  ``critpoint`` command prints;
* :mod:`critpoint.report.figures` — the figures (matplotlib, no pyplot state).

The report reads results (:class:`~critpoint.Diagnosis`,
:class:`~critpoint.Landscape`, :class:`~critpoint.LayerDiagnosis`); nothing
that produces them imports it, except the lazy ``Diagnosis.plot()``.
"""

from critpoint.report.document import (
    LayerEntry,
    ReportDocument,
    ReportEntry,
    diagnosis_document,
    load_report,
)
from critpoint.report.figures import (
    plot_block_intervals,
    plot_landscape,
    plot_per_layer,
    plot_spectrum,
    plot_training,
)
from critpoint.report.html import build_report, render_report
from critpoint.report.text import diagnosis_text, escape_text, layer_table

__all__ = [
    "LayerEntry",
    "ReportDocument",
    "ReportEntry",
    "build_report",
    "diagnosis_document",
    "diagnosis_text",
    "escape_text",
    "layer_table",
    "load_report",
    "plot_block_intervals",
    "plot_landscape",
    "plot_per_layer",
    "plot_spectrum",
    "plot_training",
    "render_report",
]
