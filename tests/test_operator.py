"""HessianOperator: products, dense(), scipy interop, counting, the symmetry probe."""

import copy

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.testing import reference_hessian


def setup(dropout=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 6), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(6, 3))
    return nn.Sequential(*layers).double(), X, y


def test_products_dense_and_counts():
    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    H = obj.hessian(check=False)
    ref = reference_hessian(model, F.cross_entropy, X, y)
    assert H.shape == (51, 51)
    assert H.dtype == torch.float64
    assert H.device == torch.device("cpu")
    v = torch.randn(51, dtype=torch.float64)
    assert torch.allclose(H @ v, ref @ v, rtol=0, atol=1e-12)
    assert torch.allclose(H.matvec(v), ref @ v, rtol=0, atol=1e-12)
    V = torch.randn(51, 5, dtype=torch.float64)
    assert torch.allclose(H @ V, ref @ V, rtol=0, atol=1e-12)
    assert H.num_matvecs == 7
    assert H.num_passes == 3
    D = H.dense(block=16)
    assert torch.allclose(D, ref, rtol=0, atol=1e-12)
    assert H.num_matvecs == 7 + 51


def test_operator_is_frozen_at_its_point():
    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    H = obj.hessian()
    v = torch.randn(obj.num_params, dtype=torch.float64)
    before = H @ v
    obj.set_theta(obj.theta * 1.5)
    assert torch.equal(H @ v, before)


def test_to_scipy_drives_arpack():
    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    H = obj.hessian()
    ref = torch.linalg.eigvalsh(reference_hessian(model, F.cross_entropy, X, y)).numpy()
    A = H.to_scipy()
    vals = spla.eigsh(A, k=3, which="LA", tol=1e-12, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), ref[-3:], atol=1e-10)
    assert A.matmat(np.eye(51)[:, :2]).shape == (51, 2)


def test_dense_refuses_huge_models():
    model = nn.Linear(200, 60).double()
    X = torch.randn(5, 200, dtype=torch.float64)
    obj = cp.Objective(model, F.cross_entropy, (X, torch.zeros(5, dtype=torch.long)))
    with pytest.raises(
        cp.DenseTooLargeError, match=r"12060 x 12060 matrix .*max_size=10000"
    ):
        obj.hessian(check=False).dense()


def test_dropout_left_on_is_refused():
    model, X, y = setup(dropout=True)
    obj = cp.Objective(model, F.cross_entropy, (X, y), train_mode=True)
    with pytest.raises(cp.NonDeterministicError, match="dropout"):
        cp.eigsh(obj.hessian(), k=1)  # refused at the first product
    with pytest.raises(cp.NonDeterministicError, match="dropout"):
        obj.hessian(check=False).check_symmetric()  # or at once, on request
    # the default eval mode switches dropout off: fine
    cp.eigsh(cp.Objective(model, F.cross_entropy, (X, y)).hessian(), k=1)


def test_single_vector_dropout_drift_is_detected():
    model, X, y = setup(dropout=True)
    obj = cp.Objective(model, F.cross_entropy, (X, y), train_mode=True)
    H = obj.hessian(check=False)
    # the block path refuses; the probe on single products also flags the drift
    with pytest.raises(cp.NonDeterministicError):
        H.check_symmetric()


def skewed(monkeypatch, n, size=1e-3):
    """Make every product ``(H + K) v`` with a fixed antisymmetric ``K``: deterministic, not symmetric."""
    from critpoint.objective import Linearization

    g = torch.Generator().manual_seed(3)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    K = size * (B - B.T)
    real = Linearization.hvp

    def hvp(self, v, *, fresh=False):
        return real(self, v, fresh=fresh) + K @ v

    monkeypatch.setattr(Linearization, "hvp", hvp)


