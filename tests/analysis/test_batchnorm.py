"""diagnose on a BatchNorm CNN: each mode against its dense autograd Hessian, the lag warned."""

import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.analysis.batchnorm import BN_GAP_RTOL, BatchNormCheck, bn_mode_text
from critpoint.testing import reference_hessian
from tests.test_objective_bn import (
    assert_unchanged,
    batch_statistics_model,
    bn_cnn,
    images,
    recalibrated_model,
    snapshot,
)


@pytest.mark.parametrize("bn", ["eval", "train", "recalibrate"])
def test_diagnosis_of_each_mode_matches_its_dense_hessian(bn):
    X, y = images()
    model = bn_cnn()
    snap = snapshot(model)
    batch_size = 24 if bn == "train" else 10  # train mode: one batch, the oracle's
    obj = cp.Objective(model, F.cross_entropy, (X, y), bn=bn, batch_size=batch_size)
    d = cp.diagnose(obj, k=4, tol=1e-10, density=False, trace=False)
    assert_unchanged(model, snap)

    ref = {
        "eval": lambda: copy.deepcopy(model).eval(),
        "train": lambda: batch_statistics_model(model),
        "recalibrate": lambda: recalibrated_model(model, X, batch_size),
    }[bn]()
    H = reference_hessian(ref, F.cross_entropy, X, y)
    eigs = torch.linalg.eigvalsh(0.5 * (H + H.T))
    scale = float(eigs.abs().max())
    assert d.lambda_min == pytest.approx(float(eigs[0]), abs=1e-8 * scale)
    assert d.lambda_max == pytest.approx(float(eigs[-1]), abs=1e-8 * scale)
    with torch.no_grad():
        eval_loss = F.cross_entropy(copy.deepcopy(model).eval()(X), y).item()
        batch_loss = F.cross_entropy(batch_statistics_model(model)(X), y).item()
        analysed = F.cross_entropy(ref(X), y).item()
    assert d.loss == pytest.approx(analysed, rel=1e-12)

    # the mode and both losses, in every output
    assert d.bn_mode == bn
    check = d.batchnorm
    assert check.mode == bn
    assert check.num_layers == 1
    assert check.eval_loss == pytest.approx(eval_loss, rel=1e-12)
    # batch statistics of the objective's batches: one batch of 24 (or 10+10+4)
    if bn == "train":
        assert check.batch_loss == pytest.approx(batch_loss, rel=1e-12)
    assert (check.recalibrated_loss is not None) == (bn == "recalibrate")
    summary = d.summary()
    assert f"BatchNorm: {bn_mode_text(bn, 1)}" in summary
    assert f"eval-mode loss {eval_loss:.4g}" in summary
    doc = json.loads(d.to_json())
    assert doc["bn_mode"] == bn
    assert doc["settings"]["bn"] == bn
    assert doc["batchnorm"]["eval_loss"] == pytest.approx(eval_loss, rel=1e-12)
    back = cp.Diagnosis.from_dict(doc)
    assert back.batchnorm == check
    assert back.summary() == summary
    assert_unchanged(model, snap)


def briefly_trained_bn_model():
    """A BN CNN after 20 SGD steps on inputs far from zero mean and unit variance.

    The running statistics (momentum 0.1) start at (0, 1) and still lag: the
    eval-mode and batch-statistics losses differ by about 15 %.
    """
    X, y = images(n=48, seed=1)
    X = 4 * X + 2
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


def test_lagging_statistics_warn_with_both_losses(caplog):
    model, X, y = briefly_trained_bn_model()
    snap = snapshot(model)
    obj = cp.Objective(model, F.cross_entropy, (X, y))  # eval, one batch of 48
    with caplog.at_level(logging.WARNING, logger="critpoint"):
        d = cp.diagnose(obj, k=2, density=False, trace=False)
    assert_unchanged(model, snap)
    with torch.no_grad():
        eval_loss = F.cross_entropy(copy.deepcopy(model).eval()(X), y).item()
        batch_loss = F.cross_entropy(batch_statistics_model(model)(X), y).item()
    gap = abs(eval_loss - batch_loss) / max(eval_loss, batch_loss)
    assert gap > 2 * BN_GAP_RTOL  # the lag is real, not a borderline case
    check = d.batchnorm
    assert check.eval_loss == pytest.approx(eval_loss, rel=1e-12)
    assert check.batch_loss == pytest.approx(batch_loss, rel=1e-12)
    assert check.gap == pytest.approx(gap)
    assert check.lagging
    warning = check.warning()
    assert f"{eval_loss:.4g}" in warning
    assert f"{batch_loss:.4g}" in warning
    assert "--bn recalibrate" in warning
    assert warning in caplog.text
    assert f"Warning: {warning}." in d.summary()
    # recalibrated statistics bring the eval-mode function close to the batch one
    rec = cp.diagnose(
        cp.Objective(model, F.cross_entropy, (X, y), bn="recalibrate"),
        k=2,
        density=False,
        trace=False,
    )
    assert rec.loss == pytest.approx(batch_loss, rel=0.05)
    assert rec.batchnorm.recalibrated_loss == rec.loss
    assert_unchanged(model, snap)


def test_no_warning_when_the_statistics_are_current():
    """After update_bn on the same single batch, eval mode is the batch-statistics function
    up to the unbiased variance (n/(n−1) over 16·48 values): far below the threshold."""
    model, X, y = briefly_trained_bn_model()
    ref = recalibrated_model(model, X, 48)
    d = cp.diagnose(
        cp.Objective(ref, F.cross_entropy, (X, y)), k=2, density=False, trace=False
    )
    assert not d.batchnorm.lagging
    assert d.batchnorm.gap < 0.01
    assert d.batchnorm.warning() is None
    assert "Warning" not in d.summary()


def test_check_gap_and_round_trip():
    c = BatchNormCheck("eval", 2, eval_loss=12.76, batch_loss=2.7e-5)
    assert c.gap == pytest.approx(1 - 2.7e-5 / 12.76)
    assert c.lagging
    assert BatchNormCheck.from_dict(c.to_dict()) == c
    same = BatchNormCheck("train", 2, eval_loss=1.0, batch_loss=1.04)
    assert not same.lagging  # within 5 %
    assert BatchNormCheck("eval", 1, 0.0, 0.0).gap == 0.0
    assert BatchNormCheck("eval", 1, float("nan"), 1.0).lagging
