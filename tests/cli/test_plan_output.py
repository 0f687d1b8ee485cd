"""critpoint diagnose: the cost said up front, and every product in the totals."""

from __future__ import annotations

from pathlib import Path

import pytest

from critpoint.analysis import plan as plan_module
from tests.cli.test_cli import invoke, parse_json, tiny_ckpt  # noqa: F401 (a fixture)


def test_the_estimate_is_printed_only_when_it_is_long(
    tiny_ckpt: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = invoke("--dtype", "float64", "diagnose", str(tiny_ckpt))
    assert r.exit_code == 0, r.stderr
    assert "Planned:" not in r.stderr  # a second at most: nothing said
    monkeypatch.setattr(plan_module, "ANNOUNCE_SECONDS", 0.0)
    r = invoke("--dtype", "float64", "diagnose", str(tiny_ckpt), "--json", "-")
    assert r.exit_code == 0, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("Planned: ")]
    doc = parse_json(r.stdout)  # the line is on standard error: the JSON stays pure
    plan = doc["cost_plan"]
    assert plan["summary"] in line
    assert line.startswith(f"Planned: ≈ {plan['products']:,} HVPs × ")
    # the density (8 × 43 of ≈ 450) is the largest share: the first way to shorten
    assert line.endswith("; --no-density to shorten")
    phases = {p["name"]: p["products"] for p in plan["phases"]}
    assert phases["trace"] == doc["num_matvecs_by_phase"]["trace"] == 43
    r = invoke("--quiet", "diagnose", str(tiny_ckpt))
    assert "Planned:" not in r.stderr


def test_per_layer_and_report_work_are_planned_and_counted(
    tiny_ckpt: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plan_module, "ANNOUNCE_SECONDS", 0.0)
    js = tmp_path / "d.json"
    r = invoke(
        "--dtype", "float64",
        "diagnose", str(tiny_ckpt),
        "--per-layer", "--no-density", "--json", str(js),
        "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("Planned: ")]
    assert "layers in one pass ≈ " in line
    assert "loss evaluations" in line  # the landscape's 2·41 + 21²
    doc = parse_json(js.read_text())
    layers = sum(x["diagnosis"]["num_matvecs"] for x in doc["per_layer"])
    assert layers > 0
    total = doc["num_matvecs"] + layers
    assert doc["total_matvecs"] == total
    assert (
        f"{total:,} Hessian-vector products ({doc['num_matvecs']:,} for the whole model)"
        in r.stdout
    )


def test_a_budget_too_small_for_the_fixed_phases_is_one_error_line(
    tiny_ckpt: Path,  # noqa: F811
) -> None:
    r = invoke("diagnose", str(tiny_ckpt), "--max-matvecs", "100")
    assert r.exit_code == 1
    assert r.stderr.startswith("critpoint: error: max_matvecs=100 counts every")
    assert "--no-density" in r.stderr