def test_the_probe_rides_on_the_solvers_products():
    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    H = obj.hessian()
    assert H.num_matvecs == 0  # nothing spent up front
    r = cp.eigsh(H, k=1, which="LA", tol=1e-8)
    # the solver's products only: the determinism test is a forward pass
    assert H.num_matvecs == r.num_matvecs
    assert H.probe_matvecs == 0
    assert 0 <= H.probe_discrepancy < 1e-10
    ref = torch.linalg.eigvalsh(reference_hessian(model, F.cross_entropy, X, y))
    assert float(r.eigenvalues[-1]) == pytest.approx(float(ref[-1]), abs=1e-8)
    # the explicit probe is still there: three products at once
    H2 = obj.hessian(check=False)
    H2.check_symmetric()
    assert H2.num_matvecs == 3


def test_a_non_symmetric_product_is_still_caught(monkeypatch):
    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    skewed(monkeypatch, obj.num_params)
    # single-vector Lanczos: caught at its second product (x₁ᵀHx₂ vs x₂ᵀHx₁)
    H = obj.hessian()
    with pytest.raises(cp.NonDeterministicError, match="not symmetric"):
        cp.eigsh(H, k=1, which="LA")
    assert H.num_matvecs == 2
    # a block: caught on its first product
    H = obj.hessian()
    with pytest.raises(cp.NonDeterministicError, match="not symmetric"):
        H @ torch.randn(obj.num_params, 2, dtype=torch.float64)
    # a parallel vector tests nothing: the probe waits for an independent one
    H = obj.hessian()
    v = torch.randn(obj.num_params, dtype=torch.float64)
    H @ v
    H @ (2 * v)
    assert H.probe_discrepancy is None
    with pytest.raises(cp.NonDeterministicError, match="not symmetric"):
        H @ torch.randn(obj.num_params, dtype=torch.float64)
    # check=False: nothing is probed
    H = obj.hessian(check=False)
    H @ torch.randn(obj.num_params, 2, dtype=torch.float64)
    assert H.probe_matvecs == 0


def test_asymmetry_below_the_threshold_is_no_false_alarm(monkeypatch):
    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y))
    skewed(monkeypatch, obj.num_params, size=1e-12)
    H = obj.hessian()
    H @ torch.randn(obj.num_params, 2, dtype=torch.float64)
    assert 0 < H.probe_discrepancy < 10 * torch.finfo(torch.float64).eps ** 0.5


def test_shuffled_float32_loader_is_no_false_alarm():
    model, X, y = setup()
    model = model.float()
    ds = torch.utils.data.TensorDataset(X.float(), y)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, shuffle=True)
    obj = cp.Objective(model, F.cross_entropy, loader)
    H = obj.hessian()  # must not raise
    assert H.check_symmetric() < 1e-4


def test_bad_shapes():
    model, X, y = setup()
    H = cp.Objective(model, F.cross_entropy, (X, y)).hessian()
    with pytest.raises(cp.InputError, match=r"matvec takes a vector of shape \(51,\)"):
        H.matvec(torch.ones(51, 2, dtype=torch.float64))
    with pytest.raises(cp.InputError, match=r"matmat takes a block of shape \(51, k\)"):
        H.matmat(torch.ones(51, dtype=torch.float64))


