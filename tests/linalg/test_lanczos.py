"""eigsh: thick-restart Lanczos against planted spectra and dense eigvalsh."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.linalg._operator import DenseOperator
from critpoint.testing import planted_matrix


def spectrum(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(n - 13, generator=g, dtype=torch.float64) * 1.5 - 0.5
    outliers = torch.tensor([50, 40, 30, 25, 20, 15, 12, 10, 8, 5], dtype=torch.float64)
    negatives = torch.tensor([-3.0, -2.0, -1.5], dtype=torch.float64)
    return torch.sort(torch.cat([bulk, outliers, negatives])).values


@pytest.mark.parametrize(
    ("which", "pick"),
    [
        ("LA", lambda ev, k: ev[-k:]),
        ("SA", lambda ev, k: ev[:k]),
        ("BE", lambda ev, k: torch.cat([ev[: k // 2], ev[-(k - k // 2) :]])),
        (
            "LM",
            lambda ev, k: (
                torch.sort(ev[torch.argsort(ev.abs(), descending=True)[:k]]).values
            ),
        ),
    ],
)
def test_planted_spectrum_each_end(which, pick):
    ev = spectrum()
    A, _ = planted_matrix(ev, seed=1)
    k = 5
    r = cp.eigsh(A, k=k, which=which, tol=1e-10)
    assert r.all_converged
    assert torch.allclose(r.eigenvalues, pick(ev, k), rtol=0, atol=1e-8 * 50)
    # residuals are the true ‖Au − θu‖ and bound the eigenvalue error
    U = r.eigenvectors
    true_res = torch.linalg.vector_norm(A @ U - U * r.eigenvalues, dim=0)
    assert torch.allclose(r.residuals, true_res, atol=1e-10)
    assert torch.all((r.eigenvalues - pick(ev, k)).abs() <= r.error_bounds + 1e-12)
    assert torch.allclose(U.T @ U, torch.eye(k, dtype=torch.float64), atol=1e-10)


def test_bottom_costs_the_same_as_top():
    ev = spectrum()
    A, _ = planted_matrix(ev, seed=2)
    # mirror the spectrum: SA on -A must behave like LA on A
    top = cp.eigsh(A, k=5, which="LA", tol=1e-8)
    bottom = cp.eigsh(-A, k=5, which="SA", tol=1e-8)
    assert torch.allclose(top.eigenvalues, -bottom.eigenvalues.flip(0), atol=1e-6)
    assert bottom.num_matvecs == top.num_matvecs


def test_tolerance_is_met_not_a_fixed_step_count():
    ev = spectrum()
    A, _ = planted_matrix(ev, seed=3)
    loose = cp.eigsh(A, k=3, which="LA", tol=1e-2)
    tight = cp.eigsh(A, k=3, which="LA", tol=1e-12)
    assert loose.num_matvecs < tight.num_matvecs
    assert torch.all(loose.residuals <= 1e-2 * loose.spectral_scale)
    assert torch.all(tight.residuals <= 1e-12 * tight.spectral_scale + 1e-15)


def test_restarts_reach_clustered_eigenvalues():
    # a hard case: the wanted eigenvalues are tightly clustered
    n = 400
    ev = torch.linspace(0, 1, n, dtype=torch.float64)
    ev[-4:] = torch.tensor(
        [1.0, 1.0 + 1e-3, 1.0 + 2e-3, 1.0 + 3e-3], dtype=torch.float64
    )
    A, _ = planted_matrix(ev, seed=4)
    r = cp.eigsh(A, k=4, which="LA", tol=1e-10, ncv=12)
    assert r.num_restarts > 0
    assert r.all_converged
    assert torch.allclose(r.eigenvalues, ev[-4:], atol=1e-8)


def test_zero_and_repeated_eigenvalues():
    ev = torch.cat([torch.zeros(50), torch.full((5,), 2.0), -torch.ones(3)]).double()
    A, _ = planted_matrix(ev, seed=5)
    r = cp.eigsh(A, k=4, which="BE", tol=1e-10)
    assert torch.allclose(
        r.eigenvalues,
        torch.tensor([-1.0, -1.0, 2.0, 2.0], dtype=torch.float64),
        atol=1e-8,
    )


def test_small_operator_whole_spectrum():
    ev = torch.tensor([-2.0, -1.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    A, _ = planted_matrix(ev, seed=6)
    r = cp.eigsh(A, k=5, which="LA", tol=1e-12)
    assert torch.allclose(r.eigenvalues, ev, atol=1e-12)
    assert r.num_matvecs <= 5


def test_invariant_subspace_breakdown():
    # a start vector inside a 2-dimensional invariant subspace
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64))
    v0 = torch.tensor([1.0, 1.0, 0, 0, 0, 0], dtype=torch.float64)
    r = cp.eigsh(A, k=2, which="LA", tol=1e-12, v0=v0)
    assert torch.allclose(
        r.eigenvalues, torch.tensor([5.0, 6.0], dtype=torch.float64), atol=1e-10
    )


def test_same_seed_same_numbers_and_counts():
    A, _ = planted_matrix(spectrum(), seed=7)
    a = cp.eigsh(A, k=3, which="SA", tol=1e-6, seed=11)
    b = cp.eigsh(A, k=3, which="SA", tol=1e-6, seed=11)
    c = cp.eigsh(A, k=3, which="SA", tol=1e-6, seed=12)
    assert torch.equal(a.eigenvalues, b.eigenvalues)
    assert torch.equal(a.eigenvectors, b.eigenvectors)
    assert not torch.equal(a.eigenvalues, c.eigenvalues)
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    assert torch.equal(
        cp.eigsh(A, k=2, seed=g1).eigenvalues, cp.eigsh(A, k=2, seed=g2).eigenvalues
    )


def test_budget_exhausted_returns_unconverged_pairs():
    n = 500
    ev = torch.linspace(0, 1, n, dtype=torch.float64)
    A, _ = planted_matrix(ev, seed=8)
    r = cp.eigsh(A, k=3, which="LA", tol=1e-12, max_matvecs=40)
    assert not r.all_converged
    assert r.num_matvecs <= 40
    assert r.eigenvalues.shape == (3,)
    assert r.to_dict()["converged"] == [bool(c) for c in r.converged]


def test_counts_match_the_operator():
    A, _ = planted_matrix(spectrum(), seed=9)
    op = DenseOperator(A)
    r = cp.eigsh(op, k=4, which="BE", tol=1e-8, return_eigenvectors=False)
    assert r.eigenvectors is None
    assert op.num_matvecs == r.num_matvecs


def test_float32_operator_tolerance_floor():
    A, _ = planted_matrix(spectrum(), seed=10)
    r = cp.eigsh(A.float(), k=2, which="LA", tol=0.0)
    assert r.tol == pytest.approx(50 * torch.finfo(torch.float32).eps)
    assert r.all_converged
    assert torch.allclose(
        r.eigenvalues, torch.tensor([40.0, 50.0], dtype=torch.float64), atol=1e-3
    )


def test_bad_arguments():
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(cp.InputError, match="which must be one of"):
        cp.eigsh(A, k=1, which="XX")
    with pytest.raises(cp.InputError, match="k must be an int with 1 <= k <= n=5"):
        cp.eigsh(A, k=6)
    with pytest.raises(cp.InputError, match="tol must be"):
        cp.eigsh(A, k=1, tol=-1.0)
    with pytest.raises(cp.InputError, match="square"):
        cp.eigsh(torch.ones(3, 4, dtype=torch.float64), k=1)
    with pytest.raises(cp.InputError, match="float32 or float64"):
        cp.eigsh(torch.eye(4, dtype=torch.float16), k=1)
    with pytest.raises(cp.InputError, match="expected a HessianOperator"):
        cp.eigsh([[1.0]], k=1)
    with pytest.raises(cp.InputError, match="v0 must be"):
        cp.eigsh(A, k=1, v0=torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_product_inside_lanczos_raises(bad):
    class Broken(DenseOperator):
        calls = 0

        def matmat(self, V: torch.Tensor) -> torch.Tensor:
            out = super().matmat(V)
            Broken.calls += 1
            if Broken.calls == 4:
                out[7, 0] = bad
            return out

    A, _ = planted_matrix(torch.linspace(-1.0, 1.0, 30, dtype=torch.float64), seed=0)
    with pytest.raises(cp.NonFiniteError, match="NaN/Inf inside Lanczos"):
        cp.eigsh(Broken(A), k=2, which="LA", tol=1e-12)
    assert Broken.calls == 4  # raised at the broken product, not later


def test_default_basis_grows_with_free_memory(monkeypatch):
    from critpoint.linalg import lanczos

    cpu = torch.device("cpu")
    n = 1000  # 8000 bytes per float64 vector
    monkeypatch.setattr(lanczos, "BASIS_FLOOR_BYTES", 41 * 8000)  # 41 vectors
    monkeypatch.setattr(lanczos, "free_memory", lambda device: 0)
    assert lanczos.default_ncv(5, n, torch.float64, cpu) == 40  # floor, less Q's +1
    assert lanczos.default_ncv(5, n, torch.float32, cpu) == 81  # half the bytes
    assert lanczos.default_ncv(30, n, torch.float64, cpu) == 61  # never below 2k + 1
    # an eighth of the free memory, where that exceeds the floor
    monkeypatch.setattr(lanczos, "free_memory", lambda device: 8 * 101 * 8000)
    assert lanczos.default_ncv(5, n, torch.float64, cpu) == 100
    # never beyond the default of 160 vectors
    monkeypatch.setattr(lanczos, "free_memory", lambda device: 2**40)
    assert lanczos.default_ncv(5, n, torch.float64, cpu) == 160


def test_eigsh_uses_the_default_basis(monkeypatch):
    from critpoint.linalg import lanczos

    # The clustered top of test_restarts_reach_clustered_eigenvalues: a basis of
    # 12 vectors must restart, one of 160 (n = 400) must not.
    n = 400
    ev = torch.linspace(0, 1, n, dtype=torch.float64)
    ev[-4:] = torch.tensor([1.0, 1.001, 1.002, 1.003], dtype=torch.float64)
    A, _ = planted_matrix(ev, seed=4)
    monkeypatch.setattr(lanczos, "free_memory", lambda device: 0)
    # One vector per block, as in default_ncv's measurements: this cluster then
    # converges within 160 products (a block of 2 needs 188).
    monkeypatch.setattr(lanczos, "BASIS_FLOOR_BYTES", 14 * n * 8)
    small = cp.eigsh(A, k=4, which="LA", tol=1e-10, block_size=1)
    assert small.num_restarts > 0
    monkeypatch.setattr(lanczos, "free_memory", lambda device: 2**40)
    large = cp.eigsh(A, k=4, which="LA", tol=1e-10, block_size=1)
    assert large.num_restarts == 0
    assert torch.allclose(small.eigenvalues, ev[-4:], atol=1e-8)
    assert torch.allclose(large.eigenvalues, ev[-4:], atol=1e-8)


# --------------------------------------------------------------------------
# Multiplicities, exhausted Krylov spaces: eigenvalues counted with multiplicity


def linear_head(n_in=20, n_out=3, samples=50, seed=0):
    """``Linear(n_in, n_out)`` + mean MSE: H = (2 / (samples·n_out)) · I ⊗ X̃ᵀX̃."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, n_in, generator=g, dtype=torch.float64)
    Y = torch.randn(samples, n_out, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Linear(n_in, n_out).double()
    obj = cp.Objective(model, F.mse_loss, (X, Y))
    Xt = torch.cat([X, torch.ones(samples, 1, dtype=torch.float64)], dim=1)
    closed = torch.linalg.eigvalsh(2.0 / (samples * n_out) * Xt.T @ Xt)
    dense = dense_spectrum(model, X, Y) if n_in * n_out <= 100 else None
    return obj, closed.repeat_interleave(n_out), dense  # ascending, each n_out times


def dense_spectrum(model, X, Y):
    """Ascending eigenvalues of the mean-MSE Hessian by plain autograd double backward."""
    params = list(model.parameters())
    loss = F.mse_loss(model(X), Y)
    g = torch.cat(
        [d.reshape(-1) for d in torch.autograd.grad(loss, params, create_graph=True)]
    )
    rows = [
        torch.cat(
            [
                d.reshape(-1)
                for d in torch.autograd.grad(g[i], params, retain_graph=True)
            ]
        )
        for i in range(g.numel())
    ]
    Hd = torch.stack(rows)
    return torch.linalg.eigvalsh((Hd + Hd.T) / 2)


@pytest.mark.parametrize("block_size", [None, 1, 2, 3, 4])
def test_linear_head_top_eigenvalue_three_times(block_size):
    obj, closed, dense = linear_head()
    assert torch.allclose(dense, closed, rtol=0, atol=1e-12)
    r = cp.eigsh(obj.hessian(), k=3, which="LA", tol=1e-10, block_size=block_size)
    assert r.all_converged
    assert torch.allclose(r.eigenvalues, closed[-3:], rtol=0, atol=1e-9)
    assert torch.all((r.eigenvalues - closed[-3:]).abs() <= r.error_bounds + 1e-12)
    U = r.eigenvectors
    assert torch.allclose(U.T @ U, torch.eye(3, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("block_size", [None, 1, 2, 5])
def test_more_parameters_than_samples_zero_five_times(block_size):
    import scipy.sparse.linalg as spla

    obj, _, dense = linear_head(n_in=50, n_out=1, samples=10)
    H = obj.hessian()
    assert int((dense.abs() < 1e-10).sum()) == 41  # n = 51, rank 10
    arpack = spla.eigsh(H.to_scipy(), k=5, which="SA", return_eigenvectors=False)
    assert abs(arpack).max() < 1e-8  # ARPACK finds the five zeros too
    r = cp.eigsh(H, k=5, which="SA", tol=1e-5, block_size=block_size)
    assert r.all_converged
    assert torch.allclose(r.eigenvalues, dense[:5], rtol=0, atol=1e-8)
    assert torch.allclose(r.eigenvalues, torch.zeros(5, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("which", ["LA", "SA", "BE", "LM"])
@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_planted_multiplicities_beyond_the_block(which, block_size):
    # each end holds an eigenvalue of multiplicity 4, more than any block here
    ev = torch.cat(
        [
            torch.full((4,), -3.0),
            torch.tensor([-2.5, -2.0]),
            torch.linspace(-1.0, 1.0, 120),
            torch.tensor([4.0, 4.5]),
            torch.full((4,), 5.0),
        ]
    ).double()
    A, _ = planted_matrix(ev, seed=11)
    k = 6
    r = cp.eigsh(A, k=k, which=which, tol=1e-8, block_size=block_size, seed=2)
    if which == "LA":
        want = ev[-k:]
    elif which == "SA":
        want = ev[:k]
    elif which == "BE":
        want = torch.cat([ev[: k // 2], ev[-(k - k // 2) :]])
    else:
        want = torch.sort(
            ev[torch.argsort(ev.abs(), descending=True, stable=True)[:k]]
        ).values
    assert r.all_converged
    assert torch.allclose(r.eigenvalues, want, rtol=0, atol=1e-6)


def deep_linear_at_origin(width=30, depth=3):
    layers = [nn.Linear(width, width, bias=False) for _ in range(depth)]
    model = nn.Sequential(*layers).double()
    for p in model.parameters():
        nn.init.zeros_(p)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, width, generator=g, dtype=torch.float64)
    Y = torch.randn(16, width, generator=g, dtype=torch.float64)
    return cp.Objective(model, F.mse_loss, (X, Y))


def test_zero_hessian_stops_at_once():
    obj = deep_linear_at_origin()
    assert obj.num_params == 2700
    H = obj.hessian(check=False)
    r = cp.eigsh(H, k=3, tol=1e-5)
    assert torch.equal(r.eigenvalues, torch.zeros(3, dtype=torch.float64))
    assert r.all_converged
    assert r.num_matvecs <= 3 + 2 * r.block_size  # on the order of k products
    assert H.num_matvecs == r.num_matvecs


def test_low_rank_hessian_costs_rank_plus_k():
    obj, closed, _ = linear_head(n_in=200, n_out=1, samples=20)  # n = 201, rank <= 21
    H = obj.hessian(check=False)
    r = cp.eigsh(H, k=6, which="BE", tol=1e-10)
    want = torch.cat([closed[:3], closed[-3:]])
    assert r.all_converged
    assert torch.allclose(r.eigenvalues, want, rtol=0, atol=1e-9)
    assert torch.allclose(
        r.eigenvalues[:3], torch.zeros(3, dtype=torch.float64), atol=1e-9
    )
    rank = 21
    assert r.num_matvecs <= 2 * (rank + 6) + 2 * r.block_size


# --------------------------------------------------------------------------
# extreme_bounds: what the Krylov space may have missed, in probability


def isolated_extremes(n=200, seed=0):
    """A bulk on [0, 1] with an isolated top (1.5) and bottom (−0.5)."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(n - 2, generator=g, dtype=torch.float64)
    ev = torch.sort(torch.cat([bulk, torch.tensor([-0.5, 1.5], dtype=torch.float64)]))
    return ev.values


@pytest.mark.parametrize(("delta", "block_size"), [(0.01, 1), (0.3, 1), (0.3, 2)])
def test_extreme_bounds_cover_the_spectrum_as_often_as_promised(delta, block_size):
    ev = isolated_extremes()
    A, _ = planted_matrix(ev, seed=3)
    # A short, unconverged run: the bounds, not the Ritz values, must reach ±.
    misses, runs, widths = 0, 300, []
    for seed in range(runs):
        r = cp.eigsh(
            A,
            k=1,
            which="LA",
            tol=1e-12,
            max_matvecs=6,
            seed=seed,
            block_size=block_size,
        )
        assert not r.all_converged
        lo, hi = r.extreme_bounds(delta)
        assert lo <= r.ritz_min
        assert hi >= r.ritz_max
        assert r.ritz_min >= ev[0]
        assert r.ritz_max <= ev[-1]
        misses += bool(lo > ev[0] or hi < ev[-1])
        widths.append((hi - lo) / float(ev[-1] - ev[0]))
    assert misses <= delta * runs
    assert max(widths) < 10  # a bound, not infinity


def test_extreme_bounds_are_tight_at_the_defaults():
    ev = spectrum()  # n = 300: outliers up to 50, negatives to −3
    A, _ = planted_matrix(ev, seed=12)
    width = float(ev[-1] - ev[0])
    for block_size in (None, 1, 3):
        r = cp.eigsh(A, block_size=block_size)
        lo, hi = r.extreme_bounds()
        assert lo <= float(ev[0])
        assert hi >= float(ev[-1])
        assert float(ev[0]) - lo <= 0.03 * width
        assert hi - float(ev[-1]) <= 0.03 * width
    # the certificate tightens as the start vectors' Krylov spaces grow
    short = cp.eigsh(A, k=1, which="LA", tol=1e-12, max_matvecs=10, seed=1)
    long = cp.eigsh(A, k=1, which="LA", tol=1e-12, max_matvecs=40, seed=1)
    assert long.extreme_bounds()[1] - 50 < short.extreme_bounds()[1] - 50


def test_exhausted_space_bounds_are_exact():
    obj = deep_linear_at_origin()
    r = cp.eigsh(obj.hessian(check=False), k=3, tol=1e-5)
    assert r.extreme_bounds(0.01) == pytest.approx((0.0, 0.0), abs=1e-300)


def test_extreme_bounds_need_a_random_start():
    A, _ = planted_matrix(spectrum(), seed=13)
    v0 = torch.ones(300, dtype=torch.float64)
    r = cp.eigsh(A, k=2, which="LA", v0=v0, block_size=1)
    with pytest.raises(cp.InputError, match="no random start"):
        r.extreme_bounds()
    # with a block, the other columns are random
    lo, hi = cp.eigsh(A, k=2, which="LA", v0=v0, block_size=2).extreme_bounds()
    assert lo <= -3.0
    assert hi >= 50.0 - 1e-9
    with pytest.raises(cp.InputError, match="delta must lie"):
        cp.eigsh(A, k=2).extreme_bounds(1.5)


def test_progress_types(check_progress_types):
    A = torch.diag(torch.linspace(-1.0, 2.0, 40, dtype=torch.float64))
    check_progress_types(lambda progress: cp.eigsh(A, k=2, progress=progress))


def test_max_matvecs_is_the_budget_and_maxiter_its_deprecated_name():
    A, _ = planted_matrix(torch.linspace(0.0, 1.0, 200, dtype=torch.float64), seed=3)
    short = cp.eigsh(A, k=2, which="LA", tol=1e-12, max_matvecs=12, seed=1)
    assert short.num_matvecs <= 12
    assert not short.all_converged
    positional = cp.eigsh(A, 2, "LA", 1e-12, 12, 1)
    assert positional.num_matvecs == short.num_matvecs
    assert torch.equal(positional.eigenvalues, short.eigenvalues)
    with pytest.warns(DeprecationWarning, match=r"eigsh\(maxiter=.*use max_matvecs"):
        old = cp.eigsh(A, k=2, which="LA", tol=1e-12, maxiter=12, seed=1)
    assert old.num_matvecs == short.num_matvecs
    assert torch.equal(old.eigenvalues, short.eigenvalues)
    with pytest.raises(cp.InputError, match="give max_matvecs= only"):
        cp.eigsh(A, k=2, max_matvecs=12, maxiter=12)
    with pytest.raises(cp.InputError, match="max_matvecs must be a positive integer"):
        cp.eigsh(A, k=2, max_matvecs=0)


@pytest.mark.parametrize("which", ["LA", "SA", "BE", "LM"])
@pytest.mark.parametrize("h", [-2.5, 0.0, 3.0])
def test_a_one_by_one_operator_is_exact_in_one_product(which, h):
    # n == 1 needs no special case: the first Krylov space is exhausted at once
    r = cp.eigsh(torch.tensor([[h]], dtype=torch.float64), k=1, which=which)
    assert r.num_matvecs == 1
    assert float(r.eigenvalues[0]) == h
    assert r.all_converged
    assert float(r.residuals[0]) <= 4 * torch.finfo(torch.float64).eps * abs(h)
    assert abs(float(r.eigenvectors[0, 0])) == 1.0
    lo, hi = r.extreme_bounds(0.01)
    assert lo <= h <= hi
    assert hi - lo <= 1e-12 * max(abs(h), 1e-300) + 1e-300


@pytest.mark.parametrize(("k", "ncv", "block_size"), [(4, 20, 2), (2, 12, 1)])
def test_eigsh_holds_no_more_than_eigsh_memory_says(k, ncv, block_size):
    from critpoint.linalg.lanczos import eigsh_memory
    from tests.linalg.test_trace import LiveMemoryOperator

    # well-separated ends: few products, each one checked
    n = 400
    lam = torch.cat(
        [torch.linspace(-1.0, 1.0, n - 4), torch.tensor([5.0, 6.0, -5.0, -6.0])]
    )
    A, _ = planted_matrix(lam.double(), seed=3)
    op = LiveMemoryOperator(A)
    r = cp.eigsh(op, k=k, which="BE", ncv=ncv, block_size=block_size, tol=1e-8)
    basis, working = eigsh_memory(n, k, ncv, torch.float64, block_size)
    assert basis == (ncv + block_size) * n * 8
    assert op.peak <= basis + working
    assert op.peak >= basis  # the basis is there at every product
    assert r.all_converged
