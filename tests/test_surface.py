"""Loss slices and planes: exact on quadratics, the model never moves, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import critpoint as cp
from critpoint.data import load_data
from critpoint.errors import InputError
from critpoint.models import build_model
from critpoint.surface import (
    Landscape,
    LossSlice,
    default_radius,
    landscape,
    loss_plane,
    loss_slice,
)


def least_squares_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """30 samples of 4 features (scaled differently) and real targets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 0.5, 1.5], dtype=torch.float64
    )
    return x, torch.randn(30, 1, generator=g, dtype=torch.float64)


def least_squares(seed: int = 0) -> tuple[cp.Objective, np.ndarray]:
    """A linear model with F.mse_loss: the loss is exactly quadratic, H = 2AᵀA/n."""
    x, y = least_squares_data(seed)
    n, d = x.shape
    model = torch.nn.Linear(d, 1).double()
    obj = cp.Objective(model, cp.get_loss("mse"), (x, y))
    a = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1).numpy()
    return obj, np.linalg.eigvalsh(2.0 * a.T @ a / n)


def test_slice_of_a_quadratic_is_its_taylor_polynomial() -> None:
    obj, _ = least_squares()
    u = torch.randn(
        obj.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    u = u / u.norm()
    sl = loss_slice(obj, u, radius=0.7, num=11, curvature=float(u @ obj.hvp(u)))
    assert sl.offsets.shape == sl.losses.shape == (11,)
    assert sl.offsets[0] == pytest.approx(-0.7)
    assert sl.offsets[-1] == pytest.approx(0.7)
    np.testing.assert_allclose(sl.losses, sl.quadratic(), rtol=1e-10, atol=1e-12)
    assert sl.slope == pytest.approx(float(obj.grad() @ u), rel=1e-10)


def test_plane_of_a_quadratic_and_the_model_does_not_move() -> None:
    obj, _ = least_squares()
    before = obj.theta.clone()
    state = {k: v.clone() for k, v in obj.model.state_dict().items()}
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(obj.num_params, dtype=torch.float64, generator=gen)
    v = torch.randn(obj.num_params, dtype=torch.float64, generator=gen)
    pl = loss_plane(obj, u, v, radius=(0.5, 0.3), num=(5, 3))
    assert pl.losses.shape == (3, 5)
    assert pl.losses[1, 2] == pytest.approx(pl.loss0)
    uu, vv = u / u.norm(), v / v.norm()
    for i, b in enumerate(pl.b):
        for j, a in enumerate(pl.a):
            assert pl.losses[i, j] == pytest.approx(
                obj.loss(before + a * uu + b * vv), rel=1e-12
            )
    assert torch.equal(obj.theta, before)
    for k, value in obj.model.state_dict().items():
        assert torch.equal(value, state[k])


def test_landscape_uses_the_extreme_eigenvectors_oriented_downhill() -> None:
    obj, exact = least_squares()
    with torch.no_grad():
        obj.model.weight.add_(0.3)  # away from the minimum: a non-zero gradient
    land = landscape(obj, num=9, plane_num=5, tol=1e-10)
    assert land.lambda_min == pytest.approx(exact[0], rel=1e-8)
    assert land.lambda_max == pytest.approx(exact[-1], rel=1e-8)
    assert land.slice_min.slope <= 0
    assert land.slice_max.slope <= 0
    np.testing.assert_allclose(
        land.slice_max.losses, land.slice_max.quadratic(), rtol=1e-9
    )
    assert land.escape is None  # no diagnosis given, no escape drawn
    assert land.plane is not None
    assert land.plane.losses.shape == (5, 5)
    assert abs(land.plane.cosine) < 1e-8
    again = Landscape.from_dict(json.loads(json.dumps(land.to_dict())))
    np.testing.assert_array_equal(again.plane.losses, land.plane.losses)
    np.testing.assert_array_equal(again.slice_min.offsets, land.slice_min.offsets)
    assert again.settings == land.settings


def test_landscape_draws_the_escape_step_of_a_saddle() -> None:
    obj = cp.Objective(
        build_model("two_weight", dtype="float64"),
        cp.get_loss("mse"),
        load_data("two_weight", dtype=torch.float64).as_tuple(),
    )
    dg = cp.diagnose(obj, density=False, trace=False)
    assert dg.kind == "saddle"
    assert dg.escape_direction is not None
    land = landscape(obj, dg, num=7, plane_num=5)
    assert land.lambda_min == pytest.approx(-2.0)
    assert land.lambda_max == pytest.approx(2.0)
    esc = land.escape
    assert esc is not None
    assert abs(esc["a"]) == pytest.approx(esc["step"], rel=1e-6)
    assert esc["b"] == pytest.approx(0.0, abs=1e-6)
    assert esc["loss_after"] < dg.loss


def test_bad_inputs_are_refused() -> None:
    obj, _ = least_squares()
    with pytest.raises(InputError, match="shape"):
        loss_slice(obj, torch.ones(3, dtype=torch.float64), radius=1.0)
    with pytest.raises(InputError, match="radius"):
        loss_slice(obj, torch.ones(obj.num_params, dtype=torch.float64), radius=0.0)
    with pytest.raises(InputError, match="non-zero"):
        loss_slice(obj, torch.zeros(obj.num_params, dtype=torch.float64), radius=1.0)


def test_default_radius() -> None:
    # √(2·L/|λ|)·1.25, capped by max(1, ‖θ‖), floored, and flat directions get the cap
    assert default_radius(2.0, 4.0, 10.0) == pytest.approx(1.25)
    assert default_radius(2.0, 1e-12, 3.0) == pytest.approx(3.0)
    assert default_radius(2.0, 0.0, 0.1) == pytest.approx(1.0)


def test_landscape_takes_the_diagnosis_eigenpairs_and_spends_no_product() -> None:
    obj, exact = least_squares()
    with torch.no_grad():
        obj.model.weight.add_(0.3)
    dg = cp.diagnose(obj, k=2, tol=1e-10, density=False, trace=False)
    assert dg.eigenvector_min is not None
    assert dg.eigenvector_max is not None
    seen = []
    land = landscape(
        obj, dg, num=5, plane_num=3, progress=lambda d, t: seen.append((d, t))
    )
    assert land.num_matvecs == 0
    assert land.settings["eigenpairs"] == "diagnosis"
    assert land.settings["tol"] == 1e-10
    assert (land.lambda_min, land.lambda_max) == (dg.lambda_min, dg.lambda_max)
    assert land.lambda_min == pytest.approx(exact[0], rel=1e-8)
    assert land.lambda_max_error == dg.lambda_max_error
    # along the diagnosis's λ_max eigenvector the quadratic is exact
    np.testing.assert_allclose(
        land.slice_max.losses, land.slice_max.quadratic(), rtol=1e-9
    )
    assert land.slice_max.slope == pytest.approx(
        float(obj.grad() @ dg.eigenvector_max), rel=1e-12
    )
    assert seen[-1] == (2 * 5 + 3 * 3, 2 * 5 + 3 * 3)
    # a diagnosis read from JSON has no vectors: one eigen-solve, the same slices
    back = cp.Diagnosis.from_dict(dg.to_dict())
    seen = []
    again = landscape(
        obj,
        back,
        num=5,
        plane_num=3,
        tol=1e-10,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert again.settings["eigenpairs"] == "eigsh"
    # the callback sees the eigensolver's products, then the loss evaluations
    assert (again.num_matvecs, again.num_matvecs) in seen
    assert seen[-1] == (2 * 5 + 3 * 3, 2 * 5 + 3 * 3)
    assert again.num_matvecs > 0
    assert again.lambda_max == pytest.approx(land.lambda_max, rel=1e-9)
    np.testing.assert_allclose(again.slice_max.losses, land.slice_max.losses, rtol=1e-9)


def test_landscape_refuses_the_diagnosis_of_other_parameters() -> None:
    obj, _ = least_squares()
    part = cp.Objective(
        obj.model, cp.get_loss("mse"), least_squares_data(), params="weight"
    )
    dg = cp.diagnose(part, k=2, density=False, trace=False)
    with pytest.raises(InputError, match="diagnosis is of 4 parameters"):
        landscape(obj, dg, num=3, plane=False)


def test_non_finite_losses_travel_as_null() -> None:
    sl = LossSlice(
        np.array([-1.0, 0.0, 1.0]), np.array([np.inf, 1.0, np.nan]), 1.0, 0.0, None
    )
    doc = json.loads(json.dumps(sl.to_dict(), allow_nan=False))
    assert doc["losses"] == [None, 1.0, None]
    back = LossSlice.from_dict(doc)
    assert np.isnan(back.losses[0])
    assert back.losses[1] == 1.0


def test_a_diagnosis_of_another_point_is_not_trusted_for_its_vectors() -> None:
    obj, exact = least_squares()
    dg = cp.diagnose(obj, k=2, tol=1e-10, density=False, trace=False)
    with torch.no_grad():
        obj.model.weight.add_(0.3)  # the point moved: the loss is another
    land = landscape(obj, dg, num=3, plane=False, tol=1e-10)
    assert land.settings["eigenpairs"] == "eigsh"
    assert land.num_matvecs > 0
    assert land.lambda_max == pytest.approx(exact[-1], rel=1e-8)  # H is constant
