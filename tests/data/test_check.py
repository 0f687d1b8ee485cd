"""The model/data check: one forward pass, mismatches as clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from critpoint.data import (
    Data,
    check_data_against_model,
    load_data,
)
from critpoint.errors import InputError
from critpoint.models import build_model


def test_check_passes_for_matching_pairs(digits: Data) -> None:
    check_data_against_model(build_model("mlp", seed=0), digits, "cross_entropy")
    check_data_against_model(build_model("cnn", seed=0), digits, "mse")
    check_data_against_model(build_model("two_weight"), load_data("two_weight"), "mse")
    check_data_against_model(
        build_model("mlp", in_features=8, widths=[4], out_features=1),
        load_data("teacher"),
        "mse",
    )
    check_data_against_model(
        build_model("mlp", seed=0), digits.as_tuple(), "cross_entropy"
    )
    check_data_against_model(
        build_model("mlp", seed=0, dtype="float64"), digits, "cross_entropy"
    )


def test_check_restores_mode_and_buffers(digits: Data) -> None:
    model = build_model("mlp", batchnorm=True, seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_data_against_model(model, digits, "cross_entropy")
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_check_wrong_feature_count(digits: Data) -> None:
    model = build_model("mlp", in_features=10)
    with pytest.raises(
        InputError,
        match=r"expects 10 input features but data 'digits' has inputs of shape \(64,\) per sample \(64 features\)",
    ):
        check_data_against_model(model, digits, "cross_entropy")
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(InputError, match="expects 3 input channels"):
        check_data_against_model(
            conv,
            (torch.ones(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)),
            "cross_entropy",
        )


def test_check_cross_entropy_targets(digits: Data) -> None:
    model = build_model("mlp", seed=0)
    floats = Data(digits.inputs[:4], torch.rand(4), "regression", None, "floaty")
    with pytest.raises(
        InputError,
        match=r"cross_entropy needs integer class labels in \[0, 10\); data 'floaty' has torch.float32 targets",
    ):
        check_data_against_model(model, floats, "cross_entropy")
    small = build_model("mlp", out_features=5, seed=0)
    with pytest.raises(
        InputError,
        match=r"class labels in \[0, 5\).*labels in \[0, 9\]. Use a model with 10 outputs",
    ):
        check_data_against_model(small, digits, "cross_entropy")
    scalar_out = build_model("mlp", out_features=1, seed=0)
    with pytest.raises(
        InputError, match=r"cross_entropy needs outputs of shape \(N, C\)"
    ):
        check_data_against_model(
            nn.Sequential(scalar_out, nn.Flatten(0)), digits, "cross_entropy"
        )
    probs = Data(
        digits.inputs[:4], torch.softmax(torch.randn(4, 10), 1), "regression", None, "p"
    )
    check_data_against_model(model, probs, "cross_entropy")


def test_check_mse_and_bce_targets() -> None:
    model = build_model("mlp", in_features=8, widths=[4], out_features=2, seed=0)
    data = load_data("teacher", out_features=3)
    with pytest.raises(
        InputError,
        match=r"mse targets must have the model's output shape \(2,\) per sample \(or be class labels",
    ):
        check_data_against_model(model, data, "mse")
    cls = load_data("teacher", task="classification", num_classes=3)
    with pytest.raises(InputError, match=r"mse needs class labels in \[0, 2\)"):
        check_data_against_model(model, cls, "mse")
    one = build_model("mlp", in_features=8, widths=[4], out_features=1, seed=0)
    with pytest.raises(InputError, match=r"bce targets must lie in \[0, 1\]"):
        check_data_against_model(one, load_data("teacher", noise=1.0), "bce")
    binary = Data(
        data.inputs, (data.targets[:, :1] > 0).float(), "regression", None, "b"
    )
    check_data_against_model(one, binary, "bce")


def test_check_custom_loss_and_bad_inputs(digits: Data) -> None:
    model = build_model("mlp", seed=0)
    with pytest.raises(InputError, match=r"must return a scalar mean loss; got \(2,\)"):
        check_data_against_model(model, digits, lambda out, y: out.sum(1))

    def boom(out, y):
        raise RuntimeError("no")

    with pytest.raises(InputError, match="loss 'boom' failed on model outputs"):
        check_data_against_model(model, digits, boom)
    with pytest.raises(InputError, match="data must be Data, DataSource or an"):
        check_data_against_model(model, "digits", "cross_entropy")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="model returned dict, not a tensor"):
        check_data_against_model(_DictModel(), digits, "cross_entropy")


class _DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return {"logits": self.lin(x)}
