"""Renamed arguments: the old name works with a warning, both names are refused."""

import warnings

import pytest

from critpoint._deprecation import UNSET, renamed
from critpoint.errors import InputError


def test_renamed_argument():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert renamed("f", "old", "new", UNSET, 5, None) == 5
        assert renamed("f", "old", "new", UNSET, None, None) is None
    with pytest.warns(
        DeprecationWarning, match=r"f\(old=\.\.\.\) is deprecated.*use new="
    ):
        assert renamed("f", "old", "new", 7, None, None) == 7
    with pytest.raises(InputError, match="give new= only"):
        renamed("f", "old", "new", 7, 5, None)
    assert repr(UNSET) == "<not given>"
