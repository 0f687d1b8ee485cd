"""critpoint.training.evaluation: the one full-data loss, in both BatchNorm modes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import critpoint as cp
from critpoint.models import build_model
from critpoint.training import evaluation
from critpoint.training.evaluation import FullDataEvaluation


@pytest.fixture
def bn_model(digits):
    """A BatchNorm MLP whose running statistics differ from any batch's."""
    model = build_model("mlp", widths=[8], batchnorm=True, seed=0, dtype="float64")
    model.train()
    with torch.no_grad():
        model(digits.inputs[:40] * 3.0)  # running statistics of other data
    return model


def buffers_of(model):
    return {k: v.clone() for k, v in model.named_buffers()}


def test_eval_mode_is_the_objectives_loss_with_running_statistics(digits, bn_model):
    x, y = digits.as_tuple()
    bn_model.train()  # the caller's mode, put back after
    before = buffers_of(bn_model)
    loss, accuracy = FullDataEvaluation(
        bn_model, F.cross_entropy, x, y, classification=True, train_mode=False
    )()
    reference = copy.deepcopy(bn_model).eval()
    with torch.no_grad():
        out = reference(x)
    assert loss == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-13)
    assert accuracy == float((out.argmax(1) == y).double().mean())
    objective = cp.Objective(bn_model, F.cross_entropy, (x, y))
    assert loss == pytest.approx(objective.loss(), rel=1e-14)
    assert bn_model.training
    for name, value in before.items():
        assert torch.equal(value, dict(bn_model.named_buffers())[name]), name


def test_train_mode_normalises_each_chunk_by_its_own_statistics(
    digits, bn_model, monkeypatch
):
    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 100)  # 240 samples: 100, 100, 40
    x, y = digits.as_tuple()
    bn_model.eval()
    before = buffers_of(bn_model)
    loss, accuracy = FullDataEvaluation(
        bn_model, F.cross_entropy, x, y, classification=True, train_mode=True
    )()
    # By hand: a copy in train mode, chunk by chunk (its running statistics
    # move, which does not change the batch-statistics output).
    reference = copy.deepcopy(bn_model).train()
    total, correct = 0.0, 0
    with torch.no_grad():
        for start in (0, 100, 200):
            out = reference(x[start : start + 100])
            yb = y[start : start + 100]
            total += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    assert loss == pytest.approx(total / 240, rel=1e-13)
    assert accuracy == correct / 240
    # ... which is not the loss with running statistics, nor one batch of all
    with torch.no_grad():
        whole = float(F.cross_entropy(copy.deepcopy(bn_model).train()(x), y))
    assert abs(loss - whole) > 1e-6
    # the running statistics are neither used nor changed; the mode is kept
    assert not bn_model.training
    for name, value in before.items():
        assert torch.equal(value, dict(bn_model.named_buffers())[name]), name


def test_a_summed_loss_is_the_exact_sum_over_chunks(digits, small_model, monkeypatch):
    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 64)
    x, y = digits.as_tuple()
    model = small_model()
    summed = torch.nn.CrossEntropyLoss(reduction="sum")
    loss, accuracy = FullDataEvaluation(
        model, summed, x, y, classification=False, train_mode=False
    )()
    with torch.no_grad():
        exact = float(F.cross_entropy(model(x), y, reduction="sum"))
    assert loss == pytest.approx(exact, rel=1e-13)
    assert accuracy is None


def test_a_non_finite_loss_gives_nan(digits, small_model):
    x, y = digits.as_tuple()
    x = x.clone()
    x[3, 0] = math.nan
    loss, accuracy = FullDataEvaluation(
        small_model(), F.cross_entropy, x, y, classification=True, train_mode=False
    )()
    assert math.isnan(loss)
    assert math.isnan(accuracy)
