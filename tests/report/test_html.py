"""The report page: self-contained HTML listing the JSON's numbers, re-rendered from the JSON."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import torch

import critpoint as cp
from critpoint.analysis.diagnosis import with_error
from critpoint.report import (
    build_report,
    load_report,
    render_report,
)
from critpoint.report.html import fmt

PNG = b"\x89PNG\r\n\x1a\n"


def _numbers(diagnosis: dict) -> list[str]:
    keys = (
        "loss",
        "grad_norm",
        "lambda_min",
        "lambda_max",
    )
    out = [fmt(diagnosis[k]) for k in keys]
    # the fractions with only the digits their standard error over probes leaves
    for k in ("minimum_ratio", "negative_fraction"):
        out.append(with_error(diagnosis[k], diagnosis[f"{k}_stderr"]))
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
    # two points: their trends too
    assert pngs == [
        "landscape.png",
        "per_layer.png",
        "spectrum.png",
        "training.png",
        "trend.png",
    ]
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
