"""Every layer's block of the Hessian diagnosed in one batched pass.

:func:`diagnose_blocks` builds the whole objective's Hessian once, runs
:func:`critpoint.linalg.blocks.block_spectra` on the parameter blocks (every
block's probes advance together, one ``matmat`` call per step), and reads
each block with the same rule as :func:`critpoint.diagnose`: a
:class:`~critpoint.Diagnosis` per block, with its loss, the block's part of the
gradient, its extreme eigenvalues and error bounds, the bound on its whole
spectrum, its trace and density. :func:`critpoint.diagnose_layers` calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from critpoint._progress import ProgressArg, check_progress
from critpoint.analysis.diagnosis import Diagnosis, LayerDiagnosis
from critpoint.analysis.rule import (
    curvature,
    default_grad_tol,
    minimum_ratio,
    verdict,
)
from critpoint.analysis.step import downhill, quadratic_step
from critpoint.errors import InputError
from critpoint.linalg.blocks import (
    HETEROGENEITY_DEFINITION,
    BlockSpectra,
    block_spectra,
)
from critpoint.linalg.trace import TraceEstimate
from critpoint.objective import Objective
from critpoint.specs import dtype_name

__all__ = ["LayerDiagnoses", "block_indices", "diagnose_blocks"]

#: Probes per block of the one-pass per-layer diagnosis.
BLOCK_PROBES = 4


class LayerDiagnoses(list):  # type: ignore[type-arg]
    """A list of :class:`~critpoint.LayerDiagnosis`, with what the blocks share.

    Attributes
    ----------
    spectra : BlockSpectra or None
        The one-pass run (``None`` when each layer was diagnosed on its own).
    heterogeneity : float or None
        Mean pairwise Jensen–Shannon distance between the blocks' normalised
        densities (:data:`critpoint.linalg.blocks.HETEROGENEITY_DEFINITION`).
    num_matvecs : int
        Hessian-vector products spent on the blocks (the symmetry probe of
        the whole Hessian included).
    num_passes : int or None
        Batched ``matmat`` calls of the one-pass run.
    """

    def __init__(
        self,
        layers: Sequence[LayerDiagnosis] = (),
        spectra: BlockSpectra | None = None,
        num_matvecs: int | None = None,
    ) -> None:
        super().__init__(layers)
        self.spectra = spectra
        self.heterogeneity = None if spectra is None else spectra.heterogeneity
        self.num_passes = None if spectra is None else spectra.num_passes
        self.num_matvecs = (
            sum(x.diagnosis.num_matvecs for x in layers)
            if num_matvecs is None
            else int(num_matvecs)
        )

    def to_dict(self) -> dict[str, Any]:
        """The layers' documents and the shared numbers (JSON-friendly)."""
        return {
            "layers": [x.to_dict() for x in self],
            "heterogeneity": self.heterogeneity,
            "heterogeneity_definition": HETEROGENEITY_DEFINITION,
            "distances": None
            if self.spectra is None
            else self.spectra.distances.tolist(),
            "num_matvecs": self.num_matvecs,
            "num_passes": self.num_passes,
        }


def block_indices(obj: Objective, names: Sequence[str]) -> torch.Tensor:
    """Positions in the flat θ of ``obj`` of the parameters ``names``.

    Parameters
    ----------
    obj : Objective
    names : sequence of str
        Parameter names, each one of ``obj.param_names``.

    Returns
    -------
    torch.Tensor
        int64, ascending, shape ``(sum of their sizes,)``.
    """
    offsets, start = {}, 0
    for name, size in zip(obj.param_names, obj.param_sizes, strict=True):
        offsets[name] = (start, size)
        start += size
    missing = [n for n in names if n not in offsets]
    if missing:
        msg = (
            f"parameters {missing} are not among the objective's parameters "
            f"({len(offsets)} tensors); build the objective with params= covering them"
        )
        raise InputError(msg)
    parts = [torch.arange(offsets[n][0], sum(offsets[n])) for n in names]
    return torch.unique(torch.cat(parts))


