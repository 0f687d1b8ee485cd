"""The memory plan of a diagnosis: what every solver will hold, added up against a budget.

:func:`plan_memory` runs before anything is allocated. Each solver states what
it holds (:func:`critpoint.linalg.lanczos.eigsh_memory`,
:func:`critpoint.linalg.slq.density_memory`,
:func:`critpoint.linalg.trace.trace_memory`); the plan adds them to what the
whole run keeps (the gradient, the eigenvectors, the batches' linearisations)
and chooses within the budget:

* the Lanczos basis: :func:`~critpoint.linalg.lanczos.default_ncv` vectors
  (``max(2k + 1, 160)``, or what an eighth of the free memory holds, as
  ``eigsh`` chooses), fewer where they do not fit (down to ``2k + 1``); on a
  GPU it moves to host memory when not even that fits on the device;
* the density's reorthogonalisation: ``"full"``, else ``"partial"`` with a
  window of :data:`~critpoint.linalg.slq.PARTIAL_WINDOW` vectors (fewer
  where they do not fit: the strategies give densities equally close to the
  true one on the planted test spectra, so the memory is not spent on a
  wider window), else ``"local"``; with the measured seconds of a product
  and of a pass over one vector, also the most thorough one whose vector
  work stays within :data:`REORTH_TIME_SHARE` of the products' time;
* the trace: Hutch++ / ``"auto"`` when its sketch fits, else Hutchinson,
  in the widest block that fits (at most :data:`CPU_TRACE_BLOCK` on a CPU);
* the linearisations (``hvp_cache``): at most what is left once every solver
  has its smallest setting; they are all or nothing, so when they do not fit
  every product recomputes its forward pass (slower, no less exact).

The solvers run one after another, so the peak is what the run keeps plus
the largest phase. When even the smallest settings exceed the budget,
:class:`~critpoint.MemoryBudgetError` says so with the numbers, before any work.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from critpoint._autodiff import COLUMN_BY_COLUMN
from critpoint._memory import format_bytes, free_memory, parse_bytes
from critpoint.errors import InputError, MemoryBudgetError
from critpoint.linalg._tridiag import storage_bytes
from critpoint.linalg.lanczos import default_ncv, eigsh_memory
from critpoint.linalg.slq import (
    PARTIAL_WINDOW,
    REORTH,
    default_num_probes,
    density_memory,
)
from critpoint.linalg.trace import _BLOCK as TRACE_BLOCK
from critpoint.linalg.trace import trace_memory
from critpoint.operator import AUTO_CACHE_SHARE

logger = logging.getLogger("critpoint")

__all__ = ["DEFAULT_SHARE", "MemoryPlan", "memory_budget", "plan_memory"]

#: Share of the free memory where the work runs (host memory for the CPU,
#: device memory for a GPU) that a diagnosis takes when ``memory`` is not
#: given: the rest is headroom for the products' own activations, which no
#: solver can state in advance.
DEFAULT_SHARE = 0.5

#: The density's reorthogonalisation beyond the three-term recurrence may
#: cost this share of the products' time (or :data:`REORTH_FREE_SECONDS` in
#: all, if more): on the planted test spectra every strategy gives the density
#: to the same Wasserstein distance, so time spent on vector work at a large
#: ``n`` buys clean extreme nodes only.
REORTH_TIME_SHARE = 0.1
#: Seconds of reorthogonalisation a density phase may always spend.
REORTH_FREE_SECONDS = 5.0
#: Columns per product of the trace on a CPU (where a block's columns run one
#: after another, so a wider one only holds more vectors).
CPU_TRACE_BLOCK = 4


def memory_budget(
    memory: int | float | str | None, device: torch.device
) -> tuple[int | None, int, str]:
    """``(budget, free, source)``: the bytes a run may take on ``device``.

    ``memory`` given (bytes or ``"8GB"``): that. Otherwise
    :data:`DEFAULT_SHARE` of the free memory (a container's cgroup limit
    respected; CUDA's own count on a GPU), or ``None`` (no limit) where the
    free memory cannot be known.
    """
    free = int(free_memory(device))
    if memory is not None:
        return parse_bytes(memory), free, "memory="
    if free > 0:
        return int(free * DEFAULT_SHARE), free, f"{DEFAULT_SHARE:g} of the free memory"
    return None, 0, "unknown free memory: no limit"


@dataclass(frozen=True)
class MemoryPlan:
    """What a diagnosis will hold, and the choices that make it fit.

    Bytes throughout. ``None`` for a phase that does not run.

    Attributes
    ----------
    budget : int or None
        The bytes the run may take (``None``: no limit known).
    free : int
        Free memory where the work runs when planned (0 if unknown).
    source : str
        Where the budget came from.
    device : str
        Where the work runs.
    kept : int
        Held through the whole run: the gradient and the eigenvectors.
    hvp_cache : int
        Budget of the batches' linearisations (0: every product recomputes).
    hvp_cache_kept : int or None
        What they took, once measured at the first product.
    ncv : int
        Lanczos basis vectors.
    basis : str
        Where the Lanczos basis lives (the device, or ``"cpu"`` for a GPU run).
    lanczos : int
        The Lanczos phase on the device (basis, when there, and working memory).
    reorth, window, density
        The density's reorthogonalisation, its window, and its bytes.
    trace_method, trace_block, trace
        The trace estimator allowed, its block, and its bytes.
    minimum : int
        The smallest the run could be (smallest settings, no linearisations).
    """

    budget: int | None
    free: int
    source: str
    device: str
    kept: int
    hvp_cache: int
    hvp_cache_kept: int | None
    ncv: int
    basis: str
    lanczos: int
    reorth: str | None
    window: int | None
    density: int | None
    trace_method: str | None
    trace_block: int | None
    trace: int | None
    minimum: int

    @property
    def peak(self) -> int:
        """What the run holds at its largest phase: kept + linearisations + that phase."""
        cache = self.hvp_cache if self.hvp_cache_kept is None else self.hvp_cache_kept
        phases = [self.lanczos, self.density or 0, self.trace or 0]
        return self.kept + cache + max(phases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary, with ``peak``."""
        return {**dataclasses.asdict(self), "peak": self.peak}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryPlan:
        """The plan :meth:`to_dict` wrote (``Diagnosis.memory``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{key: data[key] for key in names})
        except (KeyError, TypeError) as exc:
            msg = f"not a memory plan dictionary ({exc}); it needs {', '.join(sorted(names))}"
            raise InputError(msg) from exc

    def describe(self) -> str:
        """One line: the budget, the peak and the choices."""
        budget = "no limit" if self.budget is None else format_bytes(self.budget)
        parts = [f"Lanczos basis {self.ncv} vectors on {self.basis}"]
        if self.reorth is not None:
            window = f" (window {self.window})" if self.reorth == "partial" else ""
            parts.append(f"density reorthogonalisation {self.reorth}{window}")
        if self.trace_method is not None:
            parts.append(f"trace {self.trace_method} in blocks of {self.trace_block}")
        cache = self.hvp_cache if self.hvp_cache_kept is None else self.hvp_cache_kept
        parts.append(
            f"linearisations {format_bytes(cache)}"
            if cache
            else "no linearisations kept"
        )
        return (
            f"Memory: peak {format_bytes(self.peak)} of {budget} ({self.source}) on "
            f"{self.device}: " + "; ".join(parts)
        )


def plan_memory(
    n: int,
    dtype: torch.dtype,
    device: torch.device | str,
    *,
    k: int = 6,
    block_size: int = 2,
    ncv: int | None = None,
    density: bool = True,
    num_probes: int | None = None,
    num_steps: int = 60,
    reorth: str | None = None,
    trace: bool = True,
    trace_max_matvecs: int = 60,
    trace_method: str = "auto",
    hvp_cache: int | str | None = "auto",
    hvp_cache_kept: int | None = None,
    memory: int | float | str | None = None,
    process_group: Any = None,
    seconds_per_product: float | None = None,
    seconds_per_vector: float | None = None,
) -> MemoryPlan:
    """Add up what a diagnosis will hold and choose its settings within the budget.

    Parameters
    ----------
    n : int
        Parameters diagnosed.
    dtype : torch.dtype
        Precision of the vectors.
    device : torch.device or str
        Where the work runs.
    k, block_size : int
        Eigenpairs and Lanczos block size.
    ncv : int, optional
        A Lanczos basis size to keep (refused when it does not fit); default:
        chosen (:func:`critpoint.linalg.lanczos.default_ncv` where it fits).
    density, num_probes, num_steps : bool, int, int
        The density phase (SLQ) and its size (``num_probes`` default
        :func:`~critpoint.linalg.slq.default_num_probes`).
    reorth : {"full", "partial", "local"}, optional
        A reorthogonalisation to keep (refused when it does not fit); default:
        the most thorough that fits.
    trace, trace_max_matvecs, trace_method
        The trace phase, its budget and the method asked for.
    hvp_cache : "auto", int or None
        The objective's linearisation setting (``None`` or ``0``: none).
    hvp_cache_kept : int, optional
        What the linearisations took, once measured: the solvers then share
        the rest of the budget.
    memory : int, float or str, optional
        The budget (bytes or ``"8GB"``); default :func:`memory_budget`.
    process_group : torch.distributed.ProcessGroup, optional
        Several processes run the same solvers in lockstep, so they must make
        the same choices: the smallest budget and the largest measured
        linearisations over the ranks count (two all-reduces).
    seconds_per_product, seconds_per_vector : float, optional
        Measured seconds of one Hessian-vector product and of one pass over
        an ``n``-vector (a dot product): with both, the density's
        reorthogonalisation is also chosen by its time (see
        :data:`REORTH_TIME_SHARE`).

    Returns
    -------
    MemoryPlan

    Raises
    ------
    MemoryBudgetError
        When even the smallest settings exceed the budget, or a setting that
        was given (``ncv``, ``reorth``) does not fit; the message gives the
        numbers and what to change.
    InputError
        For an unknown ``reorth`` or an unreadable ``memory``.
    """
    if reorth is not None and reorth not in REORTH:
        msg = f"reorth must be one of {', '.join(repr(r) for r in REORTH)}, got {reorth!r}"
        raise InputError(msg)
    device = torch.device(device)
    budget, free, source = memory_budget(memory, device)
    p = min(block_size, n)
    m = min(num_steps, n)
    preferred = default_ncv(k, n, dtype, device, p) if ncv is None else ncv
    if process_group is not None:
        # Every rank runs the same recurrences in lockstep, so all make the
        # same choices: from the smallest budget and preferred basis, the
        # largest kept linearisations and the slowest measurements.
        budget, hvp_cache_kept, preferred, seconds_per_product, seconds_per_vector = (
            _agree(
                budget,
                hvp_cache_kept,
                preferred,
                seconds_per_product,
                seconds_per_vector,
                device,
                process_group,
            )
        )
        source += ", the smallest over the processes"
    if num_probes is None:
        num_probes = default_num_probes(n)
    # The gradient, the eigenvectors and the two oriented extreme ones.
    kept = storage_bytes(n, k + 3, dtype)
    small_ncv = min(n, 2 * k + 1) if ncv is None else min(n, ncv)
    lanczos_min = sum(eigsh_memory(n, k, small_ncv, dtype, p))
    density_min = density_memory(n, num_probes, m, dtype, reorth or "local")
    trace_min = trace_memory(n, trace_max_matvecs, "hutchinson", dtype, 1)
    phases_min = {"the Lanczos basis and vectors": lanczos_min}
    if density:
        phases_min[f"the density ({reorth or 'local'} reorthogonalisation)"] = (
            density_min
        )
    if trace:
        phases_min["the trace (Hutchinson, one probe at a time)"] = trace_min
    minimum = kept + max(phases_min.values())
    host_basis = False
    host_budget = None
    if budget is not None and minimum > budget and device.type == "cuda":
        # The basis may live in host memory: the device keeps the working vectors.
        basis_bytes, working = eigsh_memory(n, k, small_ncv, dtype, p)
        host_budget, _, _ = memory_budget(None, torch.device("cpu"))
        if host_budget is None or basis_bytes <= host_budget:
            host_basis = True
            phases_min["the Lanczos basis and vectors"] = working
            minimum = kept + max(phases_min.values())
    if budget is not None and minimum > budget:
        raise MemoryBudgetError(
            _refusal(n, dtype, device, budget, source, kept, phases_min)
        )

    # The linearisations: what their own setting allows, within what is left.
    if hvp_cache_kept is not None:
        cache = int(hvp_cache_kept)
    else:
        cache = _cache_setting(hvp_cache, device, free)
        if budget is not None:
            cache = max(0, min(cache, budget - minimum))
    room = None if budget is None else budget - kept - cache

    # Lanczos: the default basis, fewer vectors where they do not fit.
    basis_where = "cpu" if host_basis else str(device)
    chosen_ncv = min(n, preferred)
    if room is not None:
        while chosen_ncv > small_ncv and (
            _lanczos_bytes(n, k, chosen_ncv, dtype, p, host_basis) > room
            or (
                host_budget is not None
                and eigsh_memory(n, k, chosen_ncv, dtype, p)[0] > host_budget
            )
        ):
            chosen_ncv = max(small_ncv, chosen_ncv - max(1, chosen_ncv // 16))
        if ncv is not None and chosen_ncv < min(n, ncv):
            msg = _refusal(
                n,
                dtype,
                device,
                budget,
                source,
                kept + cache,
                {
                    f"a Lanczos basis of ncv={ncv}": sum(
                        eigsh_memory(n, k, ncv, dtype, p)
                    )
                },
            )
            raise MemoryBudgetError(msg)
    lanczos = _lanczos_bytes(n, k, chosen_ncv, dtype, p, host_basis)

    # The density: the most thorough reorthogonalisation that fits.
    chosen_reorth = window = density_bytes = None
    if density:
        timing = (
            None
            if seconds_per_product is None or seconds_per_vector is None
            else (float(seconds_per_product), float(seconds_per_vector))
        )
        chosen_reorth, window = _density_choice(
            n, num_probes, m, dtype, reorth, room, timing
        )
        density_bytes = density_memory(n, num_probes, m, dtype, chosen_reorth, window)
        if room is not None and density_bytes > room:
            msg = _refusal(
                n,
                dtype,
                device,
                budget,
                source,
                kept + cache,
                {f"the density with reorth={reorth!r}": density_bytes},
            )
            raise MemoryBudgetError(msg)
    # The trace: Hutch++'s sketch where it fits, else Hutchinson; the widest block.
    method = block = trace_bytes = None
    if trace:
        method, block = _trace_choice(
            n, trace_max_matvecs, trace_method, dtype, room, device
        )
        trace_bytes = trace_memory(n, trace_max_matvecs, method, dtype, block)
    plan = MemoryPlan(
        budget=budget,
        free=free,
        source=source,
        device=str(device),
        kept=kept,
        hvp_cache=cache,
        hvp_cache_kept=hvp_cache_kept,
        ncv=chosen_ncv,
        basis=basis_where,
        lanczos=lanczos,
        reorth=chosen_reorth,
        window=window,
        density=density_bytes,
        trace_method=method,
        trace_block=block,
        trace=trace_bytes,
        minimum=minimum,
    )
    logger.info("%s", plan.describe())
    return plan


def _agree(
    budget: int | None,
    kept: int | None,
    ncv: int,
    product: float | None,
    vector: float | None,
    device: torch.device,
    group: Any,
) -> tuple[int | None, int | None, int, float | None, float | None]:
    """Over the ranks: the smallest budget and basis, the largest kept linearisations and seconds.

    ``None`` stands for unknown: a budget without limit, linearisations not
    measured yet, a timing not taken (on any rank: then on none).
    """
    import torch.distributed as dist

    unknown = 2**62
    where = device if device.type == "cuda" else torch.device("cpu")

    def reduce(values: list[float], dtype: torch.dtype, op: Any) -> list[float]:
        t = torch.tensor(values, dtype=dtype, device=where)
        dist.all_reduce(t, op=op, group=group)
        return t.tolist()

    (low,) = reduce(
        [unknown if budget is None else budget], torch.int64, dist.ReduceOp.MIN
    )
    (most,) = reduce([-1 if kept is None else kept], torch.int64, dist.ReduceOp.MAX)
    (basis,) = reduce([ncv], torch.int64, dist.ReduceOp.MIN)
    times = [-1.0 if product is None else product, -1.0 if vector is None else vector]
    slowest = reduce(times, torch.float64, dist.ReduceOp.MAX)
    missing = reduce([float(t < 0) for t in times], torch.float64, dist.ReduceOp.MAX)
    agreed = [None if m > 0 else t for t, m in zip(slowest, missing, strict=True)]
    return (
        None if low >= unknown else int(low),
        None if most < 0 else int(most),
        int(basis),
        agreed[0],
        agreed[1],
    )


def _cache_setting(setting: int | str | None, device: torch.device, free: int) -> int:
    """The linearisations' own budget (the operator's policy for ``"auto"``)."""
    if setting is None:
        return 0
    if isinstance(setting, int):
        return setting
    return int(free * AUTO_CACHE_SHARE.get(device.type, 0.0))


def _lanczos_bytes(
    n: int, k: int, ncv: int, dtype: torch.dtype, p: int, host_basis: bool
) -> int:
    """Device bytes of the Lanczos phase (its basis only where it lives there)."""
    basis, working = eigsh_memory(n, k, ncv, dtype, p)
    return working if host_basis else basis + working


def _density_choice(
    n: int,
    probes: int,
    m: int,
    dtype: torch.dtype,
    reorth: str | None,
    room: int | None,
    timing: tuple[float, float] | None = None,
) -> tuple[str, int | None]:
    """The reorthogonalisation (and window) of the density within ``room`` bytes.

    ``timing = (seconds per product, seconds per Gram–Schmidt pass over one
    vector)`` also bounds the vector work of a probe's Lanczos step: the last
    two vectors, then every stored one (:func:`~critpoint.linalg._tridiag.project_rows`):
    ``m/2 + 2`` passes on average for ``"full"``; a window of ``w`` also
    moves its rows up by one each step (a copy: 0.6 of a pass), about
    ``1.6w + 2``; ``"local"`` (``w = 2``) about 5. What exceeds ``"local"``
    may cost :data:`REORTH_TIME_SHARE` of a product (or
    :data:`REORTH_FREE_SECONDS` over the phase).
    """
    if reorth is not None:
        window = None
        if reorth == "partial":
            widest = _widest_window(n, probes, m, dtype, room)
            window = (
                PARTIAL_WINDOW
                if widest is None
                else max(3, min(PARTIAL_WINDOW, widest))
            )
        return reorth, (min(2, m) if reorth == "local" else window)
    extra = math.inf  # vector passes per product allowed beyond "local"
    if timing is not None:
        product, vector = timing
        allowed = max(REORTH_TIME_SHARE * product, REORTH_FREE_SECONDS / (m * probes))
        extra = allowed / vector if vector > 0 else math.inf
    fits_full = room is None or density_memory(n, probes, m, dtype, "full") <= room
    if fits_full and m / 2 - 3 <= extra:
        return "full", None
    widest = _widest_window(n, probes, m, dtype, room)
    if room is not None and widest is None:
        return "local", min(2, m)
    window = min(PARTIAL_WINDOW, m - 1 if widest is None else widest)
    if extra < math.inf:
        window = min(window, int((extra + 3) / 1.6))
    if window >= 3:
        return "partial", window
    return "local", min(2, m)


def _widest_window(
    n: int, probes: int, m: int, dtype: torch.dtype, room: int | None
) -> int | None:
    """The most basis vectors per probe that fit (below ``m``), or ``None``."""
    if room is None:
        return None
    per_probe = room // max(1, storage_bytes(n, probes, dtype)) - 2
    return min(per_probe, m - 1) if per_probe >= 1 else None


def _trace_choice(
    n: int,
    budget: int,
    method: str,
    dtype: torch.dtype,
    room: int | None,
    device: torch.device,
) -> tuple[str, int]:
    """The trace method and block within ``room`` bytes.

    On a CPU the products of a block run column by column
    (:data:`critpoint._autodiff.COLUMN_BY_COLUMN`): a block wider than
    :data:`CPU_TRACE_BLOCK` holds memory and buys no speed.
    """
    widest = CPU_TRACE_BLOCK if device.type in COLUMN_BY_COLUMN else TRACE_BLOCK
    block = min(widest, max(1, budget))
    if room is None:
        return method, block
    for key in dict.fromkeys([method, "hutchinson"]):
        for size in range(block, 0, -1):
            if trace_memory(n, budget, key, dtype, size) <= room:
                return key, size
    return "hutchinson", 1  # the minimum, checked to fit before


def _refusal(
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    budget: int,
    source: str,
    kept: int,
    phases: dict[str, int],
) -> str:
    """The message of a plan that cannot fit: the numbers and what to change."""
    largest = max(phases, key=lambda key: phases[key])
    need = kept + phases[largest]
    parts = ", ".join(f"{what} {format_bytes(b)}" for what, b in phases.items())
    return (
        f"the diagnosis of {n:,} parameters in {str(dtype).removeprefix('torch.')} needs at "
        f"least {format_bytes(need)} on {device} ({format_bytes(kept)} kept through the run, "
        f"then its largest phase; phases: {parts}), over the budget of "
        f"{format_bytes(budget)} ({source}); give more memory (memory= / --memory), "
        "diagnose fewer parameters (params= / --params), lower k, fewer density probes, "
        "or leave out the density or the trace (density=False / --no-density, "
        "trace=False / --no-trace)"
    )
