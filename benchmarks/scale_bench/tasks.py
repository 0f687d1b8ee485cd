"""One measurement per fresh process: the tasks that ``scale.py`` runs.

``scale.py`` starts ``python benchmarks/scale.py --child SPEC.json`` for each
measurement, so that every peak of resident memory (``ru_maxrss``) belongs to
one measurement alone and no library's warm state leaks into another's time.
The child sets one torch thread, loads the workload (model weights and data
from the ``.npz`` the parent prepared), notes its resident memory, runs the
task and writes a JSON record.

Timing: wall clock (``time.perf_counter``) and the process's CPU time
(``time.process_time``, steadier when other processes share the cores). Each
library is warmed up once, untimed, before its timed runs (first-call set-up
of autodiff transforms); every timed run then builds its operator again, so
set-up (critpoint's ``Objective`` + ``hessian()`` with its symmetry probe,
PyHessian's constructor with its ``create_graph`` backward) is inside every
row.
"""

from __future__ import annotations

import inspect
import json
import math
import resource
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scale_bench import models

# --------------------------------------------------------------- measuring


def configure() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")  # PyHessian's create_graph warning


def rss_mib() -> float:
    """Resident memory of this process now (``VmRSS``), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Clock:
    """Wall and CPU seconds of a block: ``with clock: ...`` then ``clock.wall``."""

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


class Counter:
    """Counts products by wrapping the function a library calls once per product."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, owner: Any, attr: str, columns: Callable[..., int]) -> None:
        original = getattr(owner, attr)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += columns(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(owner, attr, counted)


def _cols(v: Any) -> int:
    return int(v.shape[1]) if getattr(v, "ndim", 1) == 2 else 1


def count_critpoint(counter: Counter) -> None:
    """Count critpoint's products: every one goes through ``Linearization.hvp``.

    ``Objective.hvp`` and the operator's products (fresh or from kept
    linearisations) all end there, so wrapping it alone counts each once.
    """
    from critpoint.objective import Linearization

    counter.wrap(Linearization, "hvp", lambda lin, v, *a, **k: _cols(v))


def count_pyhessian(counter: Counter) -> None:
    import pyhessian.hessian  # noqa: F401  (the package re-exports the class as .hessian)

    module = sys.modules["pyhessian.hessian"]
    counter.wrap(module, "hessian_vector_product", lambda *a, **k: 1)
    counter.wrap(module.hessian, "dataloader_hv_product", lambda *a, **k: 1)


# --------------------------------------------------------------- workloads


class Workload:
    """A model (rebuilt from its ``.npz``) and its data, as the spec names them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.path = Path(spec["cache"])
        with np.load(self.path) as f:
            self.x = torch.from_numpy(f["inputs"])
            self.y = torch.from_numpy(f["targets"])

    def model(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        """A fresh copy of the trained model, in eval mode."""
        spec = self.spec
        if spec["kind"] == "resnet20":
            m = models.resnet20(spec["width"])
        else:
            m = models.resnet18(spec["width"], spec.get("stem", "imagenet"))
        models.load_state(m, self.path)
        return m.to(dtype)

    @property
    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y

    def objective(self, dtype: torch.dtype = torch.float32, **kw: Any) -> Any:
        import critpoint as cp

        x = self.x.to(dtype)
        return cp.Objective(self.model(dtype), nn.CrossEntropyLoss(), (x, self.y), **kw)


# --------------------------------------------------------------- critpoint


def _critpoint_setup(wl: Workload, counter: Counter) -> tuple[Any, dict[str, Any]]:
    """Objective + ``hessian()`` (the symmetry probe), timed and counted."""
    before = counter.count
    with Clock() as c:
        with Clock() as c_obj:
            obj = wl.objective()
        H = obj.hessian()
    return H, {
        "setup_wall": c.wall,
        "setup_cpu": c.cpu,
        "objective_wall": c_obj.wall,
        "setup_hvps": counter.count - before,
    }


def _critpoint_warmup(wl: Workload) -> None:
    H = wl.objective().hessian()
    H @ torch.randn(H.shape[0], generator=torch.Generator().manual_seed(99))


def critpoint_top(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """``eigsh(k=1, which="LA", tol)`` with set-up, per seed."""
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    _critpoint_warmup(wl)
    runs = []
    for seed in p["seeds"]:
        H, run = _critpoint_setup(wl, counter)
        before = counter.count
        with Clock() as c:
            r = cp.eigsh(
                H,
                k=1,
                which="LA",
                tol=p["tol"],
                seed=seed,
                return_eigenvectors=False,
                stop=p.get("stop", "residual"),
            )
        run.update(
            seed=seed,
            solve_wall=c.wall,
            solve_cpu=c.cpu,
            hvps=counter.count - before,
            value=float(r.eigenvalues[-1]),
            residual=float(r.residuals[-1]),
            converged=bool(r.converged.all()),
        )
        runs.append(run)
    return {"runs": runs, "tol": p["tol"]}


def critpoint_ladder(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """The loosest ``tol`` whose top eigenvalue is within ``target`` of the truth.

    One operator (set-up once); ``eigsh(k=1, "LA")`` at each tolerance of the
    ladder, loosest first, for every seed; stops at the first tolerance whose
    largest error over the seeds is at most ``target``.
    """
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    H = wl.objective().hessian()
    truth, target = p["truth"], p["target"]
    steps = []
    for tol in p["ladder"]:
        errors, hvps = [], []
        for seed in p["seeds"]:
            before = counter.count
            r = cp.eigsh(
                H,
                k=1,
                which="LA",
                tol=tol,
                seed=seed,
                return_eigenvectors=False,
                stop=p.get("stop", "residual"),
            )
            hvps.append(counter.count - before)
            errors.append(abs(float(r.eigenvalues[-1]) - truth) / abs(truth))
        steps.append({"tol": tol, "errors": errors, "hvps": hvps})
        if max(errors) <= target:
            return {"chosen": tol, "steps": steps}
    return {"chosen": None, "steps": steps}


def critpoint_trace(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    _critpoint_warmup(wl)
    runs = []
    for seed in p["seeds"]:
        H, run = _critpoint_setup(wl, counter)
        before = counter.count
        with Clock() as c:
            t = cp.trace(H, max_matvecs=p["budget"], seed=seed)
        run.update(
            seed=seed,
            solve_wall=c.wall,
            solve_cpu=c.cpu,
            hvps=counter.count - before,
            value=float(t.value),
            stderr=float(t.stderr),
            method=getattr(t, "method", ""),
        )
        runs.append(run)
    return {"runs": runs}


def _density_summary(nodes: np.ndarray, weights: np.ndarray, n: int) -> dict[str, Any]:
    """Edges of the density and the trace it implies (``n Σ τ θ`` per probe, averaged)."""
    nodes = np.atleast_2d(nodes)
    weights = np.atleast_2d(weights)
    used = weights > 0
    return {
        "top_node": float(nodes[used].max()),
        "bottom_node": float(nodes[used].min()),
        "implied_trace": float(n * np.mean((nodes * weights).sum(axis=1))),
        "nodes_per_probe": int(used.sum(axis=1).max()),
    }


def critpoint_density(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    _critpoint_warmup(wl)
    runs = []
    for seed in p["seeds"]:
        H, run = _critpoint_setup(wl, counter)
        before = counter.count
        with Clock() as c:
            d = cp.spectral_density(
                H, num_probes=p["probes"], num_steps=p["steps"], seed=seed
            )
        run.update(
            seed=seed,
            solve_wall=c.wall,
            solve_cpu=c.cpu,
            hvps=counter.count - before,
            **_density_summary(d.nodes.numpy(), d.weights.numpy(), H.shape[0]),
        )
        runs.append(run)
    return {"runs": runs}


# --------------------------------------------------------------- PyHessian


def _pyhessian_setup(wl: Workload, counter: Counter) -> tuple[Any, dict[str, Any]]:
    """PyHessian's constructor (forward + ``create_graph`` backward), timed.

    Every run gets a fresh model: the constructor's backward accumulates into
    ``.grad``, so a second constructor on the same model would differentiate
    the sum of two gradients (twice the Hessian).
    """
    from pyhessian import hessian

    model = wl.model()
    before = counter.count
    with Clock() as c:
        h = hessian(model, nn.CrossEntropyLoss(), data=wl.data, cuda=False)
    return h, {
        "setup_wall": c.wall,
        "setup_cpu": c.cpu,
        "setup_hvps": counter.count - before,
    }


def _pyhessian_warmup(wl: Workload, counter: Counter) -> None:
    h, _ = _pyhessian_setup(wl, counter)
    torch.manual_seed(0)
    h.eigenvalues(maxIter=2, top_n=1)


def pyhessian_top(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """``eigenvalues()`` with its defaults (power iteration, maxIter=100, tol=1e-3, top_n=1)."""
    counter = Counter()
    count_pyhessian(counter)
    _pyhessian_warmup(wl, counter)
    runs = []
    for seed in p["seeds"]:
        h, run = _pyhessian_setup(wl, counter)
        before = counter.count
        torch.manual_seed(seed)
        with Clock() as c:
            values, _ = h.eigenvalues()
        run.update(
            seed=seed,
            solve_wall=c.wall,
            solve_cpu=c.cpu,
            hvps=counter.count - before,
            value=float(values[0]),
        )
        runs.append(run)
    return {"runs": runs}


def pyhessian_trace(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """``trace(maxIter=budget, tol=-inf)`` (spends the budget), or its defaults."""
    counter = Counter()
    count_pyhessian(counter)
    _pyhessian_warmup(wl, counter)
    runs = []
    for seed in p["seeds"]:
        h, run = _pyhessian_setup(wl, counter)
        before = counter.count
        torch.manual_seed(seed)
        with Clock() as c:
            if p.get("budget"):
                samples = h.trace(maxIter=p["budget"], tol=-math.inf)
            else:
                samples = h.trace()
        run.update(
            seed=seed,
            solve_wall=c.wall,
            solve_cpu=c.cpu,
            hvps=counter.count - before,
            value=float(np.mean(samples)),
            stderr=float(np.std(samples, ddof=1) / math.sqrt(len(samples)))
            if len(samples) > 1
            else float("nan"),
        )
        runs.append(run)
    return {"runs": runs}


@contextmanager
def torch_eig_shim():
    """``torch.eig`` (removed from torch in 1.9+) for PyHessian 0.1's ``density``.

    PyHessian calls ``torch.eig(T, eigenvectors=True)`` on its symmetric
    tridiagonal ``T`` and reads the real parts and the first row of the
    eigenvectors; ``torch.linalg.eigh`` gives the same for a symmetric
    matrix. Without it, ``density`` raises after spending all its products.
    """
    had = hasattr(torch, "eig")

    def eig(
        T: torch.Tensor, eigenvectors: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], dim=1), V

    old = getattr(torch, "eig", None)
    torch.eig = eig  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if had:
            torch.eig = old  # type: ignore[attr-defined]
        else:
            del torch.eig  # type: ignore[attr-defined]


def pyhessian_density(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """``density(iter, n_v)`` with the ``torch.eig`` shim."""
    counter = Counter()
    count_pyhessian(counter)
    _pyhessian_warmup(wl, counter)
    runs = []
    for seed in p["seeds"]:
        h, run = _pyhessian_setup(wl, counter)
        before = counter.count
        torch.manual_seed(seed)
        with Clock() as c, torch_eig_shim():
            nodes, weights = h.density(iter=p["steps"], n_v=p["probes"])
        n = models.num_params(h.model)
        run.update(
            seed=seed,
            solve_wall=c.wall,
            solve_cpu=c.cpu,
            hvps=counter.count - before,
            **_density_summary(np.array(nodes), np.array(weights), n),
        )
        runs.append(run)
    return {"runs": runs, "note": "with a torch.eig shim (torch.linalg.eigh)"}


# --------------------------------------------------------------- ground truth


def truth_top(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """Top eigenvalues in float64 by critpoint's eigsh at a tight tolerance."""
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    with Clock() as c:
        H = wl.objective(torch.float64).hessian()
        r = cp.eigsh(
            H,
            k=p.get("k", 3),
            which="LA",
            tol=p.get("tol", 1e-10),
            seed=0,
            return_eigenvectors=False,
        )
    values = sorted((float(x) for x in r.eigenvalues), reverse=True)
    out = {
        "values": values,
        "residuals": [float(x) for x in r.residuals][::-1],
        "hvps": counter.count,
        "wall": c.wall,
        "method": f"critpoint eigsh, float64, k={p.get('k', 3)}, tol={p.get('tol', 1e-10):g}",
    }
    if p.get("arpack"):
        from scipy.sparse.linalg import eigsh as arpack

        with Clock() as c2:
            vals = arpack(
                H.to_scipy(), k=2, which="LA", tol=1e-10, return_eigenvectors=False
            )
        out["arpack"] = sorted((float(v) for v in vals), reverse=True)
        out["arpack_wall"] = c2.wall
    return out


def truth_trace(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """A reference trace: Hutch++ with a large budget (its standard error stated)."""
    import critpoint as cp

    with Clock() as c:
        H = wl.objective().hessian()
        t = cp.trace(H, max_matvecs=p["budget"], method="hutchpp", seed=12345)
    return {
        "value": float(t.value),
        "stderr": float(t.stderr),
        "hvps": p["budget"],
        "wall": c.wall,
        "method": f"critpoint trace, Hutch++, {p['budget']} products, seed 12345",
    }


# --------------------------------------------------------------- costs and the diagnosis


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        with Clock() as c:
            fn()
        walls.append(c.wall)
        cpus.append(c.cpu)
    return statistics.median(walls), statistics.median(cpus)


def costs(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """One gradient, one HVP through the operator, one fresh HVP, the set-up."""
    import torch.nn.functional as F

    counter = Counter()
    count_critpoint(counter)
    reps = p.get("repeats", 3)
    obj = wl.objective()
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(obj.num_params, generator=gen)
    obj.grad()  # warm-up
    out: dict[str, Any] = {"num_params": obj.num_params}
    out["grad_wall"], out["grad_cpu"] = _median_time(obj.grad, reps)
    model = wl.model()

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(wl.x), wl.y).backward()

    plain()
    out["backward_wall"], out["backward_cpu"] = _median_time(plain, reps)
    before = counter.count
    with Clock() as c:
        H = obj.hessian()
    out.update(setup_wall=c.wall, setup_cpu=c.cpu, setup_hvps=counter.count - before)
    out["cached"] = bool(getattr(H, "cached", False))
    H @ v  # warm-up of the cached path
    out["op_hvp_wall"], out["op_hvp_cpu"] = _median_time(lambda: H @ v, reps)
    obj.hvp(v)  # warm-up
    out["fresh_hvp_wall"], out["fresh_hvp_cpu"] = _median_time(lambda: obj.hvp(v), reps)
    # The first product of a new operator: linearise every batch, then one product.
    H = None  # free its kept linearisations before the new operator keeps its own
    H2 = obj.hessian(check=False)
    with Clock() as c:
        H2 @ v
    out.update(first_product_wall=c.wall, first_product_cpu=c.cpu)
    return out


#: What the diagnosis is made of: (label, where to find it, attribute).
PHASES = (
    ("gradient pass", "objective", "loss_and_grad"),
    ("BatchNorm check (the other mode's loss)", "analysis", "check_batchnorm"),
    ("symmetry probe (hessian())", "objective", "hessian"),
    ("first product (timed; the probe's)", "analysis", "measure_costs"),
    ("Lanczos (eigsh)", "analysis", "eigsh"),
    ("Lanczos (eigsh, both ends)", "analysis", "measure_extremes"),
    ("sampling error", "analysis", "measure_sampling_error"),
    ("SLQ (spectral_density)", "analysis", "spectral_density"),
    ("trace", "analysis", "trace_estimate"),
    ("escape step (line search)", "analysis", "_escape_step"),
)


class RSSSampler:
    """Samples this process's resident memory every ``interval`` s in a thread.

    ``phase`` names what runs now; :attr:`peaks` keeps the largest sample
    seen under each name (MiB).
    """

    def __init__(self, interval: float = 0.1) -> None:
        import threading

        self.phase = "other"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            rss = rss_mib()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _wrap_phases(
    counter: Counter, sampler: RSSSampler | None = None
) -> dict[str, dict[str, float]]:
    """Time and count each phase of ``diagnose`` by wrapping what it calls.

    The wrapped names are looked up where ``diagnose`` is defined (and on
    ``Objective``); a phase whose name is not found there is left out. With a
    ``sampler``, each phase's peak resident memory is recorded too.
    """
    import critpoint as cp
    from critpoint.objective import Objective

    where = {"objective": Objective, "analysis": sys.modules[cp.diagnose.__module__]}
    record: dict[str, dict[str, float]] = {}
    for label, owner_name, attr in PHASES:
        owner = where[owner_name]
        if not hasattr(owner, attr):
            continue
        original = getattr(owner, attr)
        slot = record.setdefault(
            label, {"wall": 0.0, "cpu": 0.0, "hvps": 0, "calls": 0}
        )

        def timed(
            *a: Any, _o: Any = original, _s: dict = slot, _label: str = label, **k: Any
        ) -> Any:
            before = counter.count
            outer = sampler.phase if sampler else None
            if sampler:
                sampler.phase = _label
            try:
                with Clock() as c:
                    result = _o(*a, **k)
            finally:
                if sampler:
                    sampler.phase = outer or "other"
            _s["wall"] += c.wall
            _s["cpu"] += c.cpu
            _s["hvps"] += counter.count - before
            _s["calls"] += 1
            return result

        setattr(owner, attr, timed)
    return record


def diagnose(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """``critpoint.diagnose(obj)`` with its defaults (or ``p["kwargs"]``), phase by phase."""
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    obj = wl.objective()
    sampler = RSSSampler()
    phases = _wrap_phases(counter, sampler)
    kwargs = p.get("kwargs", {})
    rss0 = rss_mib()
    with sampler, Clock() as c:
        dg = cp.diagnose(obj, **kwargs)
    for label, peak in sampler.peaks.items():
        if label in phases:
            phases[label]["peak_rss_mib"] = peak
    info = dg.to_dict() if hasattr(dg, "to_dict") else {}
    return {
        "wall": c.wall,
        "cpu": c.cpu,
        "hvps": counter.count,
        "phases": phases,
        "kwargs": kwargs,
        "rss_before_mib": rss0,
        "kind": getattr(dg, "kind", None),
        "lambda_min": float(dg.lambda_min),
        "lambda_max": float(dg.lambda_max),
        "trace": float(dg.trace.value)
        if getattr(dg, "trace", None) is not None
        else None,
        "minimum_ratio": getattr(dg, "minimum_ratio", None),
        "summary_keys": sorted(info)[:40],
        "signature": str(inspect.signature(cp.diagnose)),
    }


def slq(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """``spectral_density`` alone on a fresh operator (the SLQ phase, scaled down in probes)."""
    import critpoint as cp

    counter = Counter()
    count_critpoint(counter)
    H = wl.objective().hessian()
    # The linearisation (first product), outside the timed phase.
    H @ torch.randn(H.shape[0], generator=torch.Generator().manual_seed(99))
    before = counter.count
    rss0 = rss_mib()
    with Clock() as c:
        d = cp.spectral_density(H, num_probes=p["probes"], num_steps=p["steps"], seed=0)
    return {
        "wall": c.wall,
        "cpu": c.cpu,
        "hvps": counter.count - before,
        "probes": p["probes"],
        "steps": p["steps"],
        "rss_before_mib": rss0,
        **_density_summary(d.nodes.numpy(), d.weights.numpy(), H.shape[0]),
    }


def cli(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """The ``critpoint diagnose`` command on the same weights and data (its own process)."""
    folder = Path(p["folder"])
    cmd = [str(a) for a in p["command"]]
    hwm = 0.0
    with Clock() as c:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            # The child's own high-water mark, sampled while it runs.
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]) / 1024.0)
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        _, stderr = proc.communicate()
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = {
        "wall": c.wall,
        "returncode": proc.returncode,
        "cli_peak_rss_mib": max(hwm, child.ru_maxrss / 1024.0),
        "rusage_children_maxrss_mib": child.ru_maxrss / 1024.0,
        "sampled_hwm_mib": hwm,
        "child_cpu": child.ru_utime + child.ru_stime,
        "stderr_tail": stderr[-2000:],
        "command": shlex.join(cmd),
    }
    out = folder / "cli-diagnosis.json"
    if out.exists():
        doc = json.loads(out.read_text())
        result["kind"] = doc.get("kind")
        for key in ("num_matvecs", "hvps", "total_matvecs"):
            if key in doc:
                result["num_matvecs"] = doc[key]
        result["keys"] = sorted(doc)[:60]
    return result


# --------------------------------------------------------------- the stopping-rule history


def history(wl: Workload, p: dict[str, Any]) -> dict[str, Any]:
    """Every product of one top-eigenvalue run, recorded, then Rayleigh–Ritz per step.

    See :mod:`scale_bench.history` for the analysis.
    """
    import critpoint as cp
    from scale_bench.history import Recorder, ritz_history

    H = wl.objective().hessian()
    rec = Recorder(H)
    cp.eigsh(
        rec,
        k=1,
        which="LA",
        tol=p.get("tol", 1e-6),
        seed=p.get("seed", 0),
        max_matvecs=p.get("maxiter", 60),
        return_eigenvectors=False,
    )
    steps = ritz_history(rec.inputs, rec.outputs, k=3)
    return {"steps": steps, "hvps": len(rec.inputs)}


TASKS: dict[str, Callable[[Workload, dict[str, Any]], dict[str, Any]]] = {
    "critpoint_top": critpoint_top,
    "critpoint_ladder": critpoint_ladder,
    "critpoint_trace": critpoint_trace,
    "critpoint_density": critpoint_density,
    "pyhessian_top": pyhessian_top,
    "pyhessian_trace": pyhessian_trace,
    "pyhessian_density": pyhessian_density,
    "truth_top": truth_top,
    "truth_trace": truth_trace,
    "costs": costs,
    "diagnose": diagnose,
    "slq": slq,
    "cli": cli,
    "history": history,
}


def child_main(spec_path: str) -> int:
    """Run the task a spec file names, in this (fresh) process; write its JSON record."""
    spec = json.loads(Path(spec_path).read_text())
    configure()
    if spec["task"].startswith("pyhessian"):
        import pyhessian  # noqa: F401  (imported before the baseline, like torch)
    import critpoint  # noqa: F401

    rss_start = rss_mib()
    wl = Workload(spec["workload"])
    rss_loaded = rss_mib()
    with Clock() as c:
        result = TASKS[spec["task"]](wl, spec.get("params", {}))
    result.update(
        task=spec["task"],
        total_wall=c.wall,
        rss_start_mib=rss_start,
        rss_loaded_mib=rss_loaded,
        peak_rss_mib=peak_rss_mib(),
        threads=torch.get_num_threads(),
    )
    out = Path(spec["out"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return 0
