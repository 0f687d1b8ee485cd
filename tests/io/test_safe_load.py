"""The safe reader: sniffing, refusing code and bombs, never running a pickle."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from critpoint.data import load_data
from critpoint.errors import CheckpointError, InputError, UnsafeCheckpointError
from critpoint.io._safe_load import (
    check_file,
    load_tensor_dict,
    read_checkpoint_file,
    sniff,
    unsafe_globals,
)
from critpoint.io.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from critpoint.models import build_model


class _Marker:
    """Unpickling this object would create a file: the stand-in for malicious code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"state_dict": {"w": torch.ones(1)}, "payload": _Marker(str(marker))}, path
    )
    assert not marker.exists()
    # ``open`` pickles as io.open, or _io.open from Python 3.12 on.
    with pytest.raises(
        UnsafeCheckpointError, match=r"needs code to unpickle — _?io\.open —"
    ) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "model.state_dict()" in message
    assert "safetensors" in message
    assert "trust=True" in message
    assert "--trust-checkpoint" in message
    assert not marker.exists()
    # The legacy (non-zip) format is scanned statically as well.
    legacy = tmp_path / "evil_legacy.pt"
    torch.save(
        {"payload": _Marker(str(marker))}, legacy, _use_new_zipfile_serialization=False
    )
    with pytest.raises(UnsafeCheckpointError, match=r"io\.open"):
        load_checkpoint(legacy)
    assert not marker.exists()


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)
def test_torchscript_is_refused(tmp_path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(nn.Linear(2, 1)).save(str(path))
    with pytest.raises(
        CheckpointError,
        match=r"TorchScript archive\. TorchScript is deprecated and torch\.func .* cannot run",
    ):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_checkpoint(path, trust=True)


def test_export_program_needs_trust(tmp_path) -> None:
    model = nn.Linear(2, 1)
    path = tmp_path / "prog.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(3, 2),)), str(path))
    with pytest.raises(
        UnsafeCheckpointError, match=r"torch\.export program \(\.pt2\).*trust=True"
    ):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust=True)
    assert ckpt.format == "export"
    assert set(ckpt.state_dict) == {"weight", "bias"}
    x = torch.randn(3, 2)
    torch.testing.assert_close(ckpt.build_model()(x), model(x))


def test_missing_empty_and_garbage_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope\.pt' not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"is a folder without config\.json"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt' is empty \(0 bytes\)"):
        load_checkpoint(empty)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(
        CheckpointError,
        match=r"garbage\.pt' is not a checkpoint: it is neither a torch\.save file nor safetensors",
    ):
        load_checkpoint(garbage)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"garbage garbage garbage")
    with pytest.raises(
        CheckpointError, match=r"bad\.safetensors' is not a readable safetensors file"
    ):
        load_checkpoint(bad_st)
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, build_model("mlp"))
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"truncated\.pt'"):
        load_checkpoint(truncated)


def test_load_tensor_dict(tmp_path) -> None:
    torch.save(
        {"inputs": torch.ones(2, 2), "targets": torch.zeros(2)}, tmp_path / "d.pt"
    )
    out = load_tensor_dict(tmp_path / "d.pt")
    assert set(out) == {"inputs", "targets"}
    with pytest.raises(InputError, match="not found"):
        load_tensor_dict(tmp_path / "none.pt")


def test_text_file_and_damaged_pickles_are_one_error(tmp_path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("hello world\nthis is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt'"):
        load_checkpoint(text)
    data = tmp_path / "d.pt"
    data.write_text("hello world\n")
    with pytest.raises(InputError, match=r"d\.pt'"):
        load_tensor_dict(data)


def test_compression_bomb_is_refused_before_inflating(tmp_path, monkeypatch) -> None:
    import zipfile

    path = tmp_path / "bomb.ckpt"
    save_checkpoint(path, build_model("two_weight"))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/data/9", bytes(32 << 20))  # 32 MiB of zeros, ~32 KB on disk
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"compressed \d+-fold to 32 MiB"):
        load_checkpoint(path)
    # Declared sizes beyond the free memory are refused too, stored or not.
    import critpoint._memory

    save_checkpoint(path, build_model("two_weight"))
    monkeypatch.setattr(critpoint._memory, "free_host_memory", lambda: 64)
    with pytest.raises(CheckpointError, match=r"more than the .* of free memory"):
        load_checkpoint(path)
    np.savez(tmp_path / "d.npz", inputs=np.ones((100, 3)), targets=np.ones(100))
    with pytest.raises(InputError, match=r"d\.npz' declares"):
        load_data(str(tmp_path / "d.npz"))


