"""Data files: .pt dicts and .npz archives, read without running code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critpoint.data import (
    Data,
    load_data,
)
from critpoint.data.files import is_data_file, read_data_file
from critpoint.errors import InputError


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
    # Integer targets (N, T) are labels per position (token ids), so the file
    # loads; one-hot rows are refused by the built-in loss that cannot take
    # them (tests/data/test_check.py), not by the data.
    rows = load_data(str(onehot))
    assert rows.targets.shape == (3, 3)
    assert rows.num_classes == 2


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


def test_read_data_file_directly(tmp_path) -> None:
    assert is_data_file("a/b.PT")
    assert is_data_file("x.pth")
    assert is_data_file("x.npz")
    assert not is_data_file("x.py")
    assert not is_data_file("digits")
    path = tmp_path / "r.npz"
    np.savez(path, inputs=np.eye(3), targets=np.array([0.0, 1.0, 2.0]))
    d = read_data_file(str(path), {}, torch.float64, None, None)
    assert d.task == "regression"
    assert torch.equal(d.inputs, torch.eye(3, dtype=torch.float64))
    assert d.targets.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(InputError, match=r"takes no options; got \['split'\]"):
        read_data_file(str(path), {"split": "test"}, None, None, None)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_token_ids_stay_integer(tmp_path, suffix) -> None:
    """int64 token ids of a language model: inputs kept as ids, targets per position."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (8, 12), generator=g)
    path = tmp_path / f"tokens{suffix}"
    if suffix == ".npz":
        np.savez(path, input_ids=ids.numpy().astype(np.int32))  # int32 becomes int64
    else:
        torch.save({"input_ids": ids}, path)
    d = load_data(str(path), dtype=torch.float64)
    assert d.inputs.dtype == torch.int64  # not cast to the floating dtype
    assert torch.equal(d.inputs, ids)
    assert torch.equal(d.targets, ids)  # without labels: the ids themselves
    assert d.task == "classification"
    assert d.num_classes == int(ids.max()) + 1
    # Explicit inputs/targets and Hugging Face's labels (-100: no label) work too.
    labels = ids.clone()
    labels[:, :3] = -100
    torch.save({"input_ids": ids, "labels": labels}, tmp_path / "labelled.pt")
    lab = load_data(str(tmp_path / "labelled.pt"))
    assert torch.equal(lab.targets, labels)
    torch.save({"inputs": ids.int(), "targets": ids}, tmp_path / "pair.pt")
    assert load_data(str(tmp_path / "pair.pt")).inputs.dtype == torch.int64
