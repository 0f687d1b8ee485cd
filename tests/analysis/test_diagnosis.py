"""Diagnosis: its text, its JSON document and the round trip, its figure."""

import json

import pytest
import torch

import critpoint as cp
from critpoint.data import load_data
from critpoint.models import build_model


@pytest.fixture(scope="module")
def saddle() -> cp.Diagnosis:
    """The two-weight net at the origin: a saddle with eigenvalues ±2, loss 1."""
    obj = cp.Objective(
        build_model("two_weight", dtype="float64"),
        cp.get_loss("mse"),
        load_data("two_weight", dtype=torch.float64).as_tuple(),
    )
    return cp.diagnose(obj, k=2, seed=3)


def test_exports_roundtrip_and_plot(saddle: cp.Diagnosis) -> None:
    d = saddle
    doc = json.loads(d.to_json())
    assert doc == d.to_dict()
    assert doc["schema"] == "critpoint.diagnosis"
    assert doc["schema_version"] == 1
    assert doc["critpoint_version"] == cp.__version__
    assert doc["torch_version"] == str(torch.__version__)
    assert doc["kind"] == "saddle"
    assert doc["settings"]["seed"] == 3
    assert doc["lambda_min"] == pytest.approx(-2.0)
    assert doc["has_escape_direction"] is True
    assert doc["escape_prediction"] == pytest.approx(-1.0)
    back = cp.Diagnosis.from_dict(doc)
    assert back.kind == d.kind
    assert back.lambda_max == d.lambda_max
    assert back.eigenvalues == d.eigenvalues
    assert back.escape_direction is None  # never stored in JSON
    assert back.density.fraction_positive() == pytest.approx(
        d.density.fraction_positive()
    )
    assert back.trace.value == d.trace.value
    fig = d.plot()
    assert fig.axes[0].get_xlabel().startswith("eigenvalue")
    with pytest.raises(cp.InputError, match=r"not a critpoint critpoint\.diagnosis"):
        cp.Diagnosis.from_dict({"schema": "other"})
    with pytest.raises(cp.InputError, match="Upgrade critpoint"):
        cp.Diagnosis.from_dict({**doc, "schema_version": 2})


def test_text_gives_the_numbers(saddle: cp.Diagnosis) -> None:
    assert saddle.headline() == "saddle; a critical point"
    text = saddle.summary()
    assert text.startswith("Verdict: saddle; a critical point.")
    assert "Loss 1 (mean over samples)" in text
    assert "λ_min = -2 ± " in text
    assert "λ_max = 2 ± " in text
    # Rademacher probes on this 2 × 2 Hessian put all their weight on one
    # eigenvector or the other: the ratio is a multiple of 1/8
    assert saddle.minimum_ratio * 8 == pytest.approx(round(saddle.minimum_ratio * 8))
    assert f"Minimum ratio {saddle.minimum_ratio:.3f}" in text
    assert f"{1 - saddle.minimum_ratio:.3f} clearly negative, 0.000 flat" in text
    assert (
        f"Cost: {saddle.num_matvecs} Hessian-vector products on 2 parameters." in text
    )
    assert saddle.advice().startswith(
        "step along the escape direction (eigenvalue -2): the quadratic model "
        "predicts a loss change of -1;"
    )


def test_non_finite_numbers_travel_as_null(saddle: cp.Diagnosis) -> None:
    from dataclasses import replace

    broken = replace(saddle, lambda_max_error=float("nan"), lambda_upper=float("inf"))
    text = broken.to_json()
    doc = json.loads(text)
    assert doc["lambda_max_error"] is None
    assert doc["lambda_upper"] is None
    back = cp.Diagnosis.from_dict(doc)
    assert back.lambda_max_error != back.lambda_max_error  # NaN again
