"""critpoint.training.tracking: curvature at the tracking points, against exact answers."""

from __future__ import annotations

import copy

import pytest
import torch

import critpoint as cp
from critpoint.data import get_loss
from critpoint.models import build_model
from critpoint.training import train


def test_tracking_matches_an_independent_eigsh(digits, small_model):
    model = small_model()
    h = train(
        model,
        digits,
        optimizer="momentum",
        lr=0.05,
        batch_size=48,
        steps=12,
        track=["sharpness", "lambda_min", "minimum_ratio"],
        track_every=5,
        track_tol=1e-10,
        seed=2,
    )
    assert h.track_step == [0, 5, 10, 12]
    assert len(h.sharpness) == len(h.lambda_min) == len(h.minimum_ratio) == 4
    obj = cp.Objective(model, get_loss("cross_entropy"), digits.as_tuple())
    H = obj.hessian()
    top = float(cp.eigsh(H, k=1, which="LA", tol=1e-10, seed=99).eigenvalues[-1])
    bottom = float(cp.eigsh(H, k=1, which="SA", tol=1e-10, seed=99).eigenvalues[0])
    assert h.sharpness[-1] == pytest.approx(top, rel=1e-6)
    assert h.lambda_min[-1] == pytest.approx(bottom, rel=1e-6)
    dense = torch.linalg.eigvalsh(H.dense())
    assert h.sharpness[-1] == pytest.approx(float(dense[-1]), rel=1e-6)
    assert all(0.0 <= r <= 1.0 for r in h.minimum_ratio)
    # cost: the symmetry probe (3) once, two Lanczos runs, SLQ 4 probes x 40 steps
    assert all(m >= 160 for m in h.track_matvecs)
    assert h.final_sharpness == h.sharpness[-1]


def test_default_tracking_cadence_and_batchnorm_train_mode(digits):
    model = build_model("mlp", widths=[8], batchnorm=True, seed=0, dtype="float64")
    h = train(model, digits, lr=0.1, steps=20, track="sharpness", track_train_mode=True)
    assert h.track_step == list(range(0, 21, 2))  # about ten points: every T // 10
    obj = cp.Objective(
        model, get_loss("cross_entropy"), digits.as_tuple(), train_mode=True
    )
    top = float(cp.eigsh(obj.hessian(), k=1, which="LA", tol=1e-10).eigenvalues[-1])
    assert h.sharpness[-1] == pytest.approx(top, rel=1e-2)
    # The full-data evaluations (in train mode) leave the running statistics
    # alone: after one full-batch step they moved exactly once, by that step.
    expected = copy.deepcopy(model).train()
    with torch.no_grad():
        expected(digits.inputs)
    h2 = train(model, digits, lr=1e-9, steps=1, track_train_mode=True, eval_every=1)
    assert h2.eval_step == [0, 1]
    assert h2.full_loss[0] == pytest.approx(h.full_loss[-1], rel=1e-12)
    for name, buf in expected.named_buffers():
        assert torch.equal(buf, dict(model.named_buffers())[name]), name
