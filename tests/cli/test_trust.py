"""On the command line, code runs only where the user names it.

A checkpoint whose model, data or loss spec names code (``os:system``,
``runpy:run_path``, ``file.py:function``) is refused by every command that
reads one, with one line giving the two ways on; ``critpoint report`` never
resolves the specs a saved diagnosis shows. The marker file the code would
create never appears, except with ``--trust-checkpoint`` (which shows the test
can fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critpoint.io.checkpoint import save_checkpoint
from critpoint.models import build_model
from tests.cli.test_cli import invoke, one_error_line
from tests.test_specs import FIELDS, FORMS, evil_specs, write_evil

FAST = ["-k", "2", "--no-density", "--no-trace"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("command", ["diagnose", "escape"])
def test_commands_refuse_code_named_in_a_checkpoint(
    tmp_path: Path, command: str, field: str, form: str
) -> None:
    path = write_evil(tmp_path, field, form)
    args = [command, str(path)]
    if command == "escape":
        args += ["-o", str(tmp_path / "out.ckpt"), "--max-steps", "1"]
    else:
        args += FAST
    line = one_error_line(invoke(*args))
    assert "names code" in line
    assert "--trust-checkpoint" in line
    option = {"model_spec": "--model", "data_spec": "--data", "loss": "--loss"}[field]
    assert option in line
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("field", FIELDS)
def test_safetensors_metadata_is_refused_too(tmp_path: Path, field: str) -> None:
    path = write_evil(tmp_path, field, "os_system", ".safetensors")
    line = one_error_line(invoke("diagnose", str(path), *FAST))
    assert "names code" in line
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    ("field", "override"),
    [
        ("model_spec", ["--model", "two_weight"]),
        ("data_spec", ["--data", "two_weight"]),
        ("loss", ["--loss", "mse"]),
    ],
)
def test_naming_it_yourself_is_one_way_on(
    tmp_path: Path, field: str, override: list[str]
) -> None:
    path = write_evil(tmp_path, field, "os_system")
    r = invoke("diagnose", str(path), *override, *FAST, "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["num_params"] == 2
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("field", FIELDS)
def test_trust_checkpoint_is_the_other(tmp_path: Path, field: str) -> None:
    path = write_evil(tmp_path, field, "file_py")
    r = invoke("diagnose", str(path), "--trust-checkpoint", *FAST, "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "marker").exists()


def test_code_the_user_names_on_the_command_line_runs(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    save_checkpoint(path, build_model("two_weight"), data_spec="two_weight", loss="mse")
    module = tmp_path / "mine.py"
    module.write_text(
        f"open({str(tmp_path / 'ran')!r}, 'w').close()\n"
        "from critpoint.models import TwoWeight\n"
        "def make():\n    return TwoWeight()\n"
    )
    r = invoke("diagnose", str(path), "--model", f"{module}:make", *FAST)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "ran").exists()


def test_report_never_resolves_the_specs_it_shows(tmp_path: Path) -> None:
    path = tmp_path / "ok.ckpt"
    save_checkpoint(path, build_model("two_weight"), data_spec="two_weight", loss="mse")
    js = tmp_path / "d.json"
    r = invoke("diagnose", str(path), *FAST, "--json", str(js))
    assert r.exit_code == 0, r.stderr
    doc = json.loads(js.read_text())
    specs = evil_specs(tmp_path)
    for form in FORMS:
        doc["settings"]["model"] = specs[form]["model_spec"]
        doc["settings"]["data"] = specs[form]["data_spec"]
        doc["settings"]["loss"] = specs[form]["loss"]
        doc["settings"]["checkpoint"] = specs[form]["loss"]
        js.write_text(json.dumps(doc))
        r = invoke("report", str(js), "-o", str(tmp_path / f"report-{form}"))
        assert r.exit_code == 0, r.stderr
        page = (tmp_path / f"report-{form}" / "report.html").read_text()
        assert "system" in page or "run_path" in page or "evil_module" in page
    assert not (tmp_path / "marker").exists()


def test_help_says_that_named_code_runs() -> None:
    for command in ("diagnose", "escape", "train"):
        text = " ".join(invoke(command, "--help").stdout.split())
        assert "imported and run: it is your code" in text, command
    text = " ".join(invoke("diagnose", "--help").stdout.split())
    assert "--trust-checkpoint" in text
    assert "names" in text


def test_trusted_export_program_is_diagnosed(tmp_path: Path) -> None:
    """A ``.pt2`` program cannot switch to eval mode; it is analysed as exported."""
    import torch

    model = build_model("mlp", in_features=3, widths=[4], out_features=2, seed=0)
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        model.eval(), (torch.randn(4, 3),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, tmp_path / "m.pt2")
    gen = torch.Generator().manual_seed(0)
    torch.save(
        {
            "inputs": torch.randn(10, 3, generator=gen),
            "targets": torch.randint(0, 2, (10,), generator=gen),
        },
        tmp_path / "d.pt",
    )
    args = ["diagnose", str(tmp_path / "m.pt2"), "--data", str(tmp_path / "d.pt")]
    line = one_error_line(invoke(*args))
    assert "--trust-checkpoint" in line
    r = invoke(*args, "--trust-checkpoint", *FAST, "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["num_params"] == 3 * 4 + 4 + 4 * 2 + 2
    # The same numbers as the model it was exported from.
    import critpoint as cp

    data = torch.load(tmp_path / "d.pt")
    obj = cp.Objective(
        model, torch.nn.functional.cross_entropy, (data["inputs"], data["targets"])
    )
    assert doc["loss"] == pytest.approx(obj.loss(), rel=1e-6)
    r = invoke(*args, "--trust-checkpoint", *FAST)
    # a random start is not critical: the advice is to train, not to escape
    assert "keep training" in r.stdout
    assert "Try: critpoint escape" not in r.stdout
    from critpoint_cli.commands._common import escaped_name

    assert escaped_name(str(tmp_path / "m.pt2")) == str(tmp_path / "m-escaped.ckpt")


def test_trusted_relative_code_paths_are_read_from_the_checkpoints_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.py").write_text(
        "import torch\n"
        "from critpoint.models import TwoWeight\n"
        "def make():\n    return TwoWeight()\n"
        "def loss(outputs, targets):\n    return ((outputs - targets) ** 2).mean()\n"
    )
    monkeypatch.chdir(run)
    r = invoke(
        "train", "--model", "mine.py:make", "--data", "two_weight", "--loss",
        "mine.py:loss", "--steps", "2", "-o", "out/m.ckpt",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    monkeypatch.chdir(tmp_path)
    ckpt = run / "out" / "m.ckpt"
    line = one_error_line(invoke("diagnose", str(ckpt), *FAST))
    assert "names code" in line
    r = invoke("diagnose", str(ckpt), "--trust-checkpoint", *FAST, "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert (
        json.loads(r.stdout)["settings"]["model"]["name"]
        == str(run / "out" / "../mine.py") + ":make"
    )
    r = invoke(
        "escape", str(ckpt), "--trust-checkpoint", "-o", str(tmp_path / "e.ckpt")
    )
    assert r.exit_code == 0, r.stderr
    r = invoke("diagnose", str(tmp_path / "e.ckpt"), "--trust-checkpoint", *FAST)
    assert r.exit_code == 0, r.stderr
