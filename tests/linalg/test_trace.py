"""Hutchinson, Hutch++ and the adaptive choice against planted spectra (float64)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg.trace import TraceEstimate, trace


def planted(eigenvalues: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """``Q diag(λ) Qᵀ`` with ``Q`` from the QR of a seeded Gaussian matrix."""
    n = eigenvalues.numel()
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
    A = Q @ torch.diag(eigenvalues.to(torch.float64)) @ Q.T
    return (A + A.T) / 2


class CountingOperator:
    """A dense operator that records the width of every ``matmat`` call."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.calls: list[int] = []

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.calls.append(V.shape[1])
        return self.matrix @ V


N = 300


@pytest.fixture(scope="module")
def indefinite() -> tuple[torch.Tensor, float]:
    lam = torch.linspace(-1.0, 3.0, N, dtype=torch.float64)
    return planted(lam), float(lam.sum())


@pytest.fixture(scope="module")
def decaying() -> tuple[torch.Tensor, float]:
    lam = torch.arange(1, N + 1, dtype=torch.float64) ** -2.0
    return planted(lam, seed=2), float(lam.sum())


@pytest.mark.parametrize("method", ["auto", "hutchinson", "hutchpp"])
@pytest.mark.parametrize("budget", [N, N + 50])
def test_exact_trace_when_budget_covers_n(indefinite, method, budget):
    A, truth = indefinite
    op = CountingOperator(A)
    t = trace(op, max_matvecs=budget, method=method)
    assert t.value == pytest.approx(truth, abs=1e-10)
    assert t.stderr == 0.0
    assert t.method == "exact"
    assert t.num_matvecs == N == sum(op.calls)


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
def test_estimate_within_four_standard_errors(indefinite, method):
    A, truth = indefinite
    t = trace(A, max_matvecs=60, method=method, seed=0)
    assert math.isfinite(t.stderr)
    assert t.stderr > 0
    assert abs(t.value - truth) < 4 * t.stderr
    assert t.method == method


@pytest.mark.parametrize("method", ["auto", "hutchinson", "hutchpp", "hutch++"])
@pytest.mark.parametrize("budget", [1, 2, 3, 10, 100, 131])
def test_budget_is_spent_exactly(indefinite, method, budget):
    A, _ = indefinite
    op = CountingOperator(A)
    t = trace(op, max_matvecs=budget, method=method, seed=0)
    assert sum(op.calls) == budget == t.num_matvecs
    assert max(op.calls) <= 64


def test_hutchpp_beats_hutchinson_on_decaying_spectrum(decaying):
    A, truth = decaying
    errors = {"hutchinson": [], "hutchpp": []}
    for seed in range(20):
        for method, errs in errors.items():
            errs.append(abs(trace(A, 96, method, seed=seed).value - truth) / truth)
    hutchinson, hutchpp = np.mean(errors["hutchinson"]), np.mean(errors["hutchpp"])
    assert hutchpp < 0.1 * hutchinson
    assert hutchpp < 5e-3


def test_hutchinson_stderr_is_honest(indefinite):
    A, truth = indefinite
    z = []
    for seed in range(100):
        t = trace(A, max_matvecs=30, method="hutchinson", seed=seed)
        z.append((t.value - truth) / t.stderr)
    z = np.abs(np.array(z))
    # For a normal z-score: E|z| = 0.80, P(|z| < 2) = 0.95.
    assert 0.6 < z.mean() < 1.05
    assert np.mean(z < 2) > 0.88


def test_hutchinson_error_matches_theory(indefinite):
    A, truth = indefinite
    # Rademacher variance of zᵀAz: 2(‖A‖_F² − Σ A_ii²).
    var = 2 * (float((A**2).sum()) - float((torch.diag(A) ** 2).sum()))
    m = 30
    errs = [abs(trace(A, m, "hutchinson", seed=s).value - truth) for s in range(100)]
    theory = math.sqrt(2 / math.pi) * math.sqrt(var / m)
    assert np.mean(errs) == pytest.approx(theory, rel=0.25)


def test_reproducible_with_seed(indefinite):
    A, _ = indefinite
    for method in ("hutchinson", "hutchpp"):
        a = trace(A, 40, method, seed=3)
        assert a == trace(A, 40, method, seed=3)
        assert a.value != trace(A, 40, method, seed=4).value
        g = trace(A, 40, method, seed=torch.Generator().manual_seed(3))
        assert g.value == a.value
        assert g.seed is None


def test_single_hutchinson_sample_has_infinite_stderr(indefinite):
    A, _ = indefinite
    t = trace(A, max_matvecs=1, method="hutchinson")
    assert math.isinf(t.stderr)
    assert t.to_dict()["stderr"] is None


