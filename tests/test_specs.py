"""A spec read from a file names only built-ins: no code runs from a checkpoint.

Every spec field a checkpoint stores (model, data, loss), in both file types
(torch.save and safetensors metadata), is tried with three forms of code that
would create a marker file: ``os:system`` with a command, ``runpy:run_path``
of a script, and ``file.py:function`` whose module creates it on import. The
marker never appears unless the user trusts the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from critpoint.data import checkpoint_data, data_from_spec
from critpoint.errors import InputError, UnsafeCheckpointError
from critpoint.io.checkpoint import load_checkpoint, save_checkpoint
from critpoint.losses import get_loss
from critpoint.models import build_model, model_from_spec
from critpoint.specs import (
    dtype_name,
    load_object,
    normalise_data_spec,
    on_sys_path,
    parse_dtype,
    resolve_relative,
)

FIELDS = ("model_spec", "data_spec", "loss")
FORMS = ("os_system", "runpy", "file_py")


def evil_specs(tmp_path: Path) -> dict[str, dict[str, object]]:
    """For each form, the spec of each field that would create ``tmp_path/marker``."""
    marker = tmp_path / "marker"
    script = tmp_path / "evil_script.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    module = tmp_path / "evil_module.py"
    module.write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import torch\n"
        "def make():\n    from critpoint.models import TwoWeight\n    return TwoWeight()\n"
        "def data():\n    return torch.ones(4, 1), torch.ones(4, 1)\n"
        "def loss(outputs, targets):\n    return ((outputs - targets) ** 2).mean()\n"
    )
    command = f"touch {marker}"
    return {
        "os_system": {
            "model_spec": {"name": "os:system", "kwargs": {"command": command}},
            "data_spec": {"name": "os:system", "kwargs": {"command": command}},
            "loss": "os:system",  # a loss takes no options: the import is the attack
        },
        "runpy": {
            "model_spec": {
                "name": "runpy:run_path",
                "kwargs": {"path_name": str(script)},
            },
            "data_spec": {
                "name": "runpy:run_path",
                "kwargs": {"path_name": str(script)},
            },
            "loss": f"{module}:loss",
        },
        "file_py": {
            "model_spec": {"name": f"{module}:make"},
            "data_spec": {"name": f"{module}:data"},
            "loss": f"{module}:loss",
        },
    }


def write_evil(tmp_path: Path, field: str, form: str, suffix: str = ".ckpt") -> Path:
    """A two-weight checkpoint whose ``field`` is code; the other fields are built-ins."""
    fields: dict[str, object] = {
        "model_spec": {"name": "two_weight", "kwargs": {}},
        "data_spec": "two_weight",
        "loss": "mse",
    }
    fields[field] = evil_specs(tmp_path)[form][field]
    path = tmp_path / f"evil-{field}-{form}{suffix}"
    save_checkpoint(path, build_model("two_weight"), **fields)
    return path


def use(ckpt_path: Path, field: str, trust: bool = False) -> object:
    ckpt = load_checkpoint(ckpt_path, trust=trust)
    if field == "model_spec":
        return ckpt.build_model()
    if field == "data_spec":
        return checkpoint_data(ckpt)
    return ckpt.get_loss()


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("field", FIELDS)
def test_stored_code_is_refused_and_never_runs(
    tmp_path: Path, field: str, form: str, suffix: str
) -> None:
    path = write_evil(tmp_path, field, form, suffix)
    with pytest.raises(UnsafeCheckpointError) as info:
        use(path, field)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "names code" in message
    assert "--trust-checkpoint" in message
    assert "trust=True" in message
    option = {"model_spec": "--model", "data_spec": "--data", "loss": "--loss"}[field]
    assert option in message
    spec = evil_specs(tmp_path)[form][field]
    name = spec["name"] if isinstance(spec, dict) else spec
    assert str(name) in message  # the spec is shown
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("field", FIELDS)
def test_trust_runs_stored_code(tmp_path: Path, field: str) -> None:
    """The test above can fail: with trust=True the same file does run its code."""
    path = write_evil(tmp_path, field, "file_py")
    use(path, field, trust=True)
    assert (tmp_path / "marker").exists()


def test_trust_per_call_and_explicit_specs(tmp_path: Path) -> None:
    path = write_evil(tmp_path, "model_spec", "file_py")
    ckpt = load_checkpoint(path)
    assert ckpt.trusted is False
    assert load_checkpoint(path, trust=True).trusted is True
    # A spec the caller passes is the caller's own: the factory it names runs.
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from critpoint.models import TwoWeight\ndef make():\n    return TwoWeight()\n"
    )
    model = ckpt.build_model({"name": f"{mine}:make"})
    assert type(model).__name__ == "TwoWeight"
    assert not (tmp_path / "marker").exists()
    with pytest.raises(UnsafeCheckpointError):
        ckpt.build_model()
    assert not (tmp_path / "marker").exists()
    assert type(ckpt.build_model(trust=True)).__name__ == "TwoWeight"
    assert (tmp_path / "marker").exists()


def test_builtins_from_a_file_still_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.ckpt"
    save_checkpoint(
        path,
        build_model("two_weight", w1=0.5, w2=-1.0),
        data_spec={"name": "two_weight"},
        loss="mse",
    )
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    assert model.w1.item() == 0.5
    assert model.w2.item() == -1.0
    data = checkpoint_data(ckpt, dtype=torch.float64)
    assert data.inputs.dtype == torch.float64
    assert len(data) == 1
    assert ckpt.get_loss().__name__ == "mse"


def test_library_defaults_trust_the_caller(tmp_path: Path) -> None:
    module = tmp_path / "mine.py"
    module.write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 1)\n")
    assert isinstance(model_from_spec({"name": f"{module}:make"}), torch.nn.Linear)
    with pytest.raises(UnsafeCheckpointError, match="names code"):
        model_from_spec({"name": f"{module}:make"}, trust=False, source="file 'x'")
    assert callable(get_loss("torch.nn.functional:mse_loss"))
    with pytest.raises(UnsafeCheckpointError):
        get_loss("torch.nn.functional:mse_loss", trust=False)
    with pytest.raises(UnsafeCheckpointError):
        data_from_spec({"name": "os:getcwd"}, trust=False)
    with pytest.raises(UnsafeCheckpointError):
        load_object("os:getcwd", what="data function", trust=False)
    assert load_object("os:getcwd", trust=True)() is not None


def test_normalise_data_spec_refuses_damaged_specs() -> None:
    assert normalise_data_spec("digits")["name"] == "digits"
    flat = normalise_data_spec({"name": "digits", "split": "test"})
    assert flat["kwargs"] == {"split": "test"}
    for bad in (3, [1], {"kwargs": {}}, {"name": "x", "kwargs": [1]}, ""):
        with pytest.raises(InputError):
            normalise_data_spec(bad)
    with pytest.raises(InputError, match="max_samples"):
        normalise_data_spec({"name": "digits", "max_samples": "many"})
    with pytest.raises(InputError, match="subset_seed"):
        normalise_data_spec({"name": "digits", "subset_seed": 2**70})


def test_relative_data_paths_resolve_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save(
        {"inputs": torch.ones(3, 1), "targets": torch.ones(3, 1)}, folder / "d.pt"
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    torch.save(
        {"inputs": torch.zeros(5, 1), "targets": torch.zeros(5, 1)}, other / "d.pt"
    )
    monkeypatch.chdir(other)  # a different d.pt here must not be read
    assert resolve_relative("d.pt", folder, "x") == str(folder / "d.pt")
    assert resolve_relative("digits", folder, "x") == "digits"
    assert resolve_relative("pkg.mod:fn", folder, "x") == "pkg.mod:fn"
    assert resolve_relative(str(other / "d.pt"), folder, "x") == str(other / "d.pt")
    save_checkpoint(
        folder / "m.ckpt", build_model("two_weight"), data_spec="d.pt", loss="mse"
    )
    data = checkpoint_data(load_checkpoint(folder / "m.ckpt"))
    assert len(data) == 3
    save_checkpoint(
        folder / "n.ckpt", build_model("two_weight"), data_spec="gone.pt", loss="mse"
    )
    with pytest.raises(InputError, match=r"relative to its own folder.*gone\.pt"):
        checkpoint_data(load_checkpoint(folder / "n.ckpt"))


# ---------------------------------------------------------------------- dtypes


def test_parse_dtype_reads_names_and_refuses_other_kinds() -> None:
    assert parse_dtype(None) is None
    assert parse_dtype(torch.float64) is torch.float64
    assert parse_dtype("float32") is torch.float32
    assert parse_dtype("torch.float32") is torch.float32
    assert parse_dtype("double") is torch.float64
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(InputError, match=r"unknown dtype 'float99'; use 'float32'"):
        parse_dtype("float99")
    with pytest.raises(InputError, match="unknown dtype 'int64'"):
        parse_dtype("int64")
    with pytest.raises(InputError, match="unknown dtype 'Tensor'"):
        parse_dtype("Tensor")  # an attribute of torch that is not a dtype
    for kind in (torch.int64, torch.bool, torch.complex64):
        with pytest.raises(InputError, match="must be a floating type"):
            parse_dtype(kind)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64]
)
def test_dtype_name_is_the_inverse_of_parse_dtype(dtype: torch.dtype) -> None:
    name = dtype_name(dtype)
    assert "." not in name
    assert parse_dtype(name) is dtype
    assert dtype_name(torch.int64) == "int64"
    assert dtype_name(torch.complex128) == "complex128"


def test_a_spec_file_imports_the_modules_next_to_it(
    tmp_path: Path, monkeypatch
) -> None:
    """``--model dir/model.py:make`` (and data and loss files) import their neighbours."""
    folder = tmp_path / "project"
    folder.mkdir()
    names = [f"critpoint_test_{part}" for part in ("blocks", "sizes", "halves")]
    for name in names:  # removed again whatever happens
        monkeypatch.delitem(sys.modules, name, raising=False)
    (folder / f"{names[0]}.py").write_text(
        "import torch\n"
        "def block(a, b):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Tanh())\n"
    )
    (folder / f"{names[1]}.py").write_text("WIDTH = 3\n")
    (folder / f"{names[2]}.py").write_text(
        "import torch\n"
        "def half_mse(out, y):\n"
        "    return 0.5 * torch.nn.functional.mse_loss(out, y)\n"
    )
    (folder / "model.py").write_text(
        "import torch\n"
        f"from {names[0]} import block\n"
        "def make():\n"
        "    return torch.nn.Sequential(block(2, 3), torch.nn.Linear(3, 1))\n"
    )
    (folder / "data.py").write_text(
        "import torch\n"
        f"from {names[1]} import WIDTH\n"
        "def make():\n"
        "    return torch.ones(WIDTH, 2), torch.zeros(WIDTH, 1)\n"
    )
    (folder / "loss.py").write_text(f"from {names[2]} import half_mse\n")
    monkeypatch.chdir(tmp_path)  # not the files' folder
    before = list(sys.path)
    model = build_model(f"{folder}/model.py:make")
    assert model[0][0].out_features == 3
    assert len(data_from_spec(f"{folder}/data.py:make")) == 3
    loss = get_loss("project/loss.py:half_mse")
    assert float(loss(torch.tensor([[2.0]]), torch.zeros(1, 1))) == 2.0
    assert sys.path == before  # restored after each file ran
    assert all(name in sys.modules for name in names)


def test_on_sys_path_restores_the_path_on_errors(tmp_path: Path) -> None:
    before = list(sys.path)
    seen = []

    def fail() -> None:
        with on_sys_path(tmp_path):
            seen.append(sys.path[0])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert seen == [str(tmp_path)]
    assert sys.path == before
    with on_sys_path(tmp_path):
        sys.path.insert(0, str(tmp_path))  # the block adds the same folder itself
    assert sys.path == [str(tmp_path), *before]
    sys.path.remove(str(tmp_path))