def test_read_checkpoint_file_says_how_it_read(tmp_path) -> None:
    state = {"w": torch.arange(3.0), "b": torch.tensor(-1.5)}
    for path, legacy in [(tmp_path / "z.pt", False), (tmp_path / "l.pt", True)]:
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        raw = read_checkpoint_file(path, trust=False, map_location="cpu")
        assert raw.kind == "pickle"
        assert raw.metadata == {}
        assert set(raw.obj) == {"w", "b"}
        assert all(torch.equal(raw.obj[k], v) for k, v in state.items())
    st = tmp_path / "s.safetensors"
    safetensors.torch.save_file(state, str(st), metadata={"author": "me"})
    raw = read_checkpoint_file(st, trust=False, map_location="cpu")
    assert raw.kind == "safetensors"
    assert raw.metadata == {"author": "me"}
    assert all(torch.equal(raw.obj[k], v) for k, v in state.items())
    prog = tmp_path / "p.pt2"
    model = nn.Linear(2, 1)
    torch.export.save(torch.export.export(model, (torch.randn(3, 2),)), str(prog))
    raw = read_checkpoint_file(prog, trust=True, map_location="cpu")
    assert raw.kind == "export"
    assert torch.equal(raw.obj.state_dict()["weight"], model.weight.detach())


def test_sniff_tells_zip_safetensors_and_other_apart(tmp_path) -> None:
    state = {"w": torch.ones(2)}
    torch.save(state, tmp_path / "z.pt")
    kind, names = sniff(tmp_path / "z.pt")
    assert kind == "zip"
    assert any(n.endswith("/data.pkl") for n in names)
    torch.save(state, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    assert sniff(tmp_path / "l.pt") == ("other", [])
    safetensors.torch.save_file(state, str(tmp_path / "s.bin"))
    assert sniff(tmp_path / "s.bin") == ("safetensors", [])
    # A '{' at byte 8 after a header length larger than the file is not safetensors.
    (tmp_path / "fake.bin").write_bytes(b"\xff" * 8 + b"{}")
    assert sniff(tmp_path / "fake.bin") == ("other", [])


def test_unsafe_globals_are_found_statically_in_both_formats(tmp_path) -> None:
    marker = tmp_path / "pwned"
    for legacy in (False, True):
        path = tmp_path / f"evil_{legacy}.pt"
        torch.save(
            {"w": torch.ones(2), "payload": _Marker(str(marker))},
            path,
            _use_new_zipfile_serialization=not legacy,
        )
        found = unsafe_globals(path, is_zip=not legacy)
        assert [g.rpartition(".")[2] for g in found] == ["open"], found
        safe = tmp_path / f"safe_{legacy}.pt"
        torch.save(
            {"w": torch.ones(2)}, safe, _use_new_zipfile_serialization=not legacy
        )
        assert unsafe_globals(safe, is_zip=not legacy) == []
    assert not marker.exists()


def test_check_file_raises_the_given_error(tmp_path) -> None:
    with pytest.raises(InputError, match=r"data file '.*gone' not found"):
        check_file(tmp_path / "gone", "data file", InputError)
    (tmp_path / "ok").write_bytes(b"x")
    check_file(tmp_path / "ok", "data file", InputError)


def test_trusted_pickle_imports_the_module_next_to_it(tmp_path, monkeypatch) -> None:
    """A whole pickled module whose class lives in a file beside the checkpoint."""
    import importlib
    import shutil
    import sys

    name = "critpoint_test_pickled_layers"
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        "import torch\n"
        "class Scaled(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(3, 2)\n"
        "    def forward(self, x):\n"
        "        return 2 * self.lin(x)\n"
    )
    sys.path.insert(0, str(folder))
    try:
        model = importlib.import_module(name).Scaled()
        torch.save(model, folder / "whole.pt")
    finally:
        sys.path.remove(str(folder))
        del sys.modules[name]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path_before = list(sys.path)
    ckpt = load_checkpoint(folder / "whole.pt", trust=True)
    assert sys.path == path_before  # the folder was on sys.path only while loading
    assert ckpt.format == "module"
    x = torch.randn(4, 3)
    torch.testing.assert_close(ckpt.module(x), model(x), rtol=0, atol=0)
    del sys.modules[name]
    # Moved away from its module: the message names the module and the fixes.
    shutil.copy(folder / "whole.pt", elsewhere / "whole.pt")
    with pytest.raises(
        CheckpointError,
        match=rf"defined in the module '{name}', which cannot be imported.*"
        rf"the folder that holds {name}\.py",
    ):
        load_checkpoint(elsewhere / "whole.pt", trust=True)
    assert name not in sys.modules
