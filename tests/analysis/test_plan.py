"""plan: the cost of a diagnosis said before it is spent, counted as it is spent."""

import json
import logging

import pytest
import torch

import critpoint as cp
from critpoint.analysis import plan as plan_module
from critpoint.analysis.plan import (
    CostPlan,
    Costs,
    Phase,
    diagnosis_phases,
    duration,
    eigensolver_budget,
    layer_phases,
    plan_diagnosis,
)
from critpoint.testing import Quadratic, planted_matrix, quadratic_batch_loss


def planted(n=120, seed=0):
    """A quadratic whose Hessian has ``n`` distinct planted eigenvalues (full rank)."""
    A, _ = planted_matrix(torch.linspace(-1.0, 3.0, n).tolist(), seed=seed)
    data = [(torch.zeros(1, dtype=torch.float64),)]
    return cp.Objective(Quadratic(A), data=data, batch_loss=quadratic_batch_loss)


def small_mlp(width=5):
    from critpoint.data import load_data
    from critpoint.models import build_model

    data = load_data(
        "teacher",
        task="classification",
        n_samples=30,
        in_features=4,
        num_classes=3,
        seed=1,
        dtype=torch.float64,
    )
    model = build_model(
        "mlp", in_features=4, widths=[width], out_features=3, seed=0, dtype="float64"
    )
    return model, cp.Objective(model, cp.get_loss("cross_entropy"), data.as_tuple())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"density": False},
        {"num_probes": 3, "num_steps": 15, "trace_max_matvecs": 12},
        {"trace": False, "max_matvecs": 3 + 8 * 60 + 40},
    ],
)
def test_fixed_phases_plan_exactly_what_they_spend(options):
    obj = planted()
    plans = []
    d = cp.diagnose(obj, k=4, on_plan=plans.append, **options)
    (plan,) = plans
    assert d.cost_plan == plan.to_dict()
    by_phase = {p.name: p for p in plan.phases}
    spent = d.num_matvecs_by_phase
    assert sum(spent.values()) == d.num_matvecs
    assert by_phase["symmetry probe"].spent
    # the timed product (the symmetry test is free, determinism a forward pass)
    assert by_phase["symmetry probe"].products == spent["symmetry probe"] == 1
    for name in ("density", "trace"):
        if options.get(name, True):
            assert by_phase[name].exact
            assert by_phase[name].products == spent[name]
        else:
            assert name not in by_phase
            assert name not in spent
    # the eigensolver's is an expectation, within its share of the budget
    eig = by_phase["eigenvalues"]
    assert not eig.exact
    assert 0 < spent["eigenvalues"] <= 3 * eig.products
    if "max_matvecs" in options:
        assert d.num_matvecs <= options["max_matvecs"]
    # the plan left to spend after the probe is what was planned to be spent
    assert plan.products == sum(
        p.products for p in plan.phases if p.name not in ("gradient", "symmetry probe")
    )
    back = cp.Diagnosis.from_dict(json.loads(d.to_json()))
    assert back.cost_plan == d.cost_plan
    assert back.num_matvecs_by_phase == spent


def test_density_on_an_exhausted_krylov_space_is_at_most_the_plan():
    _, obj = small_mlp()  # 43 parameters, 60 steps asked
    plans = []
    d = cp.diagnose(obj, k=2, on_plan=plans.append, trace=False)
    (density,) = [p for p in plans[0].phases if p.name == "density"]
    assert density.products == 8 * obj.num_params
    assert not density.exact
    assert d.num_matvecs_by_phase["density"] <= density.products


def test_plan_prices_the_rest_from_the_measured_product():
    obj = planted()
    plans = []
    cp.diagnose(obj, k=4, on_plan=plans.append)
    (plan,) = plans
    c = plan.costs
    assert c is not None
    # the probe's product (its determinism test: a forward pass)
    assert c.products_timed == 1
    assert c.seconds_per_product > 0
    assert c.seconds_per_gradient > 0
    # one Gram–Schmidt pass over a vector, timed for the memory plan: cheaper
    # than a product, and in the plan's dictionary
    assert 0 < c.seconds_per_vector < c.seconds_per_product
    assert c.to_dict()["seconds_per_vector"] == c.seconds_per_vector
    assert plan.seconds == pytest.approx(
        plan.products * c.seconds_per_product
        + plan.losses * c.seconds_per_loss
        + plan.gradients * c.seconds_per_gradient
    )
    # without the probe, one counted product is timed
    plans.clear()
    d = cp.diagnose(obj, k=4, check=False, on_plan=plans.append, trace=False)
    assert d.num_matvecs_by_phase["timing product"] == 1
    assert plans[0].costs.products_timed == 1
    assert sum(d.num_matvecs_by_phase.values()) == d.num_matvecs


def test_plan_diagnosis_alone_gives_the_counts_diagnose_plans():
    obj = planted()
    alone = plan_diagnosis(obj, k=4)
    plans = []
    cp.diagnose(obj, k=4, on_plan=plans.append)
    assert [(p.name, p.products, p.spent) for p in alone.phases] == [
        (p.name, p.products, p.spent) for p in plans[0].phases
    ]


