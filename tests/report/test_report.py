"""The report: self-contained HTML listing the JSON's numbers, re-rendered from the JSON."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import critpoint as cp
from critpoint.data import get_loss, load_data
from critpoint.errors import InputError
from critpoint.models import build_model
from critpoint.report import (
    LayerEntry,
    ReportEntry,
    build_report,
    load_report,
    plot_landscape,
    plot_per_layer,
    plot_spectrum,
    plot_training,
    render_report,
)
from critpoint.report.html import fmt
from critpoint.surface import landscape
from critpoint.training import train

PNG = b"\x89PNG\r\n\x1a\n"
TEACHER = {
    "task": "classification",
    "n_samples": 40,
    "in_features": 5,
    "num_classes": 3,
    "seed": 2,
}


@pytest.fixture(scope="module")
def material() -> dict:
    """Two diagnosed points of a 39-parameter MLP, landscapes, per-layer results, a history."""
    data = load_data("teacher", **TEACHER)
    model = build_model("mlp", in_features=5, widths=[4], out_features=3, seed=0)
    loss = get_loss("cross_entropy")
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


def _numbers(diagnosis: dict) -> list[str]:
    keys = (
        "loss",
        "grad_norm",
        "lambda_min",
        "lambda_max",
        "minimum_ratio",
        "negative_fraction",
    )
    out = [fmt(diagnosis[k]) for k in keys]
    out.append(fmt(diagnosis["trace"]["value"]))
    out.append(fmt(diagnosis["lambda_min_error"], 2))
    return out


def test_report_is_self_contained_and_lists_the_numbers(
    material: dict, tmp_path: Path
) -> None:
    page = build_report(
        material["entries"],
        tmp_path,
        history=material["history"],
        per_layer=material["layers"],
        title="a test report",
        settings={"model": {"name": "mlp", "kwargs": {"widths": [4]}}, "seed": 0},
        dpi=40,
    )
    assert page == tmp_path / "report.html"
    html = page.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["landscape.png", "per_layer.png", "spectrum.png", "training.png"]
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(pngs)
    files = {(tmp_path / name).read_bytes() for name in pngs}
    assert {base64.b64decode(x) for x in embedded} == files
    assert all(f.startswith(PNG) for f in files)
    # nothing is fetched from elsewhere: readable offline
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", html)
    assert "<script" not in html
    doc = json.loads((tmp_path / "diagnosis.json").read_text())
    assert doc["schema"] == "critpoint.report"
    assert doc["schema_version"] == 1
    assert doc["critpoint_version"] == cp.__version__
    assert doc["torch_version"] == str(torch.__version__)
    for entry in doc["entries"]:
        assert entry["label"] in html
        for number in _numbers(entry["diagnosis"]):
            assert number in html, number
    for layer in doc["per_layer"]:
        assert f"<code>{layer['name']}</code>" in html
        assert fmt(layer["diagnosis"]["lambda_max"]) in html
    assert "mlp(widths=[4])" in html
    assert "a test report" in html


def test_report_rerenders_from_its_json_without_the_model(
    material: dict, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    build_report(
        material["entries"],
        first,
        history=material["history"],
        per_layer=material["layers"],
        dpi=40,
    )
    doc = load_report(first / "diagnosis.json")
    assert [e.label for e in doc.entries] == ["start", "after 25 steps"]
    assert doc.entries[0].landscape is not None
    second = tmp_path / "second"
    render_report(doc, second, dpi=40)
    assert (first / "report.html").read_text() == (second / "report.html").read_text()
    assert json.loads((first / "diagnosis.json").read_text()) == json.loads(
        (second / "diagnosis.json").read_text()
    )


def test_single_diagnosis_without_extras(material: dict, tmp_path: Path) -> None:
    dg = material["entries"][0].diagnosis
    build_report([dg], tmp_path, dpi=40)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["spectrum.png"]
    html = (tmp_path / "report.html").read_text()
    assert fmt(dg.lambda_min) in html


def test_load_report_refuses_other_documents(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_report(bad)
    bad.write_text(json.dumps({"schema": "something.else"}))
    with pytest.raises(InputError, match="not a critpoint report"):
        load_report(bad)
    bad.write_text(
        json.dumps({"schema": "critpoint.report", "schema_version": 99, "entries": []})
    )
    with pytest.raises(InputError, match="Upgrade critpoint"):
        load_report(bad)


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
        get_loss("mse"),
        load_data("two_weight", dtype=torch.float64).as_tuple(),
    )
    dg = cp.diagnose(obj, density=False, trace=False)
    fig = plot_spectrum(dg)
    assert fig.axes[0].get_title() == "saddle"
