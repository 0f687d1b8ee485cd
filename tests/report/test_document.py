"""The report's JSON document: reading, writing, the diagnose --json document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import critpoint as cp
from critpoint.errors import InputError
from critpoint.report import ReportDocument, diagnosis_document, load_report


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


def test_report_document_round_trip(material: dict, tmp_path: Path) -> None:
    doc = ReportDocument(
        title="t",
        entries=material["entries"],
        per_layer=material["layers"],
        history=material["history"],
        settings={"seed": 0, "bad": float("nan")},
    )
    data = doc.to_dict()
    assert data["schema"] == "critpoint.report"
    assert data["schema_version"] == 1
    assert data["critpoint_version"] == cp.__version__
    assert data["torch_version"] == str(torch.__version__)
    assert data["settings"] == {"seed": 0, "bad": None}
    path = tmp_path / "r.json"
    path.write_text(doc.to_json())
    back = load_report(path)
    assert back.source == str(path)
    assert [e.label for e in back.entries] == ["start", "after 25 steps"]
    first, again = material["entries"][0], back.entries[0]
    assert again.diagnosis.lambda_min == first.diagnosis.lambda_min
    assert again.summary == first.diagnosis.summary()
    assert again.step == 0
    assert again.landscape.lambda_max == first.landscape.lambda_max
    assert back.per_layer[1].diagnosis.lambda_max == (
        material["layers"][1].diagnosis.lambda_max
    )
    assert back.history["loss"] == material["history"]["loss"]
    # written back unchanged
    assert json.loads(back.to_json()) == json.loads(doc.to_json())


def test_diagnosis_document_is_read_back_as_one_entry(
    material: dict, tmp_path: Path
) -> None:
    entry = material["entries"][0]
    dg = entry.diagnosis
    document = diagnosis_document(
        dg,
        label="m.ckpt",
        settings={"command": "diagnose", "seed": 0},
        landscape=entry.landscape,
        per_layer=material["layers"],
        history={"loss": [1.0, float("inf")]},
        elapsed_seconds=1.5,
    )
    assert {k: v for k, v in document.items() if k in dg.to_dict()} == {
        **dg.to_dict(),
        "settings": {"command": "diagnose", "seed": 0},
    }
    assert document["label"] == "m.ckpt"
    assert document["summary"] == dg.summary()
    assert document["elapsed_seconds"] == 1.5
    assert document["landscape"] == entry.landscape.to_dict()
    assert [x["name"] for x in document["per_layer"]] == ["net.0", "net.2"]
    assert document["history"] == {"loss": [1.0, None]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(document, allow_nan=False))
    back = load_report(path)
    assert [e.label for e in back.entries] == ["m.ckpt"]
    assert back.entries[0].diagnosis.lambda_max == dg.lambda_max
    assert back.entries[0].landscape is not None
    assert (
        back.entries[0].landscape.slice_min.losses.tolist()
        == entry.landscape.slice_min.losses.tolist()
    )
    assert [x.name for x in back.per_layer] == ["net.0", "net.2"]
    # without a landscape or layers, the keys are still there, as null
    bare = diagnosis_document(dg)
    assert bare["landscape"] is bare["per_layer"] is bare["history"] is None
    assert bare["settings"] == dg.to_dict()["settings"]