# ------------------------------------------------------- linearisation cache
def bn_setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)
    ).double()
    model.train()
    model(X)  # non-trivial running statistics
    return model, X, y


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("train_mode", [False, True])
def test_cached_products_equal_recomputed_ones(train_mode, batched, monkeypatch):
    from critpoint import _autodiff

    if batched:  # the GPU's way through a block: one batched backward pass
        monkeypatch.setattr(_autodiff, "COLUMN_BY_COLUMN", frozenset())
    model, X, y = bn_setup()
    kwargs = dict(train_mode=train_mode, batch_size=16)  # 16+16+16+2: uneven batches
    cached = cp.Objective(model, F.cross_entropy, (X, y), **kwargs).hessian()
    plain = cp.Objective(
        model, F.cross_entropy, (X, y), hvp_cache=None, **kwargs
    ).hessian()
    v = torch.randn(cached.shape[0], dtype=torch.float64)
    V = torch.randn(cached.shape[0], 4, dtype=torch.float64)
    assert torch.allclose(cached @ v, plain @ v, rtol=0, atol=1e-13)
    assert cached.cached
    assert not plain.cached
    assert torch.allclose(cached @ V, plain @ V, rtol=0, atol=1e-13)
    # v and V: the probe's symmetry test rides on them, its determinism test
    # is a forward pass (the kept graphs' against a fresh one, or two fresh)
    assert cached.num_matvecs == plain.num_matvecs == 1 + 4
    assert cached.probe_matvecs == plain.probe_matvecs == 0
    assert cached.probe_discrepancy is not None
    cached.objective.chunk_size = 3  # 4 columns: a chunk of 3, then one of 1
    assert torch.allclose(cached @ V, plain @ V, rtol=0, atol=1e-13)
    if not train_mode:  # the eval-mode Hessian is the dense float64 reference
        ref = reference_hessian(model.eval(), F.cross_entropy, X, y)
        model.train()
        assert torch.allclose(cached.dense(block=20), ref, rtol=0, atol=1e-12)
    assert model.training  # the model's own mode is back after every product


def test_cache_budget_is_all_or_nothing_and_measured():
    from critpoint import _autodiff

    model, X, y = setup()
    obj = cp.Objective(model, F.cross_entropy, (X, y), batch_size=10)
    batch = (X[:10], y[:10])
    need = _autodiff.graph_bytes(obj._batch_fn(batch), obj.theta) / 10 * 40
    # the graph holds at least θ, the inputs and the hidden activations
    assert need > (51 + 40 * 4 + 40 * 6) * 8
    v = torch.randn(obj.num_params, dtype=torch.float64)
    expected = obj.hessian(check=False) @ v
    for budget, cached in [(int(need * 1.01), True), (int(need * 0.99), False)]:
        small = cp.Objective(
            model, F.cross_entropy, (X, y), batch_size=10, hvp_cache=budget
        )
        H = small.hessian(check=False)
        assert torch.allclose(H @ v, expected, rtol=0, atol=1e-13)
        assert H.cached is cached
    H = obj.hessian(check=False)
    H @ v
    assert H.cached
    H.release_cache()
    assert not H.cached
    assert torch.allclose(H @ v, expected, rtol=0, atol=1e-13)
    assert not H.cached  # released for good
    fwd = cp.Objective(model, F.cross_entropy, (X, y), hvp_mode="fwd-rev").hessian()
    assert torch.allclose(fwd @ v, expected, rtol=0, atol=1e-12)
    assert not fwd.cached  # only reverse-over-reverse graphs are kept


def test_cache_keeps_dropout_detection_and_shuffled_loaders_exact():
    model, X, y = setup(dropout=True)
    obj = cp.Objective(model, F.cross_entropy, (X, y), train_mode=True)
    with pytest.raises(cp.NonDeterministicError, match="dropout"):
        cp.eigsh(obj.hessian(), k=1)  # the probe never runs from a kept graph
    model, X, y = setup()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=7, shuffle=True
    )
    H = cp.Objective(model, F.cross_entropy, loader).hessian()
    v = torch.randn(H.shape[0], dtype=torch.float64)
    ref = reference_hessian(model, F.cross_entropy, X, y)
    assert torch.allclose(H @ v, ref @ v, rtol=0, atol=1e-12)
    assert H.cached


@pytest.mark.parametrize("bad", [-1, 1.5, "big", True])
def test_bad_cache_budget(bad):
    model, X, y = setup()
    with pytest.raises(cp.InputError, match="hvp_cache"):
        cp.Objective(model, F.cross_entropy, (X, y), hvp_cache=bad)


