"""critpoint._checks: shared argument validators."""

import math

import numpy as np
import pytest

from critpoint._checks import finite_float, integer, positive_int, probability
from critpoint.errors import InputError


def test_integers():
    assert positive_int(np.int64(3), "k") == 3
    assert integer(0, "n", minimum=0) == 0
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(
            InputError, match=r"k must be a positive integer, got .*; try 6"
        ):
            positive_int(bad, "k", "try 6")
    with pytest.raises(InputError, match="an integer >= 2"):
        integer(1, "n", minimum=2)


def test_floats_and_probabilities():
    assert finite_float(1, "tol", minimum=0.0) == 1.0
    assert finite_float(0.0, "tol", minimum=0.0) == 0.0
    with pytest.raises(InputError, match="tol must be a finite number > 0"):
        finite_float(0.0, "tol", minimum=0.0, strict=True)
    for bad in (math.nan, math.inf, True, "1"):
        with pytest.raises(InputError, match="finite number"):
            finite_float(bad, "tol")
    assert probability(0.01, "delta") == 0.01
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(InputError, match="delta must"):
            probability(bad, "delta")
