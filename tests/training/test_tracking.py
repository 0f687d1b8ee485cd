"""critpoint.training.tracking: curvature at the tracking points, against exact answers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.losses import get_loss
from critpoint.models import build_model
from critpoint.testing import reference_hessian
from critpoint.training import History, train
from critpoint.training.tracking import CurvatureTracker, TrackOptions, check_track


class Waves(nn.Module):
    """``y_i = cos(w_i x_i)``: each output has its own weight, so the Hessian is diagonal."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.5, 1.5, n, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.w * x)


def test_tracked_curvature_of_a_diagonal_hessian_is_exact():
    """Sharpness, λ_min and the minimum ratio at every point, against the dense Hessian.

    SLQ's probes are Rademacher vectors (``spectral_density``'s contract):
    ``z_i² = 1/n`` in every coordinate. On a diagonal Hessian, Lanczos run to
    the end of its Krylov space (``n ≤ track_lanczos_steps``) then gives
    every eigenvalue the weight ``1/n`` exactly, for every probe: the tracked
    ratio is the exact share of eigenvalues ``≥ −τ``, with no sampling
    error, so it is compared to rounding.
    """
    n = 12
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, n, generator=gen, dtype=torch.float64)
    y = 0.5 * torch.randn(50, n, generator=gen, dtype=torch.float64)
    model = Waves(n)
    thetas = {0: model.w.detach().clone()}

    def keep(k, history):  # θ_{k+1}, the parameters after update k
        thetas[k + 1] = model.w.detach().clone()

    h = train(
        model,
        (x, y),
        loss="mse",
        lr=0.5,
        steps=6,
        track=["sharpness", "lambda_min", "minimum_ratio"],
        track_every=2,
        track_tol=1e-12,
        seed=3,
        callback=keep,
    )
    assert h.track_step == [0, 2, 4, 6]
    ratios = []
    for step, top, bottom, ratio in zip(
        h.track_step, h.sharpness, h.lambda_min, h.minimum_ratio, strict=True
    ):
        point = Waves(n)
        with torch.no_grad():
            point.w.copy_(thetas[step])
        H = reference_hessian(point, F.mse_loss, x, y)
        assert torch.equal(H, torch.diag(torch.diagonal(H)))
        eigenvalues = torch.linalg.eigvalsh(H)
        lo, hi = float(eigenvalues[0]), float(eigenvalues[-1])
        tau = cp.zero_tolerance(lo, hi, 1e-3)
        exact = float((eigenvalues >= -tau).sum()) / n
        assert top == pytest.approx(hi, rel=1e-10)
        assert bottom == pytest.approx(lo, rel=1e-10)
        assert ratio == pytest.approx(exact, abs=1e-12)
        ratios.append(exact)
    assert ratios == [8 / 12, 8 / 12, 8 / 12, 9 / 12]  # one eigenvalue turns positive


def test_tracking_matches_an_independent_eigsh(digits, small_model):
    model = small_model()
    h = train(
        model,
        digits,
        optimizer="momentum",
        lr=0.05,
        batch_size=48,
        steps=12,
        track=["sharpness", "lambda_min", "minimum_ratio"],
        track_every=5,
        track_tol=1e-10,
        seed=2,
    )
    assert h.track_step == [0, 5, 10, 12]
    assert len(h.sharpness) == len(h.lambda_min) == len(h.minimum_ratio) == 4
    obj = cp.Objective(model, get_loss("cross_entropy"), digits.as_tuple())
    H = obj.hessian()
    top = float(cp.eigsh(H, k=1, which="LA", tol=1e-10, seed=99).eigenvalues[-1])
    bottom = float(cp.eigsh(H, k=1, which="SA", tol=1e-10, seed=99).eigenvalues[0])
    assert h.sharpness[-1] == pytest.approx(top, rel=1e-6)
    assert h.lambda_min[-1] == pytest.approx(bottom, rel=1e-6)
    dense = torch.linalg.eigvalsh(H.dense())
    assert h.sharpness[-1] == pytest.approx(float(dense[-1]), rel=1e-6)
    # The tracked ratio is the one a diagnosis with the same SLQ reports.
    d = cp.diagnose(obj, num_probes=4, num_steps=40, tol=1e-10, trace=False, seed=2)
    assert 0.0 < d.minimum_ratio < 1.0
    assert h.minimum_ratio[-1] == pytest.approx(d.minimum_ratio, abs=1e-12)
    # cost: the symmetry probe (1) once, two Lanczos runs, SLQ 4 probes x 40 steps
    assert all(m >= 160 for m in h.track_matvecs)
    assert h.final_sharpness == h.sharpness[-1]


def test_default_tracking_cadence_and_batchnorm_train_mode(digits):
    model = build_model("mlp", widths=[8], batchnorm=True, seed=0, dtype="float64")
    h = train(model, digits, lr=0.1, steps=20, track="sharpness", track_train_mode=True)
    assert h.track_step == list(range(0, 21, 2))  # about ten points: every T // 10
    obj = cp.Objective(
        model, get_loss("cross_entropy"), digits.as_tuple(), train_mode=True
    )
    top = float(cp.eigsh(obj.hessian(), k=1, which="LA", tol=1e-10).eigenvalues[-1])
    assert h.sharpness[-1] == pytest.approx(top, rel=1e-2)
    # The full-data evaluations (in train mode) leave the running statistics
    # alone: after one full-batch step they moved exactly once, by that step.
    expected = copy.deepcopy(model).train()
    with torch.no_grad():
        expected(digits.inputs)
    h2 = train(model, digits, lr=1e-9, steps=1, track_train_mode=True, eval_every=1)
    assert h2.eval_step == [0, 1]
    assert h2.full_loss[0] == pytest.approx(h.full_loss[-1], rel=1e-12)
    for name, buf in expected.named_buffers():
        assert torch.equal(buf, dict(model.named_buffers())[name]), name


def test_tracker_appends_one_point_and_probes_symmetry_once(monkeypatch):
    from critpoint.objective import Linearization

    probes = []
    real = Linearization.loss_drift

    def counted(self):
        probes.append(1)
        return real(self)

    monkeypatch.setattr(Linearization, "loss_drift", counted)
    model = Waves(6)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    objective = cp.Objective(model, F.mse_loss, (x, y))
    tracker = CurvatureTracker(
        objective, TrackOptions(quantities=("lambda_min",), tol=1e-12), seed=0
    )
    history = History()
    tracker(history, 7)
    tracker(history, 9)
    assert history.track_step == [7, 9]
    assert history.sharpness == []
    assert history.minimum_ratio == []
    lo = float(torch.linalg.eigvalsh(reference_hessian(model, F.mse_loss, x, y))[0])
    assert history.lambda_min == pytest.approx([lo, lo], rel=1e-10)
    # the probe runs at the first point only; its determinism test is a
    # forward pass and its symmetry test rides on the solver's products
    assert probes == [1]
    assert history.track_matvecs[0] == history.track_matvecs[1]


@pytest.mark.parametrize(
    ("track", "match"),
    [
        ({"trace"}, r"cannot track \['trace'\]"),
        (3, "track must be None or a set of names"),
        ([1], "track must be None or a set of names"),
    ],
)
def test_check_track_refuses_unknown_names(track, match):
    with pytest.raises(cp.InputError, match=match):
        check_track(track)
    assert check_track("minimum_ratio") == ("minimum_ratio",)
    assert check_track({"minimum_ratio", "sharpness"}) == ("sharpness", "minimum_ratio")
    assert check_track(None) == ()
