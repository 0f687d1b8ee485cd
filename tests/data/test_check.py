"""The model/data check: one forward pass, mismatches as clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
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
    # An output with logits (a dict here, a Hugging Face ModelOutput) serves
    # the built-in losses as it is; anything else is refused with the fixes.
    check_data_against_model(_DictModel(), digits, "cross_entropy")
    with pytest.raises(
        InputError,
        match=r"returned a tuple, neither a tensor nor an output with a 'logits' tensor.*--batch-loss",
    ):
        check_data_against_model(_TupleModel(), digits, "cross_entropy")
    # A user's loss takes the outputs as they are.
    check_data_against_model(
        _TupleModel(), digits, lambda out, y: F.cross_entropy(out[0], y)
    )


class _TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return (self.lin(x), None)


class _DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return {"logits": self.lin(x)}


class _TinyLM(nn.Module):
    """Token ids (N, T) → logits (N, T, V): an embedding and a linear head."""

    def __init__(self, vocab: int = 11, width: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids):
        return self.head(self.emb(ids))


def _tokens(n: int = 6, t: int = 5, vocab: int = 11) -> Data:
    ids = torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(0))
    return load_data_tensors(ids, ids)


def load_data_tensors(x, y) -> Data:
    from critpoint.data.base import data_from_tensors

    return data_from_tensors(x, y, "tokens", torch.float32, None, None)


def test_token_data_with_causal_lm() -> None:
    model = _TinyLM()
    data = _tokens()
    check_data_against_model(model, data, "causal_lm")
    # cross_entropy cannot take one label per position: it says what to use.
    with pytest.raises(
        InputError,
        match=r"cross_entropy takes one class label per sample.*shape \(5,\) per sample.*--loss causal_lm",
    ):
        check_data_against_model(model, data, "cross_entropy")
    # A loss of the user's is not checked against the built-in rules.
    check_data_against_model(
        model, data, lambda out, y: F.cross_entropy(out.transpose(1, 2), y)
    )


def test_causal_lm_refusals() -> None:
    with pytest.raises(
        InputError,
        match=r"embedding \(Embedding\(5, 4\)\) takes token ids in \[0, 5\); data 'tokens' has ids in \[0, 10\]",
    ):
        check_data_against_model(_TinyLM(vocab=5), _tokens(vocab=11), "causal_lm")
    # Ids the embedding takes but the head cannot predict (a vocabulary cut short).
    short_head = _TinyLM(vocab=11)
    short_head.head = nn.Linear(4, 6)
    with pytest.raises(
        InputError, match=r"token ids in \[0, 6\) for the model's vocabulary of 6"
    ):
        check_data_against_model(short_head, _tokens(vocab=11), "causal_lm")
    ids = _tokens().inputs
    with pytest.raises(
        InputError, match="sequences of length 1, give at least 2 tokens"
    ):
        check_data_against_model(
            _TinyLM(), load_data_tensors(ids[:, :1], ids[:, :1]), "causal_lm"
        )
    labels = ids.clone()
    labels[2, 1:] = -100
    with pytest.raises(
        InputError,
        match=r"1 sequence\(s\) .*\(the first is number 2\) have no token to predict",
    ):
        check_data_against_model(_TinyLM(), load_data_tensors(ids, labels), "causal_lm")
    with pytest.raises(
        InputError, match=r"causal_lm needs logits of shape \(N, T, V\)"
    ):
        check_data_against_model(
            build_model("mlp", seed=0), load_data("digits"), "causal_lm"
        )


def test_one_hot_rows_and_input_kinds_are_explained() -> None:
    mlp = build_model("mlp", in_features=2, widths=[3], out_features=3, seed=0)
    rows = load_data_tensors(torch.ones(3, 2), torch.eye(3, dtype=torch.long))
    with pytest.raises(
        InputError,
        match=r"one-hot rows of width 3\. Store labels \(targets\.argmax\(1\)\)",
    ):
        check_data_against_model(mlp, rows, "cross_entropy")
    ids = load_data_tensors(torch.ones(3, 2, dtype=torch.long), torch.tensor([0, 1, 2]))
    with pytest.raises(
        InputError,
        match=r"takes floating inputs, but data 'tokens' has inputs .* of dtype torch\.int64: integer inputs are kept as ids",
    ):
        check_data_against_model(mlp, ids, "cross_entropy")
    floats = load_data_tensors(torch.ones(3, 5), torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(
        InputError, match=r"starts with an embedding .* store the ids as int64"
    ):
        check_data_against_model(_TinyLM(), floats, "causal_lm")
