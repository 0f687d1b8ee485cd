"""What the commands write, and where: never over an input, whole, with any file name."""

from __future__ import annotations

import json
import os
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest

from critpoint.io.checkpoint import save_checkpoint
from critpoint.models import build_model
from tests.cli.test_cli import invoke, one_error_line

FAST = ["--no-density", "--no-trace"]


@pytest.fixture
def saddle(tmp_path: Path) -> Path:
    path = tmp_path / "s.ckpt"
    save_checkpoint(path, build_model("two_weight"), data_spec="two_weight", loss="mse")
    return path


def test_an_output_that_is_an_input_is_refused_at_once(
    saddle: Path, tmp_path: Path
) -> None:
    before = saddle.read_bytes()
    line = one_error_line(invoke("diagnose", str(saddle), "--json", str(saddle)))
    assert "is the same file as the checkpoint" in line
    out = tmp_path / "o.ckpt"
    line = one_error_line(
        invoke("escape", str(saddle), "-o", str(out), "--json", str(out))
    )
    assert "--json" in line
    assert "is the same file as -o" in line
    assert not out.exists()
    line = one_error_line(invoke("escape", str(saddle), "-o", str(saddle)))
    assert "same file as the checkpoint" in line
    link = tmp_path / "alias.ckpt"
    link.symlink_to(saddle)
    one_error_line(invoke("diagnose", str(link), "--json", str(saddle)))
    assert saddle.read_bytes() == before

    np.savez(tmp_path / "d.npz", inputs=np.ones((4, 1)), targets=np.ones((4, 1)))
    line = one_error_line(
        invoke(
            "train", "--model", "two_weight", "--data", str(tmp_path / "d.npz"),
            "-o", str(tmp_path / "d.npz"),
        )
    )  # fmt: skip
    assert "same file as --data" in line


def test_report_folder_and_json_do_not_collide(saddle: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    line = one_error_line(
        invoke("diagnose", str(saddle), *FAST, "--report", str(rep),
               "--json", str(rep / "diagnosis.json"))
    )  # fmt: skip
    assert "same file" in line
    r = invoke("diagnose", str(saddle), *FAST, "--report", str(rep))
    assert r.exit_code == 0, r.stderr
    # Re-rendering over the diagnosis being read is refused; elsewhere it works.
    line = one_error_line(invoke("report", str(rep / "diagnosis.json"), "-o", str(rep)))
    assert "diagnosis file" in line
    r = invoke("report", str(rep / "diagnosis.json"), "-o", str(tmp_path / "again"))
    assert r.exit_code == 0, r.stderr


def test_json_to_dev_null(saddle: Path) -> None:
    r = invoke("diagnose", str(saddle), *FAST, "--json", "/dev/null")
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_permissions_of_a_replaced_output_are_kept(
    saddle: Path, tmp_path: Path
) -> None:
    js = tmp_path / "private.json"
    js.write_text("{}")
    js.chmod(0o600)
    r = invoke("diagnose", str(saddle), *FAST, "--json", str(js))
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE(js.stat().st_mode) == 0o600
    assert json.loads(js.read_text())["kind"] == "saddle"


def test_k_beyond_the_parameter_count_is_refused(saddle: Path) -> None:
    line = one_error_line(invoke("diagnose", str(saddle), "-k", "5"))
    assert "-k 5" in line
    assert "2 parameters" in line


@pytest.mark.parametrize("option", ["--loss", "--model", "--data"])
def test_empty_spec_options_are_errors(saddle: Path, option: str) -> None:
    line = one_error_line(invoke("diagnose", str(saddle), option, ""))
    assert option in line
    assert "empty" in line


def test_seed_out_of_range_is_a_usage_error(saddle: Path) -> None:
    r = invoke("--seed", str(2**70), "diagnose", str(saddle))
    assert r.exit_code == 2
    assert "--seed" in r.stderr
    assert "unexpected" not in r.stderr


def test_try_escape_hint_is_shell_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "my runs; rm -rf x"
    folder.mkdir()
    path = folder / "it's.ckpt"
    save_checkpoint(path, build_model("two_weight"), data_spec="two_weight", loss="mse")
    r = invoke("diagnose", str(path), *FAST)
    assert r.exit_code == 0, r.stderr
    line = next(s for s in r.stdout.splitlines() if "Try: " in s)
    command = line.split("Try: ", 1)[1]
    words = shlex.split(command)
    assert words[:3] == ["critpoint", "escape", str(path)]
    assert words[3:] == ["-o", str(folder / "it's-escaped.ckpt")]


def test_relative_data_path_is_read_from_the_checkpoints_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    x = np.linspace(-1, 1, 8).reshape(8, 1)
    np.savez(run / "data.npz", inputs=x, targets=2 * x)
    monkeypatch.chdir(run)
    r = invoke(
        "train", "--model", "two_weight", "--data", "data.npz", "--steps", "2",
        "--loss", "mse", "-o", "out/m.ckpt",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    other = tmp_path / "elsewhere"
    other.mkdir()
    np.savez(other / "data.npz", inputs=np.ones((3, 1)), targets=np.ones((3, 1)))
    monkeypatch.chdir(other)  # a different data.npz here must not be used
    r = invoke("diagnose", str(run / "out" / "m.ckpt"), *FAST, "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["settings"]["num_samples"] == 8
    # A checkpoint naming a relative file that is not beside it: said so.
    save_checkpoint(
        run / "lost.ckpt", build_model("two_weight"), data_spec="gone.npz", loss="mse"
    )
    line = one_error_line(invoke("diagnose", str(run / "lost.ckpt")))
    assert "relative to its own folder" in line
    assert "gone.npz" in line


def test_a_file_name_that_is_not_utf8_does_not_break_the_report(
    tmp_path: Path,
) -> None:
    name = os.fsdecode(b"caf\xe9-\xff.ckpt")  # Latin-1 bytes: not UTF-8
    path = tmp_path / name
    save_checkpoint(path, build_model("two_weight"), data_spec="two_weight", loss="mse")
    rep = tmp_path / "rep"
    r = invoke("diagnose", str(path), *FAST, "--report", str(rep))
    assert r.exit_code == 0, r.stderr
    page = (rep / "report.html").read_text(encoding="utf-8")
    assert "caf\ufffd-\ufffd.ckpt" in page
    assert "\ufffd" in r.stdout
    r = invoke("report", str(rep / "diagnosis.json"), "-o", str(tmp_path / "again"))
    assert r.exit_code == 0, r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_one_line(saddle: Path, tmp_path: Path) -> None:
    line = one_error_line(invoke("escape", str(saddle), "-o", "/dev/full"))
    assert "could not write '/dev/full'" in line
    line = one_error_line(invoke("diagnose", str(saddle), *FAST, "--json", "/dev/full"))
    assert "No space left on device" in line


def test_checkpoint_to_dev_stdout_goes_through_the_descriptor(
    saddle: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    r = invoke("escape", str(saddle), "-o", "/dev/stdout", "--max-steps", "1")
    assert r.exit_code == 0, r.stderr
    written = capfdbinary.readouterr().out
    assert written[:2] == b"PK"  # a torch.save zip archive, on file descriptor 1
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(written)
    from critpoint.io.checkpoint import load_checkpoint

    assert load_checkpoint(copy).meta["escape"]["from"] == str(saddle)
