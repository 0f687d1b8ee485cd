"""The batches protocol: re-iterable views, sample counts, moving to a device and dtype."""

import pytest
import torch

import critpoint as cp
from critpoint.batches import (
    DEFAULT_DATASET_BATCH,
    DEFAULT_TENSOR_BATCH,
    Batches,
    batch_count,
    move,
)


def pair(n=10):
    X = torch.arange(3 * n, dtype=torch.float32).reshape(n, 3)
    y = torch.arange(n)
    return X, y


@pytest.mark.parametrize(
    ("batch", "count"),
    [
        (torch.zeros(7, 2), 7),
        (torch.tensor(3.0), 1),  # a scalar is one sample
        ({"ids": torch.zeros(5, 4, dtype=torch.long), "mask": torch.ones(5, 4)}, 5),
        ({"meta": "text", "x": torch.zeros(6)}, 6),
        ((torch.zeros(4, 2), torch.zeros(4)), 4),
        ([torch.tensor(1.0), torch.zeros(9, 1)], 9),  # a 0-d entry is skipped
        (({"x": torch.zeros(2, 3)}, torch.zeros(2)), 2),  # nested, depth first
    ],
)
def test_batch_count_is_the_first_tensors_length(batch, count):
    assert batch_count(batch) == count


@pytest.mark.parametrize("batch", [("a", "b"), {"k": 1}, 3.0, []])
def test_batch_count_refuses_batches_without_a_tensor(batch):
    with pytest.raises(cp.InputError, match="leading sample dimension"):
        batch_count(batch)


def test_move_casts_floating_tensors_only_and_keeps_the_structure():
    batch = {
        "x": torch.zeros(2, 3, dtype=torch.float32),
        "parts": (torch.ones(2, dtype=torch.float16), [torch.arange(2)]),
        "name": "digits",
    }
    out = move(batch, torch.device("cpu"), torch.float64)
    assert out["x"].dtype == torch.float64
    assert out["parts"][0].dtype == torch.float64
    assert isinstance(out["parts"], tuple)
    assert isinstance(out["parts"][1], list)
    assert out["parts"][1][0].dtype == torch.long  # labels keep their dtype
    assert torch.equal(out["parts"][1][0], torch.arange(2))
    assert out["name"] == "digits"
    kept = move(batch, torch.device("cpu"), None)
    assert kept["x"].dtype == torch.float32
    assert kept["parts"][0].dtype == torch.float16


def test_a_tensor_pair_is_sliced_into_batches_that_cover_every_sample():
    X, y = pair(10)
    batches = Batches((X, y), batch_size=4)
    sizes = [len(b[0]) for b in batches]
    assert sizes == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), X)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    # read again: the same batches (the objective reads the data once per product)
    assert [len(b[0]) for b in batches] == sizes
    assert len(list(Batches((X, y)))) == 1  # 10 samples < the default batch
    many = Batches(pair(DEFAULT_TENSOR_BATCH + 3))
    assert [len(b[0]) for b in many] == [DEFAULT_TENSOR_BATCH, 3]


def test_a_dataset_is_read_through_a_loader_in_order():
    X, y = pair(300)
    batches = Batches(torch.utils.data.TensorDataset(X, y))
    sizes = [len(b[0]) for b in batches]
    assert sizes == [DEFAULT_DATASET_BATCH, 300 - DEFAULT_DATASET_BATCH]
    assert torch.equal(torch.cat([b[0] for b in batches]), X)
    small = Batches(torch.utils.data.TensorDataset(X, y), batch_size=100)
    assert [len(b[0]) for b in small] == [100, 100, 100]


def test_an_iterable_of_batches_is_kept_as_given():
    X, y = pair(6)
    given = [(X[:2], y[:2]), (X[2:], y[2:])]
    batches = Batches(given, batch_size=1)  # its own batching wins
    assert [len(b[0]) for b in batches] == [2, 4]
    assert batches.first()[0] is given[0][0]


def test_objects_with_as_tuple_are_read_as_their_pair():
    X, y = pair(5)

    class Loaded:
        def as_tuple(self):
            return X, y

    (bx, by), *rest = list(Batches(Loaded()))
    assert not rest
    assert torch.equal(bx, X)
    assert torch.equal(by, y)


def test_placed_moves_and_counts_every_batch():
    X, y = pair(10)
    placed = list(
        Batches((X, y), batch_size=4).placed(torch.device("cpu"), torch.float64)
    )
    assert [count for count, _ in placed] == [4, 4, 2]
    assert all(b[0].dtype == torch.float64 for _, b in placed)
    assert all(b[1].dtype == torch.long for _, b in placed)


def test_first_of_an_empty_iterable_is_refused():
    with pytest.raises(cp.InputError, match="yields no batch"):
        Batches([]).first()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((torch.zeros(3, 2), torch.zeros(4)), "same number of samples"),
        ((torch.zeros(0, 2), torch.zeros(0)), "empty"),
        (torch.utils.data.TensorDataset(torch.zeros(0, 2)), "empty"),
        ((b for b in [(torch.zeros(1), torch.zeros(1))]), "one-shot iterator"),
        (torch.zeros(3, 2), "got Tensor"),
        ("digits", "got str"),
        (7, "got int"),
    ],
)
def test_bad_data_is_refused(data, match):
    with pytest.raises(cp.InputError, match=match):
        Batches(data)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_batch_size_is_refused(bad):
    with pytest.raises(cp.InputError, match="batch_size must be a positive integer"):
        Batches(pair(), batch_size=bad)


def test_batch_count_is_known_without_reading_the_data_where_it_can_be():
    X, y = torch.zeros(10, 2), torch.zeros(10)
    assert Batches((X, y), batch_size=4).count == 3
    assert Batches((X, y), batch_size=10).count == 1
    assert Batches([(X, y), (X, y)]).count == 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), 3)
    assert Batches(loader).count == 4

    class Stream:  # re-iterable, no length
        def __iter__(self):
            yield X, y

    assert Batches(Stream()).count is None
