"""Plain text: the verdict block, the per-layer table, the escape steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import critpoint as cp
from critpoint.analysis.diagnosis import with_error
from critpoint.report.text import (
    LABEL,
    WIDTH,
    diagnosis_text,
    escape_text,
    field_line,
    layer_table,
    num,
    ratio_text,
)


def test_num_and_field_line() -> None:
    assert num(None) == "n/a"
    assert num(float("nan")) == "n/a"
    assert num(1 / 3) == "0.333333"
    assert num(12345.678, 3) == "1.23e+04"
    assert num("text") == "text"
    line = field_line("Label", "word " * 30)
    rows = line.splitlines()
    assert rows[0].startswith("Label" + " " * (LABEL - 5) + "word")
    assert all(len(r) <= WIDTH for r in rows)
    assert all(r.startswith(" " * LABEL) for r in rows[1:])


def test_diagnosis_text_gives_the_diagnosis_numbers(material: dict) -> None:
    dg = material["entries"][0].diagnosis
    text = diagnosis_text(dg, header="model.ckpt: an MLP", hint="Try: this")
    lines = text.splitlines()
    assert lines[:2] == ["model.ckpt: an MLP", ""]
    assert lines[2] == field_line("Verdict", dg.headline())
    assert field_line("Loss", f"{dg.loss:.6g}") in lines
    assert (
        field_line("λ_min", f"{dg.lambda_min:.6g} ± {dg.lambda_min_error:.2g}") in lines
    )
    ratio = with_error(dg.minimum_ratio, dg.minimum_ratio_stderr)
    assert " ± " in ratio  # several probes: an error bar
    assert f"Minimum ratio  {ratio}  (" in text
    assert field_line("BatchNorm", dg.bn_text()) in lines
    assert f"Trace          {dg.trace.value:.6g} ± " in text
    assert " " * LABEL + "Try: this" in lines
    assert "Warning" not in text  # converged


def test_layer_table_has_one_row_per_layer(material: dict) -> None:
    table = layer_table(material["layers"]).splitlines()
    assert table[0].split()[:4] == ["layer", "type", "params", "kind"]
    assert set(table[1]) <= {"-", " "}
    assert len(table) == 2 + len(material["layers"])
    for row, layer in zip(table[2:], material["layers"], strict=True):
        dg = layer.diagnosis
        assert row.startswith(layer.name)
        assert f"{dg.num_params:,}" in row
        assert f"{dg.lambda_max:.4g} ± " in row
        assert row.endswith(f"{dg.minimum_ratio:.4g}")


def test_escape_text_lists_the_steps() -> None:
    from critpoint.testing import TwoWeight

    one = torch.ones(1, 1, dtype=torch.float64)
    run = cp.escape_until(cp.Objective(TwoWeight(), F.mse_loss, (one, one)), 2)
    text = escape_text(run)
    assert text.startswith("Step 1         λ_min = -2 ± ")
    flat = " ".join(text.split())  # the lines wrap
    assert "moved 1; loss 1 → 0.25 (predicted change -1, actual -0.75)" in flat
    assert "Step 2 stopped: no clearly negative curvature" in flat
    assert text.splitlines()[-1] == field_line(
        "Loss",
        f"1 → {run.loss_after:.6g} after {run.num_steps_taken} escape "
        f"step{'s' if run.num_steps_taken != 1 else ''}",
    )


def test_ratio_text_keeps_only_the_digits_the_error_leaves() -> None:
    from types import SimpleNamespace

    d = SimpleNamespace(minimum_ratio=0.8312, minimum_ratio_stderr=0.0437)
    assert ratio_text(d) == "0.83 ± 0.04"
    d = SimpleNamespace(minimum_ratio=0.8312, minimum_ratio_stderr=None)
    assert ratio_text(d) == "0.8312"
    assert ratio_text(SimpleNamespace(minimum_ratio=None)) == "n/a"
