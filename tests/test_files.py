"""The one writer: whole files, kept permissions, links followed, devices written through."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import torch

from critpoint._files import (
    atomic_path,
    check_outputs,
    write_bytes_atomic,
    write_folder,
    write_text_atomic,
)
from critpoint.errors import InputError, OutputError
from critpoint.io.checkpoint import load_checkpoint, save_checkpoint
from critpoint.models import build_model


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a" / "new.txt", "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a" / "new.txt") == 0o640
    assert (tmp_path / "a" / "new.txt").read_text() == "x"


def test_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text("old")
    path.chmod(0o600)
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert mode(path) == 0o600
    save_checkpoint(path.with_suffix(".ckpt"), build_model("two_weight"))
    path.with_suffix(".ckpt").chmod(0o640)
    save_checkpoint(path.with_suffix(".ckpt"), build_model("two_weight", w1=1.0))
    assert mode(path.with_suffix(".ckpt")) == 0o640


def test_symlink_writes_its_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.json"
    target.write_text("old")
    target.chmod(0o604)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink()
    assert target.read_text() == "new"
    assert mode(target) == 0o604
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "later.json")
    write_text_atomic(dangling, "made")
    assert dangling.is_symlink()
    assert (tmp_path / "real" / "later.json").read_text() == "made"
    # No temporary files left next to the link or the target.
    assert sorted(os.listdir(tmp_path / "real")) == ["later.json", "out.json"]


def test_fifo_is_written_straight_through(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    save_checkpoint(fifo, build_model("two_weight", w1=1.5))
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not a file
    (tmp_path / "copy.ckpt").write_bytes(got[0])
    assert load_checkpoint(tmp_path / "copy.ckpt").state_dict["w1"].item() == 1.5


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_character_device_is_not_replaced(tmp_path: Path) -> None:
    null = tmp_path / "null"  # a private /dev/null: the real one is never at risk
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    write_text_atomic(null, "gone")
    save_checkpoint(null, build_model("two_weight"))
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["null"]


def test_dev_null_and_dev_full(tmp_path: Path) -> None:
    write_text_atomic("/dev/null", "nothing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    if os.path.exists("/dev/full"):
        with pytest.raises(OutputError, match=r"could not write '/dev/full'"):
            write_text_atomic("/dev/full", "x" * 100_000)


def test_failure_names_the_users_path_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, build_model("two_weight", w1=2.0))

    def torch_full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        msg = f"[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0 writing {f}: file write failed"
        raise RuntimeError(msg)

    original = torch.save
    torch.save = torch_full_disk
    try:
        with pytest.raises(OutputError) as info:
            save_checkpoint(path, build_model("two_weight", w1=3.0))
    finally:
        torch.save = original
    message = str(info.value)
    assert f"could not write {str(path)!r}" in message
    assert ".tmp" not in message
    assert load_checkpoint(path).state_dict["w1"].item() == 2.0
    assert sorted(os.listdir(tmp_path)) == ["c.ckpt"]


def test_interrupt_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")

    def interrupted() -> None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["x.bin"]


def test_read_only_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        write_bytes_atomic(tmp_path, b"x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"could not write .*file/out\.json"):
        write_text_atomic(blocker / "out.json", "x")


def test_write_folder_is_a_unit(tmp_path: Path) -> None:
    out = tmp_path / "report"
    owned = ["report.html", "a.png", "b.png"]
    write_folder(
        out,
        {"a.png": b"A1", "b.png": b"B1", "report.html": b"R1"},
        owned,
        "report.html",
    )
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "report.html"]
    (out / "notes.txt").write_text("mine")
    # The second set has no b.png: it is removed; other files stay.
    write_folder(out, {"a.png": b"A2", "report.html": b"R2"}, owned, "report.html")
    assert sorted(os.listdir(out)) == ["a.png", "notes.txt", "report.html"]
    assert (out / "report.html").read_bytes() == b"R2"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_check_outputs_refuses_inputs_and_duplicates(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"x")
    link = tmp_path / "alias.ckpt"
    link.symlink_to(ckpt)
    with pytest.raises(
        InputError, match=r"--json .* is the same file as the checkpoint"
    ):
        check_outputs([("--json", str(ckpt))], [("the checkpoint", str(ckpt))])
    with pytest.raises(InputError, match="same file"):
        check_outputs([("-o", str(link))], [("the checkpoint", str(ckpt))])
    new = tmp_path / "new.ckpt"
    with pytest.raises(InputError, match=r"--json .* is the same file as -o"):
        check_outputs([("-o", str(new)), ("--json", str(new))])
    check_outputs(
        [("-o", str(new)), ("--json", "-"), ("--report", "/dev/null")],
        [("the checkpoint", str(ckpt)), ("--data", None)],
    )


def test_write_folder_failing_midway_leaves_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    owned = ["report.html", "a.png", "b.png"]
    old = {"a.png": b"A1", "b.png": b"B1", "report.html": b"R1"}
    write_folder(out, old, owned, "report.html")
    calls = []
    real = Path.write_bytes

    def disk_full_on_second(self: Path, data: bytes) -> int:
        calls.append(self)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_on_second)
    new = {"a.png": b"A2", "b.png": b"B2", "report.html": b"R2"}
    with pytest.raises(OutputError, match=r"could not write .*report'.*No space left"):
        write_folder(out, new, owned, "report.html")
    monkeypatch.undo()
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == old
    assert sorted(os.listdir(tmp_path)) == ["report"]  # no staging folder left
