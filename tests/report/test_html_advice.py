"""The report names the BatchNorm mode, warns on the lag, and tabulates and draws the advice's step."""

from __future__ import annotations

import html as html_lib
from pathlib import Path

import torch
import torch.nn.functional as F

import critpoint as cp
from critpoint.data import load_data
from critpoint.models import build_model
from critpoint.report import ReportEntry, build_report, load_report
from critpoint.surface import landscape
from tests.analysis.test_batchnorm import briefly_trained_bn_model


def test_report_of_a_saddle_and_a_lagging_bn_model(tmp_path: Path) -> None:
    obj = cp.Objective(
        build_model("two_weight", dtype="float64"),
        cp.get_loss("mse"),
        load_data("two_weight", dtype=torch.float64).as_tuple(),
    )
    saddle = cp.diagnose(obj, k=2, seed=3)
    land = landscape(obj, saddle, num=9, plane_num=5)
    # the landscape draws the diagnosis's measured step: no loss evaluation of its own
    assert land.escape["line_search"] is True
    assert land.escape["step"] == saddle.escape_step.step_size
    assert land.escape["loss_after"] == saddle.escape_step.loss_after
    model, X, y = briefly_trained_bn_model()
    bn = cp.diagnose(
        cp.Objective(model, F.cross_entropy, (X, y)), k=2, num_probes=4, num_steps=10
    )
    page = build_report(
        [ReportEntry("saddle", saddle, land), ReportEntry("bn", bn)],
        tmp_path,
        title="advice",
        dpi=40,
    )
    text = html_lib.unescape(page.read_text(encoding="utf-8"))
    # the step the advice quotes, in the summary table and the landscape table
    assert "α = 1: loss 1 → 0.25 (change -0.75; quadratic model -1)" in text
    assert "line search step 1: loss 1 → 0.25" in text
    # the BatchNorm mode in the table, both losses, and the warning
    check = bn.batchnorm
    assert f"eval (eval-mode loss {check.eval_loss:.4g}, batch statistics" in text
    assert f"differ by {100 * check.gap:.3g} %" in text
    assert f"BatchNorm: {check.warning()}." in text
    # re-rendered from the JSON alone: the same advice and mode
    back = load_report(tmp_path / "diagnosis.json")
    assert back.entries[0].diagnosis.advice() == saddle.advice()
    assert back.entries[1].diagnosis.bn_text() == bn.bn_text()
