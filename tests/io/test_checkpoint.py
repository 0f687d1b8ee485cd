"""Checkpoints: exact round trips, plain state dicts, what a file means."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from critpoint.data import load_data
from critpoint.errors import CheckpointError, InputError, UnsafeCheckpointError
from critpoint.io.checkpoint import (
    FORMAT,
    Checkpoint,
    load_checkpoint,
    load_state_dict_strict,
    save_checkpoint,
)
from critpoint.losses import get_loss, mse
from critpoint.models import build_model


@pytest.fixture(scope="module")
def digits64():
    return load_data("digits", split="test", dtype=torch.float64).subset(100)


def _loss(model: nn.Module, data, loss_name: str) -> torch.Tensor:
    with torch.no_grad():
        return get_loss(loss_name)(model(data.inputs), data.targets)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("mlp", {"batchnorm": True, "widths": [16, 8]}), ("cnn", {"batchnorm": True})],
)
def test_round_trip_float64_is_exact(
    tmp_path, digits64, suffix: str, name: str, kwargs: dict
) -> None:
    model = build_model(name, seed=0, dtype=torch.float64, **kwargs)
    # Move the BatchNorm running statistics away from their defaults.
    model.train()
    with torch.no_grad():
        model(digits64.inputs)
    model.eval()
    history = {
        "loss": [2.3, 1.1, float("nan")],
        "lr": [0.1, 0.1, 0.05],
        "step": [0, 1, 2],
    }
    path = save_checkpoint(
        tmp_path / f"run{suffix}",
        model,
        data_spec={"name": "digits", "split": "test"},
        loss="cross_entropy",
        history=history,
        meta={"step": 3, "optimizer": "sgd", "betas": (0.9, 0.99)},
    )
    ckpt = load_checkpoint(path)
    assert ckpt.format == "critpoint"
    assert ckpt.model_spec == {
        "name": name,
        "kwargs": {**kwargs, "seed": 0, "dtype": "float64"},
    }
    assert ckpt.data_spec == {"name": "digits", "split": "test"}
    assert ckpt.loss == "cross_entropy"
    assert ckpt.history["loss"][:2] == [2.3, 1.1]
    assert np.isnan(ckpt.history["loss"][2])
    assert ckpt.history["step"] == [0, 1, 2]
    assert ckpt.meta == {"step": 3, "optimizer": "sgd", "betas": [0.9, 0.99]}
    assert ckpt.torch_version == torch.__version__
    assert isinstance(ckpt.critpoint_version, str)
    rebuilt = ckpt.build_model().eval()
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    torch.testing.assert_close(
        rebuilt(digits64.inputs), model(digits64.inputs), rtol=0, atol=1e-12
    )
    a, b = _loss(model, digits64, ckpt.loss), _loss(rebuilt, digits64, ckpt.loss)
    assert abs(float(a) - float(b)) <= 1e-12
    json.dumps(ckpt.to_dict(), allow_nan=True)


def test_file_is_weights_only_loadable_dict(tmp_path) -> None:
    path = save_checkpoint(
        tmp_path / "c.pt", build_model("two_weight", w1=0.5), loss=mse
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    assert raw["version"] == 1
    assert raw["loss"] == "mse"  # a built-in function is stored by name
    assert set(raw) == {
        "format", "version", "state_dict", "model_spec", "data_spec", "loss",
        "history", "meta", "critpoint_version", "torch_version",
    }  # fmt: skip
    meta = json.loads(
        safetensors.safe_open(
            save_checkpoint(tmp_path / "c.safetensors", build_model("two_weight")), "pt"
        ).metadata()["critpoint"]
    )
    assert meta["format"] == FORMAT


def test_write_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sub" / "c.pt"
    save_checkpoint(path, build_model("two_weight", w1=1.0))
    save_checkpoint(path, build_model("two_weight", w1=2.0))  # overwrite in place
    assert float(load_checkpoint(path).state_dict["w1"]) == 2.0

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, build_model("two_weight", w1=3.0))
    assert (
        float(load_checkpoint(path).state_dict["w1"]) == 2.0
    )  # the old file is intact
    assert sorted(os.listdir(path.parent)) == ["c.pt"]  # no temporary left behind


def test_save_errors(tmp_path) -> None:
    model = build_model("two_weight")
    with pytest.raises(InputError, match="meta: object cannot be stored safely"):
        save_checkpoint(tmp_path / "c.pt", model, meta={"x": object()})
    with pytest.raises(InputError, match=r"needs an nn\.Module or a state dict"):
        save_checkpoint(tmp_path / "c.pt", 3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="state dict entry 'a' is int, not a tensor"):
        save_checkpoint(tmp_path / "c.pt", {"a": 1})
    with pytest.raises(InputError, match="has no importable name"):
        save_checkpoint(tmp_path / "c.pt", model, loss=lambda o, t: o)
    assert not (tmp_path / "c.pt").exists()


def test_plain_state_dict_with_separate_spec(tmp_path, digits64) -> None:
    model = build_model("mlp", seed=1, dtype="float64")
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.format == "state_dict"
    assert ckpt.model_spec is None
    with pytest.raises(CheckpointError, match="has no model spec; pass one"):
        ckpt.build_model()
    # The spec need not repeat the seed or dtype: the weights are loaded, and
    # the model takes the state dict's dtype.
    rebuilt = ckpt.build_model({"name": "mlp"})
    assert next(rebuilt.parameters()).dtype == torch.float64
    torch.testing.assert_close(
        rebuilt(digits64.inputs), model(digits64.inputs), rtol=0, atol=0
    )


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_nested_state_dict(tmp_path, key: str) -> None:
    model = build_model("mlp", widths=[4], seed=0)
    path = tmp_path / "nested.pth"
    torch.save(
        {
            key: model.state_dict(),
            "epoch": 7,
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    ckpt = load_checkpoint(path)
    assert ckpt.format == "state_dict"
    assert ckpt.meta["epoch"] == 7
    rebuilt = ckpt.build_model({"name": "mlp", "kwargs": {"widths": [4]}})
    assert torch.equal(rebuilt.net[0].weight, model.net[0].weight)


def test_data_parallel_prefix_is_stripped(tmp_path) -> None:
    model = build_model("mlp", widths=[4], seed=0)
    torch.save(
        {f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt"
    )
    rebuilt = load_checkpoint(tmp_path / "ddp.pt").build_model(
        {"name": "mlp", "kwargs": {"widths": [4]}}
    )
    assert torch.equal(rebuilt.net[2].bias, model.net[2].bias)


def test_plain_safetensors(tmp_path) -> None:
    model = build_model("cnn", seed=0)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(
        model.state_dict(), str(path), metadata={"format": "pt", "author": "me"}
    )
    ckpt = load_checkpoint(path)
    assert ckpt.format == "safetensors"
    assert ckpt.meta == {"author": "me"}
    rebuilt = ckpt.build_model({"name": "cnn"})
    x = torch.randn(2, 64)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    # Recognised by content even under another suffix.
    other = tmp_path / "w.bin"
    other.write_bytes(path.read_bytes())
    assert load_checkpoint(other).format == "safetensors"


def test_mismatched_keys_and_shapes_are_listed(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", build_model("mlp", widths=[32], seed=0))
    ckpt = load_checkpoint(path)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches: \['net.0.bias: checkpoint \(32,\) vs model \(16,\)', 'net.0.weight: checkpoint \(32, 64\) vs model \(16, 64\)', 'net.2.weight: checkpoint \(10, 32\) vs model \(10, 16\)'\]",
    ):
        ckpt.build_model({"name": "mlp", "kwargs": {"widths": [16]}})
    # The first five of each list, how many more, and the likely cause.
    with pytest.raises(
        CheckpointError,
        match=r"7 missing keys \(in the model, not the file\): \['net.1.bias', 'net.1.num_batches_tracked', 'net.1.running_mean', 'net.1.running_var', 'net.1.weight', … 2 more\]; 2 extra keys \(in the file, not the model\): \['net.2.bias', 'net.2.weight'\]\. Likely cause: the model has normalisation layers \(BatchNorm\) the file lacks",
    ):
        ckpt.build_model({"name": "mlp", "kwargs": {"batchnorm": True}})
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_state_dict_strict(nn.Linear(2, 2), {"weight": torch.ones(2, 2)})


def test_whole_module_pickle_needs_trust(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    path = tmp_path / "module.pt"
    torch.save(model, path)
    with pytest.raises(
        UnsafeCheckpointError, match=r"torch\.nn\.modules\.container\.Sequential"
    ):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust=True)
    assert ckpt.format == "module"
    assert isinstance(ckpt.module, nn.Sequential)
    assert ckpt.build_model() is ckpt.module
    assert set(ckpt.state_dict) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    x = torch.randn(4, 3)
    torch.testing.assert_close(ckpt.module(x), model(x), rtol=0, atol=0)
    fresh = ckpt.load_into(nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)))
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    # trust=True on a safe file still reads it the safe way.
    save_checkpoint(tmp_path / "safe.pt", build_model("two_weight"))
    assert load_checkpoint(tmp_path / "safe.pt", trust=True).format == "critpoint"


def test_files_without_a_state_dict(tmp_path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(
        CheckpointError,
        match=r"no state dict found .*top-level keys are \['epoch', 'lr'\]",
    ):
        load_checkpoint(tmp_path / "meta.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(
        CheckpointError, match=r"it holds a list; save model\.state_dict"
    ):
        load_checkpoint(tmp_path / "list.pt")
    torch.save(
        {"format": FORMAT, "version": 99, "state_dict": {}}, tmp_path / "future.pt"
    )
    with pytest.raises(
        CheckpointError, match="format version 99; this critpoint reads version 1"
    ):
        load_checkpoint(tmp_path / "future.pt")


def test_checkpoint_dataclass_is_frozen(tmp_path) -> None:
    ckpt = load_checkpoint(
        save_checkpoint(tmp_path / "c.pt", build_model("two_weight"))
    )
    assert isinstance(ckpt, Checkpoint)
    with pytest.raises(AttributeError):
        ckpt.loss = "mse"  # type: ignore[misc]


def test_mistyped_header_entries_are_refused(tmp_path) -> None:
    model = build_model("two_weight")
    for key, value, needle in [
        ("meta", [1, 2], r"its 'meta' is a list"),
        ("meta", "x", r"its 'meta' is a str"),
        ("history", 3, r"its 'history' is a int"),
        ("model_spec", 7, r"its 'model_spec' is a int"),
        ("model_spec", {"kwargs": {}}, r"'model_spec' has no string 'name'"),
        ("loss", ["mse"], r"its 'loss' is a list"),
    ]:
        path = tmp_path / f"{key}.ckpt"
        save_checkpoint(path, model)
        obj = torch.load(path, weights_only=True)
        obj[key] = value
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=needle):
            load_checkpoint(path)
    obj["state_dict"] = {"w1": torch.zeros(()), "w2": 3.0}
    obj["loss"] = None
    torch.save(obj, tmp_path / "t.ckpt")
    with pytest.raises(CheckpointError, match=r"entry 'w2' is a float, not a tensor"):
        load_checkpoint(tmp_path / "t.ckpt")


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool])
def test_complex_and_integer_weights_are_refused(tmp_path, dtype) -> None:
    model = build_model("mlp", in_features=2, widths=[2], out_features=2)
    state = {
        k: v.to(dtype) if k == "net.0.weight" else v
        for k, v in model.state_dict().items()
    }
    torch.save(state, tmp_path / "w.pt")
    ckpt = load_checkpoint(tmp_path / "w.pt")
    spec = {
        "name": "mlp",
        "kwargs": {"in_features": 2, "widths": [2], "out_features": 2},
    }
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(
        CheckpointError,
        match=rf"dtype mismatches .*net\.0\.weight: checkpoint {name} vs model float32",
    ):
        ckpt.build_model(spec)


def test_model_on_the_meta_device_is_refused(tmp_path) -> None:
    module = tmp_path / "meta_model.py"
    module.write_text(
        "import torch\n"
        "def make():\n"
        "    with torch.device('meta'):\n"
        "        return torch.nn.Linear(2, 1)\n"
    )
    with pytest.raises(InputError, match=r"on the meta device"):
        build_model(f"{module}:make")


def test_user_factory_raising_is_one_error(tmp_path) -> None:
    module = tmp_path / "raising.py"
    module.write_text(
        "def make(width=3):\n    raise ValueError('width must be even')\n"
    )
    with pytest.raises(
        InputError, match=r"raised ValueError when called with .*width must be even"
    ):
        build_model(f"{module}:make")
    with pytest.raises(InputError, match=r"data function .* raised ValueError"):
        load_data(f"{module}:make")


def test_stored_spec_is_checked_on_the_meta_device_first(tmp_path, monkeypatch) -> None:
    """A spec asking for a huge model that does not fit the weights allocates nothing."""
    import critpoint.models

    devices = []
    real = critpoint.models.MODELS["mlp"]

    def recording(**kwargs):
        devices.append(torch.empty(0).device.type)
        return real(**kwargs)

    monkeypatch.setitem(critpoint.models.MODELS, "mlp", recording)
    path = tmp_path / "huge.ckpt"
    huge = {
        "name": "mlp",
        "kwargs": {"widths": [200_000, 200_000]},
    }  # 160 GB of float32
    save_checkpoint(path, build_model("mlp", seed=0), model_spec=huge)
    devices.clear()
    with pytest.raises(CheckpointError, match=r"do not fit the model.*\(200000, 64\)"):
        load_checkpoint(path).build_model()
    assert devices == ["meta"]
    good = tmp_path / "good.ckpt"
    save_checkpoint(good, build_model("mlp", seed=0))
    devices.clear()
    load_checkpoint(good).build_model()
    assert devices == ["meta", "cpu"]


def _lightning_file(path, model: nn.Module) -> None:
    """A file laid out as PyTorch Lightning's ``Trainer.save_checkpoint`` writes it."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    momentum = {i: {"momentum_buffer": torch.ones(50)} for i in range(len(state))}
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": state,
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
            "callbacks": {},
            "optimizer_states": [{"state": momentum, "param_groups": [{"lr": 0.1}]}],
            "lr_schedulers": [],
            "hyper_parameters": {"widths": [4], "lr": 0.1},
        },
        path,
    )


