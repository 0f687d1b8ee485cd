"""Diagnose a point: gather the evidence through the Hessian operator, let the rule decide.

:func:`diagnose` measures the loss, the gradient, the extreme eigenpairs with
residual bounds and a bound on the whole spectrum, the spectral density and
the trace, through the objective's Hessian operator; the verdict is the rule
of :mod:`critpoint.analysis.rule` (:func:`critpoint.classify`), the one place
where it is decided. :func:`diagnose_layers` does the same for each layer's
block of the Hessian, the layers found by :func:`layer_groups`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from critpoint._deprecation import UNSET, renamed
from critpoint._progress import ProgressArg, check_progress
from critpoint.analysis.blocks import LayerDiagnoses, diagnose_blocks
from critpoint.analysis.diagnosis import Diagnosis, LayerDiagnosis
from critpoint.analysis.rule import (
    default_grad_tol,
    measure_extremes,
    minimum_ratio,
    verdict,
)
from critpoint.analysis.step import downhill, quadratic_step
from critpoint.errors import InputError
from critpoint.linalg.slq import spectral_density
from critpoint.linalg.trace import trace as trace_estimate
from critpoint.objective import Objective
from critpoint.specs import dtype_name

__all__ = ["LayerGroup", "diagnose", "diagnose_layers", "layer_groups"]


def diagnose(
    obj: Objective,
    k: int = 6,
    density: bool = True,
    trace: bool = True,
    seed: int = 0,
    grad_tol: float | None = None,
    eig_rtol: float = 1e-3,
    progress: ProgressArg = False,
    *,
    tol: float = 1e-4,
    max_matvecs: int | None = None,
    num_probes: int = 8,
    num_steps: int = 60,
    trace_max_matvecs: int = 60,
    check: bool = True,
    delta: float = 0.01,
    maxiter: Any = UNSET,
    trace_matvecs: Any = UNSET,
) -> Diagnosis:
    """Diagnose the point the objective's model is at: minimum, maximum, saddle or degenerate.

    Costs one pass for the loss and gradient, 1 HVP for the symmetry probe
    (it rides on the solver's first products: :meth:`HessianOperator.defer_check`),
    one Lanczos run for both ends of the spectrum (typically 30–150 HVPs; about
    ``k`` when the Hessian is zero, ``rank + k`` when it has low rank), and,
    if asked, ``num_probes × num_steps`` HVPs in ``num_steps`` batched passes
    for the density and ``trace_max_matvecs`` for the trace.

    The verdict is :func:`critpoint.classify` on the extreme eigenvalues, their error
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
        :func:`critpoint.analysis.rule.default_grad_tol`.
    eig_rtol : float
        Relative zero tolerance of :func:`critpoint.classify`.
    progress : bool or callable
        ``True`` shows a progress bar per solver; a callable is called as
        ``progress(done, total)`` by each solver in turn (its own products).
    tol : float
        Relative residual tolerance of the eigensolver.
    max_matvecs : int, optional
        HVP budget of the eigensolver (``eigsh``'s default when ``None``); a
        run that spends it unconverged gives a verdict with its looser bounds
        and ``converged=False``.
    num_probes, num_steps : int
        SLQ probes and Lanczos steps per probe.
    trace_max_matvecs : int
        HVP budget of the trace estimate.
    check : bool
        Run the symmetry/determinism probe first.
    delta : float
        Failure probability of the bound on the whole spectrum, in ``(0, 1)``.
    maxiter, trace_matvecs
        Old names of ``max_matvecs`` and ``trace_max_matvecs``, accepted with
        a ``DeprecationWarning`` for one release.

    Returns
    -------
    Diagnosis
    """
    max_matvecs = renamed(
        "diagnose", "maxiter", "max_matvecs", maxiter, max_matvecs, None
    )
    trace_max_matvecs = renamed(
        "diagnose",
        "trace_matvecs",
        "trace_max_matvecs",
        trace_matvecs,
        trace_max_matvecs,
        60,
    )
    check_progress(progress)
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
        max_matvecs=max_matvecs,
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
        # Positional: the budget's keyword is being renamed in the trace estimator.
        tr = trace_estimate(H, trace_max_matvecs, "auto", seed, progress)

    u_min, slope = downhill(ext.vectors[:, 0].clone(), g)
    u_max, _ = downhill(ext.vectors[:, -1].clone(), g)
    direction = None
    prediction = None
    if c.negative:
        direction = u_min
        prediction = quadratic_step(
            loss, slope, c.lambda_min, dtype=obj.dtype
        ).predicted_change

    settings = {
        "k": k,
        "tol": tol,
        "max_matvecs": max_matvecs,
        "maxiter": max_matvecs,  # the old key, kept for readers of older documents
        "seed": seed,
        "eig_rtol": eig_rtol,
        "grad_tol": grad_tol,
        "delta": delta,
        "density": density,
        "num_probes": num_probes,
        "num_steps": num_steps,
        "trace": trace,
        "trace_max_matvecs": trace_max_matvecs,
        "trace_matvecs": trace_max_matvecs,  # the old key
        "dtype": dtype_name(obj.dtype),
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
        eigenvector_min=u_min,
        eigenvector_max=u_max,
    )


class LayerGroup(NamedTuple):
    """One layer's parameters, as :func:`layer_groups` finds them."""

    #: Module path (``"net.0"``; ``"(root)"`` for the model's own parameters).
    name: str
    #: Class name of the module.
    module_type: str
    #: Names of its trainable parameters (as ``model.named_parameters()`` gives them).
    params: list[str]


def layer_groups(
    model: nn.Module, patterns: Sequence[str] | None = None
) -> list[LayerGroup]:
    """Every module that owns trainable parameters directly, with their names.

    Parameters
    ----------
    model : nn.Module
    patterns : sequence of str, optional
        Keep only parameters matching one of these globs; modules left with
        none are dropped.

    Returns
    -------
    list of LayerGroup
        In the order of ``model.named_modules()``.
    """
    groups = []
    for name, module in model.named_modules():
        names = [
            f"{name}.{pname}" if name else pname
            for pname, p in module.named_parameters(recurse=False)
            if p.requires_grad
        ]
        if patterns:
            names = [
                n for n in names if any(fnmatch.fnmatchcase(n, g) for g in patterns)
            ]
        if names:
            groups.append(LayerGroup(name or "(root)", type(module).__name__, names))
    return groups


ObjectiveFactory = Callable[[list[str]], Objective]


def diagnose_layers(
    objective: Objective | ObjectiveFactory,
    groups: Sequence[LayerGroup | tuple[str, str, Sequence[str]]] | None = None,
    *,
    one_pass: bool | None = None,
    **options: Any,
) -> list[LayerDiagnosis]:
    """Diagnose each layer's block of the Hessian on its own.

    The block of a layer is the Hessian of the objective over that layer's
    parameters, the others held fixed. With ``one_pass`` (the default for an
    :class:`~critpoint.Objective`) every block is measured in one batched run
    of block-masked products (:func:`critpoint.analysis.blocks.diagnose_blocks`):
    ``B`` blocks cost one pass over the data per Lanczos step, and the result
    carries the heterogeneity between the blocks' spectra. Otherwise each
    block gets its own :class:`~critpoint.Objective` (``params=`` the layer's
    names), diagnosed by :func:`diagnose`.

    Parameters
    ----------
    objective : Objective or callable
        The whole objective: each layer's objective is the same model, loss
        and data over that layer's parameters. Or a factory
        ``objective(names) -> Objective`` that builds it (for objectives set up
        elsewhere, e.g. one data shard per process).
    groups : sequence of LayerGroup or (name, type, names), optional
        The blocks. Default :func:`layer_groups` of the objective's model,
        restricted to the objective's parameters (needs an ``Objective``).
    one_pass : bool, optional
        Measure all blocks in one batched run (default for an ``Objective``;
        a factory always runs each block on its own objective).
    **options
        Keywords of :func:`diagnose` (``k``, ``seed``, ``tol``, ``density``,
        ``progress``...), the same for every layer. In one pass each block
        gives its two extreme eigenvalues, so ``k``, ``max_matvecs`` and
        ``trace_max_matvecs`` are not used; ``num_probes`` (default 4),
        ``num_steps``, ``max_steps`` and ``max_columns`` are
        :func:`critpoint.linalg.blocks.block_spectra`'s.

    Returns
    -------
    list of LayerDiagnosis
        One per group, in order (a :class:`~critpoint.analysis.blocks.LayerDiagnoses`:
        with ``heterogeneity`` and the run's counts).
    """
    if isinstance(objective, Objective):
        whole = objective
        if groups is None:
            selected = set(whole.param_names)
            groups = [
                LayerGroup(
                    g.name, g.module_type, [n for n in g.params if n in selected]
                )
                for g in layer_groups(whole.model)
            ]
            groups = [g for g in groups if g.params]

        def build(names: list[str]) -> Objective:
            return _objective_over(whole, names)

    elif callable(objective):
        if groups is None:
            msg = (
                "diagnose_layers with an objective factory needs groups= "
                "(e.g. layer_groups(model)); or pass the Objective itself"
            )
            raise InputError(msg)
        build = objective
        if one_pass:
            msg = (
                "one_pass=True needs the whole Objective (its Hessian serves every "
                "block); a factory builds one objective per block"
            )
            raise InputError(msg)
    else:
        msg = (
            "diagnose_layers needs an Objective or a factory names -> Objective, "
            f"got {type(objective).__name__}"
        )
        raise InputError(msg)
    if isinstance(objective, Objective) and one_pass is not False:
        return diagnose_blocks(
            objective, [LayerGroup(*g) for g in groups], **_one_pass_options(options)
        )
    results = []
    for group in groups:
        name, module_type, names = LayerGroup(*group)
        names = list(names)
        results.append(
            LayerDiagnosis(name, module_type, names, diagnose(build(names), **options))
        )
    return LayerDiagnoses(results)


def _one_pass_options(options: dict[str, Any]) -> dict[str, Any]:
    """The keywords of :func:`diagnose` that the one-pass run takes; the rest are not used.

    ``k``, the budgets and the other solver settings of :func:`diagnose`
    have no part in one batched run (each block gives its two extremes); an
    unknown keyword still fails, as it would in :func:`diagnose`.
    """
    import inspect

    own = set(inspect.signature(diagnose_blocks).parameters)
    known = own | set(inspect.signature(diagnose).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        msg = f"diagnose_layers got unknown keywords {unknown}"
        raise InputError(msg)
    return {k: v for k, v in options.items() if k in own}


def _objective_over(obj: Objective, names: list[str]) -> Objective:
    """The objective of the same model, loss and data over the parameters ``names``."""
    # Objective has no public constructor from another objective, so its parts
    # are read here: the loss, the batches (re-iterable, batch size kept) and
    # the input cast the objective was given.
    loss_module = obj._wrapper
    return Objective(
        obj.model,
        loss_module._loss_fn,
        obj._batches,
        params=names,
        train_mode=obj.train_mode,
        device=obj.device,
        dtype=obj._cast_inputs,
        batch_loss=loss_module._batch_loss,
        process_group=obj.process_group,
        hvp_mode=obj.hvp_mode,
        chunk_size=obj.chunk_size,
        hvp_cache=obj.hvp_cache,
        reduction=obj.reduction,
    )
