"""critpoint._json: strict values, the one header, checks of what is read."""

import json
import math

import numpy as np
import pytest
import torch

import critpoint
from critpoint._json import check_header, clean, dumps, header
from critpoint.errors import InputError


def test_clean_makes_strict_json_of_everything_critpoint_stores():
    value = {
        1: (1.5, math.nan, -math.inf, math.inf),
        "np": [np.float64(2.5), np.int64(3), np.bool_(True)],
        "t": torch.tensor(4.0),
        "version": torch.__version__,
        "none": None,
        "flag": True,
    }
    out = clean(value)
    assert out == {
        "1": [1.5, None, None, None],
        "np": [2.5, 3, True],
        "t": 4.0,
        "version": str(torch.__version__),
        "none": None,
        "flag": True,
    }
    assert type(out["version"]) is str
    assert type(out["np"][1]) is int
    # allow_nan=False: a NaN left anywhere would raise here
    assert json.loads(dumps(value)) == out


def test_header_names_schema_and_versions():
    h = header("critpoint.thing", 2)
    assert h == {
        "schema": "critpoint.thing",
        "schema_version": 2,
        "critpoint_version": critpoint.__version__,
        "torch_version": str(torch.__version__),
    }


def test_check_header_reads_old_names_and_refuses_the_rest():
    doc = {**header("critpoint.thing", 1)}
    assert check_header(doc, "critpoint.thing", 1) == 1
    old = {"schema": "critpoint-thing", "version": 1}
    assert check_header(old, "critpoint.thing", 2, aliases=("critpoint-thing",)) == 1
    with pytest.raises(
        InputError, match=r"f\.json is not a critpoint critpoint\.thing"
    ):
        check_header({"schema": "other"}, "critpoint.thing", 1, "f.json")
    with pytest.raises(InputError, match="JSON object"):
        check_header([1, 2], "critpoint.thing", 1)
    with pytest.raises(InputError, match=r"reads up to version 1\. Upgrade"):
        check_header({**doc, "schema_version": 5}, "critpoint.thing", 1)
    with pytest.raises(InputError, match="positive integer"):
        check_header({**doc, "schema_version": "1"}, "critpoint.thing", 1)
