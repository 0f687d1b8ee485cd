"""The built-in data sets: digits (split, standardisation), two_weight, teacher."""

from __future__ import annotations

import pytest
import torch

from critpoint.data import (
    DATASETS,
    Data,
    builtin,
    load_data,
)
from critpoint.errors import InputError


def test_registry_names() -> None:
    assert set(DATASETS) == {"digits", "two_weight", "teacher"}


def test_digits_shapes_and_split(digits: Data) -> None:
    test = load_data("digits", split="test")
    everything = load_data("digits", split="all")
    assert len(digits) + len(test) == len(everything) == 1797
    assert digits.inputs.shape == (len(digits), 64)
    assert digits.inputs.dtype == torch.float32
    assert digits.targets.dtype == torch.int64
    assert digits.task == "classification"
    assert digits.num_classes == 10
    assert abs(len(test) / 1797 - 0.25) < 0.01
    # Stratified: every class keeps about a quarter of its samples in the test split.
    for c in range(10):
        n_test = int((test.targets == c).sum())
        n_all = int((everything.targets == c).sum())
        assert abs(n_test - 0.25 * n_all) <= 1


def test_digits_split_is_deterministic(digits: Data) -> None:
    again = load_data("digits")
    assert torch.equal(digits.inputs, again.inputs)
    assert torch.equal(digits.targets, again.targets)
    other = load_data("digits", split_seed=1)
    assert not torch.equal(digits.targets, other.targets)


def test_digits_standardised_with_train_statistics(digits: Data) -> None:
    x = digits.inputs.double()
    raw = load_data("digits", preprocess="none").inputs.double()
    constant = raw.std(0) == 0
    assert 0 < int(constant.sum()) < 64
    assert torch.all(x[:, constant] == 0)
    torch.testing.assert_close(
        x[:, ~constant].mean(0),
        torch.zeros(int((~constant).sum()), dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        x[:, ~constant].std(0, unbiased=False),
        torch.ones(int((~constant).sum()), dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    assert torch.isfinite(load_data("digits", split="test").inputs).all()


def test_digits_options() -> None:
    unit = load_data("digits", preprocess="unit", split="all")
    assert float(unit.inputs.min()) == 0.0
    assert float(unit.inputs.max()) == 1.0
    three = load_data("digits", num_classes=3, split="all")
    assert three.num_classes == 3
    assert set(three.targets.tolist()) == {0, 1, 2}
    assert load_data("digits", dtype=torch.float64).inputs.dtype == torch.float64
    with pytest.raises(InputError, match="split must be 'train', 'test' or 'all'"):
        load_data("digits", split="val")
    with pytest.raises(
        InputError, match=r"num_classes must be an integer in \[2, 10\]"
    ):
        load_data("digits", num_classes=11)
    with pytest.raises(InputError, match="preprocess must be"):
        load_data("digits", preprocess="whiten")
    with pytest.raises(InputError, match="test_fraction must be in"):
        load_data("digits", test_fraction=1.5)
    with pytest.raises(InputError, match="does not accept"):
        load_data("digits", colour=True)


def test_two_weight_data() -> None:
    d = load_data("two_weight")
    assert torch.equal(d.inputs, torch.tensor([[1.0]]))
    assert torch.equal(d.targets, torch.tensor([[1.0]]))
    assert d.task == "regression"
    assert d.num_classes is None
    assert len(d) == 1


def test_teacher_regression_and_classification() -> None:
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    reg = load_data("teacher", n_samples=50, in_features=3, hidden=5, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert reg.inputs.shape == (50, 3)
    assert reg.targets.shape == (50, 1)
    assert reg.task == "regression"
    assert reg.targets.std() > 0.01
    same = load_data("teacher", n_samples=50, in_features=3, hidden=5, seed=1)
    assert torch.equal(reg.inputs, same.inputs)
    assert torch.equal(reg.targets, same.targets)
    assert not torch.equal(
        reg.targets,
        load_data("teacher", n_samples=50, in_features=3, hidden=5, seed=2).targets,
    )
    noisy = load_data(
        "teacher", n_samples=50, in_features=3, hidden=5, seed=1, noise=0.5
    )
    assert torch.equal(noisy.inputs, reg.inputs)
    assert not torch.equal(noisy.targets, reg.targets)

    cls = load_data(
        "teacher", task="classification", num_classes=4, n_samples=400, seed=0
    )
    assert cls.targets.shape == (400,)
    assert cls.targets.dtype == torch.int64
    assert cls.num_classes == 4
    assert cls.task == "classification"
    assert len(set(cls.targets.tolist())) >= 3
    with pytest.raises(InputError, match="teacher task must be"):
        load_data("teacher", task="ranking")
    with pytest.raises(InputError, match="n_samples must be a positive integer"):
        load_data("teacher", n_samples=0)
    with pytest.raises(InputError, match="noise must be >= 0"):
        load_data("teacher", noise=-1.0)


def test_teacher_targets_are_the_documented_network() -> None:
    # f(x) = A tanh(W x), W ~ N(0, 1/in), A ~ N(0, 1/hidden), x ~ N(0, I),
    # drawn in that order from a generator seeded with `seed`.
    n, d, h, out = 20, 3, 4, 2
    data = builtin.teacher(
        n_samples=n, in_features=d, hidden=h, out_features=out, seed=5,
        dtype=torch.float64,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(h, d, generator=gen, dtype=torch.float64) / d**0.5
    a = torch.randn(out, h, generator=gen, dtype=torch.float64) / h**0.5
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    assert torch.equal(data.inputs, x)
    torch.testing.assert_close(data.targets, torch.tanh(x @ w.T) @ a.T, rtol=0, atol=0)
    cls = builtin.teacher(task="classification", num_classes=3, n_samples=n, seed=5)
    assert cls.targets.dtype == torch.int64
    assert int(cls.targets.max()) <= 2


def test_registry_holds_the_builtin_functions() -> None:
    assert {
        "digits": builtin.digits,
        "two_weight": builtin.two_weight,
        "teacher": builtin.teacher,
    } == DATASETS
    one = builtin.two_weight(dtype=torch.float64)
    assert one.inputs.tolist() == [[1.0]]
    assert one.targets.tolist() == [[1.0]]
    assert one.inputs.dtype == torch.float64
