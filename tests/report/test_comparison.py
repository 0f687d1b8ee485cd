"""comparison: many points against their steps, a table, saved reports merged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from critpoint.errors import InputError
from critpoint.report import ReportDocument
from critpoint.report.comparison import (
    by_step,
    checkpoint_axis,
    comparison_table,
    merge_reports,
    plot_trend,
    unique_labels,
)


def test_axis_is_the_steps_when_each_point_has_its_own(material: dict) -> None:
    first, last = material["entries"]
    x, label = checkpoint_axis([first, last])
    np.testing.assert_array_equal(x, [0.0, 25.0])
    assert label.startswith("training step")
    x, label = checkpoint_axis([first, replace(last, step=None)])
    np.testing.assert_array_equal(x, [1.0, 2.0])
    assert label.startswith("checkpoint")
    x, _ = checkpoint_axis([first, replace(last, step=0)])  # two at one step
    np.testing.assert_array_equal(x, [1.0, 2.0])
    assert by_step([last, first]) == [first, last]
    assert by_step([last, replace(first, step=None)])[0] is last


def test_trend_draws_each_number_of_each_point(material: dict) -> None:
    first, last = material["entries"]
    fig = plot_trend([last, first])  # given out of order: the lines follow the steps
    axes = {ax.get_title(): ax for ax in fig.axes}
    expected = {
        "loss": [first.diagnosis.loss, last.diagnosis.loss],
        "minimum ratio": [first.diagnosis.minimum_ratio, last.diagnosis.minimum_ratio],
    }
    for title, values in expected.items():
        (line,) = axes[title].lines
        np.testing.assert_array_equal(line.get_xdata(), [0.0, 25.0])
        np.testing.assert_allclose(line.get_ydata(), values)
    (lam_min,) = [ax for t, ax in axes.items() if t.startswith("λ_min")]
    ys = [line.get_ydata() for line in lam_min.lines if len(line.get_ydata()) == 2]
    assert any(
        np.allclose(y, [first.diagnosis.lambda_min, last.diagnosis.lambda_min])
        for y in ys
    )


def test_table_has_a_row_per_point(material: dict) -> None:
    first, last = material["entries"]
    lines = comparison_table([first, last]).splitlines()
    assert lines[0].split() == [
        "checkpoint",
        "step",
        "kind",
        "loss",
        "λ_min",
        "±",
        "bound",
        "λ_max",
        "±",
        "bound",
        "min.",
        "ratio",
        "HVPs",
    ]
    assert set(lines[1]) <= {"-", " "}
    row = lines[3]
    assert row.startswith("after 25 steps")
    assert f"{last.diagnosis.minimum_ratio:.4g}" in row
    assert row.endswith(f"{last.diagnosis.num_matvecs:,}")


def test_merge_keeps_every_entry_the_last_history_and_the_sources(
    material: dict,
) -> None:
    first, last = material["entries"]
    a = ReportDocument("a", [last], history={"loss": [1.0, 0.5]}, source="a.json")
    b = ReportDocument("b", [first], history={"loss": [1.0]}, source="b.json")
    merged = merge_reports([a, b], labels=["A", "B"])
    assert [e.label for e in merged.entries] == ["B", "A"]  # by step: 0, 25
    assert merged.history == {"loss": [1.0, 0.5]}  # the latest point's run
    assert [s["source"] for s in merged.settings["sources"]] == ["a.json", "b.json"]
    assert merged.per_layer is None
    assert merged.title == "critpoint comparison of 2 points"
    back = ReportDocument.from_dict(merged.to_dict())
    assert [e.diagnosis.lambda_min for e in back.entries] == [
        first.diagnosis.lambda_min,
        last.diagnosis.lambda_min,
    ]
    with pytest.raises(InputError, match="at least one"):
        merge_reports([])
    with pytest.raises(InputError, match="got 1 labels for 2 documents"):
        merge_reports([a, b], labels=["A"])


def test_unique_labels() -> None:
    assert unique_labels(["run/a.pt", "run/b.pt"]) == ["a.pt", "b.pt"]
    assert unique_labels(["x/a.pt", "y/a.pt"]) == ["x/a.pt", "y/a.pt"]


def test_a_report_of_many_points_draws_a_few_spectra(material: dict, tmp_path) -> None:
    from critpoint.report import build_report
    from critpoint.report.html import MAX_SPECTRA

    first, last = material["entries"]
    many = [replace(first if i % 2 else last, label=f"p{i}", step=i) for i in range(11)]
    page = build_report(many, tmp_path, dpi=30).read_text()
    assert f"The spectra of {MAX_SPECTRA} of the 11 points" in page
    # every point in the summary table
    assert all(f"<td class='text'>p{i}</td>" in page for i in range(11))
