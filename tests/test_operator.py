"""HessianOperator: products, dense(), scipy interop, counting, the symmetry probe."""

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
        obj.hessian()
    # the default eval mode switches dropout off: fine
    cp.Objective(model, F.cross_entropy, (X, y)).hessian()


def test_single_vector_dropout_drift_is_detected():
    model, X, y = setup(dropout=True)
    obj = cp.Objective(model, F.cross_entropy, (X, y), train_mode=True)
    H = obj.hessian(check=False)
    # the block path refuses; the probe on single products also flags the drift
    with pytest.raises(cp.NonDeterministicError):
        H.check_symmetric()


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
    assert cached.num_matvecs == plain.num_matvecs == 3 + 1 + 4  # probe, v, V
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
        obj.hessian()  # the probe never runs from a kept graph
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
