"""Leaving a saddle: steps along negative curvature, and an optimizer wrapper that takes them.

If ``u`` is a unit eigenvector with eigenvalue ``λ < 0``, then
``L(θ + αu) ≈ L(θ) + gᵀu·α + ½λα²``: a direction that lowers the loss even
where the gradient vanishes. :func:`quadratic_step` (defined with the rule in
:mod:`critpoint.analysis.step`, since the diagnosis predicts the same step) sizes
that step and predicts its change; :func:`escape_saddle` takes one such step,
sized by backtracking on the real loss; :func:`escape_until` takes steps until
no clearly negative curvature is left (the ``critpoint escape`` command), and
:class:`EscapeRun` is its ``critpoint.escape`` JSON document;
:class:`SaddleEscape` wraps any ``torch.optim`` optimizer and takes these
steps when training has stalled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from critpoint._checks import positive_int
from critpoint._deprecation import UNSET, renamed
from critpoint._json import clean, header
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.analysis.rule import measure_extremes
from critpoint.analysis.step import (
    QuadraticStep,
    downhill,
    line_search,
    predicted_change,
    quadratic_step,
)
from critpoint.errors import InputError

if TYPE_CHECKING:
    from critpoint.objective import Objective

ESCAPE_SCHEMA = "critpoint.escape"
ESCAPE_SCHEMA_VERSION = 1

__all__ = [
    "ESCAPE_SCHEMA",
    "ESCAPE_SCHEMA_VERSION",
    "EscapeEvent",
    "EscapeRun",
    "EscapeStep",
    "QuadraticStep",
    "SaddleEscape",
    "downhill",
    "escape_saddle",
    "escape_until",
    "predicted_change",
    "quadratic_step",
]


@dataclass(frozen=True)
class EscapeStep:
    """One step along negative curvature (or the reason none was taken).

    Attributes
    ----------
    taken : bool
        Whether the parameters were moved.
    reason : str
        Why (or why not), with the numbers.
    direction : torch.Tensor or None
        Unit direction ``u`` oriented downhill (``gᵀu ≤ 0``), shape ``(n,)``.
    step_size : float
        ``α``: the parameters moved by ``α·u`` (0 when not taken).
    eigenvalue : float
        ``λ_min``, the curvature along ``u``.
    eigenvalue_error : float
        Its rigorous error bound (residual norm).
    loss_before, loss_after : float
        Mean loss before and after the step.
    predicted_change : float
        ``gᵀu·α + ½λα²`` of the accepted step.
    actual_change : float
        ``loss_after − loss_before``.
    backtracks : int
        Halvings of the step before acceptance.
    num_matvecs : int
        Hessian-vector products spent.
    """

    taken: bool
    reason: str
    direction: torch.Tensor | None = field(repr=False)
    step_size: float
    eigenvalue: float
    eigenvalue_error: float
    loss_before: float
    loss_after: float
    predicted_change: float
    actual_change: float
    backtracks: int
    num_matvecs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (the direction left out; non-finite numbers ``None``)."""
        return clean(
            {
                "taken": self.taken,
                "reason": self.reason,
                "step_size": self.step_size,
                "eigenvalue": self.eigenvalue,
                "eigenvalue_error": self.eigenvalue_error,
                "loss_before": self.loss_before,
                "loss_after": self.loss_after,
                "predicted_change": self.predicted_change,
                "actual_change": self.actual_change,
                "backtracks": self.backtracks,
                "num_matvecs": self.num_matvecs,
            }
        )


