"""The sampling error over batches against brute force over shards."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.analysis.sampling import measure_sampling_error, ratio_stderr
from critpoint.testing import TwoWeight


def shards(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    noise = 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + noise > 0).long()
    edges = np.cumsum([0, *sizes])
    return [(X[a:b], y[a:b]) for a, b in itertools.pairwise(edges)]


def network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def exact(net, batches):
    """Dense Hessian (autograd double backward), its eigenpairs, and the gradient."""
    obj = cp.Objective(net, F.cross_entropy, batches)
    values, vectors = torch.linalg.eigh(obj.hessian().dense())
    return obj, values, vectors, obj.grad()


def jackknife(values):
    v = np.asarray(values)
    B = v.size
    return math.sqrt((B - 1) / B * float(((v - v.mean()) ** 2).sum()))


def test_equal_shards_give_the_spread_of_each_shards_own_curvature():
    net, batches = network(), shards([25] * 8)
    obj, _, Q, g = exact(net, batches)
    se = measure_sampling_error(obj.hessian(), Q[:, 0], Q[:, -1], g)
    assert se.num_batches == 8
    # brute force: every shard's own dense Hessian, its curvature along u
    for col, got in ((0, se.lambda_min), (-1, se.lambda_max)):
        u = Q[:, col]
        c = []
        for shard in batches:
            Hb = cp.Objective(net, F.cross_entropy, [shard]).hessian().dense()
            c.append(float(u @ Hb @ u))
        assert got == pytest.approx(np.std(c, ddof=1) / math.sqrt(8), rel=1e-10)
    # the gradient norm along its own direction, and the whole noise
    ghat = g / g.norm()
    along, noise = [], []
    for shard in batches:
        gb = cp.Objective(net, F.cross_entropy, [shard]).grad()
        along.append(float(ghat @ gb))
        noise.append(gb - g)
    assert se.grad_norm == pytest.approx(
        np.std(along, ddof=1) / math.sqrt(8), rel=1e-10
    )
    spread = sum(float(d @ d) for d in noise) / (8 - 1) / 8
    assert se.grad_noise == pytest.approx(math.sqrt(spread), rel=1e-10)


@pytest.mark.parametrize("sizes", [[25] * 8, [40, 10, 30, 20, 35, 15, 25, 25]])
def test_it_matches_the_jackknife_of_the_leave_one_shard_out_eigenvalues(sizes):
    # brute force: drop each shard, solve the rest's dense eigenproblem
    net, batches = network(), shards(sizes, seed=1)
    obj, _, Q, g = exact(net, batches)
    se = measure_sampling_error(obj.hessian(), Q[:, 0], Q[:, -1], g)
    lo, hi, gn = [], [], []
    for b in range(len(batches)):
        rest = [s for i, s in enumerate(batches) if i != b]
        o = cp.Objective(net, F.cross_entropy, rest)
        e = torch.linalg.eigvalsh(o.hessian().dense())
        lo.append(float(e[0]))
        hi.append(float(e[-1]))
        gn.append(float(o.grad().norm()))
    # first order in the shards' weight: the two agree to a few per cent here
    assert se.lambda_min == pytest.approx(jackknife(lo), rel=0.1)
    assert se.lambda_max == pytest.approx(jackknife(hi), rel=0.1)
    assert se.grad_norm == pytest.approx(jackknife(gn), rel=0.1)


def test_ratio_stderr_of_a_summed_loss_is_n_times_the_mean():
    counts = torch.tensor([3.0, 5.0, 2.0])
    parts = torch.tensor([1.0, 4.0, -2.0])
    mean = ratio_stderr(counts, parts, summed=False)
    assert ratio_stderr(counts, parts, summed=True) == pytest.approx(10 * mean)
    theta = 3.0 / 10
    by_hand = math.sqrt(3 / 2 * float(((parts - theta * counts) ** 2).sum())) / 10
    assert mean == pytest.approx(by_hand)
    assert math.isnan(ratio_stderr(counts[:1], parts[:1], summed=False))


def test_a_sampled_diagnosis_widens_its_error_bars_by_the_sampling_error():
    # y = w1·w2·x at the origin: H = [[0, −2m], [−2m, 0]], m = mean(x·y) = 0.05,
    # so λ = ±0.1 exactly; but the batches' m_b = 0.5, −0.3, 0.4, −0.4 spread
    # far more: λ_min's standard error is sd(−2 m_b)/√4 = sd(m_b).
    means = [0.5, -0.3, 0.4, -0.4]
    batches = [
        (
            torch.ones(10, 1, dtype=torch.float64),
            torch.full((10, 1), m, dtype=torch.float64),
        )
        for m in means
    ]
    exact_dg = cp.diagnose(cp.Objective(TwoWeight(), F.mse_loss, batches), k=2)
    assert exact_dg.kind == "saddle"
    assert exact_dg.lambda_min == pytest.approx(-0.1, abs=1e-12)
    se = exact_dg.sampling
    assert se["lambda_min"] == pytest.approx(np.std(means, ddof=1), rel=1e-10)
    assert se["used"] is False
    sampled = cp.diagnose(
        cp.Objective(TwoWeight(), F.mse_loss, batches), k=2, sampled=True
    )
    assert sampled.kind == "degenerate"
    assert sampled.lambda_min_error > 2 * se["lambda_min"]
    assert sampled.sampling["used"] is True
    assert sampled.escape_direction is None
    assert sampled.num_matvecs == exact_dg.num_matvecs
    assert sampled.to_dict()["sampling"]["lambda_min"] == se["lambda_min"]


def test_one_batch_has_no_sampling_error_and_it_can_be_turned_off():
    net = network()
    one = cp.diagnose(
        cp.Objective(net, F.cross_entropy, shards([30])), k=2, density=False
    )
    assert one.sampling is None
    many = cp.Objective(net, F.cross_entropy, shards([10, 10, 10]))
    on = cp.diagnose(many, k=2, density=False, trace=False)
    off = cp.diagnose(many, k=2, density=False, trace=False, sampling_error=False)
    assert off.sampling is None
    assert on.sampling["num_batches"] == 3
    assert on.num_matvecs == off.num_matvecs + 2  # its one pass, two products


def test_forward_over_reverse_objectives_leave_the_sampling_error_out():
    net = network()
    obj = cp.Objective(net, F.cross_entropy, shards([10, 10]), hvp_mode="fwd-rev")
    dg = cp.diagnose(obj, k=2, density=False, trace=False)
    assert obj.hvp_mode == "fwd-rev"
    assert dg.sampling is None


def test_kept_linearisations_give_the_same_parts_without_a_forward_pass():
    net, batches = network(), shards([25, 20, 30, 25])
    kept = cp.Objective(net, F.cross_entropy, batches)
    fresh = cp.Objective(net, F.cross_entropy, batches, hvp_cache=None)
    H_kept, H_fresh = kept.hessian(), fresh.hessian()
    H_kept @ torch.ones(kept.num_params, dtype=torch.float64)  # linearises
    H_fresh @ torch.ones(fresh.num_params, dtype=torch.float64)
    assert H_kept.cached
    assert not H_fresh.cached
    _, Q = torch.linalg.eigh(H_kept.dense())
    U = Q[:, [0, -1]].contiguous()
    g = kept.grad()
    forwards = []
    hook = net.register_forward_hook(lambda *args: forwards.append(1))
    try:
        before = H_kept.num_matvecs
        a = H_kept.batch_terms(U, g / g.norm())
        assert forwards == []  # the kept graphs hold the gradients and run the products
        assert H_kept.num_matvecs == before + 2
        b = H_fresh.batch_terms(U, g / g.norm())
        assert len(forwards) == 4  # one forward pass per batch
    finally:
        hook.remove()
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-14)
    se = measure_sampling_error(H_kept, U[:, 0], U[:, 1], g)
    assert se.from_linearisations
    assert not measure_sampling_error(H_fresh, U[:, 0], U[:, 1], g).from_linearisations


def test_one_batch_spends_no_product_on_a_spread_it_cannot_measure():
    net = network()
    (batch,) = shards([40])
    obj = cp.Objective(net, F.cross_entropy, batch)  # a tensor pair: one batch
    assert obj.num_batches == 1
    H = obj.hessian(check=False)
    u = torch.zeros(obj.num_params, dtype=torch.float64)
    u[0] = 1.0
    assert measure_sampling_error(H, u, u, obj.grad()) is None
    assert H.num_matvecs == 0
    d = cp.diagnose(obj, k=2, density=False, trace=False)
    assert d.sampling is None
    assert "sampling error" not in d.num_matvecs_by_phase
    assert d.num_matvecs == sum(d.num_matvecs_by_phase.values())