def test_low_rank_psd_is_exact_with_hutchpp():
    lam = torch.zeros(200, dtype=torch.float64)
    lam[:5] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    t = trace(planted(lam), max_matvecs=30, method="hutchpp", seed=0)
    assert t.value == pytest.approx(15.0, abs=1e-9)
    assert t.stderr < 1e-9


def test_float32_operator(indefinite):
    A, truth = indefinite
    t = trace(A.float(), max_matvecs=60, method="hutchpp", seed=0)
    assert abs(t.value - truth) < 4 * t.stderr
    exact = trace(A.float(), max_matvecs=N)
    assert exact.value == pytest.approx(truth, rel=1e-5)


def test_to_dict_is_json(indefinite):
    A, _ = indefinite
    t = trace(A, max_matvecs=30, seed=2)
    data = json.loads(json.dumps(t.to_dict()))
    assert data == {
        "value": t.value,
        "stderr": t.stderr,
        "num_matvecs": 30,
        "method": t.method,
        "seed": 2,
    }
    assert t.method in ("hutchinson", "hutchpp")  # what "auto" chose
    assert isinstance(t, TraceEstimate)


def test_progress_callback(indefinite):
    A, _ = indefinite
    seen: list[tuple[int, int]] = []
    trace(A, 150, "hutchinson", progress=lambda s, t: seen.append((s, t)))
    assert seen == [(d, 150) for d in (16, 32, 48, 64, 80, 96, 112, 128, 144, 150)]
    trace(A, 30, "hutchpp", progress=True)


def test_non_finite_products_raise():
    A = torch.full((10, 10), float("inf"), dtype=torch.float64)
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        trace(A, max_matvecs=4)


