"""The workloads, their short training, and their ground truth.

Every workload is rebuilt from a seed, so a child process gets the very same
model and data as the parent. Trained weights and the ground truth are
computed once in the parent and handed to the children through an ``.npz``
file in a scratch folder (no pickles).

Workloads (digits = scikit-learn's bundled 8x8 digits, training split of
``critpoint.data.load_data("digits")``: 1347 samples, standardised):

``w1-init`` / ``w1-trained``
    tanh MLP 64-48-10 (3,610 parameters), float64, all samples in one batch;
    at initialisation and after 300 full-batch Adam steps. Ground truth: the
    dense Hessian (``H.dense()``, cross-checked against
    ``torch.func.hessian``), all eigenvalues by ``eigvalsh``.
``w2``
    ReLU MLP 64-256-256-10 (85,002 parameters), float32, batches of 512
    (512, 512, 323), after 150 Adam steps. Ground truth: critpoint's eigsh in
    float64 at tol 1e-10 with a Krylov basis of 160 (``--check-truth``:
    against ARPACK on ``H.to_scipy()``);
    the trace exactly from the Gauss-Newton diagonal (see :func:`ggn_trace`).
``w3``
    CNN 1-8-16 with BatchNorm (1,946 parameters), float32, at initialisation
    with BatchNorm running statistics set by 20 forward passes in train mode,
    analysed in eval mode, all samples in one batch. Ground truth as ``w2``.
``planted``
    ``L(θ) = ½ θᵀAθ`` with ``A = Q diag(λ) Qᵀ`` of size 2000 and a known
    spectrum with five negative outliers (a saddle of index 5 plus a bulk
    reaching below zero), float64, at θ = 0.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.data import load_data
from critpoint.models import build_model
from critpoint.testing import Quadratic, planted_matrix

K = 5
SEED = 0
TRUTH_TOL = 1e-10
TRUTH_NCV = 160
TRUTH_MAXITER = 6000

#: Where models and data live; ``benchmarks/gpu.py`` sets it to a GPU.
DEVICE = torch.device("cpu")

PLANTED_N = 2000
PLANTED_TOP = (4.0, 3.0, 2.5, 2.0, 1.8)
PLANTED_BOTTOM = (-5.0, -2.0, -1.0, -0.6, -0.4)
PLANTED_BULK = (-0.2, 1.0)


@dataclass(frozen=True)
class Spec:
    """How to build one workload."""

    name: str
    title: str
    dtype: torch.dtype
    batch_size: int | None  # None: all samples in one batch
    arch: dict[str, Any] = field(default_factory=dict)
    train_steps: int = 0
    train_lr: float = 1e-3
    train_batch: int | None = None  # None: full batch
    stat_passes: int = 0  # forward passes in train mode that set BatchNorm statistics
    trace_budget: int = 99
    density_probes: int = 8
    density_steps: int = 60
    dense_truth: bool = False


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            "w1-init",
            "W1 tanh MLP 64-48-10 at init (float64, one batch)",
            torch.float64,
            None,
            {"name": "mlp", "widths": (48,), "activation": "tanh"},
            dense_truth=True,
        ),
        Spec(
            "w1-trained",
            "W1 tanh MLP 64-48-10 trained (float64, one batch)",
            torch.float64,
            None,
            {"name": "mlp", "widths": (48,), "activation": "tanh"},
            train_steps=300,
            train_lr=1e-2,
            dense_truth=True,
        ),
        Spec(
            "w2",
            "W2 ReLU MLP 64-256-256-10 trained (float32, batches of 512)",
            torch.float32,
            512,
            {"name": "mlp", "widths": (256, 256), "activation": "relu"},
            train_steps=150,
            train_lr=1e-3,
            train_batch=128,
            density_steps=40,
        ),
        Spec(
            "w3",
            "W3 CNN 1-8-16 + BatchNorm in eval mode, at init (float32, one batch)",
            torch.float32,
            None,
            {"name": "cnn", "batchnorm": True},
            train_batch=128,
            stat_passes=20,
            density_steps=40,
        ),
        Spec(
            "planted",
            "Planted saddle ½θᵀAθ, index 5 (float64)",
            torch.float64,
            None,
            dense_truth=True,
        ),
    )
}


class QuadraticLoss(nn.Module):
    """``loss(output, target) = output`` for :class:`Quadratic`, whose output is the loss.

    ``reduction = "sum"`` tells curvlinops not to rescale the single batch.
    """

    reduction = "sum"

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return output


@dataclass
class Truth:
    """What the estimates are compared with."""

    top: np.ndarray  # (K,) descending
    bottom: np.ndarray  # (K,) ascending
    trace: float
    spectrum: np.ndarray | None  # all eigenvalues, when dense
    source: str  # how the eigenvalues were obtained
    trace_source: str
    checks: dict[str, float] = field(default_factory=dict)
    check_seconds: float = 0.0


class Workload:
    """A model (or quadratic), its data and loss, at fixed weights."""

    def __init__(
        self, spec: Spec, state: dict[str, np.ndarray], truth: Truth | None
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.dtype = spec.dtype
        self.state = state
        self.truth = truth
        if spec.name == "planted":
            self.inputs = torch.zeros((1, 1), dtype=spec.dtype, device=DEVICE)
            self.targets = torch.zeros(1, dtype=spec.dtype, device=DEVICE)
        else:
            data = load_data("digits", split="train")
            self.inputs = data.inputs.to(device=DEVICE, dtype=spec.dtype)
            self.targets = data.targets.to(DEVICE)
        n = int(self.inputs.shape[0])
        self.batch_size = spec.batch_size or n
        self.batches = [
            (
                self.inputs[i : i + self.batch_size],
                self.targets[i : i + self.batch_size],
            )
            for i in range(0, n, self.batch_size)
        ]
        self.num_params = sum(p.numel() for p in self.model().parameters())

    @property
    def is_quadratic(self) -> bool:
        return self.name == "planted"

    def model(self) -> nn.Module:
        """A fresh model at the workload's weights, in its dtype, in eval mode."""
        if self.is_quadratic:
            A = torch.from_numpy(self.state["A"]).to(self.dtype)
            return Quadratic(A).to(DEVICE).eval()
        model = _build(self.spec)
        load_state(model, self.state)
        return model.to(device=DEVICE, dtype=self.dtype).eval()

    def criterion(self) -> nn.Module:
        """The loss as a module (curvlinops reads ``.reduction``)."""
        return QuadraticLoss() if self.is_quadratic else nn.CrossEntropyLoss()

    def objective(self, model: nn.Module | None = None, **kwargs: Any) -> cp.Objective:
        """critpoint's objective for this workload."""
        model = self.model() if model is None else model
        if self.is_quadratic:
            from critpoint.testing import quadratic_batch_loss, quadratic_data

            return cp.Objective(
                model, data=quadratic_data(), batch_loss=quadratic_batch_loss, **kwargs
            )
        return cp.Objective(
            model,
            F.cross_entropy,
            (self.inputs, self.targets),
            batch_size=self.batch_size,
            **kwargs,
        )