def test_the_operator_owns_its_cache_budget(tmp_path, monkeypatch):
    from critpoint import _memory, operator

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(str(3 * 2**20) + "\n")
    usage.write_text(str(2**20) + "\n")
    monkeypatch.setattr(_memory, "CGROUP_MEMORY_FILES", ((str(limit), str(usage)),))
    assert _memory.free_host_memory() == 2 * 2**20
    assert _memory.free_memory(torch.device("cpu")) == 2 * 2**20
    model, X, y = setup()

    def budget(**kwargs):
        obj = cp.Objective(model, F.cross_entropy, (X, y), **kwargs)
        return obj.hessian(check=False).cache_budget()

    # "auto": a quarter of the free host memory, which respects a container limit
    assert budget() == int(2 * 2**20 * operator.AUTO_CACHE_SHARE["cpu"])
    assert budget(hvp_cache=12345) == 12345
    assert budget(hvp_cache=None) == 0
    assert budget(hvp_cache=12345, hvp_mode="fwd-rev") == 0  # no graphs to keep
    limit.write_text("max\n")  # no limit: the host's free memory counts
    assert _memory.free_host_memory() > 2 * 2**20


# --------------------------------------------------------- the operator contract
def _contract_model(bn):
    torch.manual_seed(3)
    layers = [nn.Linear(4, 5)]
    if bn:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 3)]
    model = nn.Sequential(*layers).double()
    if bn:
        with torch.no_grad():  # non-trivial running statistics and affine part
            model[1].running_mean.uniform_(-0.5, 0.5)
            model[1].running_var.uniform_(0.5, 2.0)
            model[1].weight.uniform_(0.5, 1.5)
    return model


def _hessian_case(mode, cached, bn):
    """A Hessian operator and its dense plain-autograd Hessian (batches of 10, 10, 10, 7)."""
    from critpoint.testing import autograd_hessian

    g = torch.Generator().manual_seed(11)
    X = torch.randn(37, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (37,), generator=g)
    model = _contract_model(bn in ("eval", "train"))
    obj = cp.Objective(
        model,
        F.cross_entropy,
        (X, y),
        batch_size=10,
        hvp_mode=mode,
        hvp_cache="auto" if cached else None,
        train_mode=bn == "train",
    )
    reference = copy.deepcopy(model).train(bn == "train")
    names = obj.param_names
    sizes = obj.param_sizes
    buffers = dict(reference.named_buffers())

    def f(theta):
        # Each batch's mean loss weighted by its size: the objective's own
        # definition (with batch statistics, the result depends on the batches).
        params = dict(zip(names, torch.split(theta, sizes), strict=True))
        params = {
            k: v.view_as(dict(reference.named_parameters())[k])
            for k, v in params.items()
        }
        total = 0.0
        for start in range(0, 37, 10):
            out = torch.func.functional_call(
                reference,
                {**params, **{k: b.clone() for k, b in buffers.items()}},
                (X[start : start + 10],),
            )
            total = total + F.cross_entropy(out, y[start : start + 10]) * len(out)
        return total / 37

    H = obj.hessian()
    # its first products: the probe rides on them (one product more in fwd-rev)
    n = obj.num_params
    H.matmat(torch.stack([torch.ones(n), torch.arange(n) / n], dim=1).double())
    assert H.probe_discrepancy is not None
    assert H.num_matvecs == 2 + H.probe_matvecs
    assert H.probe_matvecs == (1 if mode == "fwd-rev" else 0)
    expect_cached = cached and mode == "rev-rev"
    return H, autograd_hessian(f, obj.theta), expect_cached