def test_bad_arguments_raise_input_error(indefinite):
    A, _ = indefinite
    with pytest.raises(
        InputError, match=r"method must be one of 'auto', 'hutchinson', 'hutchpp'"
    ):
        trace(A, method="foo")
    with pytest.raises(InputError, match="max_matvecs must be a positive integer"):
        trace(A, max_matvecs=0)
    with pytest.raises(InputError, match="max_matvecs"):
        trace(A, max_matvecs=True)
    with pytest.raises(InputError, match="square"):
        trace(torch.zeros(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("method", ["auto", "hutchinson", "hutchpp"])
def test_estimate_does_not_depend_on_the_block_size(indefinite, monkeypatch, method):
    import critpoint.linalg.trace as trace_module  # the module, not the function

    A, _ = indefinite
    reference = trace(A, 150, method, seed=3)
    monkeypatch.setattr(trace_module, "_BLOCK", 7)
    other = trace(A, 150, method, seed=3)
    assert other.value == pytest.approx(reference.value, rel=1e-12)
    assert other.stderr == pytest.approx(reference.stderr, rel=1e-10)


def test_auto_is_hutchinson_on_a_flat_spectrum(indefinite):
    # Deflation captures little of a flat spectrum: "auto" must keep every
    # probe for Hutchinson, and its first third of probes are the same
    # Rademacher draws, so it is Hutchinson itself, number for number.
    A, _ = indefinite
    for seed in range(5):
        auto = trace(A, 99, "auto", seed=seed)
        assert auto.method == "hutchinson"
        plain = trace(A, 99, "hutchinson", seed=seed)
        assert auto.value == pytest.approx(plain.value, rel=1e-13)
        assert auto.stderr == pytest.approx(plain.stderr, rel=1e-10)


def test_auto_is_hutchpp_on_a_decaying_spectrum(decaying):
    A, truth = decaying
    errors = []
    for seed in range(10):
        t = trace(A, 96, "auto", seed=seed)
        assert t.method == "hutchpp"
        errors.append(abs(t.value - truth) / truth)
    # as accurate as Hutch++ in test_hutchpp_beats_hutchinson_on_decaying_spectrum
    assert np.mean(errors) < 5e-3


@pytest.mark.parametrize(
    ("power", "better"),
    [(-0.5, "hutchinson"), (-1.0, "hutchpp")],
)
def test_auto_matches_the_better_method(power, better):
    # λᵢ = i^power: a slow decay favours Hutchinson, i^-1 already favours Hutch++.
    lam = torch.arange(1, N + 1, dtype=torch.float64) ** power
    A, truth = planted(lam, seed=4), float(lam.sum())
    mse = {}
    for method in ("auto", "hutchinson", "hutchpp"):
        values = np.array([trace(A, 60, method, seed=s).value for s in range(40)])
        mse[method] = float(np.mean((values - truth) ** 2))
    worse = "hutchpp" if better == "hutchinson" else "hutchinson"
    assert mse[better] < mse[worse]
    assert mse["auto"] <= 1.25 * mse[better]


def test_auto_selection_bias_is_small():
    # Where the two methods are about as good, the choice depends on the
    # probes: the bias this causes stays a small fraction of the spread.
    lam = torch.arange(1, N + 1, dtype=torch.float64) ** -0.9
    A, truth = planted(lam, seed=1), float(lam.sum())
    runs = [trace(A, 45, "auto", seed=s) for s in range(400)]
    chosen = sum(r.method == "hutchpp" for r in runs)
    assert 40 < chosen < 360  # a genuinely mixed case
    values = np.array([r.value for r in runs])
    # measured -0.16 over 2000 seeds; 400 seeds resolve it to about ±0.05
    assert abs(values.mean() - truth) < 0.35 * values.std()


def test_progress_types(check_progress_types):
    A = torch.diag(torch.linspace(-1.0, 2.0, 40, dtype=torch.float64))
    check_progress_types(lambda progress: trace(A, 12, progress=progress))


def test_num_matvecs_is_the_deprecated_name_of_max_matvecs(indefinite):
    A, _ = indefinite
    new = trace(A, max_matvecs=45, seed=1)
    assert trace(A, 45, seed=1).value == new.value  # positional, as before
    with pytest.warns(
        DeprecationWarning, match=r"trace\(num_matvecs=.*use max_matvecs"
    ):
        old = trace(A, num_matvecs=45, seed=1)
    assert (old.value, old.num_matvecs, old.method) == (new.value, 45, new.method)
    with pytest.raises(InputError, match="give max_matvecs= only"):
        trace(A, max_matvecs=30, num_matvecs=45)


def test_a_one_by_one_operator_is_exact():
    t = trace(torch.tensor([[-1.5]], dtype=torch.float64))
    assert (t.value, t.stderr, t.num_matvecs, t.method) == (-1.5, 0.0, 1, "exact")


class LiveMemoryOperator:
    """A dense operator that records, at every product, the bytes of the live n-vectors.

    Every tensor the garbage collector tracks whose storage holds at least
    one vector of length ``n`` is counted once per storage (views share
    theirs); what was alive when the operator was made (its own matrix, other
    tests' fixtures) is left out.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.peak = 0
        self.before = set(self._storages())

    shape = property(lambda self: tuple(self.matrix.shape))
    dtype = property(lambda self: self.matrix.dtype)
    device = property(lambda self: self.matrix.device)

    def _storages(self) -> dict[int, int]:
        import gc

        least = self.matrix.shape[0] * self.matrix.element_size()
        seen = {}
        for obj in gc.get_objects():
            if issubclass(type(obj), torch.Tensor):
                store = obj.untyped_storage()
                if store.nbytes() >= least:
                    seen[store.data_ptr()] = store.nbytes()
        return seen

    def live(self) -> int:
        return sum(b for ptr, b in self._storages().items() if ptr not in self.before)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        W = self.matrix @ V
        self.peak = max(self.peak, self.live() + W.untyped_storage().nbytes())
        return W


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "auto"])
def test_trace_holds_no_more_than_trace_memory_says(method):
    from critpoint.linalg.trace import trace_memory

    n = 1500
    lam = torch.linspace(1.0, 2.0, n, dtype=torch.float64) ** 8
    A = torch.diag(lam)
    exact = float(lam.sum())
    del lam  # only the solver's vectors are live at its products
    op = LiveMemoryOperator(A)
    est = trace(op, 60, method, seed=0, block_size=4)
    stated = trace_memory(n, 60, method, torch.float64, block_size=4)
    assert op.peak <= stated
    # the sketch is what Hutch++ holds: 20 columns, never the 5 copies it once kept
    if est.method == "hutchpp":
        assert op.peak >= 20 * n * 8
    assert est.value == pytest.approx(exact, rel=0.05)
    assert est.num_matvecs == 60


def test_the_held_out_residual_is_the_projection_norm():
    """Hutch++'s predictor ‖(I − Q₁Q₁ᵀ)Y₂‖_F² from Gram matrices equals the explicit projection."""
    from critpoint.linalg.trace import _deflated_norm2

    g = torch.Generator().manual_seed(0)
    Y = torch.randn(500, 10, generator=g, dtype=torch.float64)
    Q1, _ = torch.linalg.qr(Y[:, :5])
    held = Y[:, 5:] - Q1 @ (Q1.T @ Y[:, 5:])
    assert _deflated_norm2(Y[:, :5], Y[:, 5:]) == pytest.approx(
        float((held**2).sum()), rel=1e-10
    )
    # Y₂ inside range(Y₁): nothing is left (to rounding); a rank-deficient Y₁ too
    inside = Y[:, :5] @ torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert _deflated_norm2(Y[:, :5], inside) <= 1e-9 * float((inside**2).sum())
    Y1 = torch.cat([Y[:, :3], Y[:, :2]], dim=1)
    Q, _ = torch.linalg.qr(Y[:, :3])
    held = Y[:, 5:] - Q @ (Q.T @ Y[:, 5:])
    assert _deflated_norm2(Y1, Y[:, 5:]) == pytest.approx(
        float((held**2).sum()), rel=1e-8
    )
