"""The one rule for the sign of curvature: clearly negative, clearly positive, or zero.

Every verdict in critpoint — :func:`critpoint.diagnose`,
:func:`critpoint.escape_saddle` (and so :class:`critpoint.SaddleEscape` and
the ``critpoint escape`` command), the minimum ratio tracked by
:func:`critpoint.train` — reads the extreme eigenvalues through
:func:`curvature`, so "clearly negative" means the same everywhere:

* the spectrum's scale is ``s = max(|λ_min|, |λ_max|)`` and the zero
  tolerance is ``τ = eig_rtol · s`` (:func:`zero_tolerance`);
* ``λ_min`` is **clearly negative** when ``λ_min + err_min < −τ``: below zero
  by more than its error bound plus the tolerance; ``λ_max`` is **clearly
  positive** when ``λ_max − err_max > τ``;
* **every** eigenvalue is clearly positive when ``λ_min − err_min > τ`` and,
  where the eigensolver gives a bound on the whole spectrum
  (:meth:`critpoint.EigenResult.extreme_bounds`), its lower end ``lo > τ``
  too: a residual bounds the distance to *some* eigenvalue, not to the
  smallest one, so a Ritz value alone cannot rule out a negative eigenvalue
  the Krylov space never saw. Likewise every eigenvalue clearly negative.

The same tolerance reads a spectral density (:func:`minimum_ratio`: the mass
not clearly negative), and :func:`default_grad_tol` says when a gradient is
small enough for the point to count as critical. :func:`measure_extremes` is
the one eigen-solve behind every verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from critpoint._progress import ProgressArg
from critpoint.analysis.diagnosis import Verdict
from critpoint.linalg.lanczos import eigsh

if TYPE_CHECKING:
    from critpoint.linalg.slq import SpectralDensity
    from critpoint.operator import HessianOperator


def zero_tolerance(lambda_min: float, lambda_max: float, eig_rtol: float) -> float:
    """``τ = eig_rtol · max(|λ_min|, |λ_max|)``: curvature within ``τ`` of zero is flat.

    Parameters
    ----------
    lambda_min, lambda_max : float
        The smallest and largest eigenvalue estimates (Ritz values, or the
        ends of an eigenvalue density).
    eig_rtol : float
        Relative zero tolerance.

    Returns
    -------
    float
    """
    return eig_rtol * max(abs(lambda_min), abs(lambda_max))


@dataclass(frozen=True)
class Curvature:
    """The extreme eigenvalues read by the rule.

    Attributes
    ----------
    lambda_min, lambda_max : float
        Smallest and largest Ritz values.
    lambda_min_error, lambda_max_error : float
        Their error bounds (residual norms).
    zero_tol : float
        ``τ`` of :func:`zero_tolerance`.
    lower, upper : float or None
        Bounds on the whole spectrum (``lo``, ``hi`` of
        :meth:`critpoint.EigenResult.extreme_bounds`), if known.
    probability : float or None
        The probability with which ``lower`` and ``upper`` hold (``1 − δ``);
        1 when they are exact.
    """

    lambda_min: float
    lambda_min_error: float
    lambda_max: float
    lambda_max_error: float
    zero_tol: float
    lower: float | None = None
    upper: float | None = None
    probability: float | None = None

    @property
    def negative(self) -> bool:
        """``λ_min`` is clearly negative: a direction of negative curvature exists."""
        return self.lambda_min + self.lambda_min_error < -self.zero_tol

    @property
    def positive(self) -> bool:
        """``λ_max`` is clearly positive."""
        return self.lambda_max - self.lambda_max_error > self.zero_tol

    @property
    def min_positive(self) -> bool:
        """``λ_min`` itself is clearly positive (what the Ritz value shows)."""
        return self.lambda_min - self.lambda_min_error > self.zero_tol

    @property
    def max_negative(self) -> bool:
        """``λ_max`` itself is clearly negative."""
        return self.lambda_max + self.lambda_max_error < -self.zero_tol

    @property
    def all_positive(self) -> bool:
        """Every eigenvalue is clearly positive (the bound ``lo`` too, where known)."""
        return self.min_positive and (self.lower is None or self.lower > self.zero_tol)

    @property
    def all_negative(self) -> bool:
        """Every eigenvalue is clearly negative (the bound ``hi`` too, where known)."""
        return self.max_negative and (self.upper is None or self.upper < -self.zero_tol)


def curvature(
    lambda_min: float,
    lambda_min_error: float,
    lambda_max: float,
    lambda_max_error: float,
    eig_rtol: float = 1e-3,
    *,
    lower: float | None = None,
    upper: float | None = None,
    probability: float | None = None,
) -> Curvature:
    """Read the extreme eigenvalues with the zero tolerance of :func:`zero_tolerance`.

    Parameters
    ----------
    lambda_min, lambda_max : float
        Smallest and largest Ritz values.
    lambda_min_error, lambda_max_error : float
        Their rigorous error bounds (residual norms).
    eig_rtol : float
        Relative zero tolerance.
    lower, upper : float, optional
        Bounds on the whole spectrum, holding with ``probability``.
    probability : float, optional
        ``1 − δ`` of those bounds.

    Returns
    -------
    Curvature
    """
    return Curvature(
        lambda_min=float(lambda_min),
        lambda_min_error=float(lambda_min_error),
        lambda_max=float(lambda_max),
        lambda_max_error=float(lambda_max_error),
        zero_tol=zero_tolerance(lambda_min, lambda_max, eig_rtol),
        lower=None if lower is None else float(lower),
        upper=None if upper is None else float(upper),
        probability=None if probability is None else float(probability),
    )


def _percent(probability: float) -> str:
    value = 100 * probability
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return f"{text} %"


def verdict(c: Curvature) -> Verdict:
    """The kind of point the curvature ``c`` describes (see :func:`classify`)."""
    tau = c.zero_tol
    span = (
        f"λ_min = {c.lambda_min:.4g} ± {c.lambda_min_error:.2g}, "
        f"λ_max = {c.lambda_max:.4g} ± {c.lambda_max_error:.2g}, zero tolerance τ = {tau:.2g}"
    )
    certified = ""
    if c.probability is not None and c.lower is not None and c.upper is not None:
        certified = (
            f"; with probability ≥ {_percent(c.probability)} over the random start every "
            f"eigenvalue lies in [{c.lower:.4g}, {c.upper:.4g}]"
        )
    if c.negative and c.positive:
        return Verdict(
            "saddle",
            "both",
            tau,
            f"eigenvalues of both signs beyond their error bounds ({span})",
        )
    if c.all_positive:
        return Verdict(
            "minimum",
            "positive",
            tau,
            f"every eigenvalue is clearly positive ({span}{certified})",
        )
    if c.all_negative:
        return Verdict(
            "maximum",
            "negative",
            tau,
            f"every eigenvalue is clearly negative ({span}{certified})",
        )
    if c.min_positive:
        return Verdict(
            "degenerate",
            "positive",
            tau,
            f"λ_min is clearly positive, but the bound on the whole spectrum reaches "
            f"lo = {c.lower:.4g}, not above τ: a negative eigenvalue the Krylov space "
            f"missed is not ruled out; a tighter tol certifies a minimum ({span}{certified})",
        )
    if c.max_negative:
        return Verdict(
            "degenerate",
            "negative",
            tau,
            f"λ_max is clearly negative, but the bound on the whole spectrum reaches "
            f"hi = {c.upper:.4g}, not below −τ: a positive eigenvalue the Krylov space "
            f"missed is not ruled out; a tighter tol certifies a maximum ({span}{certified})",
        )
    if c.positive:
        return Verdict(
            "degenerate",
            "positive",
            tau,
            f"no clearly negative eigenvalue, but λ_min cannot be told from zero: a flat "
            f"minimum up to second order, or a higher-order saddle ({span})",
        )
    if c.negative:
        return Verdict(
            "degenerate",
            "negative",
            tau,
            f"no clearly positive eigenvalue, but λ_max cannot be told from zero: a flat "
            f"maximum up to second order ({span})",
        )
    return Verdict(
        "degenerate",
        "none",
        tau,
        f"the Hessian is zero within its error bounds: second order cannot decide ({span})",
    )


def classify(
    lambda_min: float,
    lambda_min_error: float,
    lambda_max: float,
    lambda_max_error: float,
    eig_rtol: float = 1e-3,
    *,
    lower: float | None = None,
    upper: float | None = None,
    probability: float | None = None,
) -> Verdict:
    """Decide the kind of a point from its extreme eigenvalues and their error bounds.

    The rule (:func:`curvature`), in full:

    * the zero tolerance is ``τ = eig_rtol · max(|λ_min|, |λ_max|)``;
    * **saddle**: ``λ_min`` clearly negative (``λ_min + err_min < −τ``) and
      ``λ_max`` clearly positive (``λ_max − err_max > τ``);
    * **minimum**: every eigenvalue clearly positive: ``λ_min − err_min > τ``
      and, when a bound ``lower`` on the whole spectrum is given, ``lower > τ``;
    * **maximum**: every eigenvalue clearly negative (likewise with ``upper``);
    * **degenerate** otherwise: an extreme eigenvalue cannot be told from zero
      (or the bound on the spectrum does not clear it), so second order cannot
      decide. ``side`` then says which sign the clear eigenvalues have:
      ``"positive"`` (a flat minimum up to second order, or an uncertified
      one), ``"negative"`` or ``"none"`` (the Hessian is zero to the tolerance).

    Parameters
    ----------
    lambda_min, lambda_max : float
        Smallest and largest Ritz values.
    lambda_min_error, lambda_max_error : float
        Rigorous error bounds (residual norms) of those values.
    eig_rtol : float
        Relative zero tolerance.
    lower, upper : float, optional
        Bounds on every eigenvalue (:meth:`critpoint.EigenResult.extreme_bounds`).
    probability : float, optional
        The probability with which they hold, for the reason's text.

    Returns
    -------
    Verdict
    """
    return verdict(
        curvature(
            lambda_min,
            lambda_min_error,
            lambda_max,
            lambda_max_error,
            eig_rtol,
            lower=lower,
            upper=upper,
            probability=probability,
        )
    )


def minimum_ratio(
    density: SpectralDensity, zero_tol: float
) -> tuple[float, float, float]:
    """``(minimum ratio, negative fraction, flat fraction)`` of a density at tolerance ``τ``.

    The minimum ratio is the mass *not* clearly negative (at or above ``−τ``):
    eigenvalues within ``τ`` of zero count as non-negative, since their sign
    is rounding noise. :func:`diagnose` and :func:`critpoint.train`'s tracking
    both use it.

    Parameters
    ----------
    density : SpectralDensity
    zero_tol : float
        ``τ`` of :func:`zero_tolerance`.

    Returns
    -------
    (float, float, float)
    """
    negative = density.fraction_negative(zero_tol)
    flat = max(0.0, 1.0 - negative - density.fraction_positive(zero_tol))
    return 1.0 - negative, negative, flat


def default_grad_tol(
    loss: float, lambda_scale: float, dtype: torch.dtype, rtol: float = 1e-3
) -> float:
    """The gradient norm below which a point counts as critical.

    One gradient step with the best step size ``1/λ_max`` lowers the loss by
    at most ``‖g‖² / (2 λ_max)``. The point is critical when that is below
    ``rtol`` times the loss (at least ``√eps`` of the dtype, so that a loss
    fitted to zero still counts): ``‖g‖ ≤ √(2 · λ_max · rtol · max(|L|, √eps))``.

    Parameters
    ----------
    loss : float
        The loss at the point.
    lambda_scale : float
        ``max(|λ_min|, |λ_max|)``.
    dtype : torch.dtype
        Dtype of the analysis.
    rtol : float
        Fraction of the loss a gradient step may still gain.

    Returns
    -------
    float
    """
    floor = math.sqrt(torch.finfo(dtype).eps)
    curvature = max(lambda_scale, floor)
    return math.sqrt(2 * curvature * rtol * max(abs(loss), floor))


@dataclass(frozen=True)
class Extremes:
    """Both ends of the spectrum, measured once, as :func:`measure_extremes` returns them.

    Attributes
    ----------
    curvature : Curvature
        The rule's reading.
    eigenvalues : torch.Tensor
        Ritz values, float64 on the CPU, ascending, shape ``(k,)``.
    errors : torch.Tensor
        Their error bounds, shape ``(k,)``.
    converged : torch.Tensor
        Bool, shape ``(k,)``.
    vectors : torch.Tensor
        Unit Ritz vectors as columns, shape ``(n, k)``; column 0 belongs to
        ``λ_min``.
    """

    curvature: Curvature
    eigenvalues: torch.Tensor
    errors: torch.Tensor
    converged: torch.Tensor
    vectors: torch.Tensor


def measure_extremes(
    H: HessianOperator,
    k: int = 6,
    *,
    tol: float = 1e-4,
    max_matvecs: int | None = None,
    seed: int | torch.Generator | None = 0,
    eig_rtol: float = 1e-3,
    delta: float | None = 0.01,
    progress: ProgressArg = False,
    ncv: int | None = None,
    basis: str | None = None,
) -> Extremes:
    """The one eigen-solve behind every verdict: ``eigsh(which="BE")``, then :func:`curvature`.

    :func:`critpoint.diagnose` and :func:`critpoint.escape_saddle` both call
    it, so for the same point and settings they see the same numbers: the
    diagnosis has an escape direction exactly when ``escape_saddle`` steps.

    Parameters
    ----------
    H : HessianOperator
        The Hessian at the point.
    k : int
        Eigenpairs from both ends (at least 2).
    tol, seed, progress
        As for :func:`critpoint.eigsh`.
    max_matvecs : int, optional
        HVP budget of :func:`critpoint.eigsh`.
    eig_rtol : float
        Relative zero tolerance.
    delta : float or None
        Failure probability of the bounds on the whole spectrum
        (:meth:`critpoint.EigenResult.extreme_bounds`); ``None`` leaves them out.
    ncv, basis
        Krylov basis size and where it lives, as for :func:`critpoint.eigsh`
        (a memory plan's choice; default: eigsh's).

    Returns
    -------
    Extremes
    """
    n = int(H.shape[0])
    if n == 1:
        # The 1 × 1 Hessian is its own eigenvalue: exact, no randomness.
        h = float(H.matmat(torch.ones((1, 1), dtype=H.dtype, device=H.device))[0, 0])
        values = torch.tensor([h], dtype=torch.float64)
        errors = torch.zeros(1, dtype=torch.float64)
        conv = torch.ones(1, dtype=torch.bool)
        vectors = torch.ones((1, 1), dtype=H.dtype, device=H.device)
        bounds = (h, h, 1.0) if delta is not None else (None, None, None)
    else:
        # The budget by position: its keyword is being renamed in eigsh.
        r = eigsh(
            H,
            min(max(k, 2), n),
            "BE",
            tol,
            max_matvecs,
            seed,
            progress=progress,
            ncv=ncv,
            basis=basis,
        )
        assert r.eigenvectors is not None
        values, errors, conv, vectors = (
            r.eigenvalues,
            r.residuals,
            r.converged,
            r.eigenvectors,
        )
        bounds = (None, None, None)
        if delta is not None and r.certificate is not None:
            lo, hi = r.extreme_bounds(delta)
            bounds = (lo, hi, 1.0 - delta)
    lower, upper, probability = bounds
    c = curvature(
        float(values[0]),
        float(errors[0]),
        float(values[-1]),
        float(errors[-1]),
        eig_rtol,
        lower=lower,
        upper=upper,
        probability=probability,
    )
    return Extremes(c, values, errors, conv, vectors)
