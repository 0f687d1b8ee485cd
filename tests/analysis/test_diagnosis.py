"""Diagnosis: its text, its JSON document and the round trip, its figure."""

import json

import pytest
import torch

import critpoint as cp
from critpoint.analysis import with_error
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
    # the ratio's standard error over the 8 probes: std of their 0/1 fractions / √8
    per_probe = saddle.density.probe_fractions("negative")
    stderr = float(per_probe.std(correction=1)) / 8**0.5
    assert saddle.minimum_ratio_stderr == pytest.approx(stderr)
    assert saddle.negative_fraction_stderr == pytest.approx(stderr)
    assert stderr > 0.1  # 8 coin flips: the second digit is all there is
    ratio = with_error(saddle.minimum_ratio, stderr)
    assert ratio == f"{saddle.minimum_ratio:.2f} ± {stderr:.2f}"
    assert f"Minimum ratio {ratio} " in text
    assert (
        f"Cost: {saddle.num_matvecs} Hessian-vector products on 2 parameters." in text
    )
    assert "BatchNorm: eval mode (no BatchNorm layer" in text


def test_advice_quotes_the_measured_escape_step(saddle: cp.Diagnosis) -> None:
    """L = (w1·w2 − 1)² at the origin: along u = (1, 1)/√2, L(αu) = (α²/2 − 1)².

    The first trial α = √(2L/|λ|) = 1 gives 0.25: a measured change of −0.75
    where the quadratic model (and the old advice, −L by construction) says −1.
    """
    step = saddle.escape_step
    assert step.step_size == pytest.approx(1.0)
    assert step.loss_after == pytest.approx(0.25)
    assert step.actual_change == pytest.approx(-0.75)
    assert step.predicted_change == pytest.approx(-1.0)
    assert step.accepted
    assert step.backtracks == 0
    assert saddle.escape_prediction == pytest.approx(-1.0)
    advice = saddle.advice()
    assert advice.startswith(
        "step 1 along the escape direction (eigenvalue -2): measured, the loss goes "
        "1 → 0.25 (change -0.75; the quadratic model predicts -1)"
    )
    back = cp.Diagnosis.from_dict(json.loads(saddle.to_json()))
    assert back.advice() == advice
    assert back.escape_step == step
    assert back.minimum_ratio_stderr == pytest.approx(saddle.minimum_ratio_stderr)
    assert back.bn_mode == "eval"


def test_with_error_keeps_only_the_digits_the_error_leaves() -> None:
    assert with_error(0.8312, 0.0437) == "0.83 ± 0.04"
    assert with_error(0.8312, 0.0137) == "0.831 ± 0.014"
    assert with_error(0.25, 0.0013, scale=100) == "25.00 ± 0.13"
    assert with_error(123.4, 21.0) == "123 ± 21"
    assert with_error(0.5, float("nan")) == "0.5"
    assert with_error(0.5, None) == "0.5"


def test_non_finite_numbers_travel_as_null(saddle: cp.Diagnosis) -> None:
    from dataclasses import replace

    broken = replace(saddle, lambda_max_error=float("nan"), lambda_upper=float("inf"))
    text = broken.to_json()
    doc = json.loads(text)
    assert doc["lambda_max_error"] is None
    assert doc["lambda_upper"] is None
    back = cp.Diagnosis.from_dict(doc)
    assert back.lambda_max_error != back.lambda_max_error  # NaN again