def escape_saddle(
    obj: Objective,
    max_step: float | None = None,
    seed: int | torch.Generator | None = 0,
    *,
    k: int = 6,
    tol: float = 1e-4,
    eig_rtol: float = 1e-3,
    accept: float = 0.5,
    max_backtracks: int = 30,
    max_matvecs: int | None = None,
    maxiter: Any = UNSET,
    progress: ProgressArg = None,
) -> EscapeStep:
    """Take one step along the most negative curvature direction, in place.

    The extreme eigenpairs come from the same solve as :func:`critpoint.diagnose`
    (:func:`critpoint.analysis.rule.measure_extremes`: ``k`` pairs from both ends, the
    same ``seed``, ``tol`` and ``max_matvecs``), and "clearly negative" is the rule
    of :func:`critpoint.curvature`, so for the same point and settings a
    step is taken exactly when the diagnosis has an escape direction. The
    eigenvector ``u`` of ``λ_min`` is oriented downhill (``gᵀu ≤ 0``). The
    first trial step is :func:`quadratic_step` (``√(2·L/|λ|)``, capped at
    ``max_step``). A step is accepted when the real loss falls by at least
    ``accept`` times the predicted change ``gᵀu·α + ½λα²``; otherwise it is
    halved. Only the selected parameters change (through
    :meth:`Objective.set_theta`); buffers and train/eval mode are untouched.

    With no clearly negative eigenvalue nothing changes and the result says so.

    Parameters
    ----------
    obj : Objective
        The model (moved in place), loss and data.
    max_step : float, optional
        Longest step ``α`` (Euclidean norm in parameter space).
    seed : int, torch.Generator or None
        Seed of the Lanczos start vectors.
    k : int
        Eigenpairs from both ends of the spectrum (as ``diagnose``'s ``k``).
    tol : float
        Relative residual tolerance of the eigensolver.
    eig_rtol : float
        Relative zero tolerance for "clearly negative".
    accept : float
        Fraction of the predicted decrease the real loss must achieve.
    max_backtracks : int
        Most halvings of the step.
    max_matvecs : int, optional
        Most Hessian-vector products of the step, every one counted: the
        symmetry probe's are taken from it and the eigensolver gets the rest
        (at least 2 must be left, or an ``InputError`` says so).
    maxiter
        Old name of ``max_matvecs`` (a ``DeprecationWarning``; one release).
    progress : bool or callable, optional
        ``True`` shows a bar for the eigensolver (products) and one for the
        line search (loss evaluations: one planned, one more per halving); a
        callable is called as ``progress(done, total)`` by each in turn.

    Returns
    -------
    EscapeStep
    """
    max_matvecs = renamed(
        "escape_saddle", "maxiter", "max_matvecs", maxiter, max_matvecs, None
    )
    if max_step is not None and not (max_step > 0 and math.isfinite(max_step)):
        msg = f"max_step must be a positive finite number or None, got {max_step!r}"
        raise InputError(msg)
    if not 0 < accept < 1:
        msg = f"accept must lie in (0, 1), got {accept!r}"
        raise InputError(msg)
    if not isinstance(k, int) or k < 2:
        msg = f"k must be an int >= 2 (eigenpairs from both ends), got {k!r}"
        raise InputError(msg)
    check_progress(progress)
    theta = obj.theta
    loss0, g = obj.loss_and_grad(theta)
    H = obj.hessian(theta)
    if max_matvecs is not None:
        probe = H.num_matvecs + H.probe_pending
        left = max_matvecs - probe
        if left < min(2, obj.num_params):
            after = f" after the symmetry probe's {probe}" if probe else ""
            msg = (
                f"max_matvecs={max_matvecs} counts every Hessian-vector product and "
                f"leaves the eigensolver {max(left, 0)}{after}; it needs a block of 2: "
                f"give at least {probe + 2}"
            )
            raise InputError(msg)
        max_matvecs = left
    ext = measure_extremes(
        H,
        k=min(k, obj.num_params),
        tol=tol,
        max_matvecs=max_matvecs,
        seed=seed,
        eig_rtol=eig_rtol,
        delta=None,
        progress=progress,
    )
    c = ext.curvature
    lam, err = c.lambda_min, c.lambda_min_error
    if not c.negative:
        return EscapeStep(
            taken=False,
            reason=(
                f"no clearly negative curvature: λ_min = {lam:.4g} ± {err:.2g} is not below "
                f"−{c.zero_tol:.2g}; nothing was changed"
            ),
            direction=None,
            step_size=0.0,
            eigenvalue=lam,
            eigenvalue_error=err,
            loss_before=loss0,
            loss_after=loss0,
            predicted_change=0.0,
            actual_change=0.0,
            backtracks=0,
            num_matvecs=H.num_matvecs,
        )
    u, slope = downhill(ext.vectors[:, 0].clone(), g)
    # The line search plans one loss evaluation; each halving plans one more.
    bar = Progress(progress, 1, "escape line search", unit="loss")
    evaluations = 0

    def change_at(a: float) -> float:
        nonlocal evaluations
        change = obj.loss(theta + a * u) - loss0
        evaluations += 1
        bar.set_total(evaluations)
        bar.update(evaluations)
        return change

    search = line_search(
        change_at,
        loss0,
        slope,
        lam,
        max_step,
        accept=accept,
        max_backtracks=max_backtracks,
        dtype=obj.dtype,
    )
    bar.close()
    accepted = search.accepted
    alpha, change = search.step_size, search.actual_change
    predicted = search.predicted_change
    backtracks = search.backtracks if accepted else len(search.trials) - 1
    if not search.lowers_loss:
        return EscapeStep(
            taken=False,
            reason=(
                f"λ_min = {lam:.4g} but no step along its eigenvector lowered the loss "
                f"after {max_backtracks} halvings (higher-order terms dominate); nothing was changed"
            ),
            direction=u,
            step_size=0.0,
            eigenvalue=lam,
            eigenvalue_error=err,
            loss_before=loss0,
            loss_after=loss0,
            predicted_change=0.0,
            actual_change=0.0,
            backtracks=backtracks,
            num_matvecs=H.num_matvecs,
        )
    obj.set_theta(theta + alpha * u)
    how = (
        "accepted"
        if accepted
        else "the best decrease found (below the acceptance fraction)"
    )
    return EscapeStep(
        taken=True,
        reason=f"stepped {alpha:.4g} along the eigenvector of λ_min = {lam:.4g}: {how}",
        direction=u,
        step_size=alpha,
        eigenvalue=lam,
        eigenvalue_error=err,
        loss_before=loss0,
        loss_after=loss0 + change,
        predicted_change=predicted,
        actual_change=change,
        backtracks=backtracks,
        num_matvecs=H.num_matvecs,
    )