def test_summary_and_durations():
    plan = CostPlan(
        (Phase("eigenvalues", 100, exact=False), Phase("density", 480)),
        Costs(2.6, 1.0, 0.5),
    )
    assert (
        plan.summary() == "≈ 580 HVPs × 2.6 s ≈ 25 min (eigenvalues ≈ 100, density 480)"
    )
    assert plan.worth_announcing
    three = plan.repeated(3, "checkpoints")
    assert three.products == 3 * 580
    assert three.summary().startswith("3 checkpoints × (≈ 580 HVPs × 2.6 s) ≈ 75 min")
    assert CostPlan((Phase("density", 4),), Costs(0.001, 0.001, 0.001)).seconds == (
        pytest.approx(0.004)
    )
    assert not CostPlan((Phase("density", 4),), Costs(0.001, 1, 1)).worth_announcing
    assert CostPlan((Phase("density", 4),)).summary() == "4 HVPs (density 4)"
    assert [duration(x) for x in (0.0123, 2.0, 41.0, 1620.0, 3.6 * 3600)] == [
        "12 ms",
        "2 s",
        "41 s",
        "27 min",
        "3.6 h",
    ]
    with pytest.raises(cp.InputError, match="times must be an int >= 1"):
        plan.repeated(0, "checkpoints")


def test_a_budget_counts_every_product_and_one_too_small_is_refused_up_front():
    obj = planted()
    calls = []
    obj_hessian = obj.hessian

    def counting(*args, **kwargs):
        calls.append(obj_hessian(*args, **kwargs))
        return calls[-1]

    obj.hessian = counting
    with pytest.raises(cp.InputError, match=r"max_matvecs=100 counts every") as info:
        cp.diagnose(obj, k=4, max_matvecs=100)
    assert "the density 480, the trace 60" in str(info.value)
    assert "give at least" in str(info.value)
    assert "--no-density" in str(info.value)
    assert not calls  # refused before any product
    d = cp.diagnose(obj, k=4, max_matvecs=30, density=False, trace=False)
    # the operator's own counter is the reported total, within the budget:
    # 1 for the probe, 29 left to the eigensolver, spent in blocks of 2
    (H,) = calls
    assert H.num_matvecs == d.num_matvecs == 29
    assert not d.converged
    assert d.num_matvecs_by_phase == {"symmetry probe": 1, "eigenvalues": 28}
    calls.clear()
    # the density (8 × 20) and the trace (60) are taken first: 10 are left
    d = cp.diagnose(obj, k=4, max_matvecs=1 + 10 + 8 * 20 + 60, num_steps=20)
    (H,) = calls
    assert H.num_matvecs == d.num_matvecs == 1 + 10 + 8 * 20 + 60
    assert d.num_matvecs_by_phase == {
        "symmetry probe": 1,
        "eigenvalues": 10,
        "density": 8 * 20,
        "trace": 60,
    }
    assert eigensolver_budget(120, 30, spent=3, density=False, trace=False) == 27
    assert eigensolver_budget(120, None, spent=3) is None


def test_diagnosis_phases_without_the_optional_work():
    phases = diagnosis_phases(50, k=2, density=False, trace=False, probe=0)
    assert [p.name for p in phases] == ["gradient", "eigenvalues"]
    (one,) = layer_phases([("net.0", 10)], density=False, trace=False, check=False)
    assert one.name == "layer net.0"
    assert one.gradients == 1


def test_the_plan_is_logged_at_info_only_when_it_is_long(caplog, monkeypatch):
    obj = planted(30)
    with caplog.at_level(logging.DEBUG, logger="critpoint"):
        cp.diagnose(obj, k=2, density=False, trace=False)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("diagnose: ")]
    assert record.levelno == logging.DEBUG
    caplog.clear()
    monkeypatch.setattr(plan_module, "ANNOUNCE_SECONDS", 0.0)
    with caplog.at_level(logging.DEBUG, logger="critpoint"):
        cp.diagnose(obj, k=2, density=False, trace=False)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("diagnose: ")]
    assert record.levelno == logging.INFO
    assert "HVPs ×" in record.getMessage()


def test_progress_counts_the_plan_of_every_phase():
    obj = planted()
    seen = []
    d = cp.diagnose(obj, k=4, progress=lambda done, total: seen.append((done, total)))
    dones = [done for done, _ in seen]
    assert dones == sorted(dones)
    assert all(0 <= done <= total for done, total in seen)
    assert seen[-1] == (d.num_matvecs, d.num_matvecs)
    # the first total is the plan, not a budget: close to what was spent
    assert abs(seen[0][1] - d.num_matvecs) <= 0.1 * d.num_matvecs
    # every phase reported: counts inside the density's and the trace's ranges
    spent = d.num_matvecs_by_phase
    eig_end = spent["symmetry probe"] + spent["eigenvalues"]
    assert any(spent["symmetry probe"] < done < eig_end for done in dones)
    assert any(eig_end < done < eig_end + spent["density"] for done in dones)
    assert any(eig_end + spent["density"] < done < d.num_matvecs for done in dones)


def test_per_layer_progress_and_plan_count_every_layer():
    _, obj = small_mlp(width=3)
    seen, plans = [], []
    layers = cp.diagnose_layers(
        obj,
        k=2,
        density=False,
        progress=lambda done, total: seen.append((done, total)),
        on_plan=plans.append,
        one_pass=False,  # a diagnosis per layer, each planned
    )
    total = sum(x.diagnosis.num_matvecs for x in layers)
    assert seen[-1] == (total, total)
    assert all(done <= t for done, t in seen)
    (plan,) = plans
    names = [p.name for p in plan.phases]
    assert names[0] == "layer net.0: gradient"
    assert names[-1] == "layer net.2"
    assert plan.costs is not None
