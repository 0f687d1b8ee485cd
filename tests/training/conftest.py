"""Shared set-up of the training tests: a small float64 digits set and MLP."""

from __future__ import annotations

import pytest

from critpoint.data import load_data
from critpoint.models import build_model


@pytest.fixture(scope="session")
def digits():
    return load_data("digits", dtype="float64").subset(240)


@pytest.fixture
def small_model():
    """``small_model(seed=0, **kw)``: an MLP 64 → 8 → 10 in float64."""

    def make(seed=0, **kw):
        return build_model("mlp", widths=[8], seed=seed, dtype="float64", **kw)

    return make