@dataclass(frozen=True)
class EscapeRun:
    """Escape steps taken one after the other (:func:`escape_until`).

    Attributes
    ----------
    steps : list of EscapeStep
        Every step tried, in order; the last one was not taken unless the run
        stopped at ``max_steps``.
    loss_before : float
        The loss before the first step.
    loss_after : float
        The loss after the last one.
    settings : dict
        ``max_steps``, ``max_step``, ``seed``, ``k``, ``tol``, ``eig_rtol``,
        ``accept``, ``max_backtracks``, ``max_matvecs``.
    """

    steps: list[EscapeStep]
    loss_before: float
    loss_after: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps_taken(self) -> int:
        """Steps that moved the parameters."""
        return sum(1 for s in self.steps if s.taken)

    @property
    def num_matvecs(self) -> int:
        """Hessian-vector products spent by all the steps."""
        return sum(s.num_matvecs for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The ``critpoint.escape`` JSON document (strict JSON values)."""
        return clean(
            {
                **header(ESCAPE_SCHEMA, ESCAPE_SCHEMA_VERSION),
                "loss_before": self.loss_before,
                "loss_after": self.loss_after,
                "num_steps_taken": self.num_steps_taken,
                "num_matvecs": self.num_matvecs,
                "steps": [s.to_dict() for s in self.steps],
                "settings": self.settings,
            }
        )


def escape_until(
    obj: Objective,
    max_steps: int = 10,
    max_step: float | None = None,
    seed: int | torch.Generator | None = 0,
    *,
    k: int = 6,
    tol: float = 1e-4,
    eig_rtol: float = 1e-3,
    accept: float = 0.5,
    max_backtracks: int = 30,
    max_matvecs: int | None = None,
    progress: ProgressArg = None,
) -> EscapeRun:
    """Step along negative curvature, in place, while there is some.

    Calls :func:`escape_saddle` up to ``max_steps`` times and stops at the
    first call that takes no step (no clearly negative curvature left, or no
    step lowered the loss). Each step is a fresh eigen-solve at the new point:
    ``k + a few`` Lanczos products and about ``1 + backtracks`` loss passes.

    Parameters
    ----------
    obj : Objective
        The model (moved in place), loss and data.
    max_steps : int
        Most steps.
    max_step : float, optional
        Longest single step (Euclidean norm in parameter space).
    seed : int, torch.Generator or None
        Seed of the eigensolver: step ``i`` (from 0) uses ``seed + i`` for an
        int, so every step sees fresh start vectors; a generator is drawn on.
    k, tol, eig_rtol, accept, max_backtracks, max_matvecs
        As for :func:`escape_saddle`.
    progress : bool or callable, optional
        ``True`` shows a bar of the steps (``max_steps`` planned; the run
        stops at the first step not taken) above each step's own bars; a
        callable is called as ``progress(steps done, max_steps)``.

    Returns
    -------
    EscapeRun
    """
    max_steps = positive_int(max_steps, "max_steps")
    check_progress(progress)
    steps: list[EscapeStep] = []
    bar = Progress(progress, max_steps, "escape steps", unit="step")
    for i in range(max_steps):
        step_seed = seed + i if isinstance(seed, int) else seed
        step = escape_saddle(
            obj,
            max_step=max_step,
            seed=step_seed,
            k=k,
            tol=tol,
            eig_rtol=eig_rtol,
            accept=accept,
            max_backtracks=max_backtracks,
            max_matvecs=max_matvecs,
            # A callback counts the steps; a bar shows each step's work too.
            progress=progress is True,
        )
        steps.append(step)
        bar.update(i + 1)
        if not step.taken:
            break
    bar.close()  # at the steps made: the run stops at the first not taken
    return EscapeRun(
        steps=steps,
        loss_before=steps[0].loss_before,
        loss_after=steps[-1].loss_after,
        settings={
            "max_steps": max_steps,
            "max_step": max_step,
            "seed": seed if isinstance(seed, int) or seed is None else None,
            "k": k,
            "tol": tol,
            "eig_rtol": eig_rtol,
            "accept": accept,
            "max_backtracks": max_backtracks,
            "max_matvecs": max_matvecs,
        },
    )


@dataclass
class EscapeEvent:
    """What :class:`SaddleEscape` did at one stalled step."""

    step: int
    grad_norm: float
    result: EscapeStep


class SaddleEscape:
    """Wrap a ``torch.optim`` optimizer; leave saddles when training stalls.

    Use it exactly like the optimizer it wraps: ``zero_grad()``, compute the
    loss, ``backward()``, ``step()``. At each ``step()`` it reads the gradient
    norm of the objective's parameters from their ``.grad``. When the user's
    stall rule says training has stalled, it checks for negative curvature
    with a few HVPs (:func:`escape_saddle`) and, if there is some, takes an
    escape step instead of the optimizer's step. Otherwise it leaves the
    optimizer alone. Every check is recorded in :attr:`events`.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Any optimizer over (at least) the objective's parameters.
    objective : Objective
        Full-data objective of the same model (``set_theta`` moves it).
    grad_tol : float
        Default stall rule: the gradient norm is at most ``grad_tol`` for
        ``patience`` consecutive steps.
    patience : int
        Consecutive small-gradient steps before a check.
    stalled : callable, optional
        Custom rule ``stalled(step, grad_norm) -> bool``; replaces the default.
    cooldown : int
        Steps after a check before the next one; doubled after each check
        that finds no negative curvature (so a converged run is not checked
        over and over), reset after an escape.
    max_step : float, optional
        Passed to :func:`escape_saddle`.
    seed : int
        Seed of the eigensolver (incremented at each check).
    k, tol, eig_rtol : optional
        Passed to :func:`escape_saddle`: the eigen-solve and the zero
        tolerance of :func:`critpoint.diagnose`, so a check steps exactly when
        a diagnosis of the point would offer an escape direction.

    Attributes
    ----------
    events : list of EscapeEvent
        Every curvature check, with its outcome.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        objective: Objective,
        grad_tol: float = 1e-6,
        patience: int = 1,
        stalled: Callable[[int, float], bool] | None = None,
        cooldown: int = 10,
        max_step: float | None = None,
        seed: int = 0,
        *,
        k: int = 6,
        tol: float = 1e-4,
        eig_rtol: float = 1e-3,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            msg = f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            raise InputError(msg)
        self.optimizer = optimizer
        self.objective = objective
        self.grad_tol = float(grad_tol)
        self.patience = int(patience)
        self.stalled = stalled
        self.cooldown = int(cooldown)
        self.max_step = max_step
        self.seed = int(seed)
        self.k = int(k)
        self.tol = float(tol)
        self.eig_rtol = float(eig_rtol)
        self.events: list[EscapeEvent] = []
        self.num_steps = 0
        self._small = 0
        self._last_check = -(10**9)
        self._wait = self.cooldown
        named = dict(objective.model.named_parameters())
        self._params = [named[name] for name in objective.param_names]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (for schedulers)."""
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the wrapped optimizer does."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the wrapped optimizer's state."""
        self.optimizer.load_state_dict(state)

    def _grad_norm(self) -> float:
        total = 0.0
        for p in self._params:
            if p.grad is not None:
                total += float(p.grad.detach().double().pow(2).sum())
        return math.sqrt(total)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: the optimizer's, or an escape step when training has stalled."""
        step = self.num_steps
        self.num_steps += 1
        grad_norm = self._grad_norm()
        if self.stalled is not None:
            is_stalled = bool(self.stalled(step, grad_norm))
        else:
            self._small = self._small + 1 if grad_norm <= self.grad_tol else 0
            is_stalled = self._small >= self.patience
        if is_stalled and step - self._last_check >= self.cooldown:
            self._last_check = step
            self._small = 0
            result = escape_saddle(
                self.objective,
                max_step=self.max_step,
                seed=self.seed + len(self.events),
                k=self.k,
                tol=self.tol,
                eig_rtol=self.eig_rtol,
            )
            self.events.append(
                EscapeEvent(step=step, grad_norm=grad_norm, result=result)
            )
            if result.taken:
                return None
        return (
            self.optimizer.step(closure)
            if closure is not None
            else self.optimizer.step()
        )

    @property
    def num_escapes(self) -> int:
        """Escape steps taken so far."""
        return sum(1 for e in self.events if e.result.taken)
