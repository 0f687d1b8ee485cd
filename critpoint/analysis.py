"""Minimum, maximum, saddle or degenerate? The diagnosis of a point, with error bars.

:func:`diagnose` gathers the evidence (loss, gradient, extreme eigenpairs with
residual bounds, spectral density, trace) through the objective's Hessian
operator; :func:`classify` is the one place where the verdict is decided.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from critpoint.errors import InputError
from critpoint.linalg.lanczos import eigsh
from critpoint.linalg.slq import SpectralDensity, spectral_density
from critpoint.linalg.trace import TraceEstimate, trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from critpoint.objective import Objective

Kind = Literal["minimum", "maximum", "saddle", "degenerate"]

DIAGNOSIS_SCHEMA = "critpoint.diagnosis"
DIAGNOSIS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`classify`.

    Attributes
    ----------
    kind : {"minimum", "maximum", "saddle", "degenerate"}
    side : {"positive", "negative", "both", "none"}
        Signs of the eigenvalues that are clearly away from zero.
    threshold : float
        The tolerance ``τ = eig_rtol · scale`` used on top of the error bounds.
    reason : str
        One sentence giving the numbers that decided.
    """

    kind: Kind
    side: str
    threshold: float
    reason: str


def classify(
    lambda_min: float,
    lambda_min_error: float,
    lambda_max: float,
    lambda_max_error: float,
    eig_rtol: float = 1e-3,
) -> Verdict:
    """Decide the kind of a point from its extreme eigenvalues and their error bounds.

    The rule, in full:

    * the spectrum's scale is ``s = max(|λ_min|, |λ_max|)`` and the zero
      tolerance is ``τ = eig_rtol · s``;
    * ``λ_min`` is *clearly negative* when ``λ_min + err_min < −τ``: below zero
      by more than its error bound plus the tolerance; ``λ_max`` is *clearly
      positive* when ``λ_max − err_max > τ``; likewise ``λ_min`` clearly
      positive when ``λ_min − err_min > τ`` and ``λ_max`` clearly negative when
      ``λ_max + err_max < −τ``;
    * **saddle**: a clearly negative and a clearly positive eigenvalue;
    * **minimum**: every eigenvalue clearly positive (``λ_min`` is);
    * **maximum**: every eigenvalue clearly negative (``λ_max`` is);
    * **degenerate** otherwise: an extreme eigenvalue cannot be told from zero,
      so second order cannot decide (a flat valley, a plateau, or a
      higher-order saddle). ``side`` then says which sign the clear
      eigenvalues have: ``"positive"`` (a flat minimum up to second order),
      ``"negative"`` (a flat maximum) or ``"none"`` (the Hessian is zero to
      the tolerance).

    Parameters
    ----------
    lambda_min, lambda_max : float
        Smallest and largest Ritz values.
    lambda_min_error, lambda_max_error : float
        Rigorous error bounds (residual norms) of those values.
    eig_rtol : float
        Relative zero tolerance.

    Returns
    -------
    Verdict
    """
    scale = max(abs(lambda_min), abs(lambda_max))
    tau = eig_rtol * scale
    neg = lambda_min + lambda_min_error < -tau
    pos = lambda_max - lambda_max_error > tau
    all_pos = lambda_min - lambda_min_error > tau
    all_neg = lambda_max + lambda_max_error < -tau
    span = (
        f"λ_min = {lambda_min:.4g} ± {lambda_min_error:.2g}, "
        f"λ_max = {lambda_max:.4g} ± {lambda_max_error:.2g}, zero tolerance τ = {tau:.2g}"
    )
    if neg and pos:
        return Verdict(
            "saddle",
            "both",
            tau,
            f"eigenvalues of both signs beyond their error bounds ({span})",
        )
    if all_pos:
        return Verdict(
            "minimum", "positive", tau, f"every eigenvalue is clearly positive ({span})"
        )
    if all_neg:
        return Verdict(
            "maximum", "negative", tau, f"every eigenvalue is clearly negative ({span})"
        )
    if pos:
        return Verdict(
            "degenerate",
            "positive",
            tau,
            f"no clearly negative eigenvalue, but λ_min cannot be told from zero: a flat "
            f"minimum up to second order, or a higher-order saddle ({span})",
        )
    if neg:
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
        Predicted loss change ``½ λ_min α²`` (plus ``gᵀu α``) of a step of
        length ``α = √(2·L/|λ_min|)`` along it.
    num_params : int
    num_matvecs : int
        Hessian-vector products spent.
    settings : dict
        Every setting, seed included.
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

    # ------------------------------------------------------------------ text
    def headline(self) -> str:
        """One line: the verdict and whether the point is critical."""
        where = (
            "a critical point"
            if self.critical
            else "not a critical point (the gradient is not small)"
        )
        if self.kind == "degenerate":
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
        import critpoint

        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "schema": DIAGNOSIS_SCHEMA,
            "schema_version": DIAGNOSIS_SCHEMA_VERSION,
            "critpoint_version": critpoint.__version__,
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
) -> Diagnosis:
    """Diagnose the point the objective's model is at: minimum, maximum, saddle or degenerate.

    Costs one pass for the loss and gradient, 3 HVPs for the symmetry probe,
    one Lanczos run for both ends of the spectrum (typically 30–100 HVPs), and,
    if asked, ``num_probes × num_steps`` HVPs in ``num_steps`` batched passes
    for the density and ``trace_matvecs`` for the trace.

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
    n = obj.num_params
    k = min(k, n)
    loss, g = obj.loss_and_grad()
    grad_norm = float(torch.linalg.vector_norm(g.double()))
    H = obj.hessian(check=check)
    if n == 1:
        lam = float((H.matvec(torch.ones(1, dtype=obj.dtype, device=obj.device)))[0])
        values = torch.tensor([lam], dtype=torch.float64)
        errors = torch.zeros(1, dtype=torch.float64)
        conv = torch.ones(1, dtype=torch.bool)
        vectors = torch.ones((1, 1), dtype=obj.dtype, device=obj.device)
    else:
        r = eigsh(
            H,
            k=max(k, 2),
            which="BE",
            tol=tol,
            maxiter=maxiter,
            seed=seed,
            progress=progress,
        )
        values, errors, conv, vectors = (
            r.eigenvalues,
            r.residuals,
            r.converged,
            r.eigenvectors,
        )
        assert vectors is not None
    lam_min, lam_max = float(values[0]), float(values[-1])
    err_min, err_max = float(errors[0]), float(errors[-1])
    verdict = classify(lam_min, err_min, lam_max, err_max, eig_rtol)
    scale = max(abs(lam_min), abs(lam_max))
    if grad_tol is None:
        grad_tol = default_grad_tol(loss, scale, obj.dtype)

    dens = None
    minimum_ratio = negative_fraction = flat_fraction = None
    if density:
        dens = spectral_density(
            H,
            num_probes=num_probes,
            num_steps=min(num_steps, n),
            seed=seed,
            progress=progress,
        )
        negative_fraction = dens.fraction_negative(verdict.threshold)
        # Flat directions count as non-negative: the sign of a Ritz node at
        # zero is rounding noise, so "strictly positive" would be a coin toss.
        minimum_ratio = 1.0 - negative_fraction
        flat_fraction = max(
            0.0, 1.0 - negative_fraction - dens.fraction_positive(verdict.threshold)
        )
    tr = None
    if trace:
        tr = trace_estimate(
            H, num_matvecs=trace_matvecs, method="auto", seed=seed, progress=progress
        )

    direction = None
    prediction = None
    if lam_min + err_min < -verdict.threshold:
        u = vectors[:, 0].clone()
        slope = float(g.double() @ u.double())
        if slope > 0:
            u = -u
            slope = -slope
        direction = u
        alpha = math.sqrt(2 * max(abs(loss), 1e-12) / abs(lam_min))
        prediction = slope * alpha + 0.5 * lam_min * alpha**2

    settings = {
        "k": k,
        "tol": tol,
        "maxiter": maxiter,
        "seed": seed,
        "eig_rtol": eig_rtol,
        "grad_tol": grad_tol,
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
        kind=verdict.kind,
        side=verdict.side,
        reason=verdict.reason,
        lambda_min=lam_min,
        lambda_min_error=err_min,
        lambda_max=lam_max,
        lambda_max_error=err_max,
        eigenvalues=[float(x) for x in values],
        eigenvalue_errors=[float(x) for x in errors],
        eigen_converged=[bool(x) for x in conv],
        converged=bool(conv[0]) and bool(conv[-1]),
        zero_tol=verdict.threshold,
        eig_rtol=eig_rtol,
        minimum_ratio=minimum_ratio,
        negative_fraction=negative_fraction,
        flat_fraction=flat_fraction,
        trace=tr,
        density=dens,
        escape_direction=direction,
        escape_prediction=prediction,
        num_params=n,
        num_matvecs=H.num_matvecs,
        settings=settings,
    )


# ``trace`` is also a parameter name of diagnose; keep the estimator reachable.
trace_estimate = trace
