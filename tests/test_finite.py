"""all_finite: the cheap NaN/Inf check behind every product."""

import pytest
import torch

from critpoint._finite import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finds_every_kind_of_non_finite_entry(dtype):
    x = torch.randn(1000, 8, dtype=dtype)
    assert all_finite(x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[123, 4] = bad
        assert not all_finite(y)
    y = x.clone()
    y[0, 0], y[1, 1] = float("inf"), -float("inf")  # the sum is NaN, not ±Inf
    assert not all_finite(y)


def test_a_finite_tensor_whose_sum_overflows_is_finite():
    x = torch.full((4,), 3e38, dtype=torch.float32)
    assert not torch.isfinite(x.sum())
    assert all_finite(x)
