"""Figures and the HTML / JSON spectrum report (matplotlib, no pyplot state)."""

from critpoint.report.figures import plot_spectrum

__all__ = ["plot_spectrum"]
