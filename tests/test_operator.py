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
