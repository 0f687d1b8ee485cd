"""The cost of a diagnosis, said before it is spent.

A :class:`CostPlan` lists the phases of a computation (the symmetry probe,
the extreme eigenvalues, the density, the trace, each layer's block, the
loss landscape, escape steps), the Hessian-vector products and loss
evaluations each one plans, and, from one measured gradient and one
measured product (:class:`Costs`), the time they should take: "≈ 623 HVPs
× 2.6 s ≈ 27 min". :func:`critpoint.diagnose` makes its plan from the
products it spends anyway (the symmetry probe's), so saying the cost costs
nothing; :func:`plan_diagnosis` makes the same plan on its own.

The counts are exact where the work is fixed (density, trace, landscape)
and an expectation where it is not (the eigensolver stops when it has
converged: :func:`critpoint.linalg._convergence.expected_products`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from critpoint.errors import InputError
from critpoint.linalg._convergence import expected_products
from critpoint.linalg._random import make_generator, randn
from critpoint.linalg.lanczos import default_block_size
from critpoint.linalg.slq import default_num_probes

__all__ = [
    "ANNOUNCE_SECONDS",
    "CostPlan",
    "Costs",
    "Phase",
    "diagnosis_phases",
    "duration",
    "eigensolver_budget",
    "escape_phases",
    "landscape_phases",
    "layer_phases",
    "loss_seconds",
    "measure_costs",
    "plan_diagnosis",
]

#: A plan longer than this (seconds) is worth saying before the work starts.
ANNOUNCE_SECONDS = 5.0

#: A loss evaluation (a forward pass) costs about this share of a gradient
#: (forward and backward); used when no loss alone was timed.
LOSS_SHARE_OF_GRADIENT = 0.5


@dataclass(frozen=True)
class Phase:
    """One phase of a plan.

    Attributes
    ----------
    name : str
        What it computes (``"density"``, ``"layer net.0"``...).
    products : int
        Hessian-vector products planned.
    losses : int
        Loss evaluations (full passes over the data) planned.
    gradients : int
        Gradients (full passes with a backward) planned.
    exact : bool
        Whether the counts are known (``False``: an expectation, e.g. an
        eigensolver that stops when it has converged).
    spent : bool
        Already done when the plan was made (the measurements).
    """

    name: str
    products: int = 0
    losses: int = 0
    gradients: int = 0
    exact: bool = True
    spent: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "name": self.name,
            "products": self.products,
            "losses": self.losses,
            "gradients": self.gradients,
            "exact": self.exact,
            "spent": self.spent,
        }


@dataclass(frozen=True)
class Costs:
    """Measured seconds of one unit of work.

    Attributes
    ----------
    seconds_per_product : float
        One Hessian-vector product (the mean over the products timed: the
        first builds the linearisation and the symmetry probe recomputes it
        from scratch, so later products from kept linearisations are
        cheaper; the estimate errs long).
    seconds_per_gradient : float
        One gradient: a forward and a backward pass over all the data.
    seconds_per_loss : float
        One loss evaluation (a forward pass over all the data); estimated as
        :data:`LOSS_SHARE_OF_GRADIENT` of a gradient unless timed.
    products_timed : int
        Products the product time is the mean over.
    seconds_per_vector : float, optional
        One Gram–Schmidt pass over one stored ``n``-vector (a dot product
        and an update, timed on the product's vectors): the unit of the
        solvers' own vector work.
    """

    seconds_per_product: float
    seconds_per_gradient: float
    seconds_per_loss: float
    products_timed: int = 1
    seconds_per_vector: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "seconds_per_product": self.seconds_per_product,
            "seconds_per_gradient": self.seconds_per_gradient,
            "seconds_per_loss": self.seconds_per_loss,
            "products_timed": self.products_timed,
            "seconds_per_vector": self.seconds_per_vector,
        }


def duration(seconds: float) -> str:
    """``0.2 s``, ``41 s``, ``27 min``, ``3.2 h``: a duration as a person reads it."""
    if not math.isfinite(seconds):
        return "an unknown time"
    if seconds < 0.095:
        return f"{1000 * seconds:.2g} ms"
    if seconds < 9.5:
        return f"{seconds:.2g} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h"


@dataclass(frozen=True)
class CostPlan:
    """The phases of a computation, their counts, and the time they should take.

    Attributes
    ----------
    phases : tuple of Phase
    costs : Costs or None
        Measured unit times; ``None`` when nothing was timed (counts only).
    repeats : int
        The phases run this many times (one per checkpoint, with the same
        settings); every total is multiplied by it.
    repeat_label : str
        What is repeated (``"checkpoints"``), for :meth:`summary`.

    Examples
    --------
    >>> plan = CostPlan((Phase("eigenvalues", 100, exact=False), Phase("density", 480)),
    ...                 Costs(2.6, 1.0, 0.5))
    >>> plan.summary()
    '≈ 580 HVPs × 2.6 s ≈ 25 min (eigenvalues ≈ 100, density 480)'
    """

    phases: tuple[Phase, ...]
    costs: Costs | None = None
    repeats: int = 1
    repeat_label: str = ""

    # ------------------------------------------------------------ the counts
    def _todo(self) -> list[Phase]:
        return [p for p in self.phases if not p.spent]

    @property
    def products(self) -> int:
        """Hessian-vector products still to spend, all repeats together."""
        return self.repeats * sum(p.products for p in self._todo())

    @property
    def losses(self) -> int:
        """Loss evaluations still to spend, all repeats together."""
        return self.repeats * sum(p.losses for p in self._todo())

    @property
    def gradients(self) -> int:
        """Gradients still to compute, all repeats together."""
        return self.repeats * sum(p.gradients for p in self._todo())

    @property
    def spent_products(self) -> int:
        """Products already spent on the measurements (once, not repeated)."""
        return sum(p.products for p in self.phases if p.spent)

    @property
    def seconds(self) -> float | None:
        """Estimated seconds of the work still to do; ``None`` without :attr:`costs`."""
        if self.costs is None:
            return None
        c = self.costs
        return (
            self.products * c.seconds_per_product
            + self.losses * c.seconds_per_loss
            + self.gradients * c.seconds_per_gradient
        )

    @property
    def worth_announcing(self) -> bool:
        """Whether the estimate exceeds :data:`ANNOUNCE_SECONDS`."""
        seconds = self.seconds
        return seconds is not None and seconds > ANNOUNCE_SECONDS

    def largest(self) -> Phase | None:
        """The phase still to do that plans the most products (then losses)."""
        todo = self._todo()
        if not todo:
            return None
        return max(todo, key=lambda p: (p.products, p.losses))

    def product_count(self, name: str) -> int:
        """Products planned by the phases whose name starts with ``name`` (one repeat)."""
        return sum(p.products for p in self._todo() if p.name.startswith(name))

    # ------------------------------------------------------------ building
    def extend(self, phases: Sequence[Phase]) -> CostPlan:
        """The plan with more phases after its own."""
        return replace(self, phases=(*self.phases, *phases))

    def repeated(self, times: int, label: str) -> CostPlan:
        """The plan run ``times`` times (``label``: what is repeated, e.g. ``"checkpoints"``)."""
        if not isinstance(times, int) or times < 1:
            msg = f"times must be an int >= 1, got {times!r}"
            raise InputError(msg)
        return replace(self, repeats=times, repeat_label=label)

    # ------------------------------------------------------------ words
    def _groups(self) -> list[tuple[str, int, bool]]:
        """``(name, products, exact)`` of the phases still to do, layers as one group."""
        groups: dict[str, list[Any]] = {}
        for p in self._todo():
            if not p.products:
                continue
            name = "per layer" if p.name.startswith("layer ") else p.name
            entry = groups.setdefault(name, [0, True])
            entry[0] += p.products
            entry[1] = entry[1] and p.exact
        return [(name, count, exact) for name, (count, exact) in groups.items()]

    def summary(self) -> str:
        """One line: ``≈ 623 HVPs × 2.6 s ≈ 27 min (eigenvalues ≈ 140, density 480, trace 60)``.

        Loss evaluations follow (``+ 524 losses × 0.9 s``); repeats lead
        (``3 checkpoints × …``). Without measured costs, the counts only.
        """
        parts = []
        exact = all(p.exact for p in self._todo())
        per = CostPlan(self.phases, self.costs)  # one repeat
        lead = "" if exact else "≈ "
        c = self.costs
        if per.products:
            text = f"{lead}{per.products:,} HVPs"
            if c is not None:
                text += f" × {duration(c.seconds_per_product)}"
            parts.append(text)
        if per.losses:
            text = f"{per.losses:,} loss evaluations"
            if c is not None:
                text += f" × {duration(c.seconds_per_loss)}"
            parts.append(text)
        if per.gradients:
            text = f"{per.gradients:,} gradients"
            if c is not None:
                text += f" × {duration(c.seconds_per_gradient)}"
            parts.append(text)
        if not parts:
            return "nothing left to compute"
        body = " + ".join(parts)
        if self.repeats > 1:
            body = f"{self.repeats} {self.repeat_label or 'runs'} × ({body})"
        seconds = self.seconds
        if seconds is not None:
            body += f" ≈ {duration(seconds)}"
        groups = self._groups()
        if len(groups) > 1 or (groups and groups[0][0] != "eigenvalues"):
            inner = ", ".join(
                f"{name} {'' if ex else '≈ '}{count:,}" for name, count, ex in groups
            )
            body += f" ({inner})"
        return body

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (with the totals and the estimate)."""
        return {
            "phases": [p.to_dict() for p in self.phases],
            "costs": self.costs.to_dict() if self.costs is not None else None,
            "repeats": self.repeats,
            "repeat_label": self.repeat_label,
            "products": self.products,
            "losses": self.losses,
            "gradients": self.gradients,
            "seconds": self.seconds,
            "summary": self.summary(),
        }


# ---------------------------------------------------------------- the phases


def _density_products(
    n: int, density: bool, num_probes: int | None, num_steps: int
) -> int:
    if not density:
        return 0
    probes = default_num_probes(n) if num_probes is None else num_probes
    return probes * min(num_steps, n)


def _trace_products(n: int, trace: bool, trace_max_matvecs: int) -> int:
    return min(trace_max_matvecs, n) if trace else 0


def eigensolver_budget(
    n: int,
    max_matvecs: int | None,
    *,
    spent: int,
    density: bool = True,
    num_probes: int | None = None,
    num_steps: int = 60,
    trace: bool = True,
    trace_max_matvecs: int = 60,
    sampling: int = 0,
) -> int | None:
    """The products left to the eigensolver when ``max_matvecs`` counts every product.

    ``max_matvecs`` is the most products a diagnosis spends in all: the
    products already ``spent`` (the symmetry probe), the density's and the
    trace's (fixed in advance) and the ``sampling`` error's are taken from
    it; the eigensolver gets the rest. ``None`` (no budget) gives ``None``
    (the eigensolver's default).

    Raises
    ------
    InputError
        When the budget leaves the eigensolver less than one Krylov block.
    """
    if max_matvecs is None:
        return None
    dens = _density_products(n, density, num_probes, num_steps)
    tr = _trace_products(n, trace, trace_max_matvecs)
    left = max_matvecs - spent - dens - tr - sampling
    need = 1 if n == 1 else min(default_block_size("BE", 2), n)
    if left < need:
        taken = [f"the symmetry probe {spent}"] if spent else []
        taken += [f"the density {dens}"] if dens else []
        taken += [f"the trace {tr}"] if tr else []
        taken += [f"the sampling error {sampling}"] if sampling else []
        msg = (
            f"max_matvecs={max_matvecs} counts every Hessian-vector product and leaves "
            f"the eigensolver {max(left, 0)} after {', '.join(taken) or 'nothing'}; "
            f"give at least {max_matvecs - left + need}, or leave out the density "
            "(density=False, --no-density) or the trace (trace=False, --no-trace)"
        )
        raise InputError(msg)
    return left


def diagnosis_phases(
    n: int,
    *,
    k: int = 6,
    density: bool = True,
    trace: bool = True,
    max_matvecs: int | None = None,
    num_probes: int | None = None,
    num_steps: int = 60,
    trace_max_matvecs: int = 60,
    probe: int = 1,
    prefix: str = "",
) -> list[Phase]:
    """The phases of :func:`critpoint.diagnose` on ``n`` parameters, with their products.

    Parameters
    ----------
    n : int
        Parameters diagnosed.
    k, density, trace, max_matvecs, num_probes, num_steps, trace_max_matvecs
        As for :func:`critpoint.diagnose`.
    probe : int
        Products spent before the eigensolver: the symmetry probe's (1: the
        timed product, whose determinism test is a forward pass; 2 in
        ``fwd-rev`` mode), or the one timed product without the check.
    prefix : str
        Put before every phase's name (``"layer net.0: "``).

    Returns
    -------
    list of Phase
        The gradient, the probe, the eigenvalues (an expectation), the
        density and the trace (exact; absent when not asked).
    """
    k = min(max(k, 2), n)
    eig_budget = eigensolver_budget(
        n,
        max_matvecs,
        spent=probe,
        density=density,
        num_probes=num_probes,
        num_steps=num_steps,
        trace=trace,
        trace_max_matvecs=trace_max_matvecs,
    )
    if n == 1:
        eig = 1
    else:
        block = min(default_block_size("BE", k), n)
        budget = eig_budget if eig_budget is not None else max(1000, 30 * min(n, 160))
        eig = expected_products(n, k, block, budget)
    phases = [Phase(f"{prefix}gradient", gradients=1)]
    if probe:
        phases.append(Phase(f"{prefix}symmetry probe", probe))
    phases.append(Phase(f"{prefix}eigenvalues", eig, exact=n == 1))
    if density:
        phases.append(
            # At most: a probe whose Krylov space is exhausted (num_steps >= n)
            # stops early.
            Phase(
                f"{prefix}density",
                _density_products(n, True, num_probes, num_steps),
                exact=num_steps < n,
            )
        )
    if trace:
        phases.append(
            Phase(f"{prefix}trace", _trace_products(n, True, trace_max_matvecs))
        )
    return phases


def layer_phases(
    sizes: Sequence[tuple[str, int]], probe: int = 1, **options: Any
) -> list[Phase]:
    """The phases of :func:`critpoint.diagnose_layers`: each layer's diagnosis.

    Parameters
    ----------
    sizes : sequence of (name, n)
        Each layer's name and number of parameters.
    probe : int
        Products of each layer's symmetry probe.
    **options
        Keywords of :func:`critpoint.diagnose` (``k``, ``density``...).

    Returns
    -------
    list of Phase
        One per layer (``"layer NAME"``): the sum of its diagnosis's phases.
    """
    keys = ("k", "density", "trace", "max_matvecs", "num_probes", "num_steps")
    kept = {key: options[key] for key in keys if key in options}
    if "trace_max_matvecs" in options:
        kept["trace_max_matvecs"] = options["trace_max_matvecs"]
    check = options.get("check", True)
    out = []
    for name, n in sizes:
        parts = diagnosis_phases(n, probe=probe if check else 0, **kept)
        out.append(
            Phase(
                f"layer {name}",
                products=sum(p.products for p in parts),
                gradients=sum(p.gradients for p in parts),
                exact=all(p.exact for p in parts),
            )
        )
    return out


def block_phases(
    sizes: Sequence[tuple[str, int]],
    *,
    num_probes: int = 4,
    num_steps: int = 60,
    probe: int = 1,
) -> list[Phase]:
    """The phases of :func:`critpoint.diagnose_layers` in one batched pass.

    Every block's ``num_probes`` recurrences of ``min(num_steps, n_b)`` steps
    run as columns of the same products (one pass over the data per step);
    each block's first probe may go on alone until its extremes converge, so
    the count is an expectation. One gradient, and the whole Hessian's
    symmetry probe (``probe`` products).

    Parameters
    ----------
    sizes : sequence of (name, n)
        Each block's name and number of parameters.
    num_probes, num_steps : int
        As for :func:`critpoint.linalg.blocks.block_spectra`.
    probe : int
        Products of the symmetry probe.
    """
    products = probe + sum(num_probes * min(num_steps, n) for _, n in sizes)
    return [
        Phase(
            f"{len(sizes)} layers in one pass",
            products=products,
            gradients=1,
            exact=False,
        )
    ]


def landscape_phases(
    num: int = 41, plane_num: int = 21, plane: bool = True, escape: bool = False
) -> list[Phase]:
    """The loss evaluations of :func:`critpoint.landscape` (from a diagnosis's eigenvectors).

    A gradient at the point, ``2·num`` losses along the two slices,
    ``plane_num²`` on the plane, one more at the end of the escape step.
    """
    losses = 2 * num + (plane_num * plane_num if plane else 0) + (1 if escape else 0)
    return [Phase("landscape", losses=losses, gradients=1)]


def escape_phases(
    n: int, max_steps: int, *, k: int = 6, max_matvecs: int | None = None
) -> list[Phase]:
    """At most ``max_steps`` escape steps: each a gradient, a probe, an eigen-solve, a line search.

    The line search is counted at its usual length (two losses); the run
    stops at the first point without clearly negative curvature, so the
    plan is an upper expectation.
    """
    k = min(max(k, 2), n)
    block = min(default_block_size("BE", k), n)
    budget = max_matvecs if max_matvecs is not None else max(1000, 30 * min(n, 160))
    eig = 1 if n == 1 else expected_products(n, k, block, budget)
    return [
        Phase(
            "escape steps",
            # The symmetry probe recomputes one product per step.
            products=max_steps * (1 + eig),
            losses=2 * max_steps,
            gradients=max_steps,
            exact=False,
        )
    ]


# ---------------------------------------------------------------- measuring


def _synchronized(value: torch.Tensor) -> float:
    """A number read from ``value``: waits for the device to finish (timing)."""
    return float(torch.linalg.vector_norm(value.double()))


def measure_costs(
    obj: Any,
    H: Any = None,
    *,
    seconds_per_gradient: float | None = None,
    seed: int = 0,
) -> Costs:
    """Time one gradient and one Hessian-vector product of an objective.

    Parameters
    ----------
    obj : Objective
    H : HessianOperator, optional
        The operator to time one product on (counted in its ``num_matvecs``;
        a pending symmetry probe's recomputation runs inside that product, so
        the time is the mean over both); default a new operator at the
        current point, without the probe.
    seconds_per_gradient : float, optional
        A gradient already timed (a diagnosis computes one anyway); else one
        is computed and timed here.
    seed : int
        Seed of the product's random vector.

    Returns
    -------
    Costs
    """
    if seconds_per_gradient is None:
        t0 = time.perf_counter()
        _, g = obj.loss_and_grad()
        _synchronized(g)
        seconds_per_gradient = time.perf_counter() - t0
    if H is None:
        H = obj.hessian(check=False)
    v = randn((int(H.shape[0]),), make_generator(seed), H.dtype, H.device)
    before = H.num_matvecs
    t0 = time.perf_counter()
    w = H @ v
    _synchronized(w)
    seconds = time.perf_counter() - t0
    # A pending probe in fwd-rev mode spends a product more: the mean over both.
    timed = max(H.num_matvecs - before, 1)
    return Costs(
        seconds / timed,
        seconds_per_gradient,
        loss_seconds(seconds_per_gradient),
        timed,
        seconds_per_vector=vector_seconds(v, w),
    )


def vector_seconds(v: torch.Tensor, w: torch.Tensor, repeats: int = 3) -> float:
    """Seconds of one Gram–Schmidt pass of ``w`` against ``v`` (both ``(n,)``).

    ``c = vᵀw`` then ``w − c v`` (a new vector, as the kernel makes it): the
    fastest of ``repeats``. What reorthogonalising against one stored vector
    costs, on this device, at this ``n``.
    """
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        c = torch.dot(v, w)
        float(torch.dot(v, w - c * v))  # read on the host: waits for the device
        best = min(best, time.perf_counter() - t0)
    return best


def loss_seconds(seconds_per_gradient: float) -> float:
    """Seconds of a loss evaluation, estimated from a gradient's."""
    return LOSS_SHARE_OF_GRADIENT * seconds_per_gradient


def plan_diagnosis(
    obj: Any,
    k: int = 6,
    density: bool = True,
    trace: bool = True,
    *,
    max_matvecs: int | None = None,
    num_probes: int | None = None,
    num_steps: int = 60,
    trace_max_matvecs: int = 60,
    check: bool = True,
) -> CostPlan:
    """What :func:`critpoint.diagnose` with these settings would cost, measured.

    Times one gradient and one product (with ``check`` the symmetry probe's
    first, with its fresh forward pass); those are spent here, and a diagnosis spends them again:
    :func:`critpoint.diagnose` makes this plan itself, for free, and hands it
    to ``on_plan=``. Use this to decide on the settings first.

    Parameters
    ----------
    obj : Objective
    k, density, trace, max_matvecs, num_probes, num_steps, trace_max_matvecs, check
        As for :func:`critpoint.diagnose`.

    Returns
    -------
    CostPlan
        Its measured phases are marked spent; :attr:`CostPlan.seconds` is
        the time of a diagnosis less those.
    """
    t0 = time.perf_counter()
    _, g = obj.loss_and_grad()
    _synchronized(g)
    t_grad = time.perf_counter() - t0
    H = obj.hessian(check=check)
    # The timed product; with the check it is the probe's first product,
    # with its fresh forward pass (see diagnose).
    costs = measure_costs(obj, H, seconds_per_gradient=t_grad)
    probe = H.num_matvecs
    phases = diagnosis_phases(
        obj.num_params,
        k=k,
        density=density,
        trace=trace,
        max_matvecs=max_matvecs,
        num_probes=num_probes,
        num_steps=num_steps,
        trace_max_matvecs=trace_max_matvecs,
        probe=probe,
    )
    name = "symmetry probe" if check else "timing product"
    phases = [
        replace(p, name=name, spent=True)
        if p.name == "symmetry probe"
        else replace(p, spent=p.name == "gradient")
        for p in phases
    ]
    return CostPlan(tuple(phases), costs)