def diagnose_blocks(
    obj: Objective,
    groups: Sequence[tuple[str, str, Sequence[str]]],
    *,
    density: bool = True,
    trace: bool = True,
    seed: int = 0,
    grad_tol: float | None = None,
    eig_rtol: float = 1e-3,
    progress: ProgressArg = False,
    tol: float = 1e-4,
    num_probes: int = BLOCK_PROBES,
    num_steps: int = 60,
    max_steps: int | None = None,
    check: bool = True,
    delta: float = 0.01,
    max_columns: int | None = None,
) -> LayerDiagnoses:
    """Diagnose each group's diagonal block of the Hessian, all blocks in one batched pass.

    Costs one pass for the loss and gradient, the whole Hessian's symmetry
    probe, and ``num_steps`` batched passes of ``B × num_probes`` products
    for ``B`` blocks (a block's first probe continues, alone in its column,
    until its extremes meet ``tol`` or ``max_steps``).

    Parameters
    ----------
    obj : Objective
        The whole objective; each block is the Hessian over one group's
        parameters with the others held fixed.
    groups : sequence of (name, module type, parameter names)
        The blocks (:class:`critpoint.analysis.diagnose.LayerGroup` or tuples).
    density, trace : bool
        Report each block's density (and minimum ratio) and trace; they come
        from the same products as the eigenvalues.
    seed : int
        Seed of the probes (each block draws from a fresh generator of it).
    grad_tol, eig_rtol, delta, check
        As for :func:`critpoint.diagnose`.
    progress : bool or callable
        Progress of the batched run, in steps.
    tol : float
        Relative tolerance of each block's extreme eigenvalues.
    num_probes, num_steps, max_steps, max_columns
        As for :func:`critpoint.linalg.blocks.block_spectra`.

    Returns
    -------
    LayerDiagnoses
        One :class:`~critpoint.LayerDiagnosis` per group, in order, with the
        heterogeneity score and the run's counts.
    """
    check_progress(progress)
    if not (eig_rtol >= 0 and math.isfinite(eig_rtol)):
        msg = f"eig_rtol must be a finite number >= 0, got {eig_rtol!r}"
        raise InputError(msg)
    groups = [(str(g[0]), str(g[1]), list(g[2])) for g in groups]
    if not groups:
        msg = "no parameter groups to diagnose; give groups= with at least one group"
        raise InputError(msg)
    index = [block_indices(obj, names) for _, _, names in groups]
    loss, g = obj.loss_and_grad()
    H = obj.hessian(check=check)
    probe_cost = H.num_matvecs
    spectra = block_spectra(
        H,
        [(name, idx) for (name, _, _), idx in zip(groups, index, strict=True)],
        num_probes=num_probes,
        num_steps=num_steps,
        seed=seed,
        tol=tol,
        max_steps=max_steps,
        delta=delta,
        max_columns=max_columns,
        progress=progress,
    )
    layers = []
    for (name, module_type, names), idx, bs in zip(
        groups, index, spectra.blocks, strict=True
    ):
        g_b = g[idx.to(g.device)]
        grad_norm = float(torch.linalg.vector_norm(g_b.double()))
        c = curvature(
            bs.lambda_min,
            bs.lambda_min_error,
            bs.lambda_max,
            bs.lambda_max_error,
            eig_rtol,
            lower=bs.lower,
            upper=bs.upper,
            probability=bs.probability,
        )
        result = verdict(c)
        scale = max(abs(c.lambda_min), abs(c.lambda_max))
        tol_g = (
            default_grad_tol(loss, scale, obj.dtype) if grad_tol is None else grad_tol
        )
        ratio = negative = flat = None
        if density:
            ratio, negative, flat = minimum_ratio(bs.density, c.zero_tol)
        tr = None
        if trace:
            exact = bs.trace_stderr == 0.0
            tr = TraceEstimate(
                value=bs.trace,
                stderr=bs.trace_stderr,
                num_matvecs=bs.size if exact else spectra.num_probes,
                method="exact" if exact else "hutchinson",
                seed=seed,
            )
        assert bs.vector_min is not None
        assert bs.vector_max is not None
        u_min, slope = downhill(bs.vector_min.clone(), g_b)
        u_max, _ = downhill(bs.vector_max.clone(), g_b)
        direction = prediction = None
        if c.negative:
            direction = u_min
            prediction = quadratic_step(
                loss, slope, c.lambda_min, dtype=obj.dtype
            ).predicted_change
        settings = {
            "method": "one pass (block-masked products)",
            "tol": tol,
            "seed": seed,
            "eig_rtol": eig_rtol,
            "grad_tol": tol_g,
            "delta": delta,
            "density": density,
            "num_probes": spectra.num_probes,
            "num_steps": num_steps,
            "max_steps": max_steps,
            "trace": trace,
            "dtype": dtype_name(obj.dtype),
            "device": str(obj.device),
            "train_mode": obj.train_mode,
            "hvp_mode": obj.hvp_mode,
            "reduction": obj.reduction,
            "params": names if len(names) <= 64 else f"{len(names)} tensors",
            "symmetry_probe_matvecs": probe_cost,
        }
        dg = Diagnosis(
            loss=loss,
            grad_norm=grad_norm,
            grad_tol=float(tol_g),
            critical=grad_norm <= tol_g,
            kind=result.kind,
            side=result.side,
            reason=result.reason,
            lambda_min=c.lambda_min,
            lambda_min_error=c.lambda_min_error,
            lambda_max=c.lambda_max,
            lambda_max_error=c.lambda_max_error,
            eigenvalues=[c.lambda_min, c.lambda_max],
            eigenvalue_errors=[c.lambda_min_error, c.lambda_max_error],
            eigen_converged=[bs.converged_min, bs.converged_max],
            converged=bs.converged_min and bs.converged_max,
            zero_tol=c.zero_tol,
            eig_rtol=eig_rtol,
            minimum_ratio=ratio,
            negative_fraction=negative,
            flat_fraction=flat,
            trace=tr,
            density=bs.density if density else None,
            escape_direction=direction,
            escape_prediction=prediction,
            num_params=bs.size,
            num_matvecs=bs.num_matvecs,
            settings=settings,
            lambda_lower=c.lower,
            lambda_upper=c.upper,
            bound_probability=c.probability,
            eigenvector_min=u_min,
            eigenvector_max=u_max,
        )
        layers.append(LayerDiagnosis(name, module_type, names, dg))
    return LayerDiagnoses(layers, spectra, num_matvecs=H.num_matvecs)
