"""Shared results for the report tests: two diagnosed points of a small MLP, with extras."""

from __future__ import annotations

import pytest

import critpoint as cp
from critpoint.data import load_data
from critpoint.models import build_model
from critpoint.report import LayerEntry, ReportEntry
from critpoint.surface import landscape
from critpoint.training import train

TEACHER = {
    "task": "classification",
    "n_samples": 40,
    "in_features": 5,
    "num_classes": 3,
    "seed": 2,
}


@pytest.fixture(scope="session")
def material() -> dict:
    """Two diagnosed points of a 39-parameter MLP, landscapes, per-layer results, a history."""
    data = load_data("teacher", **TEACHER)
    model = build_model("mlp", in_features=5, widths=[4], out_features=3, seed=0)
    loss = cp.get_loss("cross_entropy")
    obj = cp.Objective(model, loss, data.as_tuple())
    small = {"num_probes": 4, "num_steps": 20, "trace_max_matvecs": 12}
    first = cp.diagnose(obj, **small)
    land_first = landscape(obj, first, num=9, plane_num=5)
    history = train(
        model,
        data,
        lr=0.5,
        steps=25,
        track={"sharpness", "lambda_min", "minimum_ratio"},
        track_every=5,
    )
    last = cp.diagnose(obj, **small)
    land_last = landscape(obj, last, num=9, plane_num=5)
    layers = []
    for name in ("net.0", "net.2"):
        layer_obj = cp.Objective(model, loss, data.as_tuple(), params=[f"{name}.*"])
        layers.append(
            LayerEntry(
                name, "Linear", layer_obj.param_names, cp.diagnose(layer_obj, **small)
            )
        )
    return {
        "entries": [
            ReportEntry("start", first, land_first, 0),
            ReportEntry("after 25 steps", last, land_last, 25),
        ],
        "layers": layers,
        "history": history.to_dict(),
    }
