"""Specs to data: names, files and the caller's functions."""

from __future__ import annotations

import textwrap

import pytest
import torch

from critpoint.data import (
    Data,
    DataSource,
    check_data_against_model,
    load_data,
)
from critpoint.errors import InputError
from critpoint.models import build_model


def test_unknown_data_lists_names_and_forms() -> None:
    with pytest.raises(
        InputError,
        match=r"unknown data 'mnist'.*'digits'.*'teacher'.*'two_weight'.*\.npz.*module:function",
    ):
        load_data("mnist")


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


def test_dataloader_with_drop_last_is_refused_naming_it(tmp_path) -> None:
    (tmp_path / "loaders.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch.utils.data import DataLoader, TensorDataset

            def make(shuffle=False, batch_size=6, drop_last=True):
                g = torch.Generator().manual_seed(0)
                data = TensorDataset(torch.randn(20, 4, generator=g), torch.arange(20) % 3)
                return DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                                  drop_last=drop_last)
            """
        )
    )
    spec = f"{tmp_path / 'loaders.py'}:make"
    with pytest.raises(
        InputError,
        match=r"DataLoader with drop_last=True, which leaves out different samples on "
        r"every pass \(it shuffles\).*drop_last=False",
    ):
        load_data(spec, shuffle=True)
    with pytest.raises(
        InputError,
        match=r"drop_last=True, which leaves out the samples of the last partial batch",
    ):
        load_data(spec)
    # Batches that tile the data drop nothing; drop_last=False is always fine.
    assert load_data(spec, batch_size=5).kind == "dataloader"
    assert load_data(spec, drop_last=False, shuffle=True).kind == "dataloader"


def test_the_hessian_probe_names_drop_last() -> None:
    """Given to the library directly, a shuffling drop_last loader is caught by the probe."""
    import critpoint as cp
    from critpoint.errors import NonDeterministicError

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(20, 4, generator=g, dtype=torch.float64), torch.arange(20) % 3
    )
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=6,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(1),
    )
    model = build_model("mlp", in_features=4, widths=[3], out_features=3, seed=0)
    obj = cp.Objective(model.double(), cp.get_loss("cross_entropy"), loader)
    with pytest.raises(NonDeterministicError, match=r"drop_last=True.*drop_last=False"):
        obj.hessian().check_symmetric()
