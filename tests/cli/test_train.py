"""``critpoint train``: the library's names and numbers, printed and written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import critpoint as cp
from critpoint.io.checkpoint import load_checkpoint
from critpoint.training import OPTIMIZERS, SCHEDULES, TRACKABLE, History, train
from critpoint_cli.commands import train as train_command
from tests.cli.test_cli import MODEL, TEACHER, invoke, parse_json


def test_the_choices_are_the_librarys():
    assert tuple(OPTIMIZERS) == train_command.OPTIMIZERS
    assert train_command.SCHEDULES == SCHEDULES
    assert train_command.TRACKABLE == TRACKABLE


def test_train_json_is_the_library_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.ckpt"
    r = invoke(
        "--dtype", "float64",
        "train",
        "--model-kwargs", json.dumps(MODEL),
        "--data", "teacher",
        "--data-kwargs", json.dumps(TEACHER),
        "--optimizer", "adam",
        "--lr", "0.05",
        "--batch-size", "16",
        "--steps", "12",
        "--track", "sharpness",
        "--track-every", "6",
        "-o", str(ckpt),
        "--json", "-",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["schema"] == "critpoint.train"
    assert doc["schema_version"] == 1
    assert doc["critpoint_version"] == cp.__version__
    # The same run through the library, the same numbers: the CLI builds the
    # model and loads the data in float32, then trains in the --dtype.
    model = cp.build_model("mlp", seed=0, **MODEL).double()
    data = cp.load_data("teacher", **TEACHER)
    h = train(
        model,
        data,
        optimizer="adam",
        lr=0.05,
        batch_size=16,
        steps=12,
        track={"sharpness"},
        track_every=6,
        seed=0,
    )
    assert doc["num_steps"] == 12
    assert doc["stop_reason"] == "completed"
    assert doc["final_loss"] == pytest.approx(h.final_loss, rel=1e-12)
    assert doc["final_accuracy"] == h.final_accuracy
    assert doc["final_test_accuracy"] is None  # teacher has no test split
    assert doc["history"]["loss"] == pytest.approx(h.loss, rel=1e-12)
    assert doc["history"]["sharpness"] == pytest.approx(h.sharpness, rel=1e-9)
    assert doc["history"]["track_step"] == [0, 6, 12]
    assert doc["settings"]["optimizer"] == "adam"
    assert doc["settings"]["track_every"] == 6
    # the checkpoint holds the same history, and the settings
    saved = load_checkpoint(ckpt)
    assert History.from_dict(saved.history).loss == pytest.approx(h.loss, rel=1e-12)
    assert saved.meta["train"]["steps"] == 12
