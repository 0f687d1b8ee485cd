"""Figures: explicit Figure/Axes objects, drawn from results only."""

from __future__ import annotations

import sys

import torch

import critpoint as cp
from critpoint.data import load_data
from critpoint.models import build_model
from critpoint.report import (
    plot_landscape,
    plot_per_layer,
    plot_spectrum,
    plot_training,
)


def test_figures_use_explicit_objects(material: dict) -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    entry = material["entries"][1]
    fig = plot_spectrum(entry.diagnosis)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert "minimum ratio" in ax.get_title()
    assert "eigenvalue" in ax.get_xlabel()
    assert "loss / parameter²" in ax.get_xlabel()
    fig2 = plot_spectrum(entry.diagnosis, ax=fig.add_subplot(2, 1, 2), label="x")
    assert fig2 is fig
    assert len(plot_landscape(entry.landscape).axes) >= 3
    assert (
        len(plot_per_layer([(x.name, x.diagnosis) for x in material["layers"]]).axes)
        == 2
    )
    tr = plot_training(material["history"], [(0, "start"), (25, "end")])
    titles = {a.get_title() for a in tr.axes}
    assert {
        "loss",
        "accuracy",
        "sharpness and the 2/η stability line",
        "minimum ratio",
    } <= titles
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


def test_spectrum_without_density() -> None:
    obj = cp.Objective(
        build_model("two_weight", dtype="float64"),
        cp.get_loss("mse"),
        load_data("two_weight", dtype=torch.float64).as_tuple(),
    )
    dg = cp.diagnose(obj, density=False, trace=False)
    fig = plot_spectrum(dg)
    assert fig.axes[0].get_title() == "saddle"


def test_block_intervals_one_axis_one_row_per_block(material: dict) -> None:
    from critpoint.report import plot_block_intervals

    layers = [(x.name, x.diagnosis) for x in material["layers"]]
    fig = plot_block_intervals(layers, heterogeneity=0.25)
    (ax,) = fig.axes  # one axis for every block, not a panel each
    assert ax.get_xscale() == "symlog"
    assert "heterogeneity 0.250" in ax.get_title()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{n} ({dg.num_params:,})" for n, dg in layers][::-1]
    # each block's interval is drawn at its own λ_min and λ_max
    bars = [line for line in ax.get_lines() if line.get_linewidth() == 2.5]
    ends = sorted(tuple(float(x) for x in line.get_xdata()) for line in bars)
    assert ends == sorted((dg.lambda_min, dg.lambda_max) for _, dg in layers)
