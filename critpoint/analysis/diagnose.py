"""Diagnose a point: gather the evidence through the Hessian operator, let the rule decide.

:func:`diagnose` measures the loss, the gradient, the extreme eigenpairs with
residual bounds and a bound on the whole spectrum, the spectral density and
the trace, through the objective's Hessian operator; the verdict is the rule
of :mod:`critpoint.analysis.rule` (:func:`critpoint.classify`), the one place
where it is decided. :func:`diagnose_layers` does the same for each layer's
block of the Hessian, the layers found by :func:`layer_groups`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import nn

from critpoint import _checks
from critpoint._deprecation import UNSET, renamed
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.analysis.batchnorm import check_batchnorm
from critpoint.analysis.blocks import LayerDiagnoses, diagnose_blocks
from critpoint.analysis.diagnosis import Diagnosis, LayerDiagnosis
from critpoint.analysis.memory import MemoryPlan, plan_memory
from critpoint.analysis.plan import (
    CostPlan,
    diagnosis_phases,
    eigensolver_budget,
    layer_phases,
    measure_costs,
)
from critpoint.analysis.rule import (
    Curvature,
    curvature,
    default_grad_tol,
    measure_extremes,
    minimum_ratio,
    verdict,
)
from critpoint.analysis.sampling import SamplingError, measure_sampling_error
from critpoint.analysis.step import LineSearch, downhill, line_search
from critpoint.errors import InputError
from critpoint.linalg.lanczos import default_block_size
from critpoint.linalg.slq import default_num_probes, spectral_density
from critpoint.linalg.trace import trace as trace_estimate
from critpoint.objective import Objective
from critpoint.specs import dtype_name

__all__ = ["LayerGroup", "diagnose", "diagnose_layers", "layer_groups"]

logger = logging.getLogger("critpoint")

#: Attribute of a log record whose message the diagnosis also carries (its
#: text summary prints it): a front end that shows the summary may drop it.
REPORTED = "critpoint_reported"


def _per_step(
    report: Callable[[int, int], None], width: int
) -> Callable[[int, int], None]:
    """A callback of steps (``done``, ``total`` steps) reporting products, ``width`` a step."""

    def callback(done: int, total: int) -> None:
        report(done * width, total * width)

    return callback


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
    num_probes: int | None = None,
    num_steps: int = 60,
    trace_max_matvecs: int = 60,
    check: bool = True,
    delta: float = 0.01,
    on_plan: Callable[[CostPlan], object] | None = None,
    maxiter: Any = UNSET,
    trace_matvecs: Any = UNSET,
    memory: int | float | str | None = None,
    reorth: str | None = None,
    sampling_error: bool = True,
    sampled: bool = False,
) -> Diagnosis:
    """Diagnose the point the objective's model is at: minimum, maximum, saddle or degenerate.

    Costs one pass for the loss and gradient, 1 HVP for the symmetry probe
    (it rides on the solver's first products: :meth:`HessianOperator.defer_check`),
    one Lanczos run for both ends of the spectrum (typically 30–150 HVPs; about
    ``k`` when the Hessian is zero, ``rank + k`` when it has low rank), and,
    if asked, ``num_probes × num_steps`` HVPs in ``num_steps`` batched passes
    for the density and ``trace_max_matvecs`` for the trace. After the
    gradient and the probe, which are timed, it knows what the rest will cost
    (a :class:`~critpoint.analysis.plan.CostPlan`, given to ``on_plan`` and
    logged) before spending it.

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
        ``True`` shows one progress bar (``tqdm.auto``: a widget in a
        notebook) labelled with the phase; a callable is called as
        ``progress(done, total)``. Both count the Hessian-vector products of
        the whole diagnosis, ``total`` being the plan: the fixed phases
        exactly, the eigensolver's expected count, revised as it converges.
    tol : float
        Relative residual tolerance of the eigensolver.
    max_matvecs : int, optional
        The most Hessian-vector products the diagnosis spends, every one
        counted: the symmetry probe's, the density's and the trace's (both
        fixed in advance) are taken from it and the eigensolver gets the
        rest; a budget that leaves it less than one block is refused with an
        ``InputError`` before anything is computed. ``None``: the
        eigensolver's own default budget. An eigensolver that spends its
        share unconverged gives a verdict with its looser bounds and
        ``converged=False``.
    num_probes, num_steps : int
        SLQ probes and Lanczos steps per probe. ``num_probes`` default:
        :func:`critpoint.linalg.slq.default_num_probes` (8 for small models,
        3 from about 7,000 parameters on: one probe's variance on a mass
        fraction falls as ``1/n``).
    trace_max_matvecs : int
        HVP budget of the trace estimate.
    check : bool
        Run the symmetry/determinism probe first.
    delta : float
        Failure probability of the bound on the whole spectrum, in ``(0, 1)``.
    on_plan : callable, optional
        Called once, after the gradient and the symmetry probe and before the
        eigensolver, with the :class:`~critpoint.analysis.plan.CostPlan` of
        the rest: its phases, their products and the estimated seconds from
        the measured ones (``plan.summary()``: "≈ 623 HVPs × 2.6 s ≈ 27 min
        ..."). Without the probe (``check=False``) one product more is
        computed to time it.
    maxiter, trace_matvecs
        Old names of ``max_matvecs`` and ``trace_max_matvecs``, accepted with
        a ``DeprecationWarning`` for one release.
    memory : int, float or str, optional
        Memory budget of the run, bytes or a size such as ``"8GB"``; default
        half the free memory where the work runs. Before anything is
        allocated, :func:`critpoint.analysis.memory.plan_memory` adds up what
        each phase will hold and chooses within it (the Lanczos basis, the
        density's reorthogonalisation, the trace's method and block, the
        share of the linearisations); the plan is in ``Diagnosis.memory``.
        Raises :class:`~critpoint.MemoryBudgetError` up front when even the
        smallest settings do not fit.
    reorth : {"full", "partial", "local"}, optional
        The density's reorthogonalisation (:func:`critpoint.spectral_density`);
        default: the most thorough that fits the budget.
    sampling_error : bool
        Measure the standard errors over batches of ``λ_min``, ``λ_max`` and
        the gradient norm (:mod:`critpoint.analysis.sampling`; data in two
        batches or more, one process): one more pass over the data, counted
        as 2 HVPs. In ``Diagnosis.sampling``.
    sampled : bool
        The data are a sample of a larger set (``max_samples``, a subset):
        the verdict's error bars then include ``SAMPLING_Z`` standard errors
        of the sampling error, and a gradient no larger than that many
        standard errors of its noise counts as critical.

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
    num_probes = (
        default_num_probes(n)
        if num_probes is None
        else _checks.positive_int(num_probes, "num_probes", "or None for the default")
    )
    fixed = {
        "density": density,
        "num_probes": num_probes,
        "num_steps": num_steps,
        "trace": trace,
        "trace_max_matvecs": trace_max_matvecs,
    }
    # A budget too small for the fixed phases is refused before anything is spent.
    # The sampling error's two products are reserved when the verdict uses
    # it; otherwise it is measured only when the budget leaves room for them.
    sampling_products = 2 if sampled else 0
    eigensolver_budget(n, max_matvecs, spent=0, sampling=sampling_products, **fixed)
    memory_plan = functools.partial(
        _memory_plan,
        obj,
        k,
        density,
        num_probes,
        num_steps,
        reorth,
        trace,
        trace_max_matvecs,
        memory,
    )
    mplan = memory_plan()
    t0 = time.perf_counter()
    loss, g = obj.loss_and_grad()
    grad_norm = float(torch.linalg.vector_norm(g.double()))
    t_grad = time.perf_counter() - t0
    bn_check = check_batchnorm(obj, loss)  # one forward more with BatchNorm layers
    if bn_check is not None and bn_check.warning():
        # Tagged: the command line prints it in the result's "Warning" row.
        logger.warning("%s", bn_check.warning(), extra={REPORTED: "batchnorm"})
    H = obj.hessian(check=check, cache_limit=mplan.hvp_cache)
    spent = {}
    costs = None
    if check or on_plan is not None:
        # One timed product says what a product costs; with the check it is
        # also the probe's first product (determinism: a fresh forward pass
        # against the kept one), whose symmetry test then rides on the
        # solver's first block at no cost.
        costs = measure_costs(obj, H, seconds_per_gradient=t_grad, seed=seed)
        spent["symmetry probe" if check else "timing product"] = H.num_matvecs
    if check:  # the first product linearised: the solvers share what is left
        mplan = memory_plan(
            H.cache_bytes,
            seconds_per_product=None if costs is None else costs.seconds_per_product,
            seconds_per_vector=None if costs is None else costs.seconds_per_vector,
        )
    eig_budget = eigensolver_budget(
        n, max_matvecs, spent=H.num_matvecs, sampling=sampling_products, **fixed
    )
    phases = diagnosis_phases(
        n, k=k, max_matvecs=max_matvecs, probe=H.num_matvecs, **fixed
    )
    # The gradient and the probe (or the timing product) are spent already.
    plan = CostPlan(
        tuple(
            replace(p, spent=True, name=next(iter(spent), p.name))
            if p.name == "symmetry probe"
            else replace(p, spent=p.name == "gradient")
            for p in phases
        ),
        costs,
    )
    logger.log(
        logging.INFO if plan.worth_announcing else logging.DEBUG,
        "diagnose: %s",
        plan.summary(),
    )
    if on_plan is not None:
        on_plan(plan)

    with Progress(
        progress, H.num_matvecs + plan.products, "diagnose: eigenvalues"
    ) as bar:
        bar.update(H.num_matvecs)
        dens_planned = plan.product_count("density")
        trace_planned = plan.product_count("trace")
        before = H.num_matvecs
        ext = measure_extremes(
            H,
            k=k,
            tol=tol,
            max_matvecs=eig_budget,
            seed=seed,
            eig_rtol=eig_rtol,
            delta=delta,
            progress=bar.part(after=dens_planned + trace_planned) if progress else None,
            ncv=mplan.ncv,
            basis=mplan.basis,
        )
        spent["eigenvalues"] = H.num_matvecs - before
        bar.update(H.num_matvecs)
        c = ext.curvature
        values, errors, conv = ext.eigenvalues, ext.errors, ext.converged
        spread = None
        room = (
            max_matvecs is None
            or max_matvecs - H.num_matvecs - dens_planned - trace_planned >= 2
        )
        if sampled or (sampling_error and room):
            before = H.num_matvecs
            spread = measure_sampling_error(
                H, ext.vectors[:, 0], ext.vectors[:, -1], g, used=sampled
            )
            if H.num_matvecs > before:
                spent["sampling error"] = H.num_matvecs - before
            bar.update(H.num_matvecs)
        if sampled and spread is not None:
            c = _widened(c, spread, eig_rtol)
        result = verdict(c)
        scale = max(abs(c.lambda_min), abs(c.lambda_max))
        if grad_tol is None:
            grad_tol = default_grad_tol(loss, scale, obj.dtype)

        dens = None
        ratio = negative_fraction = flat_fraction = ratio_stderr = None
        if density:
            bar.describe("diagnose: density")
            before = H.num_matvecs
            dens = spectral_density(
                H,
                num_probes=num_probes,
                num_steps=min(num_steps, n),
                seed=seed,
                # SLQ counts its steps: each is a block of num_probes products.
                progress=_per_step(bar.part(after=trace_planned), num_probes)
                if progress
                else None,
                reorth=mplan.reorth,
                window=mplan.window if mplan.reorth == "partial" else None,
            )
            spent["density"] = H.num_matvecs - before
            bar.update(H.num_matvecs)
            # The density's fractions default to the verdict's zero tolerance.
            dens = dataclasses.replace(dens, zero_tol=c.zero_tol)
            ratio, negative_fraction, flat_fraction = minimum_ratio(dens, c.zero_tol)
            ratio_stderr = dens.fraction_stderr("negative", c.zero_tol)
        tr = None
        if trace:
            bar.describe("diagnose: trace")
            before = H.num_matvecs
            # Positional: the budget's keyword is being renamed in the trace estimator.
            tr = trace_estimate(
                H,
                trace_max_matvecs,
                mplan.trace_method or "auto",
                seed,
                bar.part() if progress else None,
                block_size=mplan.trace_block,
            )
            spent["trace"] = H.num_matvecs - before
        bar.finish(H.num_matvecs)

    u_min, slope = downhill(ext.vectors[:, 0].clone(), g)
    u_max, _ = downhill(ext.vectors[:, -1].clone(), g)
    direction = None
    prediction = None
    step = None
    if c.negative:
        direction = u_min
        step = _escape_step(obj, loss, u_min, slope, c.lambda_min)
        prediction = step.predicted_change

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
        "memory": memory,
        "reorth": reorth,
        "sampling_error": sampling_error,
        "sampled": sampled,
        "dtype": dtype_name(obj.dtype),
        "device": str(obj.device),
        "train_mode": obj.train_mode,
        "bn": obj.bn,
        "bn_layers": len(obj.batchnorm_layers),
        "hvp_mode": obj.hvp_mode,
        "hvp_fallback": obj.hvp_fallback,
        "tf32": _tf32(obj.device),
        "reduction": obj.reduction,
        "params": obj.param_names
        if len(obj.param_names) <= 64
        else f"{len(obj.param_names)} tensors",
    }
    return Diagnosis(
        loss=loss,
        grad_norm=grad_norm,
        grad_tol=float(grad_tol),
        critical=grad_norm <= grad_tol
        or (
            sampled and spread is not None and grad_norm <= spread.z * spread.grad_noise
        ),
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
        num_matvecs_by_phase=spent,
        cost_plan=plan.to_dict(),
        settings=settings,
        lambda_lower=c.lower,
        lambda_upper=c.upper,
        bound_probability=c.probability,
        eigenvector_min=u_min,
        eigenvector_max=u_max,
        escape_step=step,
        batchnorm=bn_check,
        minimum_ratio_stderr=ratio_stderr,
        negative_fraction_stderr=ratio_stderr,
        memory=mplan.to_dict(),
        sampling=spread.to_dict() if spread is not None else None,
    )


