"""The result of a diagnosis: the verdict, the evidence, and its JSON document.

:class:`Diagnosis` holds what :func:`critpoint.diagnose` measured and decided
(:class:`Verdict` is the decision of :func:`critpoint.classify`); it knows how
to explain itself (:meth:`Diagnosis.summary`) and how to travel as JSON
(:meth:`Diagnosis.to_dict` / :meth:`Diagnosis.from_dict`), so a report can
be drawn from it without the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from critpoint._files import write_text_atomic
from critpoint._json import check_header, clean, dumps, header
from critpoint.analysis.batchnorm import BatchNormCheck, bn_mode_text
from critpoint.analysis.step import LineSearch
from critpoint.linalg.slq import SpectralDensity
from critpoint.linalg.trace import TraceEstimate

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DIAGNOSIS_SCHEMA",
    "DIAGNOSIS_SCHEMA_VERSION",
    "Diagnosis",
    "Kind",
    "LayerDiagnosis",
    "Verdict",
    "with_error",
]

DIAGNOSIS_SCHEMA = "critpoint.diagnosis"
DIAGNOSIS_SCHEMA_VERSION = 1

Kind = Literal["minimum", "maximum", "saddle", "degenerate"]


def with_error(value: float, error: float | None, scale: float = 1.0) -> str:
    """``value ± error`` with only the digits the error leaves.

    The error is rounded to one significant digit (two when it starts with
    a 1) and the value to the same decimal place: ``0.8312 ± 0.0437`` reads
    ``0.83 ± 0.04``. Without a finite positive error the value has 4 digits.

    Parameters
    ----------
    value : float
    error : float or None
        Standard error (same units as ``value``).
    scale : float
        Multiplies both (100 for percent).

    Returns
    -------
    str
    """
    v = value * scale
    if error is None or not math.isfinite(error) or error <= 0:
        return f"{v:.4g}"
    e = error * scale
    exponent = math.floor(math.log10(e))
    digits = 2 if e / 10**exponent < 2 else 1
    decimals = max(0, digits - 1 - exponent)
    return f"{v:.{decimals}f} ± {e:.{decimals}f}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`critpoint.classify`.

    Attributes
    ----------
    kind : {"minimum", "maximum", "saddle", "degenerate"}
    side : {"positive", "negative", "both", "none"}
        Signs of the eigenvalues that are clearly away from zero.
    zero_tol : float
        The zero tolerance ``τ = eig_rtol · scale`` used on top of the error
        bounds (the same name as :attr:`Diagnosis.zero_tol`).
    reason : str
        One sentence giving the numbers that decided.
    """

    kind: Kind
    side: str
    zero_tol: float
    reason: str

    @property
    def threshold(self) -> float:
        """Deprecated name of :attr:`zero_tol`."""
        import warnings

        warnings.warn(
            "Verdict.threshold is deprecated; use Verdict.zero_tol",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.zero_tol


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
        The verdict of :func:`critpoint.classify` on the curvature.
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
        ``τ`` of the rule (:func:`critpoint.zero_tolerance`).
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
        Predicted loss change ``gᵀu·α + ½ λ_min α²`` of the step
        :attr:`escape_step` chose along it.
    num_params : int
    num_matvecs : int
        Hessian-vector products spent, every one counted (the symmetry probe
        included).
    num_matvecs_by_phase : dict
        The same products by phase (``"symmetry probe"``, ``"eigenvalues"``,
        ``"density"``, ``"trace"``); they sum to :attr:`num_matvecs`.
    cost_plan : dict or None
        The plan said before the work (:meth:`CostPlan.to_dict
        <critpoint.analysis.plan.CostPlan.to_dict>`): the products each phase
        planned, the measured seconds of a product and a gradient, the
        estimated total (``"seconds"``) and its one-line ``"summary"``.
    settings : dict
        Every setting, seed included.
    lambda_lower, lambda_upper : float or None
        Bounds on every eigenvalue of the Hessian that hold with probability
        ``bound_probability`` over the random start
        (:meth:`critpoint.EigenResult.extreme_bounds`); the verdict "minimum"
        needs ``lambda_lower > zero_tol``.
    bound_probability : float or None
        ``1 − delta`` (1 when the bounds are exact).
    escape_step : LineSearch or None
        The step :func:`critpoint.escape_saddle` would take along
        :attr:`escape_direction`: backtracking from
        :func:`critpoint.quadratic_step` on the real loss, with the measured
        change (a few loss evaluations, no Hessian-vector product). The
        advice quotes it.
    batchnorm : BatchNormCheck or None
        For a model with BatchNorm layers: the eval-mode and the
        batch-statistics losses, and the warning when they differ by more
        than :data:`critpoint.analysis.batchnorm.BN_GAP_RTOL`.
    minimum_ratio_stderr, negative_fraction_stderr : float or None
        Standard errors of the minimum ratio and the negative fraction from
        the spread over the SLQ probes (the same number: the ratio is one
        minus the fraction); NaN with one probe.
    eigenvector_min, eigenvector_max : torch.Tensor or None
        Unit eigenvectors (Ritz vectors) of ``λ_min`` and ``λ_max``, shape
        ``(n,)``, each oriented downhill (``gᵀu ≤ 0``), on the objective's
        device: what :func:`critpoint.landscape` draws the loss along, so it
        needs no second eigen-solve. Not in the JSON document (``None`` after
        :meth:`from_dict`).
    memory : dict or None
        The memory plan the run kept to (:class:`critpoint.analysis.memory.MemoryPlan`
        as a dictionary): the budget, what each phase held, and the choices
        (Lanczos basis, density reorthogonalisation, trace method and block).
    sampling : dict or None
        Standard errors over batches of ``λ_min``, ``λ_max`` and the gradient
        norm (:class:`critpoint.analysis.sampling.SamplingError` as a
        dictionary; ``used``: whether the verdict's error bars include them).
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
    num_matvecs_by_phase: dict[str, int] = field(default_factory=dict)
    cost_plan: dict[str, Any] | None = field(default=None, compare=False)
    eigenvector_min: torch.Tensor | None = field(
        default=None, repr=False, compare=False
    )
    eigenvector_max: torch.Tensor | None = field(
        default=None, repr=False, compare=False
    )
    escape_step: LineSearch | None = None
    batchnorm: BatchNormCheck | None = None
    minimum_ratio_stderr: float | None = None
    negative_fraction_stderr: float | None = None
    memory: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None

    @property
    def bn_mode(self) -> str:
        """The BatchNorm mode analysed: ``"eval"``, ``"train"`` or ``"recalibrate"``."""
        mode = self.settings.get("bn")
        if mode is None:  # documents from before the bn setting
            return "train" if self.settings.get("train_mode") else "eval"
        return str(mode)

    def bn_text(self) -> str:
        """The BatchNorm mode in words, with both losses when the model has BatchNorm layers."""
        if self.batchnorm is not None:
            return self.batchnorm.describe()
        return bn_mode_text(self.bn_mode, self.settings.get("bn_layers"))

    def curvature_text(self) -> str:
        """The Hessian's curvature in words (what the verdict is, away from a critical point)."""
        if self.kind == "minimum":
            return "positive definite curvature"
        if self.kind == "maximum":
            return "negative definite curvature"
        if self.kind == "saddle":
            return "indefinite curvature"
        return {
            "positive": "degenerate curvature (no clearly negative eigenvalue; "
            "not certified positive definite)",
            "negative": "degenerate curvature (no clearly positive eigenvalue; "
            "not certified negative definite)",
            "none": "degenerate curvature (the Hessian is zero here)",
        }.get(self.side, "degenerate curvature")

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
        flag = "" if self.converged else " [unconverged: bounds are loose]"
        if not self.critical:
            # "saddle; not a critical point" would contradict itself: name the curvature.
            return f"{self.curvature_text()}; not a critical point (the gradient is not small){flag}"
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
        return f"{what}; a critical point{flag}"

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
                f"Minimum ratio {with_error(self.minimum_ratio, self.minimum_ratio_stderr)} "
                "(fraction of eigenvalues not clearly negative; ± the standard error over "
                f"probes); {with_error(self.negative_fraction or 0.0, self.negative_fraction_stderr)} "
                f"clearly negative, {self.flat_fraction:.2g} flat."
            )
        if self.trace is not None:
            lines.append(f"Trace {self.trace.value:.6g} ± {self.trace.stderr:.2g}.")
        lines.append(f"BatchNorm: {self.bn_text()}.")
        if self.batchnorm is not None and self.batchnorm.warning():
            lines.append(f"Warning: {self.batchnorm.warning()}.")
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
        """What to do next, in one sentence, from the measured loss (the same after a JSON round trip)."""
        if not self.critical:
            return (
                f"keep training: the gradient norm {self.grad_norm:.3g} is above "
                f"{self.grad_tol:.3g}, the critical threshold, so a gradient step still "
                "lowers the loss."
            )
        step = self.escape_step
        if step is not None and step.lowers_loss:
            return (
                f"step {step.step_size:.3g} along the escape direction (eigenvalue "
                f"{self.lambda_min:.3g}): measured, the loss goes {step.loss_before:.6g} → "
                f"{step.loss_after:.6g} (change {step.actual_change:.3g}; the quadratic model "
                f"predicts {step.predicted_change:.3g}); critpoint.escape_saddle or "
                "`critpoint escape` takes it."
            )
        if step is not None:
            return (
                f"negative curvature (eigenvalue {self.lambda_min:.3g}), but no step along its "
                f"eigenvector lowered the loss in {len(step.trials)} trials (higher-order terms "
                "dominate): perturb the point slightly and diagnose again."
            )
        if self.kind == "saddle":
            return (
                "step along the eigenvector of λ_min with critpoint.escape_saddle or "
                "`critpoint escape`, whose line search measures the change."
            )
        if self.kind == "minimum":
            return "this is a local minimum; lower the loss only by changing the model, data or regulariser."
        if self.uncertified:
            return (
                "diagnose again with a tighter tol (or a larger max_matvecs): longer Lanczos runs "
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
        """The ``critpoint.diagnosis`` JSON document (strict JSON values; no eigenvectors)."""
        return clean(
            {
                **header(DIAGNOSIS_SCHEMA, DIAGNOSIS_SCHEMA_VERSION),
                "verdict": self.headline(),
                "kind": self.kind,
                "side": self.side,
                "critical": self.critical,
                "converged": self.converged,
                "reason": self.reason,
                "loss": self.loss,
                "grad_norm": self.grad_norm,
                "grad_tol": self.grad_tol,
                "lambda_min": self.lambda_min,
                "lambda_min_error": self.lambda_min_error,
                "lambda_max": self.lambda_max,
                "lambda_max_error": self.lambda_max_error,
                "eigenvalues": self.eigenvalues,
                "eigenvalue_errors": self.eigenvalue_errors,
                "eigen_converged": self.eigen_converged,
                "zero_tol": self.zero_tol,
                "eig_rtol": self.eig_rtol,
                "minimum_ratio": self.minimum_ratio,
                "negative_fraction": self.negative_fraction,
                "flat_fraction": self.flat_fraction,
                "trace": self.trace.to_dict() if self.trace is not None else None,
                "density": self.density.to_dict() if self.density is not None else None,
                "has_escape_direction": self.escape_direction is not None,
                "escape_prediction": self.escape_prediction,
                "escape_step": self.escape_step.to_dict()
                if self.escape_step is not None
                else None,
                "advice": self.advice(),
                "bn_mode": self.bn_mode,
                "batchnorm": self.batchnorm.to_dict()
                if self.batchnorm is not None
                else None,
                "minimum_ratio_stderr": self.minimum_ratio_stderr,
                "negative_fraction_stderr": self.negative_fraction_stderr,
                "num_params": self.num_params,
                "num_matvecs": self.num_matvecs,
                "num_matvecs_by_phase": self.num_matvecs_by_phase,
                "cost_plan": self.cost_plan,
                "settings": self.settings,
                "lambda_lower": self.lambda_lower,
                "lambda_upper": self.lambda_upper,
                "bound_probability": self.bound_probability,
                "memory": self.memory,
                "sampling": self.sampling,
            }
        )

    def to_json(self, path: str | None = None, indent: int = 2) -> str:
        """The :meth:`to_dict` document as JSON; written atomically to ``path`` if given."""
        text = dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_text_atomic(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        """Rebuild a diagnosis from :meth:`to_dict` (no escape direction; no recomputation).

        Raises
        ------
        InputError
            Not a ``critpoint.diagnosis`` document, or a newer version of it.
        """
        check_header(
            data, DIAGNOSIS_SCHEMA, DIAGNOSIS_SCHEMA_VERSION, "diagnosis document"
        )
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
        step = data.get("escape_step")
        bn = data.get("batchnorm")

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
            num_matvecs_by_phase={
                str(key): int(value)
                for key, value in (data.get("num_matvecs_by_phase") or {}).items()
            },
            cost_plan=data.get("cost_plan"),
            escape_step=LineSearch.from_dict(step) if step is not None else None,
            batchnorm=BatchNormCheck.from_dict(bn) if bn is not None else None,
            minimum_ratio_stderr=_maybe_float(data.get("minimum_ratio_stderr")),
            negative_fraction_stderr=_maybe_float(data.get("negative_fraction_stderr")),
            memory=data.get("memory"),
            sampling=data.get("sampling"),
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


def _maybe_float(x: Any) -> float | None:
    """A stored standard error: ``None`` stays ``None`` (NaN was cleaned to ``None`` too)."""
    return None if x is None else float(x)


@dataclass(frozen=True)
class LayerDiagnosis:
    """The diagnosis of one layer's block of the Hessian (:func:`critpoint.diagnose_layers`).

    Attributes
    ----------
    name : str
        Module path (``"net.0"``; ``"(root)"`` for the model's own parameters).
    module_type : str
        Class name of the module (``"Linear"``).
    params : list of str
        The parameter names of the block.
    diagnosis : Diagnosis
        The diagnosis of the objective over those parameters alone: the
        diagonal block of the Hessian, the other parameters held fixed.
    raw : dict or None
        The diagnosis document as read from JSON (:meth:`from_dict`), written
        back unchanged: a rebuilt :class:`Diagnosis` has no escape direction,
        so its own document could differ.
    """

    name: str
    module_type: str
    params: list[str]
    diagnosis: Diagnosis
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "name": self.name,
            "type": self.module_type,
            "params": list(self.params),
            "num_params": self.diagnosis.num_params,
            "diagnosis": self.raw if self.raw is not None else self.diagnosis.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerDiagnosis:
        """Rebuild from :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            module_type=str(data.get("type", "")),
            params=[str(p) for p in data.get("params", [])],
            diagnosis=Diagnosis.from_dict(dict(data["diagnosis"])),
            raw=dict(data["diagnosis"]),
        )
