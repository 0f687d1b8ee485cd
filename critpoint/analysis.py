"""Minimum, maximum, saddle or degenerate? The diagnosis of a point, with error bars.

:func:`diagnose` gathers the evidence (loss, gradient, extreme eigenpairs with
residual bounds and a bound on the whole spectrum, spectral density, trace)
through the objective's Hessian operator; the verdict is the rule of
:mod:`critpoint.rule` (:func:`classify`), the one place where it is decided.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from critpoint._version import __version__
from critpoint.errors import InputError
from critpoint.escape import downhill, quadratic_step
from critpoint.linalg.slq import SpectralDensity, spectral_density
from critpoint.linalg.trace import TraceEstimate, trace
from critpoint.rule import Kind, Verdict, classify, measure_extremes, verdict

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from critpoint.objective import Objective

__all__ = [
    "Diagnosis",
    "Kind",
    "Verdict",
    "classify",
    "default_grad_tol",
    "diagnose",
    "minimum_ratio",
]

DIAGNOSIS_SCHEMA = "critpoint.diagnosis"
DIAGNOSIS_SCHEMA_VERSION = 1


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
        ``τ`` of :func:`critpoint.rule.zero_tolerance`.

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
class Diagnosis:
    """Where a model stands on its loss surface, with the evidence.

    Attributes
    ----------
    loss : float
        Mean loss over the data.
    grad_norm : float
        ``‖∇L‖₂``.
    grad_tol : float
        Threshold under which the point counts as critical.
    critical : bool
        ``grad_norm ≤ grad_tol``.
    kind : {"minimum", "maximum", "saddle", "degenerate"}
        The verdict of :func:`classify` on the curvature.
    side : str
        Signs of the clearly non-zero extreme eigenvalues.
    reason : str
        The numbers that decided the verdict.
    lambda_min, lambda_max : float
        Extreme eigenvalues of the Hessian.
    lambda_min_error, lambda_max_error : float
        Their rigorous error bounds (Lanczos residual norms).
    eigenvalues : list of float
        All Ritz values found (both ends), ascending.
    eigenvalue_errors : list of float
        Their error bounds.
    eigen_converged : list of bool
        Which pairs met the solver tolerance.
    converged : bool
        Every extreme pair met the tolerance. When False the verdict still
        holds with the (looser) bounds shown, but is marked unconverged.
    zero_tol : float
        ``τ`` of the rule.
    eig_rtol : float
        Relative zero tolerance.
    minimum_ratio : float or None
        Fraction of the spectrum that is not clearly negative (SLQ mass at or
        above ``−τ``): 1 at a minimum, lower the more descent directions there
        are. Eigenvalues within ``τ`` of zero count as non-negative, since
        their sign is rounding noise.
    negative_fraction : float or None
        Fraction of mass below ``−τ`` (the "index").
    flat_fraction : float or None
        Fraction of mass within ``[−τ, τ]``.
    trace : TraceEstimate or None
    density : SpectralDensity or None
    escape_direction : torch.Tensor or None
        Unit eigenvector of ``λ_min`` oriented downhill (``gᵀu ≤ 0``), shape
        ``(n,)``, when ``λ_min`` is clearly negative.
    escape_prediction : float or None
        Predicted loss change ``gᵀu·α + ½ λ_min α²`` of the step of
        :func:`critpoint.quadratic_step` (``α = √(2·L/|λ_min|)``) along it.
    num_params : int
    num_matvecs : int
        Hessian-vector products spent.
    settings : dict
        Every setting, seed included.
    lambda_lower, lambda_upper : float or None
        Bounds on every eigenvalue of the Hessian that hold with probability
        ``bound_probability`` over the random start
        (:meth:`critpoint.EigenResult.extreme_bounds`); the verdict "minimum"
        needs ``lambda_lower > zero_tol``.
    bound_probability : float or None
        ``1 − delta`` (1 when the bounds are exact).
    """

    loss: float
    grad_norm: float
    grad_tol: float
    critical: bool
    kind: Kind
    side: str
    reason: str
    lambda_min: float
    lambda_min_error: float
    lambda_max: float
    lambda_max_error: float
    eigenvalues: list[float]
    eigenvalue_errors: list[float]
    eigen_converged: list[bool]
    converged: bool
    zero_tol: float
    eig_rtol: float
    minimum_ratio: float | None
    negative_fraction: float | None
    flat_fraction: float | None
    trace: TraceEstimate | None
    density: SpectralDensity | None
    escape_direction: torch.Tensor | None = field(repr=False)
    escape_prediction: float | None
    num_params: int
    num_matvecs: int
    settings: dict[str, Any] = field(default_factory=dict)
    lambda_lower: float | None = None
    lambda_upper: float | None = None
    bound_probability: float | None = None

    @property
    def uncertified(self) -> bool:
        """λ_min (or λ_max) is clearly away from zero, but the bound on the spectrum is not."""
        if self.kind != "degenerate":
            return False
        if self.side == "positive":
            return self.lambda_min - self.lambda_min_error > self.zero_tol
        if self.side == "negative":
            return self.lambda_max + self.lambda_max_error < -self.zero_tol
        return False

    # ------------------------------------------------------------------ text
    def headline(self) -> str:
        """One line: the verdict and whether the point is critical."""
        where = (
            "a critical point"
            if self.critical
            else "not a critical point (the gradient is not small)"
        )
        if self.uncertified:
            what = (
                "degenerate: no negative curvature found, but a minimum is not certified"
                if self.side == "positive"
                else "degenerate: no positive curvature found, but a maximum is not certified"
            )
        elif self.kind == "degenerate":
            what = {
                "positive": "degenerate: a flat minimum (valley) up to second order",
                "negative": "degenerate: a flat maximum up to second order",
                "none": "degenerate: the Hessian is zero here",
            }.get(self.side, "degenerate")
        else:
            what = self.kind
        flag = "" if self.converged else " [unconverged: bounds are loose]"
        return f"{what}; {where}{flag}"

    def summary(self) -> str:
        """A short paragraph with the verdict, the numbers and what to do next."""
        lines = [
            f"Verdict: {self.headline()}.",
            f"Loss {self.loss:.6g}{self._reduction_note()}, gradient norm {self.grad_norm:.3g} "
            f"(critical below {self.grad_tol:.3g}).",
            f"λ_min = {self.lambda_min:.6g} ± {self.lambda_min_error:.2g}, "
            f"λ_max = {self.lambda_max:.6g} ± {self.lambda_max_error:.2g} "
            f"(zero tolerance {self.zero_tol:.2g}).",
        ]
        if self.lambda_lower is not None and self.bound_probability is not None:
            lines.append(
                f"With probability ≥ {100 * self.bound_probability:.6g} % over the random start, "
                f"every eigenvalue lies in [{self.lambda_lower:.6g}, {self.lambda_upper:.6g}]."
            )
        if self.minimum_ratio is not None:
            lines.append(
                f"Minimum ratio {self.minimum_ratio:.3f} (fraction of eigenvalues not clearly negative); "
                f"{self.negative_fraction:.3f} clearly negative, {self.flat_fraction:.3f} flat."
            )
        if self.trace is not None:
            lines.append(f"Trace {self.trace.value:.6g} ± {self.trace.stderr:.2g}.")
        lines.append(f"Why: {self.reason}.")
        lines.append(
            f"Cost: {self.num_matvecs} Hessian-vector products on {self.num_params} parameters."
        )
        lines.append("Next: " + self.advice())
        return "\n".join(lines)

    def _reduction_note(self) -> str:
        """`` (sum over samples)`` or `` (mean over samples)``; empty when not recorded."""
        reduction = self.settings.get("reduction")
        return f" ({reduction} over samples)" if reduction in ("mean", "sum") else ""

    def advice(self) -> str:
        """What to do next, in one sentence."""
        if self.escape_direction is not None and self.escape_prediction is not None:
            return (
                f"step along the escape direction (eigenvalue {self.lambda_min:.3g}): the quadratic "
                f"model predicts a loss change of {self.escape_prediction:.3g}; "
                "use critpoint.escape_saddle or `critpoint escape`."
            )
        if not self.critical:
            return "keep training: the gradient still points downhill."
        if self.kind == "minimum":
            return "this is a local minimum; lower the loss only by changing the model, data or regulariser."
        if self.uncertified:
            return (
                "diagnose again with a tighter tol (or a larger maxiter): longer Lanczos runs "
                "tighten the bound on the whole spectrum until it certifies the verdict."
            )
        if self.kind == "degenerate" and self.side == "positive":
            return (
                "no second-order way down was found; the flat directions may hide a higher-order "
                "saddle, so a small random perturbation or more training can tell."
            )
        if self.kind == "maximum":
            return "any direction lowers the loss; step along the gradient or a random direction."
        return (
            "second order cannot decide: perturb the point slightly and diagnose again."
        )

    # ---------------------------------------------------------------- export
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (the escape direction is summarised, not listed)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "schema": DIAGNOSIS_SCHEMA,
            "schema_version": DIAGNOSIS_SCHEMA_VERSION,
            "critpoint_version": __version__,
            "torch_version": torch.__version__,
            "verdict": self.headline(),
            "kind": self.kind,
            "side": self.side,
            "critical": self.critical,
            "converged": self.converged,
            "reason": self.reason,
            "loss": clean(self.loss),
            "grad_norm": clean(self.grad_norm),
            "grad_tol": clean(self.grad_tol),
            "lambda_min": clean(self.lambda_min),
            "lambda_min_error": clean(self.lambda_min_error),
            "lambda_max": clean(self.lambda_max),
            "lambda_max_error": clean(self.lambda_max_error),
            "eigenvalues": [clean(x) for x in self.eigenvalues],
            "eigenvalue_errors": [clean(x) for x in self.eigenvalue_errors],
            "eigen_converged": list(self.eigen_converged),
            "zero_tol": self.zero_tol,
            "eig_rtol": self.eig_rtol,
            "minimum_ratio": self.minimum_ratio,
            "negative_fraction": self.negative_fraction,
            "flat_fraction": self.flat_fraction,
            "trace": self.trace.to_dict() if self.trace is not None else None,
            "density": self.density.to_dict() if self.density is not None else None,
            "has_escape_direction": self.escape_direction is not None,
            "escape_prediction": self.escape_prediction,
            "advice": self.advice(),
            "num_params": self.num_params,
            "num_matvecs": self.num_matvecs,
            "settings": self.settings,
            "lambda_lower": clean(self.lambda_lower),
            "lambda_upper": clean(self.lambda_upper),
            "bound_probability": self.bound_probability,
        }

    def to_json(self, path: str | None = None, indent: int = 2) -> str:
        """The :meth:`to_dict` document as JSON; written atomically to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from critpoint._files import write_text_atomic

            write_text_atomic(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        """Rebuild a diagnosis from :meth:`to_dict` (no escape direction; no recomputation)."""
        if data.get("schema") != DIAGNOSIS_SCHEMA:
            msg = f"not a critpoint diagnosis document (schema {data.get('schema')!r}); expected {DIAGNOSIS_SCHEMA!r}"
            raise InputError(msg)
        tr = data.get("trace")
        trace_est = None
        if tr is not None:
            stderr = tr.get("stderr")
            trace_est = TraceEstimate(
                value=float(tr["value"]),
                stderr=float("inf") if stderr is None else float(stderr),
                num_matvecs=int(tr["num_matvecs"]),
                method=str(tr["method"]),
                seed=tr.get("seed"),
            )
        dens = data.get("density")

        def num(key: str) -> float:
            value = data.get(key)
            return float("nan") if value is None else float(value)

        return cls(
            loss=num("loss"),
            grad_norm=num("grad_norm"),
            grad_tol=num("grad_tol"),
            critical=bool(data["critical"]),
            kind=data["kind"],
            side=data["side"],
            reason=data["reason"],
            lambda_min=num("lambda_min"),
            lambda_min_error=num("lambda_min_error"),
            lambda_max=num("lambda_max"),
            lambda_max_error=num("lambda_max_error"),
            eigenvalues=[
                float("nan") if x is None else float(x) for x in data["eigenvalues"]
            ],
            eigenvalue_errors=[
                float("nan") if x is None else float(x)
                for x in data["eigenvalue_errors"]
            ],
            eigen_converged=[bool(x) for x in data["eigen_converged"]],
            converged=bool(data["converged"]),
            zero_tol=float(data["zero_tol"]),
            eig_rtol=float(data["eig_rtol"]),
            minimum_ratio=data.get("minimum_ratio"),
            negative_fraction=data.get("negative_fraction"),
            flat_fraction=data.get("flat_fraction"),
            trace=trace_est,
            density=SpectralDensity.from_dict(dens) if dens is not None else None,
            escape_direction=None,
            escape_prediction=data.get("escape_prediction"),
            num_params=int(data["num_params"]),
            num_matvecs=int(data["num_matvecs"]),
            settings=dict(data.get("settings", {})),
            lambda_lower=data.get("lambda_lower"),
            lambda_upper=data.get("lambda_upper"),
            bound_probability=data.get("bound_probability"),
        )

    def _repr_png_(self) -> bytes:
        """Show the spectrum figure when a notebook displays the diagnosis."""
        import io

        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    # ------------------------------------------------------------------ plot
    def plot(self, ax: Axes | None = None) -> Figure:
        """The spectrum: SLQ density (log scale) with the extreme eigenvalues and error bars.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw on; a new figure is made otherwise (no pyplot state).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from critpoint.report.figures import plot_spectrum

        return plot_spectrum(self, ax=ax)


def diagnose(
    obj: Objective,
    k: int = 6,
    density: bool = True,
    trace: bool = True,
    seed: int = 0,
    grad_tol: float | None = None,
    eig_rtol: float = 1e-3,
    progress: bool = False,
    *,
    tol: float = 1e-4,
    maxiter: int | None = None,
    num_probes: int = 8,
    num_steps: int = 60,
    trace_matvecs: int = 60,
    check: bool = True,
    delta: float = 0.01,
) -> Diagnosis:
    """Diagnose the point the objective's model is at: minimum, maximum, saddle or degenerate.

    Costs one pass for the loss and gradient, 3 HVPs for the symmetry probe,
    one Lanczos run for both ends of the spectrum (typically 30–150 HVPs; about
    ``k`` when the Hessian is zero, ``rank + k`` when it has low rank), and,
    if asked, ``num_probes × num_steps`` HVPs in ``num_steps`` batched passes
    for the density and ``trace_matvecs`` for the trace.

    The verdict is :func:`classify` on the extreme eigenvalues, their error
    bounds and the bound on the whole spectrum
    (:meth:`critpoint.EigenResult.extreme_bounds`): "minimum" only when that
    bound's lower end is clearly positive, which holds with probability at
    least ``1 − delta`` over the random start.

    Parameters
    ----------
    obj : Objective
        The model, loss and data.
    k : int
        Eigenpairs to find, from both ends (at least 2: ``k // 2`` from the
        bottom, the rest from the top).
    density : bool
        Estimate the spectral density (SLQ) and the minimum ratio.
    trace : bool
        Estimate the trace (``trace(method="auto")``: Hutch++ or Hutchinson).
    seed : int
        Seed of every random vector.
    grad_tol : float, optional
        Gradient norm under which the point is critical; default
        :func:`default_grad_tol`.
    eig_rtol : float
        Relative zero tolerance of :func:`classify`.
    progress : bool
        Show progress bars.
    tol : float
        Relative residual tolerance of the eigensolver.
    maxiter : int, optional
        HVP budget of the eigensolver.
    num_probes, num_steps : int
        SLQ probes and Lanczos steps per probe.
    trace_matvecs : int
        HVP budget of the trace estimate.
    check : bool
        Run the symmetry/determinism probe first.
    delta : float
        Failure probability of the bound on the whole spectrum, in ``(0, 1)``.

    Returns
    -------
    Diagnosis
    """
    if not isinstance(k, int) or k < 2:
        msg = f"k must be an int >= 2 (eigenpairs from both ends), got {k!r}"
        raise InputError(msg)
    if not (eig_rtol >= 0 and math.isfinite(eig_rtol)):
        msg = f"eig_rtol must be a finite number >= 0, got {eig_rtol!r}"
        raise InputError(msg)
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        msg = f"delta must lie strictly between 0 and 1, got {delta!r}"
        raise InputError(msg)
    n = obj.num_params
    k = min(k, n)
    loss, g = obj.loss_and_grad()
    grad_norm = float(torch.linalg.vector_norm(g.double()))
    H = obj.hessian(check=check)
    ext = measure_extremes(
        H,
        k=k,
        tol=tol,
        maxiter=maxiter,
        seed=seed,
        eig_rtol=eig_rtol,
        delta=delta,
        progress=progress,
    )
    c = ext.curvature
    values, errors, conv = ext.eigenvalues, ext.errors, ext.converged
    result = verdict(c)
    scale = max(abs(c.lambda_min), abs(c.lambda_max))
    if grad_tol is None:
        grad_tol = default_grad_tol(loss, scale, obj.dtype)

    dens = None
    ratio = negative_fraction = flat_fraction = None
    if density:
        dens = spectral_density(
            H,
            num_probes=num_probes,
            num_steps=min(num_steps, n),
            seed=seed,
            progress=progress,
        )
        ratio, negative_fraction, flat_fraction = minimum_ratio(dens, c.zero_tol)
    tr = None
    if trace:
        tr = trace_estimate(
            H, max_matvecs=trace_matvecs, method="auto", seed=seed, progress=progress
        )

    direction = None
    prediction = None
    if c.negative:
        direction, slope = downhill(ext.vectors[:, 0].clone(), g)
        prediction = quadratic_step(
            loss, slope, c.lambda_min, dtype=obj.dtype
        ).predicted_change

    settings = {
        "k": k,
        "tol": tol,
        "maxiter": maxiter,
        "seed": seed,
        "eig_rtol": eig_rtol,
        "grad_tol": grad_tol,
        "delta": delta,
        "density": density,
        "num_probes": num_probes,
        "num_steps": num_steps,
        "trace": trace,
        "trace_matvecs": trace_matvecs,
        "dtype": str(obj.dtype).replace("torch.", ""),
        "device": str(obj.device),
        "train_mode": obj.train_mode,
        "hvp_mode": obj.hvp_mode,
        "hvp_fallback": obj.hvp_fallback,
        "reduction": obj.reduction,
        "params": obj.param_names
        if len(obj.param_names) <= 64
        else f"{len(obj.param_names)} tensors",
    }
    return Diagnosis(
        loss=loss,
        grad_norm=grad_norm,
        grad_tol=float(grad_tol),
        critical=grad_norm <= grad_tol,
        kind=result.kind,
        side=result.side,
        reason=result.reason,
        lambda_min=c.lambda_min,
        lambda_min_error=c.lambda_min_error,
        lambda_max=c.lambda_max,
        lambda_max_error=c.lambda_max_error,
        eigenvalues=[float(x) for x in values],
        eigenvalue_errors=[float(x) for x in errors],
        eigen_converged=[bool(x) for x in conv],
        converged=bool(conv[0]) and bool(conv[-1]),
        zero_tol=c.zero_tol,
        eig_rtol=eig_rtol,
        minimum_ratio=ratio,
        negative_fraction=negative_fraction,
        flat_fraction=flat_fraction,
        trace=tr,
        density=dens,
        escape_direction=direction,
        escape_prediction=prediction,
        num_params=n,
        num_matvecs=H.num_matvecs,
        settings=settings,
        lambda_lower=c.lower,
        lambda_upper=c.upper,
        bound_probability=c.probability,
    )


# ``trace`` is also a parameter name of diagnose; keep the estimator reachable.
trace_estimate = trace
