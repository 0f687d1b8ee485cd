"""Data sets by name, user data files and functions, and the model check."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from critpoint.data import (
    DATASETS,
    Data,
    DataSource,
    check_data_against_model,
    load_data,
)
from critpoint.errors import InputError
from critpoint.models import build_model


@pytest.fixture(scope="module")
def digits() -> Data:
    return load_data("digits")


# ---------------------------------------------------------------- built-ins


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


def test_unknown_data_lists_names_and_forms() -> None:
    with pytest.raises(
        InputError,
        match=r"unknown data 'mnist'.*'digits'.*'teacher'.*'two_weight'.*\.npz.*module:function",
    ):
        load_data("mnist")


# ----------------------------------------------------------------- user data


def test_pt_file(tmp_path) -> None:
    path = tmp_path / "d.pt"
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    torch.save({"inputs": x, "targets": y, "note": "extra keys are fine"}, path)
    d = load_data(str(path))
    assert isinstance(d, Data)
    assert d.inputs.dtype == torch.float32  # default dtype
    torch.testing.assert_close(d.inputs, x.float())
    assert torch.equal(d.targets, y)
    assert d.task == "classification"
    assert d.num_classes == 3
    kept = load_data(path, dtype=None)
    assert kept.inputs.dtype == torch.float64
    assert load_data(path, num_classes=5).num_classes == 5
    assert load_data(path, task="regression").targets.dtype == torch.float32


def test_npz_file(tmp_path) -> None:
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).normal(size=(5, 2))
    y = np.linspace(0, 1, 5).reshape(5, 1)
    np.savez(path, inputs=x, targets=y)
    d = load_data(str(path))
    assert d.task == "regression"
    assert d.num_classes is None
    assert d.inputs.shape == (5, 2)
    assert d.targets.shape == (5, 1)
    assert d.targets.dtype == torch.float32
    np.testing.assert_allclose(d.targets.numpy(), y, rtol=1e-6)


def test_module_function(tmp_path, monkeypatch) -> None:
    (tmp_path / "user_data_mod.py").write_text(
        textwrap.dedent(
            """
            import torch

            def pair(n=4):
                return torch.ones(n, 2), torch.zeros(n, dtype=torch.long)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    d = load_data("user_data_mod:pair", n=3)
    assert isinstance(d, Data)
    assert d.inputs.shape == (3, 2)
    assert d.task == "classification"
    assert d.name == "user_data_mod:pair"


class _Squares(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int):
        return torch.tensor([float(i)]), torch.tensor([float(i * i)])


