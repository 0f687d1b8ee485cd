"""Curvature of the full training loss along training.

At each tracking point :class:`CurvatureTracker` measures, on the Hessian of
the *full* training loss at the current parameters: the sharpness (the top
eigenvalue, Lanczos ``which="LA"``), ``lambda_min`` (``which="SA"``) and the
minimum ratio (``1 −`` the SLQ mass clearly below zero), with the zero
tolerance of the one rule (:func:`critpoint.analysis.zero_tolerance`) and the
ratio of :func:`critpoint.analysis.minimum_ratio` that :func:`critpoint.diagnose`
uses, so a tracked ratio and a diagnosis of the same point agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from critpoint._checks import finite_float, positive_int
from critpoint.analysis import minimum_ratio, zero_tolerance
from critpoint.errors import InputError
from critpoint.linalg.lanczos import eigsh
from critpoint.linalg.slq import spectral_density

if TYPE_CHECKING:
    from critpoint.objective import Objective
    from critpoint.operator import HessianOperator
    from critpoint.training.history import History

__all__ = ["TRACKABLE", "CurvatureTracker", "TrackOptions", "check_track"]

#: Curvature quantities :func:`~critpoint.training.train` can track.
TRACKABLE: tuple[str, ...] = ("sharpness", "lambda_min", "minimum_ratio")


def check_track(track: Iterable[str] | str | None) -> tuple[str, ...]:
    """The names of ``track`` (a name, several, or ``None``) in :data:`TRACKABLE` order.

    Raises
    ------
    InputError
        For a name outside :data:`TRACKABLE` or something that is not names.
    """
    if track is None:
        return ()
    items = [track] if isinstance(track, str) else track
    try:
        names = list(items)
    except TypeError:
        names = None
    if names is None or not all(isinstance(t, str) for t in names):
        msg = f"track must be None or a set of names from {list(TRACKABLE)}; got {track!r}"
        raise InputError(msg)
    unknown = sorted(set(names) - set(TRACKABLE))
    if unknown:
        msg = f"cannot track {unknown}; choose from {list(TRACKABLE)}"
        raise InputError(msg)
    return tuple(t for t in TRACKABLE if t in names)


@dataclass(frozen=True)
class TrackOptions:
    """What to track and how precisely.

    Attributes
    ----------
    quantities : tuple of str
        Names from :data:`TRACKABLE`, in that order (empty: no tracking).
    tol : float
        Relative residual tolerance of the Lanczos runs, ≥ 0.
    probes, lanczos_steps : int
        SLQ size of the minimum ratio: ``probes`` probes of ``lanczos_steps``
        steps (at most the number of parameters).
    eig_rtol : float
        Relative zero tolerance of the minimum ratio, as in :func:`critpoint.diagnose`.
    """

    quantities: tuple[str, ...] = ()
    tol: float = 1e-3
    probes: int = 4
    lanczos_steps: int = 40
    eig_rtol: float = 1e-3

    @classmethod
    def check(
        cls,
        track: Iterable[str] | str | None,
        tol: float,
        probes: int,
        lanczos_steps: int,
        eig_rtol: float,
    ) -> TrackOptions:
        """Validated options (an :class:`~critpoint.InputError` naming the bad one)."""
        return cls(
            quantities=check_track(track),
            tol=finite_float(tol, "track_tol", minimum=0.0),
            probes=positive_int(probes, "track_probes"),
            lanczos_steps=positive_int(lanczos_steps, "track_lanczos_steps"),
            eig_rtol=finite_float(eig_rtol, "eig_rtol", minimum=0.0),
        )


class CurvatureTracker:
    """Measure the tracked curvature of an objective and append it to a history.

    Parameters
    ----------
    objective : Objective
        The full training loss; each call takes the Hessian at the model's
        current parameters.
    options : TrackOptions
        What to measure.
    seed : int
        Seed of every Lanczos and SLQ start (the same at every point).

    Notes
    -----
    Cost of one call, in Hessian-vector products on the full data: one
    Lanczos run each for the sharpness and ``lambda_min`` (typically 10–60 at
    ``tol=1e-3``), ``probes × lanczos_steps`` for the minimum ratio, and a
    symmetry probe (a forward pass; no product) at the first call only.
    """

    def __init__(self, objective: Objective, options: TrackOptions, seed: int) -> None:
        self.objective = objective
        self.options = options
        self.seed = seed
        self._checked = False

    def __call__(self, history: History, step: int) -> None:
        """Measure at the current parameters; append to ``history`` as ``step``."""
        opts = self.options
        H = self.objective.hessian(check=not self._checked)
        self._checked = True
        top = bottom = None
        if "sharpness" in opts.quantities:
            top = self._extreme(H, "LA")
            history.sharpness.append(top)
        if "lambda_min" in opts.quantities:
            bottom = self._extreme(H, "SA")
            history.lambda_min.append(bottom)
        if "minimum_ratio" in opts.quantities:
            history.minimum_ratio.append(self._minimum_ratio(H, bottom, top))
        history.track_step.append(step)
        history.track_matvecs.append(int(H.num_matvecs))

    def _extreme(self, H: HessianOperator, which: str) -> float:
        """The largest (``"LA"``) or smallest (``"SA"``) eigenvalue."""
        r = eigsh(
            H,
            k=1,
            which=which,
            tol=self.options.tol,
            seed=self.seed,
            return_eigenvectors=False,
        )
        return float(r.eigenvalues[-1 if which == "LA" else 0])

    def _minimum_ratio(
        self, H: HessianOperator, bottom: float | None, top: float | None
    ) -> float:
        """``1 −`` the SLQ mass below ``−τ``; τ from the best ends known here."""
        opts = self.options
        density = spectral_density(
            H,
            num_probes=opts.probes,
            num_steps=min(opts.lanczos_steps, self.objective.num_params),
            seed=self.seed,
        )
        # The density's extreme nodes (Ritz values) and any eigsh run above.
        lo, hi = density.support
        tau = zero_tolerance(
            min(lo, bottom if bottom is not None else lo),
            max(hi, top if top is not None else hi),
            opts.eig_rtol,
        )
        return minimum_ratio(density, tau)[0]
