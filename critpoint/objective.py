"""The objective: a model, its loss and its data as functions of a flat θ.

:class:`Objective` is the only place that knows about models and data. It
turns them into ``loss(θ)``, ``grad(θ)`` and ``hvp(θ, v)`` where θ is a flat
1-D tensor of the selected parameters, and the loss is the exact mean over all
samples (or the exact sum, for a summed loss), however the data are batched.
Everything downstream (operator, solvers, diagnosis) sees only flat vectors.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from critpoint import _autodiff
from critpoint._finite import all_finite
from critpoint._model_state import ModelState, explain_mutation, set_mode
from critpoint.batches import Batches, batch_count, move
from critpoint.errors import (
    InputError,
    NonDeterministicError,
    NonFiniteError,
    SecondDerivativeError,
)
from critpoint.specs import parse_dtype

logger = logging.getLogger("critpoint")

LossFn = Callable[[Any, Any], torch.Tensor]
BatchLossFn = Callable[[nn.Module, Any], torch.Tensor]
ParamSelector = str | Sequence[str] | Callable[[str], bool] | None

#: The functions a model with BatchNorm layers can be analysed as (``Objective(bn=...)``).
BN_MODES = ("eval", "train", "recalibrate")

#: What a batch's loss is over its samples, as torch's losses name it. KLDivLoss's
#: ``"batchmean"`` divides by the batch size: a mean over samples.
_MEANS = frozenset({"mean", "batchmean", "elementwise_mean"})


class _LossModule(nn.Module):
    """Wrap a model and its loss so ``functional_call`` can substitute parameters."""

    def __init__(
        self, model: nn.Module, loss_fn: LossFn | None, batch_loss: BatchLossFn | None
    ) -> None:
        super().__init__()
        self.model = model
        self._loss_fn = loss_fn
        self._batch_loss = batch_loss

    def forward(self, batch: Any) -> torch.Tensor:
        if self._batch_loss is not None:
            return self._batch_loss(self.model, batch)
        inputs, targets = batch[0], batch[1]
        assert self._loss_fn is not None
        return self._loss_fn(self.model(inputs), targets)


def _declared_reduction(loss_fn: Any) -> str | None:
    """The ``reduction`` a loss declares: an ``nn`` loss's attribute, a partial's keyword."""
    value = getattr(loss_fn, "reduction", None)
    if value is None and isinstance(loss_fn, functools.partial):
        value = loss_fn.keywords.get("reduction")
    return value if isinstance(value, str) else None


def resolve_reduction(loss_fn: Any, reduction: str | None) -> str:
    """``"mean"`` or ``"sum"``: what the objective does with the batches' losses.

    Parameters
    ----------
    loss_fn : callable or None
        The loss; an ``nn`` loss (or a ``functools.partial``) says its own
        reduction.
    reduction : {"mean", "sum"} or None
        What the caller says; ``None`` takes the loss's own, else ``"mean"``.

    Raises
    ------
    InputError
        For ``"none"`` (per-sample losses), an unknown value, or a value that
        contradicts the loss's own.
    """
    if reduction is not None and reduction not in ("mean", "sum"):
        msg = f"reduction must be 'mean' or 'sum', got {reduction!r}"
        raise InputError(msg)
    declared = _declared_reduction(loss_fn)
    if declared is None:
        return reduction or "mean"
    if declared == "none":
        msg = (
            f"the loss has reduction='none': it returns one loss per sample, but the "
            f"objective needs one number per batch; use the loss with reduction='mean' "
            f"or 'sum' (for example {type(loss_fn).__name__}(reduction='sum'))"
        )
        raise InputError(msg)
    own = "mean" if declared in _MEANS else declared if declared == "sum" else None
    if own is None:
        msg = f"the loss has reduction={declared!r}; critpoint needs a loss reduced by 'mean' or 'sum'"
        raise InputError(msg)
    if reduction is not None and reduction != own:
        msg = (
            f"the loss has reduction={declared!r} but reduction={reduction!r} was passed; "
            f"drop the argument (the loss's own reduction is used) or change the loss"
        )
        raise InputError(msg)
    return own


def resolve_bn(bn: str | None, train_mode: bool = False) -> str:
    """The BatchNorm mode of an analysis from ``bn=`` and the older ``train_mode=``.

    Parameters
    ----------
    bn : {"eval", "train", "recalibrate"} or None
        The mode asked for; ``None`` takes it from ``train_mode``.
    train_mode : bool
        The older spelling: ``True`` is ``bn="train"``.

    Returns
    -------
    str
        One of :data:`BN_MODES`.

    Raises
    ------
    InputError
        An unknown mode, or ``train_mode=True`` with another ``bn``.
    """
    if bn is None:
        return "train" if train_mode else "eval"
    if bn not in BN_MODES:
        msg = f"bn must be one of {', '.join(map(repr, BN_MODES))}, got {bn!r}"
        raise InputError(msg)
    if train_mode and bn != "train":
        msg = (
            f"train_mode=True (the older spelling of bn='train') contradicts bn={bn!r}; "
            "give bn= alone"
        )
        raise InputError(msg)
    return bn


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every BatchNorm layer that keeps running statistics.

    Only these compute another function in eval mode than in train mode (a
    layer built with ``track_running_stats=False`` normalises by batch
    statistics in both).
    """
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
    ]


def _first_line(exc: BaseException | None) -> str:
    """The first line of an error's message, for a short quote."""
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