def test_lightning_checkpoint_loads_with_its_prefix_removed(tmp_path) -> None:
    model = build_model("mlp", widths=[4], seed=0)
    path = tmp_path / "epoch=3-step=120.ckpt"
    _lightning_file(path, model)
    ckpt = load_checkpoint(path)
    assert ckpt.format == "state_dict"
    assert ckpt.meta["epoch"] == 3
    assert ckpt.meta["global_step"] == 120
    assert ckpt.meta["hyper_parameters"] == {"widths": [4], "lr": 0.1}
    assert (
        "optimizer_states" not in ckpt.meta
    )  # training state with tensors: not metadata
    assert ckpt.notes == [
        "a PyTorch Lightning checkpoint (epoch 3, global step 120): the weights under "
        "'state_dict'"
    ]
    rebuilt = ckpt.build_model({"name": "mlp", "kwargs": {"widths": [4]}})
    x = torch.randn(3, 64)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert len(ckpt.notes) == 2
    assert ckpt.notes[1].startswith("removed the prefix 'model.'")
    ckpt.build_model({"name": "mlp", "kwargs": {"widths": [4]}})
    assert len(ckpt.notes) == 2  # said once, however often it is built
    assert ckpt.to_dict()["notes"] == ckpt.notes
    # A plain state dict under "state_dict" is no Lightning file.
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt").notes == []