class _Scipy:
    """``H.to_scipy()`` seen through torch, so the contract can run on it."""

    def __init__(self, H):
        self.H, self.A = H, H.to_scipy()
        self.shape, self.dtype, self.device = (
            self.A.shape,
            torch.float64,
            torch.device("cpu"),
        )

    @property
    def num_matvecs(self):
        return self.H.num_matvecs

    def matvec(self, v):
        return torch.from_numpy(self.A.matvec(v.numpy()))

    def matmat(self, V):
        return torch.from_numpy(self.A.matmat(V.numpy()))

    def __matmul__(self, v):
        return torch.from_numpy(self.A @ v.numpy())

    def dense(self):
        return self.matmat(torch.eye(self.shape[0], dtype=torch.float64))


def _operator(case):
    from critpoint.linalg._operator import DenseOperator
    from critpoint.testing import planted_matrix

    if case == "dense":
        A, _ = planted_matrix(
            torch.linspace(-2.0, 3.0, 30, dtype=torch.float64), seed=4
        )
        return DenseOperator(A), A, None
    if case.startswith("scipy"):
        H, ref, _ = _hessian_case("rev-rev", True, case.split("-")[1])
        return _Scipy(H), ref, None
    mode, cache, bn = case.split("/")
    return _hessian_case(mode, cache == "cached", bn)


CASES = ["dense", "scipy-none", "scipy-eval"] + [
    f"{mode}/{cache}/{bn}"
    for mode in ("rev-rev", "fwd-rev")
    for cache in ("cached", "plain")
    for bn in ("none", "eval", "train")
]


@pytest.mark.parametrize("case", CASES)
def test_every_operator_keeps_the_contract(case):
    H, ref, cached = _operator(case)
    n = ref.shape[0]
    assert tuple(H.shape) == (n, n)
    assert H.dtype == torch.float64
    assert H.device == torch.device("cpu")
    if cached is not None:
        assert H.cached is cached
    g = torch.Generator().manual_seed(5)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    V = torch.randn(n, 3, generator=g, dtype=torch.float64)
    scale = float(ref.abs().max())
    start = H.num_matvecs
    Hv, HV = H @ v, H @ V  # one product, then a block of three
    assert H.num_matvecs == start + 4
    assert Hv.shape == (n,)
    assert HV.shape == (n, 3)
    mv, mm = H.matvec(v), H.matmat(v[:, None])
    assert H.num_matvecs == start + 6
    # agreement with the dense plain-autograd Hessian
    assert torch.allclose(Hv, ref @ v, rtol=0, atol=1e-12 * scale * n)
    assert torch.allclose(HV, ref @ V, rtol=0, atol=1e-12 * scale * n)
    # matvec and matmat are the same product; @ is one of them
    assert torch.allclose(mv, mm[:, 0], rtol=0, atol=1e-13 * scale * n)
    assert torch.allclose(Hv, mv, rtol=0, atol=1e-13 * scale * n)
    assert torch.allclose(HV[:, :1], H.matmat(V[:, :1]), rtol=0, atol=1e-13 * scale * n)
    # symmetric: uᵀ(Hw) = wᵀ(Hu)
    assert float(V[:, 0] @ HV[:, 1]) == pytest.approx(
        float(V[:, 1] @ HV[:, 0]), rel=1e-12
    )
    before = H.num_matvecs
    D = H.dense()
    assert H.num_matvecs - before in (0, n)  # the dense matrix, or n products
    assert torch.allclose(D, ref, rtol=0, atol=1e-12 * scale * n)


@pytest.mark.parametrize("case", ["dense", "rev-rev/cached/none"])
def test_every_operator_refuses_bad_vectors(case):
    H, ref, _ = _operator(case)
    n = ref.shape[0]
    with pytest.raises(
        cp.InputError, match=rf"matvec takes a vector of shape \({n},\)"
    ):
        H.matvec(torch.ones(n + 1, dtype=torch.float64))
    with pytest.raises(
        cp.InputError, match=rf"matmat takes a block of shape \({n}, k\)"
    ):
        H.matmat(torch.ones(n, dtype=torch.float64))
    with pytest.raises(cp.InputError, match="floating"):
        H @ torch.ones(n, dtype=torch.long)
