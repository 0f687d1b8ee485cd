"""One adapter per library, all with the same four tasks.

Each task builds the library's operator from scratch (so its set-up is part of
the measured time), calls the library through its public API as its
documentation shows, and returns an :class:`Outcome`. Hessian-vector products
are counted by wrapping the function the library calls once per product:

=================  =====================================================
library            wrapped (counts)
=================  =====================================================
critpoint          ``Linearization.hvp`` (every product of ``Objective.hvp``
                   and of the operator, from kept graphs or not), columns of v
PyHessian          ``pyhessian.hessian.hessian_vector_product`` and
                   ``hessian.dataloader_hv_product`` (1 per call)
hessian-eigenthings ``HessianOperator.matvec`` (1 per call)
curvlinops         ``HessianLinearOperator._matmat`` (columns per call)
=================  =====================================================

A task a library cannot do returns ``status="n/a"`` with the reason; a task
that raises returns ``status="fails"`` with the error. Nothing is emulated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from peer_bench.workloads import K, Workload

#: Relative tolerance of the restarted eigensolvers (critpoint, ARPACK).
EIG_TOL = 1e-5
#: The looser tolerance of the second critpoint row (eigenvalues only).
LOOSE_TOL = 1e-3
#: Krylov basis of the second critpoint variant (its default is max(2k + 1, 160)).
WIDE_NCV = 320
#: ARPACK's restarts are capped to about this many products.
ARPACK_MAX_HVPS = 1000
#: Lanczos steps for hessian-eigenthings' fixed-length ``lanczos`` (its README's value).
HE_MAX_ITER = 40


@dataclass
class Outcome:
    """What one task returned."""

    status: str = "ok"  # "ok" | "n/a" | "fails"
    note: str = ""
    values: list[float] | None = None  # eigenvalues
    converged: bool | None = None
    trace: float | None = None
    support: np.ndarray | None = None  # density: points ...
    weights: np.ndarray | None = None  # ... and their probability masses
    setup_hvps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Counter:
    """Counts products by wrapping a function or method in place (for the process)."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, owner: Any, attr: str, columns: Callable[..., int]) -> None:
        original = getattr(owner, attr)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += columns(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(owner, attr, counted)


def _probes_weights(
    nodes: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-probe quadrature rules into one probability distribution."""
    nodes = np.asarray(nodes, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    keep = np.isfinite(nodes) & np.isfinite(weights) & (weights > 0)
    nodes, weights = nodes[keep], weights[keep]
    return nodes, weights / weights.sum()


class Adapter:
    """Base: the four tasks, each returning an :class:`Outcome`."""

    name = ""
    label = ""
    tasks = ("top", "bottom", "trace", "density")

    def __init__(self, wl: Workload) -> None:
        self.wl = wl
        self.counter = Counter()
        self.install()

    # -- to implement
    def install(self) -> None:
        raise NotImplementedError

    def warmup(self) -> None:
        raise NotImplementedError

    def top(self, seed: int) -> Outcome:
        raise NotImplementedError

    def bottom(self, seed: int) -> Outcome:
        raise NotImplementedError

    def trace(self, seed: int) -> Outcome:
        raise NotImplementedError

    def density(self, seed: int) -> Outcome:
        raise NotImplementedError

    # -- helpers
    def _setup(self, build: Callable[[], Any]) -> tuple[Any, int]:
        before = self.counter.count
        op = build()
        return op, self.counter.count - before

    def _randn(self, seed: int) -> torch.Tensor:
        from peer_bench.workloads import DEVICE

        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(self.wl.num_params, generator=gen, dtype=self.wl.dtype)
        return v.to(DEVICE)


# ----------------------------------------------------------------- critpoint
class Critpoint(Adapter):
    name = "critpoint"
    label = "critpoint"
    tol = EIG_TOL
    ncv: int | None = None

    def install(self) -> None:
        from critpoint.objective import Linearization

        self.counter.wrap(
            Linearization,
            "hvp",
            lambda lin, v, *a, **k: v.shape[1] if v.ndim == 2 else 1,
        )

    def _op(self) -> tuple[Any, int]:
        return self._setup(lambda: self.wl.objective().hessian())

    def warmup(self) -> None:
        H, _ = self._op()
        H @ self._randn(0)
        H @ torch.stack([self._randn(1), self._randn(2)], dim=1)

    def _eig(self, which: str, seed: int) -> Outcome:
        import critpoint as cp

        H, setup = self._op()
        r = cp.eigsh(
            H,
            K,
            which=which,
            tol=self.tol,
            seed=seed,
            ncv=self.ncv,
            return_eigenvectors=False,
        )
        return Outcome(
            values=[float(x) for x in r.eigenvalues],
            converged=bool(r.converged.all()),
            setup_hvps=setup,
            extra={"own_count": r.num_matvecs, "restarts": r.num_restarts},
        )

    def top(self, seed: int) -> Outcome:
        return self._eig("LA", seed)

    def bottom(self, seed: int) -> Outcome:
        return self._eig("SA", seed)

    def trace(self, seed: int) -> Outcome:
        import critpoint as cp

        H, setup = self._op()
        # The default method="auto": Hutch++ or Hutchinson, chosen per run.
        t = cp.trace(H, max_matvecs=self.wl.spec.trace_budget, seed=seed)
        return Outcome(
            trace=t.value, setup_hvps=setup, note=f"method='auto' ran {t.method}"
        )

    def density(self, seed: int) -> Outcome:
        import critpoint as cp

        H, setup = self._op()
        d = cp.spectral_density(
            H,
            num_probes=self.wl.spec.density_probes,
            num_steps=self.wl.spec.density_steps,
            seed=seed,
        )
        support, weights = _probes_weights(d.nodes.numpy(), d.weights.numpy())
        return Outcome(support=support, weights=weights, setup_hvps=setup)


class CritpointLoose(Critpoint):
    """critpoint's eigsh at a looser tolerance: its cost at a peer's accuracy."""

    name = "critpoint-loose"
    label = f"critpoint (tol {LOOSE_TOL:g})"
    tol = LOOSE_TOL
    tasks = ("top", "bottom")


class CritpointWide(Critpoint):
    """critpoint's eigsh with a wider Krylov basis (not its default): what a
    larger default ``ncv`` would buy on clustered ends of the spectrum."""

    name = "critpoint-wide"
    label = f"critpoint (ncv {WIDE_NCV})"
    ncv = WIDE_NCV
    tasks = ("top", "bottom")


# ----------------------------------------------------------------- PyHessian
class PyHessian(Adapter):
    name = "pyhessian"
    label = "PyHessian"

    def install(self) -> None:
        import sys

        import pyhessian.hessian  # noqa: F401  (the package re-exports the class as .hessian)

        module = sys.modules["pyhessian.hessian"]
        self.counter.wrap(module, "hessian_vector_product", lambda *a, **k: 1)
        self.counter.wrap(module.hessian, "dataloader_hv_product", lambda *a, **k: 1)

    def _op(self) -> tuple[Any, int]:
        from pyhessian import hessian

        from peer_bench.workloads import DEVICE

        wl = self.wl
        cuda = DEVICE.type == "cuda"

        def build() -> Any:
            model, criterion = wl.model(), wl.criterion()
            if len(wl.batches) == 1:
                return hessian(model, criterion, data=wl.batches[0], cuda=cuda)
            return hessian(model, criterion, dataloader=wl.batches, cuda=cuda)

        return self._setup(build)

    def warmup(self) -> None:
        h, _ = self._op()
        torch.manual_seed(0)
        h.eigenvalues(maxIter=2, top_n=1)

    def top(self, seed: int) -> Outcome:
        h, setup = self._op()
        torch.manual_seed(seed)
        values, _ = h.eigenvalues(top_n=K)  # defaults: maxIter=100, tol=1e-3
        return Outcome(
            values=[float(x) for x in values],
            setup_hvps=setup,
            note="power iteration: the largest-magnitude eigenvalues",
        )

    def bottom(self, seed: int) -> Outcome:
        return Outcome(
            status="n/a",
            note="no smallest-algebraic eigenvalues: power iteration finds only the largest in magnitude",
        )

    def trace(self, seed: int) -> Outcome:
        h, setup = self._op()
        torch.manual_seed(seed)
        # tol=-inf: spend exactly the budget (its stopping rule can stop after 2 probes).
        samples = h.trace(maxIter=self.wl.spec.trace_budget, tol=-math.inf)
        return Outcome(
            trace=float(np.mean(samples)), setup_hvps=setup, note="Hutchinson only"
        )

    def density(self, seed: int) -> Outcome:
        h, setup = self._op()
        torch.manual_seed(seed)
        try:
            nodes, weights = h.density(
                iter=self.wl.spec.density_steps, n_v=self.wl.spec.density_probes
            )
        except (AttributeError, RuntimeError) as exc:
            note = f"PyPI 0.1 calls torch.eig, removed from torch: {type(exc).__name__}: {exc}"
            return Outcome(status="fails", note=note)
        support, w = _probes_weights(np.array(nodes), np.array(weights))
        return Outcome(support=support, weights=w, setup_hvps=setup)


# ------------------------------------------------------- hessian-eigenthings
class Eigenthings(Adapter):
    name = "eigenthings"
    label = "hessian-eigenthings"

    def install(self) -> None:
        from hessian_eigenthings.operators.hessian import HessianOperator

        self.counter.wrap(HessianOperator, "matvec", lambda *a, **k: 1)

    def _op(self) -> tuple[Any, int]:
        from hessian_eigenthings import HessianOperator, supervised_loss

        wl = self.wl

        def build() -> Any:
            model = wl.model()
            if wl.is_quadratic:
                return HessianOperator(model, wl.batches, lambda m, batch: m())
            return HessianOperator(model, wl.batches, supervised_loss(wl.criterion()))

        return self._setup(build)

    def warmup(self) -> None:
        op, _ = self._op()
        op.matvec(self._randn(0))

    def _eig(self, which: str, seed: int) -> Outcome:
        from hessian_eigenthings import lanczos

        op, setup = self._op()
        r = lanczos(op, k=K, max_iter=HE_MAX_ITER, which=which, seed=seed)
        return Outcome(
            values=[float(x) for x in r.eigenvalues],
            converged=bool(r.converged.all()),
            setup_hvps=setup,
            note=f"fixed {HE_MAX_ITER} Lanczos steps, no restart",
        )

    def top(self, seed: int) -> Outcome:
        return self._eig("LA", seed)

    def bottom(self, seed: int) -> Outcome:
        return self._eig("SA", seed)

    def trace(self, seed: int) -> Outcome:
        from hessian_eigenthings import trace

        op, setup = self._op()
        t = trace(
            op, num_matvecs=self.wl.spec.trace_budget, method="hutch++", seed=seed
        )
        return Outcome(trace=float(t.estimate), setup_hvps=setup)

    def density(self, seed: int) -> Outcome:
        from hessian_eigenthings import spectral_density

        op, setup = self._op()
        d = spectral_density(
            op,
            num_runs=self.wl.spec.density_probes,
            lanczos_steps=self.wl.spec.density_steps,
            seed=seed,
        )
        support, weights = _probes_weights(
            d.raw_eigenvalues.cpu().numpy(), d.raw_weights.cpu().numpy()
        )
        return Outcome(support=support, weights=weights, setup_hvps=setup)


# ---------------------------------------------------------------- curvlinops
class Curvlinops(Adapter):
    name = "curvlinops"
    label = "curvlinops"

    def install(self) -> None:
        from curvlinops import HessianLinearOperator

        self.counter.wrap(
            HessianLinearOperator,
            "_matmat",
            lambda self_, M, *a, **k: int(M[0].shape[-1]),
        )

    def _op(self) -> tuple[Any, int]:
        from curvlinops import HessianLinearOperator

        wl = self.wl

        def build() -> Any:
            model = wl.model()
            params = [p for p in model.parameters() if p.requires_grad]
            return HessianLinearOperator(model, wl.criterion(), params, wl.batches)

        return self._setup(build)

    def warmup(self) -> None:
        H, _ = self._op()
        H @ self._randn(0)

    def _eig(self, which: str, seed: int) -> Outcome:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        H, setup = self._op()
        v0 = np.random.default_rng(seed).standard_normal(self.wl.num_params)
        ncv = min(self.wl.num_params, max(2 * K + 1, 20))  # scipy's default
        # maxiter counts restarts (about ncv - k products each): cap the run at
        # about ARPACK_MAX_HVPS products, the default budget of critpoint's eigsh.
        try:
            values = eigsh(
                H.to_scipy(),
                k=K,
                which=which,
                tol=EIG_TOL,
                v0=v0,
                maxiter=ARPACK_MAX_HVPS // (ncv - K),
                return_eigenvectors=False,
            )
            converged = True
        except ArpackNoConvergence as exc:
            values, converged = exc.eigenvalues, False
        return Outcome(
            values=[float(x) for x in values],
            converged=converged,
            setup_hvps=setup,
            note="scipy.sparse.linalg.eigsh (ARPACK) on H.to_scipy()",
        )

    def top(self, seed: int) -> Outcome:
        return self._eig("LA", seed)

    def bottom(self, seed: int) -> Outcome:
        return self._eig("SA", seed)

    def trace(self, seed: int) -> Outcome:
        from curvlinops import hutchpp_trace

        H, setup = self._op()
        torch.manual_seed(seed)  # its probes come from the global generator
        value = hutchpp_trace(H, self.wl.spec.trace_budget)
        return Outcome(trace=float(value), setup_hvps=setup)

    def density(self, seed: int) -> Outcome:
        from curvlinops.papyan2020traces.spectrum import lanczos_approximate_spectrum

        H, setup = self._op()
        torch.manual_seed(seed)
        grid, dens = lanczos_approximate_spectrum(
            H,
            ncv=self.wl.spec.density_steps,
            num_repeats=self.wl.spec.density_probes,
        )
        support = grid.detach().cpu().double().numpy()
        weights = np.clip(dens.detach().cpu().double().numpy(), 0.0, None)
        return Outcome(
            support=support,
            weights=weights / weights.sum(),
            setup_hvps=setup,
            note="Papyan's Lanczos without reorthogonalisation; boundaries by ARPACK (counted)",
        )


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a
    for a in (
        Critpoint,
        CritpointLoose,
        CritpointWide,
        PyHessian,
        Eigenthings,
        Curvlinops,
    )
}
#: What a run measures unless ``--libraries`` says otherwise. The wider basis
#: (``critpoint-wide``) is left out: with the default basis of 160 vectors no
#: top-5 or bottom-5 run here restarts, so it changed no count but the 85k
#: MLP's bottom (239 → 201 HVPs), and it cost about 50 s of the run.
LIBRARIES = tuple(name for name in ADAPTERS if name != "critpoint-wide")
TASKS = ("top", "bottom", "trace", "density")
