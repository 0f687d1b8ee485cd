"""critpoint.linalg._operator: the solvers' protocol, the Operator base, DenseOperator."""

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

from critpoint.errors import InputError
from critpoint.linalg._operator import DenseOperator, SymmetricOperator, as_operator
from critpoint.testing import planted_matrix


def test_dense_operator_products_counts_and_scipy():
    A, _ = planted_matrix([-2.0, 0.5, 1.0, 3.0], seed=1)
    op = as_operator(A)
    assert isinstance(op, DenseOperator)
    assert isinstance(op, SymmetricOperator)
    assert op.shape == (4, 4)
    assert op.dtype == torch.float64
    V = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), A @ V, rtol=0, atol=0)
    torch.testing.assert_close(op @ V[:, 0], A @ V[:, 0], rtol=0, atol=0)
    assert op.num_matvecs == 4
    dense = op.dense()
    dense[0, 0] = 99.0  # a copy
    assert float(op.matrix[0, 0]) != 99.0
    lo = scipy.sparse.linalg.eigsh(op.to_scipy(), k=1, which="SA")[0]
    np.testing.assert_allclose(lo, [-2.0], rtol=1e-12)


def test_bad_operators_are_refused():
    with pytest.raises(InputError, match="square matrix"):
        DenseOperator(torch.zeros(2, 3))
    with pytest.raises(InputError, match="floating dtype"):
        DenseOperator(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(InputError):
        as_operator("not an operator")
    op = DenseOperator(torch.eye(3, dtype=torch.float64))
    with pytest.raises(InputError):
        op.matmat(torch.zeros(4, 1, dtype=torch.float64))
