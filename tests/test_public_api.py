"""The package's public names: where they come from, and no module shadowed by a function."""

import importlib
import types

import pytest

import critpoint as cp


def test_every_public_name_is_there():
    for name in cp.__all__:
        assert hasattr(cp, name), name


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("Diagnosis", "critpoint.analysis.diagnosis"),
        ("Verdict", "critpoint.analysis.diagnosis"),
        ("LayerDiagnosis", "critpoint.analysis.diagnosis"),
        ("diagnose", "critpoint.analysis.diagnose"),
        ("diagnose_layers", "critpoint.analysis.diagnose"),
        ("layer_groups", "critpoint.analysis.diagnose"),
        ("CostPlan", "critpoint.analysis.plan"),
        ("plan_diagnosis", "critpoint.analysis.plan"),
        ("classify", "critpoint.analysis.rule"),
        ("curvature", "critpoint.analysis.rule"),
        ("zero_tolerance", "critpoint.analysis.rule"),
        ("quadratic_step", "critpoint.analysis.step"),
        ("QuadraticStep", "critpoint.analysis.step"),
        ("escape_saddle", "critpoint.escape"),
        ("escape_until", "critpoint.escape"),
        ("EscapeRun", "critpoint.escape"),
        ("SaddleEscape", "critpoint.escape"),
        ("landscape", "critpoint.surface"),
        ("loss_slice", "critpoint.surface"),
        ("loss_plane", "critpoint.surface"),
        ("Landscape", "critpoint.surface"),
        ("LossSlice", "critpoint.surface"),
        ("LossPlane", "critpoint.surface"),
        ("load_report", "critpoint.report.document"),
        ("build_report", "critpoint.report.html"),
        ("render_report", "critpoint.report.html"),
    ],
)
def test_names_come_from_their_one_home(name, module):
    assert name in cp.__all__
    assert getattr(cp, name).__module__ == module
    assert getattr(importlib.import_module(module), name) is getattr(cp, name)


def test_the_quadratic_step_is_one_function_reached_from_escape():
    assert cp.escape.quadratic_step is cp.quadratic_step


def test_no_module_is_shadowed_by_a_function():
    assert isinstance(cp.surface, types.ModuleType)
    assert isinstance(cp.analysis, types.ModuleType)
    assert callable(cp.landscape)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("critpoint.landscape")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("critpoint.rule")
