"""The one quadratic step: its length, its predicted change, the downhill orientation."""

import math

import pytest
import torch

import critpoint as cp
from critpoint.analysis.step import downhill, predicted_change


def test_quadratic_step_closed_form():
    step = cp.quadratic_step(2.0, -0.5, -4.0)
    assert step.step_size == pytest.approx(1.0)  # ½·4·α² = 2
    assert step.predicted_change == pytest.approx(-0.5 - 2.0)
    capped = cp.quadratic_step(2.0, -0.5, -4.0, max_step=0.1)
    assert capped.step_size == 0.1
    assert capped.predicted_change == pytest.approx(-0.05 - 0.02)
    # a zero loss still gives a step (floored at eps of the dtype)
    tiny = cp.quadratic_step(0.0, 0.0, -2.0, dtype=torch.float32)
    assert tiny.step_size == pytest.approx(math.sqrt(torch.finfo(torch.float32).eps))


def test_predicted_change_is_the_quadratic_model():
    assert predicted_change(-0.5, -4.0, 0.5) == pytest.approx(-0.25 - 0.5)
    assert predicted_change(1.0, 2.0, 3.0) == pytest.approx(3.0 + 9.0)


def test_downhill_flips_a_direction_that_climbs():
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    u = torch.tensor([0.6, 0.8], dtype=torch.float64)  # gᵀu = −1: already downhill
    same, slope = downhill(u, g)
    assert torch.equal(same, u)
    assert slope == pytest.approx(-1.0)
    flipped, slope = downhill(-u, g)
    assert torch.equal(flipped, u)
    assert slope == pytest.approx(-1.0)