def _tf32(device: torch.device) -> dict[str, bool] | None:
    """Whether float32 products on ``device`` run in TF32 (10-bit mantissa): CUDA only.

    PyTorch's defaults (matmuls off, cuDNN convolutions on) bound the accuracy
    of a float32 product near 1e-3 relative where it is on; the settings say
    which held, so a reader can tell the floor of the numbers.
    """
    if device.type != "cuda":
        return None
    return {
        "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def _escape_step(
    obj: Objective, loss: float, u: torch.Tensor, slope: float, curvature: float
) -> LineSearch:
    """The step :func:`critpoint.escape_saddle` would take along ``u``, measured on the loss.

    The same line search with its defaults (first trial
    :func:`critpoint.quadratic_step`, halving until the loss falls by half
    the prediction): a few loss evaluations, no Hessian-vector product.
    """
    theta = obj.theta
    return line_search(
        lambda a: obj.loss(theta + a * u) - loss,
        loss,
        slope,
        curvature,
        dtype=obj.dtype,
    )


def _widened(c: Curvature, spread: SamplingError, eig_rtol: float) -> Curvature:
    """The curvature read with the sampling error added to its error bars."""
    dmin, dmax = spread.z * spread.lambda_min, spread.z * spread.lambda_max
    return curvature(
        c.lambda_min,
        c.lambda_min_error + dmin,
        c.lambda_max,
        c.lambda_max_error + dmax,
        eig_rtol,
        lower=None if c.lower is None else c.lower - dmin,
        upper=None if c.upper is None else c.upper + dmax,
        probability=c.probability,
    )