def test_file_function_forms(tmp_path) -> None:
    src = tmp_path / "make_data.py"
    src.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import torch
            from torch.utils.data import DataLoader, Dataset, TensorDataset

            def pair():
                return np.zeros((4, 3), dtype=np.float32), np.arange(4)

            def as_dict():
                return {"inputs": torch.ones(2, 3), "targets": torch.ones(2, 1)}

            def dataset():
                return TensorDataset(torch.ones(6, 3), torch.arange(6) % 2)

            def loader(batch_size=4):
                return DataLoader(dataset(), batch_size=batch_size)

            def generator():
                return ((torch.ones(2, 3), torch.zeros(2, dtype=torch.long)) for _ in range(2))

            def empty_dataset():
                return TensorDataset(torch.ones(0, 3), torch.ones(0))

            def wrong():
                return "digits"
            """
        )
    )
    pair = load_data(f"{src}:pair")
    assert isinstance(pair, Data)
    assert pair.num_classes == 4
    assert load_data(f"{src}:as_dict").task == "regression"
    ds = load_data(f"{src}:dataset")
    assert isinstance(ds, DataSource)
    assert ds.kind == "dataset"
    assert isinstance(ds.obj, torch.utils.data.TensorDataset)
    x, y = ds.first_batch(2)
    assert x.shape == (2, 3)
    assert y.shape == (2,)
    dl = load_data(f"{src}:loader", batch_size=3)
    assert dl.kind == "dataloader"
    assert dl.obj.batch_size == 3
    assert dl.first_batch(2)[0].shape == (2, 3)
    gen = load_data(f"{src}:generator")
    assert gen.kind == "iterable"
    assert len(gen.obj) == 2  # materialised: can be passed over repeatedly
    assert gen.first_batch()[0].shape == (2, 3)
    with pytest.raises(InputError, match="returned an empty Dataset"):
        load_data(f"{src}:empty_dataset")
    with pytest.raises(
        InputError, match="returned str; return an \\(inputs, targets\\) pair"
    ):
        load_data(f"{src}:wrong")
    with pytest.raises(InputError, match="has no attribute 'nope'"):
        load_data(f"{src}:nope")
    check_data_against_model(
        build_model("mlp", in_features=3, widths=[4], out_features=2),
        dl,
        "cross_entropy",
    )


# ------------------------------------------------------------ bad data files


def test_missing_and_empty_files(tmp_path) -> None:
    with pytest.raises(InputError, match=r"data file '.*nope\.pt' not found"):
        load_data(str(tmp_path / "nope.pt"))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.npz' is empty \(0 bytes\)"):
        load_data(str(empty))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(
        InputError, match=r"garbage\.pt' is not readable|garbage\.pt' is damaged"
    ):
        load_data(str(garbage))
    with pytest.raises(InputError, match="takes no options"):
        load_data(str(garbage), split="train")


def test_missing_key_lists_keys(tmp_path) -> None:
    path = tmp_path / "d.pt"
    torch.save({"x": torch.ones(2, 2), "y": torch.ones(2)}, path)
    with pytest.raises(
        InputError,
        match=r"d\.pt' has no key\(s\) \['inputs', 'targets'\]; keys found: \['x', 'y'\]",
    ):
        load_data(str(path))
    npz = tmp_path / "d.npz"
    np.savez(npz, inputs=np.ones((2, 2)))
    with pytest.raises(
        InputError, match=r"no key\(s\) \['targets'\]; keys found: \['inputs'\]"
    ):
        load_data(str(npz))


def test_length_mismatch(tmp_path) -> None:
    path = tmp_path / "d.pt"
    torch.save(
        {"inputs": torch.ones(5, 2), "targets": torch.zeros(4, dtype=torch.long)}, path
    )
    with pytest.raises(InputError, match=r"inputs have 5 samples but targets have 4"):
        load_data(str(path))


def test_wrong_shapes(tmp_path) -> None:
    path = tmp_path / "scalar.pt"
    torch.save({"inputs": torch.tensor(1.0), "targets": torch.tensor(1.0)}, path)
    with pytest.raises(InputError, match="need a first \\(sample\\) dimension"):
        load_data(str(path))
    onehot = tmp_path / "onehot.pt"
    torch.save(
        {"inputs": torch.ones(3, 2), "targets": torch.eye(3, dtype=torch.long)}, onehot
    )
    with pytest.raises(
        InputError, match=r"class labels must have shape \(N,\); got \(3, 3\)"
    ):
        load_data(str(onehot))


def test_wrong_dtypes(tmp_path) -> None:
    strings = tmp_path / "s.npz"
    np.savez(
        strings, inputs=np.array([["a", "b"], ["c", "d"]]), targets=np.array([0, 1])
    )
    with pytest.raises(InputError, match=r"'inputs' has dtype <U1 \(not numeric\)"):
        load_data(str(strings))
    objects = tmp_path / "o.npz"
    np.savez(
        objects,
        inputs=np.ones((2, 2)),
        targets=np.array([{"a": 1}, None], dtype=object),
    )
    with pytest.raises(InputError, match=r"o\.npz' holds object arrays"):
        load_data(str(objects))
    floats = tmp_path / "f.pt"
    torch.save(
        {"inputs": torch.ones(2, 2), "targets": torch.tensor([0.5, 1.5])}, floats
    )
    with pytest.raises(
        InputError,
        match=r"classification targets must be integer class labels; got torch\.float32",
    ):
        load_data(str(floats), task="classification")
    cplx = tmp_path / "c.pt"
    torch.save(
        {"inputs": torch.ones(2, 2, dtype=torch.complex64), "targets": torch.ones(2)},
        cplx,
    )
    with pytest.raises(InputError, match=r"'inputs' has dtype torch\.complex64"):
        load_data(str(cplx))
    neg = tmp_path / "neg.pt"
    torch.save({"inputs": torch.ones(2, 2), "targets": torch.tensor([-1, 0])}, neg)
    with pytest.raises(InputError, match="class labels must be >= 0; found -1"):
        load_data(str(neg))
    labels = tmp_path / "labels.pt"
    torch.save({"inputs": torch.ones(2, 2), "targets": torch.tensor([0, 1])}, labels)
    with pytest.raises(InputError, match="label 1 is out of range for num_classes=1"):
        load_data(str(labels), num_classes=1)


def test_empty_data_set(tmp_path) -> None:
    path = tmp_path / "e.pt"
    torch.save({"inputs": torch.ones(0, 3), "targets": torch.ones(0)}, path)
    with pytest.raises(InputError, match=r"e\.pt' is empty \(0 samples\)"):
        load_data(str(path))
    npz = tmp_path / "e.npz"
    np.savez(npz, inputs=np.ones((0, 3)), targets=np.ones(0))
    with pytest.raises(InputError, match=r"e\.npz' is empty \(0 samples\)"):
        load_data(str(npz))


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pt_data_needing_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"inputs": torch.ones(2, 2), "targets": _Marker(str(marker))}, path)
    with pytest.raises(
        InputError, match=r"evil\.pt' needs code to unpickle \(.*open\)"
    ):
        load_data(str(path))
    assert not marker.exists()
    notdict = tmp_path / "list.pt"
    torch.save([torch.ones(2)], notdict)
    with pytest.raises(InputError, match=r"holds a list, not a dict"):
        load_data(str(notdict))


# -------------------------------------------------------------- model check


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