class Objective:
    """The mean (or summed) loss of a model over a whole data set, as a function of a flat θ.

    Parameters
    ----------
    model : torch.nn.Module
        The model. It is never changed behind the caller's back: train/eval
        mode, parameters and buffers are as they were after every call, except
        :meth:`set_theta`.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)`` returning the loss of a batch, reduced
        over its samples as ``reduction`` says (torch's default is the mean).
        Needed unless ``batch_loss`` is given.
    data : tuple of tensors, Data, Dataset or iterable of batches
        ``(inputs, targets)`` tensors with a leading sample dimension (or a
        :class:`critpoint.data.Data` from :func:`~critpoint.data.load_data`), a
        ``torch.utils.data.Dataset``, or a re-iterable of batches such as a
        ``DataLoader``. The objective is the exact mean over all samples: each
        batch is weighted by its size, so a short last batch counts exactly
        (for a summed loss, the exact sum: the batches' sums add up).
    params : str, sequence of str, callable or None
        Which parameters θ holds. ``None``: all trainable ones. Glob patterns
        (``"layers.0.*"``) or a predicate on the parameter name select a
        subset, e.g. one layer for a per-layer Hessian.
    train_mode : bool
        The older spelling of ``bn="train"`` (``True``); kept working. With
        another ``bn`` it is an error.
    device : str or torch.device, optional
        Where to compute. Defaults to the device of the model's parameters. A
        different device analyses a copy of the model.
    dtype : torch.dtype or str, optional
        Floating dtype of the analysis, e.g. ``torch.float64`` or ``"float64"``. A dtype other
        than the model's analyses a copy of the model in that precision.
    batch_loss : callable, optional
        ``batch_loss(model, batch)`` returning the loss of a batch (its mean,
        or its sum with ``reduction="sum"``), for batches ``loss_fn`` cannot
        handle (dicts, language models).
    process_group : torch.distributed.ProcessGroup, optional
        Data-parallel evaluation: each rank holds a shard of the data; sums
        are all-reduced once per product.
    reduction : {"mean", "sum"}, optional
        How a batch's loss is reduced over its samples, and so what the
        objective is: ``"mean"``, the mean over all samples; ``"sum"``, the
        sum over all samples (never divided, whatever the batching or the
        number of processes). Default: the loss's own ``reduction`` for an
        ``nn`` loss (or a ``functools.partial`` that sets it), else
        ``"mean"``. Losses with ``reduction="none"`` are refused.
    bn : {"eval", "train", "recalibrate"}, optional
        Which function a model with BatchNorm layers is analysed as (default
        ``"eval"``, or ``"train"`` when ``train_mode=True``):

        * ``"eval"``: eval mode, BatchNorm normalises by the model's running
          statistics (and dropout is off), so the Hessian is a fixed
          symmetric matrix and the loss a sum over samples. After short
          training the running statistics lag behind the weights, and this
          function can be far from the one training minimised.
        * ``"train"``: BatchNorm normalises each batch by its own statistics,
          the running statistics neither used nor updated: the function
          training sees; it depends on the batching (``batch_size``).
        * ``"recalibrate"``: the running statistics are first re-estimated
          over the analysis data as ``torch.optim.swa_utils.update_bn`` does
          (every BatchNorm layer in train mode with ``momentum=None``: the
          cumulative average of the batches' means and unbiased variances),
          then the model is analysed in eval mode: the fixed function a
          deployed model computes, without the lag. The estimate is written
          to new tensors (a copy of the BatchNorm state; the model's own
          buffers are never written), costs one forward pass over the data,
          and is made again whenever the parameters change (``set_theta``,
          or an optimizer moving them in place). Unlike ``update_bn`` the
          other layers stay in eval mode (dropout off), so the estimate is
          deterministic and made on the activations of the deployed network.
          Under ``process_group`` the batches of every rank are averaged.
    batch_size : int, optional
        Split ``(inputs, targets)`` tensors (default 4096 samples a batch) or
        build the ``DataLoader`` around a ``Dataset`` (default 256).
    hvp_mode : {"rev-rev", "fwd-rev"}
        Reverse-over-reverse (default: measured the fastest, 2.5× a gradient
        for one product and 1.8× per vector in a block on the digits MLP) or
        forward-over-reverse (builds no second graph; less memory for very
        wide blocks). Where forward mode cannot run the model (a layer with
        no forward-mode derivative in torch) or its products disagree with
        reverse-over-reverse (checked by :meth:`hessian`'s probe), the
        objective falls back to ``"rev-rev"``, logs a warning and says why in
        :attr:`hvp_fallback`.
    chunk_size : int, optional
        Most vectors pushed through ``vmap`` at once in :meth:`hvp` on a block;
        ``None`` pushes them all (fastest, most memory).
    hvp_cache : "auto", int or None
        Memory, in bytes, a :class:`~critpoint.HessianOperator` may keep to
        hold every batch's linearisation (the autograd graph of its forward
        and first backward pass, ``rev-rev`` mode only), so that each product
        after the first runs the second backward pass alone (about half the
        cost on the digits networks). The cache is all or nothing: when the
        measured size of the whole data's graphs exceeds the budget, every
        product recomputes. ``"auto"`` (default): half the free GPU memory, a
        quarter of the free host memory. ``None`` or ``0``: never cache. The
        operator reads this setting (:meth:`HessianOperator.cache_budget`)
        and passes the budget to :meth:`linearize`.

    Attributes
    ----------
    param_names : list of str
        Names of the selected parameters, in the order they are packed in θ.
    num_params : int
        ``n``, the length of θ.
    reduction : {"mean", "sum"}
        What the objective is over the samples.
    hvp_mode : {"rev-rev", "fwd-rev"}
        The mode products run in (``"rev-rev"`` after a fallback).
    hvp_fallback : str or None
        Why forward-over-reverse was given up, or ``None``.
    bn : {"eval", "train", "recalibrate"}
        The BatchNorm mode of the analysis.
    train_mode : bool
        ``bn == "train"``.

    Notes
    -----
    Every evaluation runs attention through PyTorch's math kernel of
    ``F.scaled_dot_product_attention`` with the fused fast path of
    ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` off: the fused
    kernels have no second derivative, and the fast path computes another
    function with padding masks. A layer that still has no second derivative
    raises :class:`~critpoint.SecondDerivativeError` naming it.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | None = None,
        data: Any = None,
        params: ParamSelector = None,
        train_mode: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        batch_loss: BatchLossFn | None = None,
        process_group: Any = None,
        *,
        batch_size: int | None = None,
        hvp_mode: _autodiff.HVPMode = "rev-rev",
        chunk_size: int | None = None,
        hvp_cache: int | str | None = "auto",
        reduction: str | None = None,
        bn: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            msg = f"model must be a torch.nn.Module, got {type(model).__name__}"
            raise InputError(msg)
        if loss_fn is None and batch_loss is None:
            msg = "give loss_fn(outputs, targets) or batch_loss(model, batch); neither was given"
            raise InputError(msg)
        if loss_fn is not None and batch_loss is not None:
            msg = "give either loss_fn or batch_loss, not both"
            raise InputError(msg)
        if data is None:
            msg = "data is required: (inputs, targets) tensors, a Dataset, or a DataLoader"
            raise InputError(msg)
        if hvp_mode not in ("fwd-rev", "rev-rev"):
            msg = f"hvp_mode must be 'fwd-rev' or 'rev-rev', got {hvp_mode!r}"
            raise InputError(msg)
        cache_ok = hvp_cache is None or hvp_cache == "auto"
        cache_ok = cache_ok or (
            isinstance(hvp_cache, int)
            and not isinstance(hvp_cache, bool)
            and hvp_cache >= 0
        )
        if not cache_ok:
            msg = f"hvp_cache must be 'auto', None or a number of bytes >= 0, got {hvp_cache!r}"
            raise InputError(msg)
        dtype = parse_dtype(dtype)  # a torch.dtype or its name ("float64")
        self.reduction = resolve_reduction(loss_fn, reduction)
        self.model = model
        self.bn = resolve_bn(bn, bool(train_mode))
        self.hvp_mode: _autodiff.HVPMode = hvp_mode
        self.hvp_fallback: str | None = None
        self.chunk_size = chunk_size
        self.hvp_cache = hvp_cache
        self.process_group = process_group
        self._batches = Batches(data, batch_size)
        self._batch_loss = batch_loss

        first = next(iter(model.parameters()), None)
        model_device = first.device if first is not None else torch.device("cpu")
        model_dtype = first.dtype if first is not None else torch.get_default_dtype()
        self.device = torch.device(device) if device is not None else model_device
        self.dtype = dtype if dtype is not None else model_dtype
        if self.dtype in (torch.float16, torch.bfloat16):
            where = "dtype" if dtype is not None else "the model's parameters"
            msg = (
                f"{where} {self.dtype} is too coarse for eigensolvers (rounding swamps "
                "small eigenvalues); analyse a copy in torch.float32 or torch.float64: "
                "Objective(..., dtype=torch.float32)"
            )
            raise InputError(msg)
        if self.device != model_device or self.dtype != model_dtype:
            # Analyse a copy; the user's model keeps its device and precision.
            self._work = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        else:
            self._work = model
        self._cast_inputs: torch.dtype | None = (
            self.dtype if dtype is not None else None
        )

        self._names = self._select(params)
        named = dict(self._work.named_parameters())
        self._shapes = [named[name].shape for name in self._names]
        self._numels = [named[name].numel() for name in self._names]
        self.num_params = sum(self._numels)
        self._wrapper = _LossModule(self._work, loss_fn, batch_loss)
        self._num_samples: int | None = None
        # Recalibrated BatchNorm statistics, and the parameter versions they belong to.
        self._bn_stats: dict[str, tuple[torch.Tensor, ...]] | None = None
        self._bn_stats_key: tuple[tuple[int, int], ...] | None = None
        self._validate_first_batch()
        if self.bn == "recalibrate":
            self._recalibrated_statistics()  # now: its failures surface here

    @property
    def train_mode(self) -> bool:
        """Whether BatchNorm uses batch statistics (``bn == "train"``)."""
        return self.bn == "train"

    @property
    def batchnorm_layers(self) -> list[str]:
        """Names of the BatchNorm layers with running statistics (empty: every mode agrees)."""
        return [name for name, _ in batchnorm_modules(self._work)]

    # ----------------------------------------------------------------- set-up
    def _select(self, params: ParamSelector) -> list[str]:
        trainable = [
            name for name, p in self._work.named_parameters() if p.requires_grad
        ]
        if params is None:
            names = trainable
        elif callable(params):
            names = [name for name in trainable if params(name)]
        else:
            patterns = [params] if isinstance(params, str) else list(params)
            if not all(isinstance(p, str) for p in patterns):
                msg = f"params must be glob patterns (str), a predicate on names, or None; got {params!r}"
                raise InputError(msg)
            names = [
                n for n in trainable if any(fnmatch.fnmatchcase(n, p) for p in patterns)
            ]
        if not names:
            shown = ", ".join(trainable[:12]) + (" …" if len(trainable) > 12 else "")
            msg = (
                f"params={params!r} selects no trainable parameter; the model's trainable "
                f"parameters are: {shown or '(none)'}"
            )
            raise InputError(msg)
        bad = [n for n in names if not named_is_float(self._work, n)]
        if bad:
            msg = (
                f"parameters {bad} are not floating point and cannot be differentiated"
            )
            raise InputError(msg)
        return names

    def _validate_first_batch(self) -> None:
        batch = self._batches.first()
        if self._batch_loss is None and not (
            isinstance(batch, (tuple, list))
            and len(batch) >= 2
            and isinstance(batch[0], torch.Tensor)
            and isinstance(batch[1], torch.Tensor)
        ):
            msg = (
                f"a batch is a {type(batch).__name__}, not an (inputs, targets) pair of tensors; "
                "for other batches (dicts, token sequences) pass batch_loss=fn(model, batch) "
                "returning the batch's mean loss"
            )
            raise InputError(msg)
        batch_count(batch)
        batch = move(batch, self.device, self._cast_inputs)
        # Before any recalibration (that needs a model that runs).
        mode = "eval" if self.bn == "recalibrate" else self.bn
        with self._session(mode), _autodiff.kernels(), torch.no_grad():
            try:
                value = _autodiff.functional_call(
                    self._wrapper, self._param_dict(self.theta), (batch,)
                )
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                shapes = ""
                if isinstance(batch, (tuple, list)) and len(batch) >= 2:
                    shapes = (
                        f" (inputs {tuple(batch[0].shape)} {batch[0].dtype}, "
                        f"targets {tuple(batch[1].shape)} {batch[1].dtype})"
                    )
                msg = f"the model and loss fail on the first batch{shapes}: {exc}"
                raise InputError(msg) from exc
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = (
                tuple(value.shape)
                if isinstance(value, torch.Tensor)
                else type(value).__name__
            )
            msg = (
                f"the loss of a batch must be a scalar (its mean over the batch), got {got}; "
                "use reduction='mean' or return loss.mean()"
            )
            raise InputError(msg)

    @contextlib.contextmanager
    def _session(self, bn: str | None = None) -> Iterator[None]:
        """Set the mode the analysis needs; restore the model's own state after.

        Every buffer, ``requires_grad`` flag and mode flag is captured first
        and put back after (see :class:`critpoint._model_state.ModelState`), so
        a forward that writes to buffers (a counter, spectral norm's ``_u``
        under ``train_mode=True``) or a ``train()`` override that freezes
        parameters leaves no trace, and every pass starts from the same buffers.
        ``bn`` overrides the objective's BatchNorm mode for this session.
        """
        mode = self.bn if bn is None else bn
        stats = self._recalibrated_statistics() if mode == "recalibrate" else None
        state = ModelState(self._work)
        selected = set(self._names)
        try:
            set_mode(self._work, mode == "train")
            for name, p in self._work.named_parameters():
                if name not in selected and p.requires_grad:
                    p.requires_grad_(False)  # no graph for parameters outside θ
            if mode == "train":
                for m in self._work.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        # Batch statistics without updating the running ones
                        # (the captured state puts the tensors back).
                        m.running_mean = None
                        m.running_var = None
                        m.num_batches_tracked = None
            elif stats is not None:
                # The recalibrated statistics in place of the model's own, for
                # this session only (the captured state puts the originals back).
                for name, m in batchnorm_modules(self._work):
                    m.running_mean, m.running_var, m.num_batches_tracked = stats[name]
            yield
        except (RuntimeError, AssertionError) as exc:
            message = explain_mutation(exc, self._work)
            if message is None:
                raise
            raise InputError(message) from exc
        finally:
            state.restore()

    def _parameters_key(self) -> tuple[tuple[int, int], ...]:
        """Identity and version of every parameter: changes when any is written."""
        return tuple((id(p), p._version) for p in self._work.parameters())

    def _recalibrated_statistics(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """The BatchNorm statistics re-estimated at the current parameters (``bn="recalibrate"``).

        Cached until a parameter is written (``set_theta``, an optimizer step).
        One forward pass over the data, as ``torch.optim.swa_utils.update_bn``:
        each BatchNorm layer in train mode with ``momentum=None`` on fresh
        buffers (zero mean, unit variance, no batch counted), so its running
        statistics become the cumulative average over the batches; the other
        layers stay in eval mode. The model's own buffers are never written.

        Returns
        -------
        dict
            ``{layer name: (running_mean, running_var, num_batches_tracked)}``.
        """
        key = self._parameters_key()
        if self._bn_stats is not None and self._bn_stats_key == key:
            return self._bn_stats
        layers = batchnorm_modules(self._work)
        state = ModelState(self._work)
        momenta = [(m, m.momentum) for _, m in layers]
        try:
            set_mode(self._work, False)
            for _, m in layers:
                m.train()
                m.momentum = None  # cumulative average, as update_bn
                m.running_mean = torch.zeros_like(m.running_mean)
                m.running_var = torch.ones_like(m.running_var)
                m.num_batches_tracked = torch.zeros_like(m.num_batches_tracked)
            with torch.no_grad(), _autodiff.kernels():
                for _, batch in self._batches.placed(self.device, self._cast_inputs):
                    try:
                        self._wrapper(batch)
                    except (RuntimeError, ValueError) as exc:
                        msg = (
                            "bn='recalibrate' could not re-estimate the BatchNorm statistics "
                            f"(a forward pass in train mode failed: {_first_line(exc)}); use "
                            "larger batches (batch_size=) or bn='eval'"
                        )
                        raise InputError(msg) from exc
            stats = {
                name: (m.running_mean, m.running_var, m.num_batches_tracked)
                for name, m in layers
            }
        finally:
            for m, momentum in momenta:
                m.momentum = momentum
            state.restore()
        if self.process_group is not None:
            stats = self._average_over_ranks(stats)
        self._bn_stats, self._bn_stats_key = stats, key
        logger.debug(
            "re-estimated the statistics of %d BatchNorm layers over the data",
            len(stats),
        )
        return stats

    def _average_over_ranks(
        self, stats: dict[str, tuple[torch.Tensor, ...]]
    ) -> dict[str, tuple[torch.Tensor, ...]]:
        """Every rank's cumulative averages merged: weighted by the batches each counted."""
        import torch.distributed as dist

        out = {}
        for name, (mean, var, count) in stats.items():
            n = count.to(mean.dtype)
            parts = torch.cat([mean * n, var * n, n.reshape(1)])
            dist.all_reduce(parts, op=dist.ReduceOp.SUM, group=self.process_group)
            total = parts[-1]
            size = mean.numel()
            out[name] = (
                parts[:size] / total,
                parts[size : 2 * size] / total,
                total.round().to(count.dtype).reshape(count.shape),
            )
        return out

    def over(self, params: ParamSelector) -> Objective:
        """The same model, loss, data and settings over other parameters.

        Parameters
        ----------
        params : glob patterns, names or a predicate on names
            As ``params=`` of the constructor (e.g. one layer's names).

        Returns
        -------
        Objective
            Shares the model and the data (nothing is copied); its own
            selection, θ and linearisations.
        """
        return Objective(
            self.model,
            self._wrapper._loss_fn,
            self._batches,
            params=params,
            bn=self.bn,
            device=self.device,
            dtype=self._cast_inputs,
            batch_loss=self._wrapper._batch_loss,
            process_group=self.process_group,
            hvp_mode=self.hvp_mode,
            chunk_size=self.chunk_size,
            hvp_cache=self.hvp_cache,
            reduction=self.reduction,
        )

    # -------------------------------------------------------------- θ <-> model
    @property
    def param_names(self) -> list[str]:
        """Names of the selected parameters, in the order they are packed in θ."""
        return list(self._names)

    @property
    def param_sizes(self) -> list[int]:
        """Number of entries each selected parameter takes in θ."""
        return list(self._numels)

    @property
    def theta(self) -> torch.Tensor:
        """A copy of the current parameters as a flat tensor of shape ``(n,)``."""
        named = dict(self._work.named_parameters())
        # torch.cat copies: the result shares no memory with the parameters.
        return torch.cat([named[name].detach().reshape(-1) for name in self._names])

    def _param_dict(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(theta, self._numels)
        return {
            "model." + name: piece.view(shape)
            for name, piece, shape in zip(
                self._names, pieces, self._shapes, strict=True
            )
        }

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector of shape ``(n,)`` into ``{name: tensor}`` views."""
        theta = self._check_vector(theta, "theta")
        return {k[len("model.") :]: v for k, v in self._param_dict(theta).items()}

    def set_theta(self, theta: torch.Tensor) -> None:
        """Write θ (shape ``(n,)``) into the model's parameters, in place.

        When the analysis runs on a copy (another ``dtype`` or ``device``), the
        user's model is updated too, in its own precision and on its own device.
        """
        theta = self._check_vector(theta, "theta")
        pieces = self.unflatten(theta)
        with torch.no_grad():
            targets = [self._work]
            if self._work is not self.model:
                targets.append(self.model)
            for module in targets:
                named = dict(module.named_parameters())
                for name, value in pieces.items():
                    named[name].copy_(
                        value.to(device=named[name].device, dtype=named[name].dtype)
                    )

    def _check_vector(
        self, v: torch.Tensor | None, what: str, allow_block: bool = False
    ) -> torch.Tensor:
        if v is None:
            return self.theta
        if not isinstance(v, torch.Tensor):
            msg = f"{what} must be a torch.Tensor, got {type(v).__name__}"
            raise InputError(msg)
        ok = v.ndim == 1 or (allow_block and v.ndim == 2)
        if not ok or v.shape[0] != self.num_params:
            want = f"({self.num_params},)" + (
                f" or ({self.num_params}, k)" if allow_block else ""
            )
            msg = f"{what} must have shape {want}, got {tuple(v.shape)}"
            raise InputError(msg)
        if not v.is_floating_point():
            msg = f"{what} must be floating point, got {v.dtype}"
            raise InputError(msg)
        return v.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------- evaluation
    def _batch_fn(self, batch: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        """The batch's summed loss as a function of θ: summing these gives the total."""
        # A mean is weighted by the batch's size; a sum is already a sum.
        weight = batch_count(batch) if self.reduction == "mean" else None

        def f(theta: torch.Tensor) -> torch.Tensor:
            value = _autodiff.functional_call(
                self._wrapper, self._param_dict(theta), (batch,)
            )
            return value if weight is None else value * weight

        return f

    def _reduce(
        self,
        compute: Callable[[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor],
        what: str,
        bn: str | None = None,
    ) -> torch.Tensor:
        """Sum ``compute(f_batch)`` over all batches (divided by the sample count for a mean)."""

        def parts() -> Iterator[tuple[int, torch.Tensor]]:
            for count, batch in self._batches.placed(self.device, self._cast_inputs):
                yield count, compute(self._batch_fn(batch))

        with self._session(bn), _autodiff.kernels():
            return self._sum(parts(), what)

    def _sum(
        self, parts: Iterable[tuple[int, torch.Tensor]], what: str
    ) -> torch.Tensor:
        """Sum per-batch ``(count, part)`` pairs, all-reduce, divide by the sample count for a mean."""
        total: torch.Tensor | None = None
        count = 0
        # Per-batch sums, read only on failure to name the batch (NaN/Inf in a
        # part reaches its sum; see all_finite).
        sums: list[torch.Tensor] = []
        for size, part in parts:
            count += size
            sums.append(part.sum())
            total = part if total is None else total + part
        if total is None:
            msg = "the data yielded no batch on this pass; a DataLoader must be re-iterable"
            raise InputError(msg)
        if self.process_group is not None:
            import torch.distributed as dist

            # NaN/Inf reach every rank through the sum: all ranks raise together.
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.process_group)
            count = self._global_count(count)
        elif self._num_samples is None:
            self._num_samples = count
        # One device-to-host check per product, not one per batch.
        if not all_finite(total):
            bad = [i for i, s in enumerate(sums) if not bool(torch.isfinite(s))]
            raise NonFiniteError(
                self._where_nonfinite(total, what, bad[0] if bad else None)
            )
        return total / count if self.reduction == "mean" else total

    def _global_count(self, local: int) -> int:
        if self._num_samples is None:
            import torch.distributed as dist

            t = torch.tensor([local], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.process_group)
            self._num_samples = int(t.item())
        return self._num_samples

    def _where_nonfinite(self, part: torch.Tensor, what: str, index: int | None) -> str:
        where = "on another rank's shard" if index is None else f"on batch {index}"
        if part.ndim == 0:
            return (
                f"the {what} is {part.item()} {where}; check the inputs of that batch "
                "for NaN/Inf and the loss for log(0) or overflow"
            )
        rows = part if part.ndim == 1 else part.abs().sum(dim=1)
        bad = (~torch.isfinite(rows)).nonzero()
        first = int(bad[0].item()) if len(bad) else 0
        offset = 0
        name = self._names[0]
        for candidate, size in zip(self._names, self._numels, strict=True):
            if first < offset + size:
                name = candidate
                break
            offset += size
        return (
            f"the {what} has NaN/Inf {where}, first in parameter '{name}' "
            f"(entry {first - offset}); check that batch's inputs and the parameter's values, "
            "or analyse in float64 (dtype=torch.float64)"
        )

    @property
    def num_batches(self) -> int | None:
        """Number of batches this process reads, when known without reading the data."""
        return self._batches.count

    @property
    def num_samples(self) -> int:
        """Number of samples in the data (all ranks together); costs one pass if unknown."""
        if self._num_samples is None:
            self.loss()
        assert self._num_samples is not None
        return self._num_samples

    def loss(
        self, theta: torch.Tensor | None = None, *, bn: str | None = None
    ) -> float:
        """Loss over all samples at θ (default: the model's current parameters).

        The mean over the samples, or their sum when :attr:`reduction` is ``"sum"``.

        Parameters
        ----------
        theta : torch.Tensor, optional
            Point of shape ``(n,)``.
        bn : {"eval", "train", "recalibrate"}, optional
            Evaluate with another BatchNorm mode than the objective's own
            (:attr:`bn`), e.g. ``bn="train"`` for the batch-statistics loss
            of an eval-mode objective; ``"eval"`` always uses the model's own
            running statistics. One pass (``"recalibrate"`` adds the
            estimate's pass when it is not at hand).
        """
        theta = self._check_vector(theta, "theta")
        mode = None if bn is None else resolve_bn(bn)
        with torch.no_grad():
            value = self._reduce(lambda f: f(theta).detach(), "loss", mode)
        return float(value.item())

    def grad(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient of the loss (mean or sum, as :meth:`loss`) at θ, shape ``(n,)``."""
        theta = self._check_vector(theta, "theta")
        return self._reduce(lambda f: _autodiff.gradient(f, theta), "gradient")

    def loss_and_grad(
        self, theta: torch.Tensor | None = None
    ) -> tuple[float, torch.Tensor]:
        """The loss and its gradient (shape ``(n,)``) in one pass over the data."""
        theta = self._check_vector(theta, "theta")
        values: list[torch.Tensor] = []

        def both(f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            value, g = _autodiff.value_and_gradient(f, theta)
            values.append(value.reshape(1))
            return g

        g = self._reduce(both, "gradient")
        total = torch.cat(values).sum()
        if self.process_group is not None:
            import torch.distributed as dist

            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.process_group)
        if self.reduction == "sum":
            return float(total.item()), g
        return float(total.item()) / self.num_samples, g

    def hvp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Hessian-vector product at θ.

        Parameters
        ----------
        v : torch.Tensor
            Shape ``(n,)`` for one product, or ``(n, k)`` for ``k`` products in
            one batched pass over the data.
        theta : torch.Tensor, optional
            Point of shape ``(n,)``; default the model's current parameters.

        Returns
        -------
        torch.Tensor
            ``H v`` with the shape of ``v``.

        See Also
        --------
        linearize : products at a fixed θ, validated once (what
            :class:`~critpoint.HessianOperator` runs on).
        """
        v = self._check_vector(v, "v", allow_block=True)
        theta = self._check_vector(theta, "theta")
        return Linearization(self, theta).hvp(v)

    def _hvp_at(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``H v`` at θ, both already checked; forward mode falls back where it cannot run."""
        if v.ndim == 2 and v.shape[1] == 0:
            return torch.zeros_like(v)
        with self._explain_missing_derivative():
            if self.hvp_mode == "fwd-rev":
                try:
                    return self._products(v, theta, "fwd-rev")
                except (RuntimeError, NotImplementedError) as exc:
                    if not _autodiff.forward_ad_gap(exc):
                        raise
                    out = self._products(v, theta, "rev-rev")
                    self._fall_back(
                        f"forward mode cannot run this model ({_first_line(exc)})"
                    )
                    return out
            return self._products(v, theta, "rev-rev")

    def _products(
        self, v: torch.Tensor, theta: torch.Tensor, mode: _autodiff.HVPMode
    ) -> torch.Tensor:
        """``H v`` in the given mode, one pass over the data; ``v`` is ``(n,)`` or ``(n, k)``."""
        if v.ndim == 1:
            return self._reduce(
                lambda f: _autodiff.hvp(f, theta, v, mode), "Hessian-vector product"
            )
        return self._reduce(
            lambda f: _autodiff.hvp_block(f, theta, v, mode, self.chunk_size),
            "Hessian-vector product",
        )

    def _fall_back(self, why: str) -> None:
        """Give up forward-over-reverse for good, saying why (log and :attr:`hvp_fallback`)."""
        self.hvp_fallback = why
        self.hvp_mode = "rev-rev"
        logger.warning("hvp_mode='fwd-rev' falls back to reverse-over-reverse: %s", why)

    def _why_modes_differ(self) -> str:
        """Why forward and reverse mode may disagree on this model, in words."""
        selected = set(self._names)
        padded = [
            name
            for name, m in self._work.named_modules()
            if isinstance(m, nn.Embedding)
            and m.padding_idx is not None
            and (f"{name}.weight" if name else "weight") in selected
        ]
        if padded:
            # Reverse mode never differentiates the padding row (its gradient is
            # zero by definition); forward mode does, so the two "Hessians" differ.
            return (
                f"nn.Embedding with padding_idx in {', '.join(padded[:3])}: torch's reverse "
                "mode treats the padding row as frozen, its forward mode does not"
            )
        return "a torch forward-mode bug in one of its layers"

    @contextlib.contextmanager
    def _explain_missing_derivative(self) -> Iterator[None]:
        """Turn torch's "derivative ... not implemented" into an error naming the layer."""
        try:
            yield
        except (RuntimeError, NotImplementedError) as exc:
            found = _autodiff.missing_derivative(exc)
            if found is None:
                raise
            raise SecondDerivativeError(self._blame(found[1], exc)) from exc

    def _blame(
        self,
        op: str | None,
        exc: BaseException | None,
        culprits: list[Any] | None = None,
    ) -> str:
        """A message naming the layers that run ``op`` (or custom Functions, for ``None``).

        Without ``culprits`` (from :meth:`_culprits`) it runs one forward pass
        on the first batch with gradients and forward hooks to find them.
        """
        if culprits is None:
            try:
                culprits = self._culprits(op)
            except Exception as inner:  # the message must not hide the error
                logger.debug("could not locate the layer: %s", inner)
                culprits = []
        where = ", ".join(c.where() for c in culprits[:4]) or "a layer of the model"
        after = "or analyse only parameters after that layer (params=...)"
        if op is not None:
            return (
                f"{where} runs aten::{op}, which torch cannot differentiate twice, so no "
                "Hessian-vector product can go through it; fix: compute it with operations "
                "torch differentiates twice (for attention F.scaled_dot_product_attention, "
                "which critpoint runs with its math kernel; fused kernels of other libraries "
                f"have no second derivative), {after}"
            )
        if culprits:
            names = ", ".join(sorted({c.node for c in culprits}))
            why = (
                "whose backward is marked @once_differentiable: torch does not differentiate "
                "it, so the Hessian through it is wrong"
                if any(c.once_differentiable for c in culprits)
                else "whose backward torch may not differentiate (computed outside autograd?), "
                "which would make the Hessian through it wrong"
            )
            return (
                f"{where} runs the custom autograd.Function {names}, {why}; fix: write that "
                f"backward with differentiable torch operations, {after}"
            )
        return (
            f"a layer has no second derivative in torch ({_first_line(exc)}); fix: compute "
            f"it with operations torch differentiates twice, {after}"
        )

    def _culprits(self, op: str | None) -> list[Any]:
        """Layers whose forward makes ``op``'s node (custom Functions for ``None``), first batch."""
        from critpoint._graph import find_nodes

        batch = move(self._batches.first(), self.device, self._cast_inputs)
        theta = self.theta.requires_grad_(True)

        def run() -> torch.Tensor:
            return self._batch_fn(batch)(theta)

        with self._session(), _autodiff.kernels(), torch.enable_grad():
            return find_nodes(self._work, run, op)

    # ------------------------------------------------------------ linearisation
    def linearize(
        self, theta: torch.Tensor | None = None, *, max_bytes: float = 0
    ) -> Linearization:
        """The gradient linearised at θ: ``v ↦ H(θ) v``, with θ checked once.

        Parameters
        ----------
        theta : torch.Tensor, optional
            Point of shape ``(n,)``; default the current parameters. It is
            copied: later changes to the model or to the tensor do not move
            the linearisation.
        max_bytes : float
            Memory the linearisation may keep. In ``rev-rev`` mode, with
            ``max_bytes > 0``, every batch is linearised now, in one pass, and
            the graphs of its forward and first backward pass are kept when
            the whole data's fit: each product then runs the second backward
            pass only. All or nothing: the first batch's graph is measured
            while it is built (saved-tensor hooks, no extra pass), the whole
            data's is estimated from it per sample, and the pass stops as soon
            as the running estimate exceeds ``max_bytes`` (then nothing is
            kept and every product recomputes). ``0`` (default): keep nothing.

        Returns
        -------
        Linearization
            Its :meth:`~Linearization.hvp` takes vectors of shape ``(n,)`` or
            ``(n, k)`` already in this objective's dtype and on its device.
        """
        theta = self._check_vector(theta, "theta").detach().clone()
        pieces, nbytes = None, 0
        if max_bytes > 0 and self.hvp_mode == "rev-rev":
            retained = self._retain_batches(theta, max_bytes)
            if retained is not None:
                pieces, nbytes = retained
        return Linearization(self, theta, pieces, nbytes=nbytes)

    def _retain_batches(
        self, theta: torch.Tensor, budget: float
    ) -> tuple[list[tuple[int, _autodiff.Linearized]], int] | None:
        """Every batch's kept graph at θ and their estimated bytes, or ``None`` over ``budget``."""
        pieces: list[tuple[int, _autodiff.Linearized]] = []
        per_sample: float | None = None
        spent = 0.0
        with self._session(), _autodiff.kernels():
            for count, batch in self._batches.placed(self.device, self._cast_inputs):
                f = self._batch_fn(batch)
                if per_sample is None:
                    # The first batch's graph is measured while it is built.
                    try:
                        apply, measured = _autodiff.retain(f, theta, measure=True)
                    except RuntimeError as exc:  # plain autograd cannot run this loss
                        logger.info("HVP cache off: plain autograd failed (%s)", exc)
                        return None
                    per_sample = measured / max(count, 1)
                    known = self._num_samples
                    if known is not None and per_sample * known > budget:
                        logger.info(
                            "HVP cache off: the linearisations need about %.0f MB, "
                            "the budget is %.0f MB",
                            per_sample * known / 2**20,
                            budget / 2**20,
                        )
                        return None
                else:
                    apply = None  # built below, once it is known to fit
                spent += per_sample * count
                if spent > budget:
                    return None
                if apply is None:
                    apply, _ = _autodiff.retain(f, theta)
                pieces.append((count, apply))
        return (pieces, int(spent)) if pieces else None

    def _hvp_retained(
        self, pieces: list[tuple[int, _autodiff.Linearized]], v: torch.Tensor
    ) -> torch.Tensor:
        """``H v`` from the kept graphs of :meth:`_retain_batches`; ``v`` is ``(n,)`` or ``(n, k)``."""
        if v.ndim == 2 and v.shape[1] == 0:
            return torch.zeros_like(v)
        with self._explain_missing_derivative():
            return self._sum(
                ((count, apply(v, self.chunk_size)) for count, apply in pieces),
                "Hessian-vector product",
            )

    def batch_terms(
        self,
        U: torch.Tensor,
        direction: torch.Tensor | None = None,
        theta: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Each batch's part of the curvatures ``uᵀHu`` and of the slope ``dᵀg``: one pass.

        The objective is a sum over its batches of their summed losses ``s_b``
        (divided by the sample count ``N`` for a mean), so ``uᵀHu`` and
        ``dᵀg`` are sums of the batches' ``uᵀ∇²s_b u`` and ``dᵀ∇s_b``: what
        the standard error over batches needs. One pass over the data with
        plain autograd: per batch a forward and first backward pass, then one
        second backward pass per column of ``U``.

        Parameters
        ----------
        U : torch.Tensor
            Shape ``(n, k)``: the directions (Ritz vectors), in this
            objective's dtype and on its device.
        direction : torch.Tensor, optional
            Shape ``(n,)``: ``dᵀ∇s_b`` per batch as well (the unit gradient
            gives the batches' parts of the gradient norm).
        theta : torch.Tensor, optional
            The point; default the current parameters.

        Returns
        -------
        counts : torch.Tensor
            Samples per batch, float64, shape ``(B,)``.
        curvatures : torch.Tensor
            ``uⱼᵀ∇²s_b uⱼ``, float64, shape ``(B, k)``.
        slopes : torch.Tensor or None
            ``dᵀ∇s_b``, float64, shape ``(B,)``, when ``direction`` is given.
        grad_sq : torch.Tensor
            ``‖∇s_b‖²``, float64, shape ``(B,)``.

        Raises
        ------
        InputError
            With a process group (each rank sees only its own batches), or
            for ``U`` of the wrong shape.
        """
        if self.process_group is not None:
            msg = "batch_terms sees one process's batches only; call it without a process group"
            raise InputError(msg)
        U = self._check_vector(U, "U", allow_block=True)
        if U.ndim != 2:
            msg = f"U must have shape ({self.num_params}, k), got {tuple(U.shape)}"
            raise InputError(msg)
        if direction is not None:
            direction = self._check_vector(direction, "direction")
        theta = self._check_vector(theta, "theta")

        def parts() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
            for count, batch in self._batches.placed(self.device, self._cast_inputs):
                g, HU = _autodiff.gradient_and_hvp(self._batch_fn(batch), theta, U)
                yield count, g, HU

        with self._session(), _autodiff.kernels(), self._explain_missing_derivative():
            return _batch_sums(parts(), U, direction)

    def hessian(
        self,
        theta: torch.Tensor | None = None,
        check: bool = True,
        *,
        cache_limit: int | None = None,
    ) -> Any:
        """The Hessian at θ as a matrix-free :class:`~critpoint.HessianOperator`.

        Parameters
        ----------
        theta : torch.Tensor, optional
            Point of shape ``(n,)``; default the current parameters (copied, so
            later changes to the model do not move the operator).
        check : bool
            Probe symmetry and determinism on the operator's first products
            (:meth:`HessianOperator.defer_check`: one extra HVP, two in
            ``fwd-rev`` mode): a random or non-symmetric product, such as
            dropout left on, is refused at the first product(s), before any
            solver returns. :meth:`HessianOperator.check_symmetric` runs the
            probe at once instead (3 HVPs).
        cache_limit : int, optional
            Most bytes the linearisations may take, below the ``hvp_cache``
            setting (a memory plan's share for them).

        Returns
        -------
        HessianOperator
            It keeps the batches' linearisations within the ``hvp_cache``
            budget (its policy: :meth:`HessianOperator.cache_budget`).
        """
        from critpoint.operator import HessianOperator

        theta = self._check_vector(theta, "theta").detach().clone()
        op = HessianOperator(self, theta, cache_limit=cache_limit)
        if check:
            op.defer_check()
        return op

    def __repr__(self) -> str:
        mode = repr(self.hvp_mode)
        if self.hvp_fallback is not None:
            mode += " (forward-over-reverse fell back)"
        return (
            f"Objective(model={type(self.model).__name__}, num_params={self.num_params}, "
            f"dtype={self.dtype}, device={self.device}, bn={self.bn!r}, "
            f"reduction={self.reduction!r}, hvp_mode={mode})"
        )


class Linearization:
    """An objective's gradient linearised at a fixed θ: ``v ↦ H(θ) v``.

    Made by :meth:`Objective.linearize` (θ checked and copied once). Its
    products take vectors the caller has checked: shape ``(n,)`` or
    ``(n, k)``, the objective's dtype, on its device
    (:class:`~critpoint.HessianOperator` is that boundary). It may keep every
    batch's graph (``max_bytes``); :meth:`release` frees them.

    Attributes
    ----------
    objective : Objective
    theta : torch.Tensor
        The point, shape ``(n,)``.
    """

    def __init__(
        self,
        objective: Objective,
        theta: torch.Tensor,
        pieces: list[tuple[int, _autodiff.Linearized]] | None = None,
        *,
        nbytes: int = 0,
    ) -> None:
        self.objective = objective
        self.theta = theta
        self._pieces = pieces
        self._nbytes = int(nbytes) if pieces is not None else 0

    @property
    def cached(self) -> bool:
        """Whether products run from kept graphs (the second backward pass only)."""
        return self._pieces is not None

    @property
    def nbytes(self) -> int:
        """Estimated bytes of the kept graphs (measured on the first batch); 0 without."""
        return self._nbytes if self._pieces is not None else 0

    def release(self) -> None:
        """Free the kept graphs; products recompute each pass in full from here on."""
        self._pieces = None

    def hvp(self, v: torch.Tensor, *, fresh: bool = False) -> torch.Tensor:
        """``H v`` for ``v`` of shape ``(n,)`` or ``(n, k)`` (one pass over the data).

        Parameters
        ----------
        v : torch.Tensor
            Already in the objective's dtype and device.
        fresh : bool
            Recompute from a fresh forward pass even with kept graphs (a
            random layer then shows: the symmetry probe uses it).
        """
        if self._pieces is not None and not fresh:
            return self.objective._hvp_retained(self._pieces, v)
        return self.objective._hvp_at(v, self.theta)

    def batch_terms(
        self, U: torch.Tensor, direction: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """:meth:`Objective.batch_terms` at this θ, from the kept graphs when there are.

        The kept graph of a batch holds its gradient and runs its products by
        the second backward pass alone, so the per-batch parts then cost
        ``k`` such passes per batch and no forward pass.
        """
        objective = self.objective
        pieces = self._pieces
        if pieces is None or any(_autodiff.kept_gradient(a) is None for _, a in pieces):
            return objective.batch_terms(U, direction, self.theta)
        if direction is not None:
            direction = objective._check_vector(direction, "direction")

        def parts() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
            for count, apply in pieces:
                gradient = _autodiff.kept_gradient(apply)
                assert gradient is not None
                yield count, gradient, apply(U, objective.chunk_size)

        with objective._explain_missing_derivative():
            return _batch_sums(parts(), U, direction)

    # ------------------------------------------------ what the symmetry probe needs
    def loss_drift(self) -> float:
        """Relative difference of the loss at θ between two forward passes.

        The determinism test of the deferred probe: randomness in a model
        (dropout left on, random augmentation, a loader that drops other
        samples each pass) enters through its forward pass, so two passes at
        the same θ give different losses. One pass is the kept graphs' own
        forward pass (already computed); without kept graphs, two fresh
        passes. A forward pass costs about a third of a gradient: much less
        than recomputing a product.
        """
        objective = self.objective
        pieces = self._pieces
        values = (
            None
            if pieces is None
            else [(count, _autodiff.kept_value(apply)) for count, apply in pieces]
        )
        # Under torchrun every rank takes the same path (the same collectives),
        # whether or not its own graphs were kept: two fresh passes.
        kept = objective.process_group is None and values is not None
        if kept and all(v is not None for _, v in values):  # type: ignore[union-attr]
            first = float(objective._sum(values, "loss").item())  # type: ignore[arg-type]
        else:
            first = objective.loss(self.theta)
        second = objective.loss(self.theta)
        scale = max(abs(first), abs(second))
        if scale == 0.0:
            return 0.0
        if not math.isfinite(scale):
            return math.inf
        return abs(first - second) / scale

    def reverse_hvp(self, v: torch.Tensor) -> torch.Tensor | None:
        """``H v`` by reverse-over-reverse, or ``None`` where the model has no double backward."""
        try:
            return self.objective._products(v, self.theta, "rev-rev")
        except (RuntimeError, NotImplementedError) as exc:
            if _autodiff.missing_derivative(exc) is None:
                raise
            return None  # no double backward: forward mode is all there is

    def abandon_forward_mode(self, gap: float) -> None:
        """Give forward-over-reverse up for good, its products being ``gap`` (relative) off."""
        objective = self.objective
        objective._fall_back(
            f"its products disagree with reverse-over-reverse by {gap:.2e} "
            f"relative on this model ({objective._why_modes_differ()})"
        )

    def refuse_asymmetric(self, asym: float) -> NoReturn:
        """Raise for a non-symmetric product, naming custom Functions if there are any."""
        objective = self.objective
        try:
            culprits = objective._culprits(None)
        except Exception:  # the refusal below must still happen
            culprits = []
        if culprits:
            msg = (
                f"the Hessian-vector product is not symmetric (uᵀHv and vᵀHu differ by "
                f"{asym:.2e} relative): " + objective._blame(None, None, culprits)
            )
            raise SecondDerivativeError(msg)
        msg = (
            f"the Hessian-vector product is not symmetric (uᵀHv and vᵀHu differ by "
            f"{asym:.2e} relative): the loss is not a fixed twice-differentiable function "
            "of the parameters (a stateful or random layer?)"
        )
        raise NonDeterministicError(msg)


def _batch_sums(
    parts: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
    U: torch.Tensor,
    direction: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """:meth:`Objective.batch_terms`'s results from per-batch ``(count, ∇s_b, ∇²s_b U)``."""
    counts, curvatures, slopes, grad_sq = [], [], [], []
    for count, g, HU in parts:
        counts.append(float(count))
        curvatures.append(torch.sum(U * HU, dim=0, dtype=torch.float64).cpu())
        grad_sq.append(torch.sum(g * g, dtype=torch.float64).cpu())
        if direction is not None:
            slopes.append(torch.dot(direction.double(), g.double()).cpu())
    return (
        torch.tensor(counts, dtype=torch.float64),
        torch.stack(curvatures),
        torch.stack(slopes) if direction is not None else None,
        torch.stack(grad_sq),
    )


def named_is_float(module: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` of ``module`` is floating point."""
    return dict(module.named_parameters())[name].is_floating_point()