def _build(spec: Spec) -> nn.Module:
    arch = dict(spec.arch)
    name = arch.pop("name")
    return build_model(name, seed=SEED, **arch)


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Parameters and buffers as float64/int64 NumPy arrays."""
    out = {}
    for key, value in model.state_dict().items():
        t = value.detach().cpu()
        out[key] = (t.double() if t.is_floating_point() else t).numpy()
    return out


def load_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    own = model.state_dict()
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(state[k])).to(own[k].dtype) for k in own}
    )


def train(spec: Spec, model: nn.Module) -> None:
    """A short, seeded Adam run in float32 (train mode: BatchNorm statistics move)."""
    data = load_data("digits", split="train")
    X, y = data.inputs, data.targets
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train_lr)
    model.train()
    for _ in range(spec.train_steps):
        if spec.train_batch is None:
            xb, yb = X, y
        else:
            idx = torch.randint(0, X.shape[0], (spec.train_batch,), generator=gen)
            xb, yb = X[idx], y[idx]
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    with torch.no_grad():
        for _ in range(spec.stat_passes):
            idx = torch.randint(
                0, X.shape[0], (spec.train_batch or 128,), generator=gen
            )
            model(X[idx])
    model.eval()


def planted_spectrum() -> np.ndarray:
    bulk = np.linspace(
        *PLANTED_BULK, PLANTED_N - len(PLANTED_TOP) - len(PLANTED_BOTTOM)
    )
    return np.sort(np.concatenate([PLANTED_TOP, PLANTED_BOTTOM, bulk]))


def ggn_trace(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int = 32
) -> float:
    """``tr(H)`` of the mean cross-entropy, exactly, for a piecewise-linear net.

    In a net built from linear maps, convolutions, eval-mode BatchNorm, ReLU
    and max-pooling every single parameter enters the output piecewise
    linearly, so ``∂²f/∂θᵢ² = 0`` and ``diag(H) = diag(G)`` with ``G`` the
    generalised Gauss-Newton matrix. Hence
    ``tr(H) = tr(G) = (1/N) Σₙ tr(Λₙ Jₙ Jₙᵀ)`` with ``Jₙ`` the per-sample
    Jacobian of the logits (C x n) and ``Λₙ = diag(p) - ppᵀ``.
    """
    names = [k for k, _ in model.named_parameters()]
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def logits(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, (p, buffers), (x.unsqueeze(0),))[0]

    jac = torch.func.vmap(torch.func.jacrev(logits), in_dims=(None, 0))
    total = 0.0
    for start in range(0, X.shape[0], chunk):
        xb = X[start : start + chunk]
        J = jac(params, xb)  # {name: (b, C, *shape)}
        flat = torch.cat([J[k].flatten(2) for k in names], dim=2)  # (b, C, n)
        ntk = flat @ flat.transpose(1, 2)  # (b, C, C)
        with torch.no_grad():
            p = torch.softmax(model(xb), dim=1)
        lam = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
        total += float((lam * ntk).sum())
    return total / X.shape[0]


def compute_truth(wl: Workload, log: Callable[[str], None], check: bool) -> Truth:
    """The ground truth of a workload, in float64."""
    spec = wl.spec
    if wl.is_quadratic:
        lam = planted_spectrum()
        checks = {}
        if check:
            A = torch.from_numpy(wl.state["A"])
            err = np.abs(np.linalg.eigvalsh(A.numpy()) - lam).max()
            checks["eigvalsh(A) vs planted spectrum, max abs diff"] = float(err)
        return Truth(
            lam[::-1][:K].copy(),
            lam[:K].copy(),
            float(lam.sum()),
            lam,
            "planted spectrum (exact)",
            "sum of the planted eigenvalues (exact)",
            checks,
        )
    model = wl.model().double()
    obj = cp.Objective(
        model,
        F.cross_entropy,
        (wl.inputs.double(), wl.targets),
        batch_size=wl.batch_size,
        dtype=torch.float64,
    )
    H = obj.hessian()
    checks: dict[str, float] = {}
    check_seconds = 0.0
    if spec.dense_truth:
        dense = H.dense()
        lam = torch.linalg.eigvalsh(dense).numpy()
        if check:
            t0 = time.perf_counter()
            checks.update(_check_dense(wl, model, obj))
            check_seconds = time.perf_counter() - t0
        log(f"  dense Hessian {dense.shape[0]}², eigvalsh")
        return Truth(
            lam[::-1][:K].copy(),
            lam[:K].copy(),
            float(torch.trace(dense)),
            lam,
            "dense float64 Hessian (critpoint H.dense()), eigvalsh",
            "trace of the dense Hessian",
            checks,
            check_seconds,
        )
    opts: dict[str, Any] = {
        "tol": TRUTH_TOL,
        "ncv": TRUTH_NCV,
        "max_matvecs": TRUTH_MAXITER,
        "seed": 1234,
        "return_eigenvectors": False,
    }
    top = cp.eigsh(H, K, which="LA", **opts)
    bottom = cp.eigsh(H, K, which="SA", **opts)
    log(
        f"  eigsh tol {TRUTH_TOL:g}: {top.num_matvecs} + {bottom.num_matvecs} HVPs, "
        f"converged {bool(top.converged.all())}/{bool(bottom.converged.all())}"
    )
    tr = ggn_trace(model, wl.inputs.double(), wl.targets)
    if check:
        t0 = time.perf_counter()
        checks.update(_check_iterative(H, top, bottom))
        check_seconds = time.perf_counter() - t0
    return Truth(
        top.eigenvalues.numpy()[::-1].copy(),
        bottom.eigenvalues.numpy().copy(),
        tr,
        None,
        f"critpoint eigsh, float64, tol {TRUTH_TOL:g}, ncv {TRUTH_NCV} "
        f"(converged: {bool(top.converged.all())} / {bool(bottom.converged.all())})",
        "exact: tr(H) = tr(GGN) for a piecewise-linear net (per-sample Jacobians)",
        checks,
        check_seconds,
    )


def _check_dense(wl: Workload, model: nn.Module, obj: cp.Objective) -> dict[str, float]:
    """Cross-check H.dense() against torch.func.hessian (on 128 samples: memory)."""
    from critpoint.testing import reference_hessian

    X, y = wl.inputs.double()[:128], wl.targets[:128]
    ref = reference_hessian(model, F.cross_entropy, X, y)
    small = cp.Objective(model, F.cross_entropy, (X, y), dtype=torch.float64)
    mine = small.hessian().dense()
    rel = float((mine - ref).abs().max() / ref.abs().max())
    return {"H.dense() vs torch.func.hessian (128 samples), max rel diff": rel}


def _check_iterative(H: Any, top: Any, bottom: Any) -> dict[str, float]:
    """Cross-check the eigsh ground truth against ARPACK on H.to_scipy()."""
    from scipy.sparse.linalg import eigsh

    n = H.shape[0]
    v0 = np.random.default_rng(99).standard_normal(n)
    out = {}
    for which, res in (("LA", top), ("SA", bottom)):
        ref = np.sort(
            eigsh(
                H.to_scipy(),
                k=K,
                which=which,
                tol=TRUTH_TOL,
                ncv=TRUTH_NCV,
                v0=v0,
                return_eigenvectors=False,
            )
        )
        mine = np.sort(res.eigenvalues.numpy())
        out[f"eigsh {which} vs ARPACK, max rel diff"] = float(
            np.max(np.abs(mine - ref) / np.abs(ref))
        )
    return out


def ggn_identity_check() -> float:
    """tr(GGN) against the dense trace on a small ReLU MLP and the BN CNN (64 samples)."""
    data = load_data("digits", split="train")
    X, y = data.inputs.double()[:64], data.targets[:64]
    worst = 0.0
    for model in (
        build_model("mlp", widths=(16, 16), activation="relu", seed=3),
        build_model("cnn", channels=2, batchnorm=True, seed=3),
    ):
        model = model.double().eval()
        dense = cp.Objective(model, F.cross_entropy, (X, y)).hessian().dense()
        exact = float(torch.trace(dense))
        worst = max(worst, abs(ggn_trace(model, X, y) - exact) / abs(exact))
    return worst


def prepare(
    name: str,
    folder: Path,
    log: Callable[[str], None],
    check: bool,
    with_truth: bool = True,
) -> Truth:
    """Train (if asked), compute the truth, save both to ``folder/name.npz``.

    ``with_truth=False`` saves the weights with a NaN truth (for profiling).
    """
    spec = SPECS[name]
    if name == "planted":
        A, _ = planted_matrix(planted_spectrum(), seed=SEED, dtype=torch.float64)
        state = {"A": A.numpy()}
    else:
        model = _build(spec)
        if spec.train_steps or spec.stat_passes:
            train(spec, model)
        state = state_arrays(model)
    wl = Workload(spec, state, None)
    if with_truth:
        truth = compute_truth(wl, log, check)
    else:
        nan = np.full(K, np.nan)
        truth = Truth(nan, nan, math.nan, None, "", "")
    path = folder / f"{name}.npz"
    arrays = {f"state/{k}": v for k, v in state.items()}
    arrays.update(
        {
            "truth/top": truth.top,
            "truth/bottom": truth.bottom,
            "truth/trace": np.array(truth.trace),
        }
    )
    if truth.spectrum is not None:
        arrays["truth/spectrum"] = truth.spectrum
    np.savez(path, **arrays)
    return truth


def load(name: str, folder: Path, quick: bool = False) -> Workload:
    """Rebuild a prepared workload in a child process (``quick``: smaller budgets)."""
    spec = SPECS[name]
    if quick:
        spec = dataclasses.replace(
            spec, density_probes=4, density_steps=min(spec.density_steps, 30)
        )
    with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
        state = {k[len("state/") :]: z[k] for k in z.files if k.startswith("state/")}
        truth = Truth(
            z["truth/top"],
            z["truth/bottom"],
            float(z["truth/trace"]),
            z["truth/spectrum"] if "truth/spectrum" in z.files else None,
            "",
            "",
        )
    return Workload(spec, state, truth)


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Largest ``|λ̂ᵢ − λᵢ| / |λᵢ|`` after sorting both the same way."""
    est = np.sort(np.asarray(estimate, dtype=np.float64))
    ref = np.sort(np.asarray(truth, dtype=np.float64))
    if est.shape != ref.shape or not np.all(np.isfinite(est)):
        return math.inf
    return float(np.max(np.abs(est - ref) / np.abs(ref)))
