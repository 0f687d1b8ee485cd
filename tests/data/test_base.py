"""Data and DataSource, and how tensors become Data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critpoint.data import Data, DataSource
from critpoint.data.base import data_from_arrays, data_from_tensors
from critpoint.errors import InputError


def test_data_helpers(digits: Data) -> None:
    x, y = digits.as_tuple()
    assert x is digits.inputs
    assert y is digits.targets
    small = digits.subset(10)
    assert len(small) == 10
    assert torch.equal(small.inputs, digits.inputs[:10])
    assert digits.subset(None) is digits
    assert digits.subset(10**6) is digits
    rand = digits.subset(10, seed=0)
    assert torch.equal(rand.inputs, digits.subset(10, seed=0).inputs)
    assert not torch.equal(rand.inputs, small.inputs)
    d64 = small.to(torch.float64)
    assert d64.inputs.dtype == torch.float64
    assert d64.targets.dtype == torch.int64
    assert "digits" in repr(small)
    with pytest.raises(InputError, match="max_samples must be a positive integer"):
        digits.subset(0)


def test_data_from_tensors_guesses_the_task_and_casts() -> None:
    x = torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.int32)
    labels = torch.tensor([2, 0, 1], dtype=torch.int16)
    d = data_from_tensors(x, labels, "t", torch.float64, None, None)
    assert d.task == "classification"
    assert d.num_classes == 3  # the largest label + 1
    # Integer inputs are ids (token ids for an embedding): kept integer, as int64,
    # whatever floating dtype is asked for.
    assert d.inputs.dtype == torch.int64
    assert torch.equal(d.inputs, x.long())
    assert d.targets.dtype == torch.int64
    assert torch.equal(d.targets, labels.long())
    real = torch.tensor([[0.5], [1.5], [-2.0]], dtype=torch.float64)
    r = data_from_tensors(x.bool(), real, "r", torch.float32, None, 7)
    assert r.task == "regression"
    assert r.num_classes is None  # regression has no classes, whatever was passed
    assert r.targets.dtype == torch.float32
    assert torch.equal(r.targets, real.float())
    assert torch.equal(r.inputs, x.bool().float())
    kept = data_from_tensors(real, real, "k", None, "regression", None)
    assert kept.inputs.dtype == torch.float64
    as_reg = data_from_tensors(x, labels, "g", None, "regression", None)
    assert as_reg.targets.dtype == torch.float32
    assert torch.equal(as_reg.targets, labels.float())


def test_data_from_arrays_reads_numpy_and_names_missing_keys() -> None:
    arrays = {"inputs": np.arange(6.0).reshape(3, 2), "targets": np.array([1, 0, 1])}
    d = data_from_arrays(arrays, "a", torch.float32, None, None)
    assert torch.equal(d.inputs, torch.arange(6.0).reshape(3, 2))
    assert d.targets.tolist() == [1, 0, 1]
    assert d.num_classes == 2
    with pytest.raises(InputError, match=r"data 'a' has no key\(s\) \['targets'\]"):
        data_from_arrays({"inputs": arrays["inputs"]}, "a", None, None, None)
    with pytest.raises(InputError, match=r"data file 'a' has no key\(s\) \['inputs'\]"):
        data_from_arrays({"targets": arrays["targets"]}, "a", None, None, None, True)


def test_data_source_first_batch_of_datasets_and_dict_batches() -> None:
    dataset = torch.utils.data.TensorDataset(
        torch.arange(10.0).reshape(5, 2), torch.arange(5)
    )
    x, y = DataSource("dataset", dataset, "ds").first_batch(3)
    assert torch.equal(x, torch.arange(6.0).reshape(3, 2))
    assert y.tolist() == [0, 1, 2]
    batches = [{"inputs": torch.ones(4, 2), "targets": torch.zeros(4)}]
    x, y = DataSource("iterable", batches, "it").first_batch(2)
    assert x.shape == (2, 2)
    assert y.shape == (2,)
    with pytest.raises(InputError, match="yields no batches"):
        DataSource("iterable", [], "none").first_batch()
    with pytest.raises(InputError, match=r"an \(inputs, targets\) pair or a dict"):
        DataSource("iterable", [torch.ones(2)], "bad").first_batch()


def test_per_position_labels_and_ignored_positions() -> None:
    ids = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    d = data_from_tensors(ids, ids, "tokens", torch.float32, None, None)
    assert d.inputs.dtype == torch.int64
    assert d.task == "classification"
    assert d.num_classes == 10
    padded = ids.clone()
    padded[1, 1:] = -100  # padding, as F.cross_entropy and Hugging Face mark it
    p = data_from_tensors(ids, padded, "padded", None, None, None)
    assert p.num_classes == 6  # the largest real label + 1
    bad = padded.clone()
    bad[0, 0] = -3
    with pytest.raises(
        InputError, match=r">= 0 or -100 \(a position without a label\); found -3"
    ):
        data_from_tensors(ids, bad, "bad", None, None, None)
    with pytest.raises(InputError, match="class labels must be >= 0; found -100"):
        data_from_tensors(ids, torch.tensor([0, -100]), "flat", None, None, None)
    with pytest.raises(InputError, match="every target is -100"):
        data_from_tensors(ids, torch.full((2, 4), -100), "empty", None, None, None)
