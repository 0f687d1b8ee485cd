"""Seeds: any integer torch accepts, one clear error otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critpoint.errors import InputError
from critpoint.linalg._random import make_generator, randn


def test_seeds_give_the_same_numbers() -> None:
    a = randn((4,), make_generator(7), torch.float64, torch.device("cpu"))
    b = randn((4,), make_generator(np.int64(7)), torch.float64, torch.device("cpu"))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    make_generator(2**64 - 1)  # the largest seed torch takes


@pytest.mark.parametrize("seed", [2**70, -(2**70), 1.5, "3", True])
def test_bad_seeds_are_one_error(seed) -> None:
    with pytest.raises(InputError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        make_generator(seed)


@pytest.mark.parametrize(
    ("seed", "recorded"),
    [(7, 7), (np.int64(7), 7), (None, None), (torch.Generator(), None), (True, None)],
)
def test_results_record_an_integer_seed_only(seed, recorded) -> None:
    from critpoint.linalg._random import seed_record

    assert seed_record(seed) == recorded
    assert type(seed_record(seed)) in (int, type(None))
