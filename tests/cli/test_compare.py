"""critpoint diagnose a.pt b.pt c.pt and critpoint report a.json b.json: one comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critpoint.io.checkpoint import load_checkpoint, save_checkpoint
from critpoint.models import build_model
from tests.cli.test_cli import MODEL, TEACHER, invoke, parse_json

KEYS = ("loss", "lambda_min", "lambda_max", "eigenvalues", "minimum_ratio", "kind")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A training run's folder: three checkpoints storing their step, saved out of order."""
    folder = tmp_path_factory.mktemp("run")
    paths = []
    for seed, step in ((0, 100), (1, 20), (2, 300)):
        path = folder / f"step-{step}.ckpt"
        save_checkpoint(
            path,
            build_model("mlp", seed=seed, **MODEL),
            data_spec={"name": "teacher", "kwargs": TEACHER},
            loss="cross_entropy",
            meta={"step": step},
        )
        paths.append(path)
    return paths


def test_several_checkpoints_give_one_comparison_with_the_single_numbers(
    run_folder: list[Path], tmp_path: Path
) -> None:
    js, report = tmp_path / "cmp.json", tmp_path / "report"
    args = ("--dtype", "float64", "diagnose")
    r = invoke(*args, *map(str, run_folder), "--json", str(js), "--report", str(report))
    assert r.exit_code == 0, r.stderr
    doc = parse_json(js.read_text())
    assert doc["schema"] == "critpoint.report"
    entries = doc["entries"]
    # in the order of the steps the checkpoints store
    in_order = [run_folder[i] for i in (1, 0, 2)]
    assert [e["label"] for e in entries] == [p.name for p in in_order]
    assert [e["step"] for e in entries] == [20, 100, 300]
    for path, entry in zip(in_order, entries, strict=True):
        one = invoke(*args, str(path), "--json", "-")
        assert one.exit_code == 0, one.stderr
        single = parse_json(one.stdout)
        assert single["step"] == entry["step"]
        for key in KEYS:
            assert entry["diagnosis"][key] == single[key], key
    # the text: each verdict, then a row per checkpoint
    table = r.stdout.split("All checkpoints:\n")[1].splitlines()
    assert table[0].split()[:3] == ["checkpoint", "step", "kind"]
    assert [row.split()[0] for row in table[2:5]] == [p.name for p in in_order]
    assert table[5].startswith("Comparison report written to ")
    assert r.stdout.count("Verdict") == 3
    # the report: one page, a summary row and a trend point per checkpoint
    page = (report / "report.html").read_text()
    assert (report / "trend.png").stat().st_size > 0
    assert "Across the points" in page
    assert page.count("<td class='text'>step-") == 3
    saved = json.loads((report / "diagnosis.json").read_text())
    assert [e["diagnosis"]["lambda_min"] for e in saved["entries"]] == [
        e["diagnosis"]["lambda_min"] for e in entries
    ]


def test_report_of_several_saved_diagnoses(
    run_folder: list[Path], tmp_path: Path
) -> None:
    files = []
    for path in run_folder:
        out = tmp_path / f"{path.stem}.json"
        r = invoke("diagnose", str(path), "--no-density", "--json", str(out))
        assert r.exit_code == 0, r.stderr
        files.append(out)
    r = invoke("report", *map(str, files), "-o", str(tmp_path / "cmp"))
    assert r.exit_code == 0, r.stderr
    saved = json.loads((tmp_path / "cmp" / "diagnosis.json").read_text())
    assert [e["label"] for e in saved["entries"]] == [
        run_folder[i].name for i in (1, 0, 2)
    ]
    assert [e["step"] for e in saved["entries"]] == [20, 100, 300]
    for file, entry in zip(
        [files[i] for i in (1, 0, 2)], saved["entries"], strict=True
    ):
        single = json.loads(file.read_text())
        for key in KEYS:
            assert entry["diagnosis"][key] == single[key], key
    assert (tmp_path / "cmp" / "trend.png").is_file()
    # re-rendered from its own JSON: the same entries
    again = invoke(
        "report", str(tmp_path / "cmp" / "diagnosis.json"), "-o", str(tmp_path / "b")
    )
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "b" / "trend.png").is_file()


def test_a_checkpoint_says_its_step(tmp_path: Path) -> None:
    import torch

    model = build_model("mlp", seed=0, **MODEL)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": model.state_dict(), "global_step": 7, "epoch": 1}, plain)
    assert load_checkpoint(plain).step == ("global_step", 7)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    assert load_checkpoint(bare).step is None


def test_an_unconverged_checkpoint_exits_3_after_the_comparison_is_written(
    run_folder: list[Path], tmp_path: Path
) -> None:
    js = tmp_path / "partial.json"
    r = invoke(
        "--dtype", "float64", "diagnose", *map(str, run_folder[:2]),
        "--max-matvecs", "5", "--tol", "1e-9", "--no-density", "--no-trace",
        "--json", str(js),
    )  # fmt: skip
    assert r.exit_code == 3, r.stderr
    assert "step-100.ckpt (the whole model), step-20.ckpt (the whole model)" in (
        r.stderr
    )
    doc = parse_json(js.read_text())
    assert [e["diagnosis"]["converged"] for e in doc["entries"]] == [False, False]
    assert all(e["diagnosis"]["num_matvecs"] <= 5 for e in doc["entries"])
