"""The probabilistic spectrum bounds: each piece against its probability law."""

import math

import numpy as np
import pytest
from scipy import stats

from critpoint.linalg._bounds import (
    Certificate,
    StartRule,
    component_quantile,
    kw_epsilon,
    polynomial_top,
    start_rules,
)


@pytest.mark.parametrize(("n", "delta"), [(2, 0.3), (50, 0.05), (1000, 0.01)])
def test_component_quantile_is_the_beta_quantile(n, delta):
    t = component_quantile(n, delta)
    # (uᵀb)² ~ Beta(1/2, (n−1)/2) for b uniform on the sphere
    assert stats.beta(0.5, (n - 1) / 2).cdf(t * t) == pytest.approx(delta, rel=1e-9)
    rng = np.random.default_rng(0)
    b = rng.standard_normal((20000, n))
    first = np.abs(b[:, 0]) / np.linalg.norm(b, axis=1)
    rate = float((first < t).mean())
    assert abs(rate - delta) <= 4 * math.sqrt(delta * (1 - delta) / 20000)


def test_kw_epsilon_solves_the_failure_bound():
    n, steps, delta = 10_000, 30, 1e-3
    eps = kw_epsilon(n, steps, 1, delta)
    assert 1.648 * math.sqrt(n) * math.exp(-math.sqrt(eps) * (2 * steps - 1)) == (
        pytest.approx(delta, rel=1e-12)
    )
    # p independent starts fail together with the p-th power of the probability
    eps3 = kw_epsilon(n, steps, 3, delta)
    assert (
        1.648 * math.sqrt(n) * math.exp(-math.sqrt(eps3) * (2 * steps - 1))
    ) ** 3 == (pytest.approx(delta, rel=1e-12))
    assert eps3 < eps
    assert kw_epsilon(n, 60, 1, delta) < eps  # more steps, a smaller gap
    assert kw_epsilon(n, 1, 1, delta) == math.inf


def test_polynomial_top_is_the_root_beyond_the_ritz_values():
    rule = StartRule(np.array([-1.0, 0.5, 2.0]), log_beta=math.log(0.3))
    log_t = math.log(1e-2)
    x = polynomial_top(rule, log_t)
    assert x > 2.0
    assert float(np.log(x - rule.theta).sum()) == pytest.approx(
        rule.log_beta - log_t, abs=1e-9
    )
    # an exhausted recurrence (β product 0) gives the Ritz value itself
    assert polynomial_top(StartRule(rule.theta, -math.inf), log_t) == 2.0


def test_polynomial_bound_fails_as_often_as_its_probability_where_it_is_tight():
    # Spectrum {1, 0, …, 0}: one Lanczos step from b with c = u₁ᵀb gives
    # θ = c², β = |c|·√(1 − c²), and the bound c² + |c|√(1−c²)/t misses λ = 1
    # exactly when |c| < t·√(1 − c²): probability just under delta.
    n, delta, trials = 100, 0.2, 4000
    rng = np.random.default_rng(1)
    t = component_quantile(n, delta)
    misses = 0
    for _ in range(trials):
        b = rng.standard_normal(n)
        b /= np.linalg.norm(b)
        A_b = np.zeros(n)
        A_b[0] = b[0]  # A = e₁e₁ᵀ
        theta = float(b @ A_b)
        beta = float(np.linalg.norm(A_b - theta * b))
        hi = polynomial_top(StartRule(np.array([theta]), math.log(beta)), math.log(t))
        misses += hi < 1.0
    rate = misses / trials
    sigma = math.sqrt(delta * (1 - delta) / trials)
    assert rate <= delta + 3 * sigma
    assert rate >= delta - 6 * sigma  # tight: the bound is not vacuous


def test_start_rules_reproduce_scalar_lanczos():
    # A block space is not needed here: one start, its own recurrence in coordinates.
    rng = np.random.default_rng(2)
    n = 40
    A = rng.standard_normal((n, n))
    A = (A + A.T) / 2
    b = rng.standard_normal(n)
    b /= np.linalg.norm(b)
    steps = 6
    Q = [b]
    alphas, betas = [], []
    for _ in range(steps):
        w = A @ Q[-1]
        V = np.stack(Q, axis=1)
        alphas.append(float(Q[-1] @ w))
        w = w - V @ (V.T @ w)
        w = w - V @ (V.T @ w)
        betas.append(float(np.linalg.norm(w)))
        Q.append(w / betas[-1])
    V = np.stack(Q, axis=1)  # (n, steps + 1)
    M = V.T @ A @ V[:, :steps]  # H Q_done = Q M
    e1 = np.zeros((steps + 1, 1))
    e1[0] = 1.0
    (rule,) = start_rules(M, e1, steps, floor=0.0)
    T = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    assert np.allclose(rule.theta, np.linalg.eigvalsh(T), atol=1e-12)
    assert rule.log_beta == pytest.approx(float(np.log(betas).sum()), abs=1e-10)


def test_certificate_contains_the_ritz_extremes():
    cert = Certificate(
        n=500,
        steps=5,
        block_size=1,
        rules=(StartRule(np.array([-0.5, 0.2, 0.9]), math.log(0.5)),),
        exhausted=False,
        slack=0.0,
    )
    lo, hi = cert.bounds(-0.6, 1.0, 0.01)
    assert lo <= -0.6
    assert hi >= 1.0
    tighter = cert.bounds(-0.6, 1.0, 0.5)
    assert tighter[0] >= lo
    assert tighter[1] <= hi
    exact = Certificate(500, 5, 1, cert.rules, exhausted=True, slack=1e-12)
    assert exact.bounds(-0.6, 1.0, 0.01) == (-0.6 - 1e-12, 1.0 + 1e-12)
