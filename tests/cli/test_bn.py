"""``--bn eval|train|recalibrate`` on diagnose and escape: the mode named, the lag warned."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch

import critpoint as cp
from critpoint.data import load_data
from critpoint.io.checkpoint import save_checkpoint
from critpoint.models import build_model
from critpoint.objective import BN_MODES
from tests.cli.test_cli import TEACHER, invoke, parse_json

MODEL = {"in_features": 6, "widths": [5], "out_features": 3, "batchnorm": True}


def lagging_model() -> torch.nn.Module:
    """Running statistics far from the data's: eval-mode loss 1.08, batch statistics 1.35."""
    model = build_model("mlp", seed=0, **MODEL)
    with torch.no_grad():
        model.net[1].running_mean.fill_(2.0)
        model.net[1].running_var.fill_(0.1)
        model.net[1].weight.fill_(3.0)
    return model


@pytest.fixture(scope="module")
def bn_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BatchNorm MLP whose running statistics are far from its data's."""
    path = tmp_path_factory.mktemp("bn") / "bn.ckpt"
    model = lagging_model()
    save_checkpoint(
        path,
        model,
        data_spec={"name": "teacher", "kwargs": TEACHER},
        loss="cross_entropy",
        model_spec={"name": "mlp", "kwargs": MODEL},
    )
    return path


def library_losses(mode: str) -> dict[str, float]:
    model = lagging_model()
    data = load_data("teacher", **TEACHER).as_tuple()
    obj = cp.Objective(model, cp.get_loss("cross_entropy"), data, bn=mode)
    return {
        "loss": obj.loss(),
        "eval": obj.loss(bn="eval"),
        "train": obj.loss(bn="train"),
    }


def test_cli_modes_are_the_objective_modes() -> None:
    from critpoint_cli.options import BN_MODES as CLI_MODES

    assert CLI_MODES == BN_MODES


@pytest.mark.parametrize("mode", ["eval", "train", "recalibrate"])
def test_diagnose_bn_mode_is_analysed_named_and_warned(
    bn_ckpt: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="critpoint")
    r = invoke(
        "diagnose",
        str(bn_ckpt),
        "--bn",
        mode,
        "--no-density",
        "--no-trace",
        "--json",
        "-",
    )
    assert r.exit_code == 0, r.stderr
    json_done = time.time()
    doc = parse_json(r.stdout)
    expected = library_losses(mode)
    assert doc["bn_mode"] == mode
    assert doc["settings"]["bn"] == mode
    assert doc["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    check = doc["batchnorm"]
    assert check["mode"] == mode
    assert check["eval_loss"] == pytest.approx(expected["eval"], rel=1e-6)
    assert check["batch_loss"] == pytest.approx(expected["train"], rel=1e-6)
    assert check["lagging"] is True
    if mode == "recalibrate":
        assert check["recalibrated_loss"] == pytest.approx(doc["loss"])

    text = invoke("diagnose", str(bn_ckpt), "--bn", mode, "--no-density", "--no-trace")
    assert text.exit_code == 0, text.stderr
    assert f"BatchNorm in {mode} mode" in text.stdout  # the header
    flat = " ".join(text.stdout.split())
    assert f"eval-mode loss {expected['eval']:.4g}" in flat
    assert f"batch-statistics loss {expected['train']:.4g}" in flat
    assert "Warning" in text.stdout
    # said once: the result's row, and the log line only where no result is
    # printed (the JSON on standard output)
    lag = "(running statistics) and the batch-statistics loss"
    logged = [rec for rec in caplog.records if lag in rec.getMessage()]
    assert len(logged) == 1
    assert logged[0].created < json_done


def test_default_is_eval_and_a_bad_mode_is_a_usage_error(bn_ckpt: Path) -> None:
    r = invoke("diagnose", str(bn_ckpt), "--no-density", "--no-trace", "--json", "-")
    assert parse_json(r.stdout)["bn_mode"] == "eval"
    bad = invoke("diagnose", str(bn_ckpt), "--bn", "running")
    assert bad.exit_code == 2
    assert "'running' is not one of 'eval', 'train', 'recalibrate'" in bad.stderr


def test_escape_takes_the_bn_mode(bn_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "escaped.ckpt"
    r = invoke("escape", str(bn_ckpt), "--bn", "train", "-o", str(out), "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["settings"]["bn"] == "train"
    assert doc["loss_before"] == pytest.approx(
        library_losses("train")["loss"], rel=1e-6
    )
    text = invoke(
        "escape", str(bn_ckpt), "--bn", "train", "-o", str(tmp_path / "b.ckpt")
    )
    assert text.exit_code == 0, text.stderr
    assert "BatchNorm in train mode" in text.stdout.splitlines()[0]
