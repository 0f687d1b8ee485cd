"""_convergence: the planned products of an eigensolver, not its budget."""

import torch

import critpoint as cp
from critpoint._progress import Progress
from critpoint.linalg._convergence import ConvergencePlan, expected_products
from critpoint.testing import planted_matrix


def test_expected_products_is_capped_by_the_space_and_the_budget():
    assert expected_products(10_000, 6, 2, 1410) == 20 * 6 + 20
    assert expected_products(10, 6, 2, 1410) == 10 + 2 + 6
    assert expected_products(10_000, 6, 2, 50) == 50


def test_plan_extrapolates_a_geometric_fall_of_the_residual():
    seen = []
    bar = Progress(lambda d, t: seen.append((d, t)), 0, "solver")
    plan = ConvergencePlan(bar, initial=100, budget=1000)
    assert plan.total == 100
    # the residual over its target falls tenfold every 10 products: 1e4 → 1 at 40
    for done in range(2, 40, 2):
        plan.observe(done, 2, 10 ** (4 - done / 10))
    assert abs(plan.total - 40) <= 4  # within a step or two of the truth
    plan.observe(40, 2, 0.9)  # converged: one more step at most
    assert plan.total == 42
    assert all(t <= 1000 for _, t in seen)


def test_plan_never_passes_the_budget_nor_falls_behind_the_work():
    bar = Progress(None, 0, "solver")
    plan = ConvergencePlan(bar, initial=5000, budget=60)
    assert plan.total == 60
    plan.observe(58, 4, 1e9)  # one more step would pass the budget
    assert plan.total == 60
    plan.new_space(60)
    assert plan.total == 60


def test_eigsh_bar_counts_the_plan_not_the_budget():
    A, _ = planted_matrix(torch.linspace(-1.0, 3.0, 300).tolist(), seed=0)
    seen = []
    r = cp.eigsh(
        A, k=2, which="BE", max_matvecs=1410, progress=lambda d, t: seen.append((d, t))
    )
    assert r.converged.all()
    first_total = seen[0][1]
    assert first_total == expected_products(300, 2, 2, 1410) < 1410
    last_done, last_total = seen[-1]
    assert last_done == r.num_matvecs
    assert last_total - last_done <= 4  # closes near what it did, not at 1410
    assert max(t for _, t in seen) < 1410
