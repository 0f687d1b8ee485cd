"""critpoint.training.history: History, its dictionary, its JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

import critpoint as cp
from critpoint._json import dumps
from critpoint.errors import InputError
from critpoint.io.checkpoint import load_checkpoint, save_checkpoint
from critpoint.training import History, train


def test_history_round_trips_through_json_and_a_checkpoint(
    digits, small_model, tmp_path
):
    model = small_model()
    h = train(
        model,
        digits,
        batch_size=64,
        epochs=2,
        track={"sharpness", "lambda_min"},
        test_data=digits,
        seed=4,
    )
    d = h.to_dict()
    assert {k: d[k] for k in ("schema", "schema_version")} == {
        "schema": "critpoint.history",
        "schema_version": 1,
    }
    assert d["critpoint_version"] == cp.__version__
    assert d["torch_version"] == str(torch.__version__)
    assert d["loss"] == h.loss
    assert d["sharpness"] == h.sharpness
    again = History.from_dict(json.loads(dumps(d)))
    assert again == h
    assert again.final_loss == h.final_loss == h.full_loss[-1]
    assert again.settings["seed"] == 4
    assert again.settings["track"] == [
        "sharpness",
        "lambda_min",
    ]
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, model, history=h)
    assert History.from_dict(load_checkpoint(path).history) == h


def test_history_reads_the_old_schema_and_bare_dicts():
    fields = {
        "step": [0, 1],
        "epoch": [0, 0],
        "loss": [2.0, 1.5],
        "grad_norm": [0.5, 0.25],
        "lr": [0.1, 0.1],
        "eval_step": [0, 2],
        "full_loss": [2.0, 1.0],
        "stop_reason": "stop_loss",
    }
    old = History.from_dict({"schema": "critpoint-history", "version": 1, **fields})
    bare = History.from_dict(fields)
    assert old == bare
    assert old.num_steps == 2
    assert old.final_loss == 1.0
    assert old.stop_reason == "stop_loss"
    assert old.eval_step == [0, 2]
    assert old.lr == [0.1, 0.1]
    assert History.from_dict(old.to_dict()) == old


def test_history_non_finite_values_round_trip_as_nan():
    h = History(
        step=[0],
        epoch=[0],
        loss=[1.0],
        grad_norm=[math.inf],
        lr=[0.1],
        track_step=[0],
        lambda_min=[math.nan],
    )
    d = json.loads(dumps(h.to_dict()))  # strict JSON: no NaN, no Infinity
    assert d["grad_norm"] == [None]
    assert d["lambda_min"] == [None]
    again = History.from_dict(d)
    assert math.isnan(again.grad_norm[0])
    assert math.isnan(again.lambda_min[0])
    assert again.loss == [1.0]


def test_history_from_dict_rejects_bad_input():
    with pytest.raises(InputError, match="its schema is 'other'"):
        History.from_dict({"schema": "other"})
    with pytest.raises(InputError, match="reads up to version 1"):
        History.from_dict({"schema": "critpoint.history", "schema_version": 2})
    with pytest.raises(InputError, match="'loss' must hold numbers"):
        History.from_dict({"step": [0], "epoch": [0], "loss": ["x"]})
    with pytest.raises(InputError, match="'step' must be a list"):
        History.from_dict({"step": 3})
    with pytest.raises(InputError, match="must be a dict; got list"):
        History.from_dict([])
    with pytest.raises(InputError, match=r"unknown History field\(s\) \['bogus'\]"):
        History.from_dict({"bogus": []})
    with pytest.raises(InputError, match="'loss' has 1 entries but 'step' has 2"):
        History.from_dict(
            {
                "step": [0, 1],
                "epoch": [0, 0],
                "loss": [1.0],
                "grad_norm": [1, 1],
                "lr": [1, 1],
            }
        )
    assert math.isnan(History().final_loss)
