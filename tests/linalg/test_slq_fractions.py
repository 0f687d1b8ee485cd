"""The fractions of an SLQ density: their zero tolerance and their error bars (planted spectra)."""

from __future__ import annotations

import math

import pytest
import torch

from critpoint.errors import InputError
from critpoint.linalg.slq import DENSITY_RTOL, SpectralDensity, spectral_density
from critpoint.testing import planted_matrix


def flat_bulk_spectrum(n: int = 200, seed: int = 0) -> torch.Tensor:
    """10 % clearly negative, 60 % flat (±1e-9: signs by rounding), 30 % positive."""
    g = torch.Generator().manual_seed(seed)
    neg = torch.linspace(-1.0, -0.5, n // 10, dtype=torch.float64)
    signs = torch.randint(0, 2, (6 * n // 10,), generator=g).to(torch.float64) * 2 - 1
    flat = 1e-9 * signs
    pos = torch.linspace(1.0, 3.0, n - n // 10 - 6 * n // 10, dtype=torch.float64)
    return torch.cat([neg, flat, pos])


def test_default_tolerance_does_not_split_a_flat_bulk():
    lam = flat_bulk_spectrum()
    A, _ = planted_matrix(lam, seed=1)
    d = spectral_density(A, num_probes=8, num_steps=200, seed=0)
    # a density alone: τ relative to its support (ends ≈ −1 and 3)
    assert d.zero_tol is None
    assert d.tolerance == pytest.approx(DENSITY_RTOL * 3.0, rel=1e-6)
    assert d.fraction_negative() == pytest.approx(0.10, abs=0.04)
    assert d.fraction_positive() == pytest.approx(0.30, abs=0.05)
    # tol=0 counts the flat bulk's rounding signs: about half of 60 % is "negative"
    assert d.fraction_negative(0.0) == pytest.approx(0.40, abs=0.06)
    # a given zero tolerance is the default (diagnose passes its own)
    wide = SpectralDensity(d.nodes, d.weights, d.num_matvecs, d.seed, zero_tol=0.6)
    assert wide.tolerance == 0.6
    assert wide.fraction_negative() == pytest.approx(wide.fraction_negative(0.6))
    assert wide.fraction_negative() < d.fraction_negative()
    back = SpectralDensity.from_dict(wide.to_dict())
    assert back.zero_tol == 0.6
    assert back.fraction_negative() == wide.fraction_negative()


def test_fractions_of_each_probe_and_their_standard_error():
    nodes = torch.tensor(
        [[-2.0, 0.0, 1.0], [-1.0, 0.5, 2.0], [-3.0, -0.5, 1.0]], dtype=torch.float64
    )
    weights = torch.tensor(
        [[0.2, 0.3, 0.5], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64
    )
    d = SpectralDensity(nodes, weights, num_matvecs=9, seed=None, zero_tol=0.1)
    neg = d.probe_fractions("negative")
    assert neg.tolist() == pytest.approx([0.2, 0.4, 0.2])
    assert d.probe_fractions("flat").tolist() == pytest.approx([0.3, 0.0, 0.0])
    assert d.probe_fractions("positive").tolist() == pytest.approx([0.5, 0.6, 0.8])
    mean = (0.2 + 0.4 + 0.2) / 3
    sd = math.sqrt(((0.2 - mean) ** 2 * 2 + (0.4 - mean) ** 2) / 2)
    assert d.fraction_negative() == pytest.approx(mean)
    assert d.fraction_stderr("negative") == pytest.approx(sd / math.sqrt(3))
    one = SpectralDensity(nodes[:1], weights[:1], num_matvecs=3, seed=None)
    assert math.isnan(one.fraction_stderr("negative"))
    with pytest.raises(InputError, match="side must be"):
        d.probe_fractions("zero")
    with pytest.raises(InputError, match="zero_tol"):
        SpectralDensity(nodes, weights, 9, None, zero_tol=-1.0)


def test_standard_error_matches_the_spread_of_the_estimate():
    """Over many seeds, the reported error is the true spread of the fraction.

    With ``num_steps = n`` each probe's rule is exact: its negative fraction is
    ``zᵀPz / n`` for the projector ``P`` onto the negative eigenvectors, whose
    variance over Rademacher ``z`` is ``2 (tr P − Σ P_ii²) / n²``.
    """
    n, probes, seeds = 60, 6, 40
    lam = torch.cat(
        [
            torch.linspace(-2.0, -0.2, 15, dtype=torch.float64),
            torch.linspace(0.3, 4.0, n - 15, dtype=torch.float64),
        ]
    )
    A, Q = planted_matrix(lam, seed=2)
    P = Q[:, :15] @ Q[:, :15].T
    var_one = 2 * (float(torch.trace(P)) - float((torch.diagonal(P) ** 2).sum())) / n**2
    means, variances = [], []
    for seed in range(seeds):
        d = spectral_density(A, num_probes=probes, num_steps=n, seed=seed)
        means.append(d.fraction_negative(0.1))
        variances.append(d.fraction_stderr("negative", 0.1) ** 2)
    means_t = torch.tensor(means)
    # unbiased: the mean over seeds is the planted 25 %
    assert float(means_t.mean()) == pytest.approx(
        0.25, abs=3 * math.sqrt(var_one / probes / seeds)
    )
    # the squared standard error estimates var_one / probes (its mean over seeds:
    # a chi-square average of 200 degrees of freedom, within ±25 %)
    assert sum(variances) / seeds == pytest.approx(var_one / probes, rel=0.25)
    # and it is the spread the estimate really has over seeds (±30 %: 39 degrees)
    assert float(means_t.std()) == pytest.approx(math.sqrt(var_one / probes), rel=0.3)


def test_default_probes_buy_the_stated_standard_error():
    """``default_num_probes`` rests on ``Var(zᵀPz / n) ≤ 2p(1 − p)/n ≤ 1/(2n)``."""
    from critpoint.linalg.slq import MIN_PROBES, PROBE_STDERR, default_num_probes

    n = 400
    for negative in (40, 200, 360):  # p = 0.1, 0.5, 0.9
        lam = torch.cat(
            [
                -torch.ones(negative, dtype=torch.float64),
                torch.ones(n - negative, dtype=torch.float64),
            ]
        )
        _, Q = planted_matrix(lam, seed=negative)
        P = Q[:, :negative] @ Q[:, :negative].T
        var_one = (
            2 * (float(torch.trace(P)) - float((torch.diagonal(P) ** 2).sum())) / n**2
        )
        p = negative / n
        assert var_one <= 2 * p * (1 - p) / n <= 1 / (2 * n)
    # the count: 1 / (2 n s²) probes, between MIN_PROBES and 8
    assert [default_num_probes(n) for n in (10, 2_000, 2_500, 4_000, 5_000)] == [
        8,
        8,
        8,
        5,
        4,
    ]
    assert default_num_probes(6_667) == default_num_probes(11_181_642) == MIN_PROBES
    assert default_num_probes(100, most=2) == 2
    for n in (2_500, 4_000, 6_667, 10**5, 10**7):
        probes = default_num_probes(n)
        assert math.sqrt(1 / (2 * n) / probes) <= PROBE_STDERR * (1 + 1e-12)
    with pytest.raises(InputError, match="n must be"):
        default_num_probes(0)
