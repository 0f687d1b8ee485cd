"""critpoint.training.history: History, its dictionary, its JSON."""

from __future__ import annotations

import json
import math

import pytest

from critpoint.checkpoint import load_checkpoint, save_checkpoint
from critpoint.errors import InputError
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
    assert d["schema"] == "critpoint-history"
    again = History.from_dict(json.loads(json.dumps(d, allow_nan=False)))
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


def test_history_from_dict_rejects_bad_input():
    with pytest.raises(InputError, match="schema is 'other'"):
        History.from_dict({"schema": "other"})
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