def _memory_plan(
    obj: Objective,
    k: int,
    density: bool,
    num_probes: int,
    num_steps: int,
    reorth: str | None,
    trace: bool,
    trace_max_matvecs: int,
    memory: int | float | str | None,
    cache_kept: int | None = None,
    *,
    seconds_per_product: float | None = None,
    seconds_per_vector: float | None = None,
) -> MemoryPlan:
    """The memory plan of :func:`diagnose` for this objective (see :func:`plan_memory`)."""
    n = obj.num_params
    return plan_memory(
        n,
        obj.dtype,
        obj.device,
        k=k,
        block_size=default_block_size("BE", k),
        density=density,
        num_probes=num_probes,
        num_steps=min(num_steps, n),
        reorth=reorth,
        trace=trace,
        trace_max_matvecs=trace_max_matvecs,
        hvp_cache=obj.hvp_cache if obj.hvp_mode == "rev-rev" else None,
        hvp_cache_kept=cache_kept,
        memory=memory,
        process_group=obj.process_group,
        seconds_per_product=seconds_per_product,
        seconds_per_vector=seconds_per_vector,
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
            return whole.over(names)

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
    progress = options.pop("progress", False)
    on_plan = options.pop("on_plan", None)
    check_progress(progress)
    layers = [LayerGroup(*group) for group in groups]
    objectives = [build(list(layer.params)) for layer in layers]
    phases = layer_phases(
        [
            (layer.name, o.num_params)
            for layer, o in zip(layers, objectives, strict=True)
        ],
        **options,
    )
    plan = CostPlan(tuple(phases))
    results = []
    with Progress(progress, plan.products, "per layer") as bar:
        for i, (layer, obj) in enumerate(zip(layers, objectives, strict=True)):
            bar.describe(f"per layer: {layer.name}")
            after = sum(p.products for p in phases[i + 1 :])

            def announce(first: CostPlan, name: str = layer.name) -> None:
                # The first layer's measured costs price every layer's phases.
                assert on_plan is not None
                own = tuple(
                    replace(p, name=f"layer {name}: {p.name}") for p in first.phases
                )
                on_plan(CostPlan(own, first.costs).extend(phases[1:]))

            dg = diagnose(
                obj,
                **options,
                progress=bar.part(after=after) if progress else None,
                on_plan=announce if i == 0 and on_plan is not None else None,
            )
            bar.update(sum(r.diagnosis.num_matvecs for r in results) + dg.num_matvecs)
            results.append(
                LayerDiagnosis(layer.name, layer.module_type, list(layer.params), dg)
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
