"""Fixtures shared by the data tests."""

import pytest

from critpoint.data import Data, load_data


@pytest.fixture(scope="module")
def digits() -> Data:
    return load_data("digits")
