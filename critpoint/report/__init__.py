"""Figures and the HTML / JSON spectrum report (matplotlib, no pyplot state).

:func:`build_report` writes a directory with a self-contained ``report.html``,
the ``diagnosis.json`` it was drawn from and the figures as PNG;
:func:`load_report` + :func:`render_report` re-draw it from that JSON.
"""

from critpoint.report.document import (
    LayerEntry,
    ReportDocument,
    ReportEntry,
    load_report,
)
from critpoint.report.figures import (
    plot_landscape,
    plot_per_layer,
    plot_spectrum,
    plot_training,
)
from critpoint.report.html import build_report, render_report

__all__ = [
    "LayerEntry",
    "ReportDocument",
    "ReportEntry",
    "build_report",
    "load_report",
    "plot_landscape",
    "plot_per_layer",
    "plot_spectrum",
    "plot_training",
    "render_report",
]
