"""The training loop: :func:`train`, in named steps.

``train`` checks its arguments into a few groups — what is trained
(:class:`_Problem`: the model, the data on its device, the loss), how long and
in which batches (:class:`_Plan`), what curvature to track
(:class:`~critpoint.training.tracking.TrackOptions`) — builds the
``torch.optim`` optimizer and its schedule, and runs :class:`_Loop` inside a
session that forks the random streams and restores the model's modes.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from critpoint._checks import finite_float, integer, positive_int
from critpoint._json import clean
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint._version import __version__
from critpoint.data import Data
from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._random import make_generator
from critpoint.losses import get_loss, loss_name
from critpoint.objective import Objective
from critpoint.specs import dtype_name
from critpoint.training.evaluation import EVAL_CHUNK, FullDataEvaluation
from critpoint.training.history import History
from critpoint.training.optim import (
    check_lr,
    check_schedule,
    make_optimizer,
    make_scheduler,
    resolve_optimizer,
)
from critpoint.training.tracking import CurvatureTracker, TrackOptions

logger = logging.getLogger("critpoint")

__all__ = ["train"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------- what is trained


@dataclass(frozen=True)
class _Problem:
    """The model, its trainable parameters, the data on its device, the task."""

    model: nn.Module
    params: list[torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor] | None
    classification: bool
    num_classes: int | None

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])


def _problem(model: Any, data: Any, test_data: Any) -> _Problem:
    """Check the model and the data; put the data on the model's device and dtype."""
    if not isinstance(model, nn.Module):
        msg = f"model must be a torch.nn.Module; got {type(model).__name__}"
        raise InputError(msg)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        msg = "the model has no trainable parameters (requires_grad=True); nothing to train"
        raise InputError(msg)
    x, y, classification, num_classes = _as_pair(data, "data")
    if int(x.shape[0]) == 0:
        msg = "data holds no samples; give at least one"
        raise InputError(msg)
    x, y = _place(x, y, params[0])
    test = None
    if test_data is not None:
        tx, ty, _, _ = _as_pair(test_data, "test_data")
        test = _place(tx, ty, params[0])
    return _Problem(model, params, x, y, test, classification, num_classes)


def _as_pair(
    data: Any, what: str
) -> tuple[torch.Tensor, torch.Tensor, bool, int | None]:
    """``(inputs, targets, is_classification, num_classes)`` of Data or a tensor pair."""
    if isinstance(data, Data):
        return (
            data.inputs,
            data.targets,
            data.task == "classification",
            data.num_classes,
        )
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        x, y = data
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            msg = (
                f"{what}: inputs and targets must hold the same number of samples; got "
                f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
            raise InputError(msg)
        classification = not y.is_floating_point() and y.ndim == 1
        num_classes = int(y.max()) + 1 if classification and y.numel() else None
        return x, y, classification, num_classes
    msg = (
        f"{what} must be a critpoint Data (load_data('digits')) or an (inputs, targets) "
        f"pair of tensors; got {type(data).__name__}"
    )
    raise InputError(msg)


def _place(
    x: torch.Tensor, y: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move to ``like``'s device; cast floating tensors to its dtype."""

    def conv(t: torch.Tensor) -> torch.Tensor:
        return t.to(
            device=like.device, dtype=like.dtype if t.is_floating_point() else None
        )

    return conv(x), conv(y)


def _loss_function(loss: Any, problem: _Problem) -> LossFn:
    """A loss name (one-hot targets for ``"mse"`` on class labels) or a callable."""
    if isinstance(loss, str):
        return get_loss(loss, problem.num_classes if problem.classification else None)
    if callable(loss):
        return loss
    msg = f"loss must be a name such as 'cross_entropy' or a callable; got {loss!r}"
    raise InputError(msg)


# ------------------------------------------------------- how long, which batches


@dataclass(frozen=True)
class _Plan:
    """The run's length in updates, its batches, and when to evaluate and track."""

    num_samples: int
    batch_size: int
    full_batch: bool
    drop_last: bool
    steps_per_epoch: int
    total: int
    eval_every: int
    track_every: int

    def evaluates_at(self, step: int, final: bool) -> bool:
        """Evaluate the full data at θ_step (always at 0 and at the end)."""
        return final or step % self.eval_every == 0

    def tracks_at(self, step: int, final: bool) -> bool:
        """Track the curvature at θ_step (always at 0 and at the end)."""
        return final or step % self.track_every == 0

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def batches(
        self, gen: torch.Generator
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        """Yield ``(epoch, indices)`` forever; ``indices`` is None for the full batch.

        Every epoch draws a fresh permutation from ``gen``; with ``drop_last``
        its short last batch is skipped.
        """
        n, size = self.num_samples, self.batch_size
        stop = n - size + 1 if self.drop_last else n
        for epoch in itertools.count():
            if self.full_batch:
                yield epoch, None
            else:
                perm = torch.randperm(n, generator=gen)
                for start in range(0, stop, size):
                    yield epoch, perm[start : start + size]


def _plan(
    num_samples: int,
    batch_size: Any,
    epochs: Any,
    steps: Any,
    drop_last: Any,
    eval_every: Any,
    track_every: Any,
) -> _Plan:
    """Check the run's length and batching; fill in the default cadences."""
    if epochs is not None and steps is not None:
        msg = f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})"
        raise InputError(msg)
    if batch_size is not None:
        positive_int(
            batch_size, "batch_size", hint="use None for full-batch gradient descent"
        )
    full_batch = batch_size is None or batch_size >= num_samples
    size = num_samples if full_batch else int(batch_size)
    if not isinstance(drop_last, bool):
        msg = f"drop_last must be True or False; got {drop_last!r}"
        raise InputError(msg)
    per_epoch = num_samples // size if drop_last else math.ceil(num_samples / size)
    if steps is not None:
        total = positive_int(steps, "steps")
    else:
        total = positive_int(1 if epochs is None else epochs, "epochs") * per_epoch
    return _Plan(
        num_samples=num_samples,
        batch_size=size,
        full_batch=full_batch,
        drop_last=drop_last,
        steps_per_epoch=per_epoch,
        total=total,
        eval_every=positive_int(
            max(1, total // 50) if eval_every is None else eval_every, "eval_every"
        ),
        track_every=positive_int(
            max(1, total // 10) if track_every is None else track_every, "track_every"
        ),
    )


def _run_seed(seed: int | torch.Generator | None) -> int:
    """The run's int seed: ``seed`` itself, or one drawn from a generator / torch's RNG."""
    gen = make_generator(seed)  # checks the type and range
    if isinstance(seed, torch.Generator) or seed is None:
        return int(torch.randint(0, 2**62, (1,), generator=gen).item())
    return int(seed)


# ----------------------------------------------------------------- the loop


class _Loop:
    """One run: the updates, and the evaluation and tracking points between them.

    Step ``k`` is θ_k, the parameters after ``k`` updates: the loop evaluates
    and tracks θ_k (when the plan says so), then makes update ``k``.
    """

    def __init__(
        self,
        problem: _Problem,
        plan: _Plan,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        history: History,
        *,
        evaluation: FullDataEvaluation,
        test_evaluation: FullDataEvaluation | None,
        tracker: CurvatureTracker | None,
        stop_loss: float | None,
        callback: Callable[[int, History], Any] | None,
        bar: Progress,
    ) -> None:
        self.problem = problem
        self.plan = plan
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.history = history
        self.evaluation = evaluation
        self.test_evaluation = test_evaluation
        self.tracker = tracker
        self.stop_loss = stop_loss
        self.callback = callback
        self.bar = bar

    def run(self, gen: torch.Generator) -> str:
        """Train to the end of the plan or a stop; return the stop reason."""
        batches = self.plan.batches(gen)
        stop: str | None = None
        for k in itertools.count():
            final = k == self.plan.total or stop is not None
            if self.plan.evaluates_at(k, final):
                self.evaluate(k)
                if not final and self._reached_stop_loss():
                    stop, final = "stop_loss", True
            if self.tracker is not None and self.plan.tracks_at(k, final):
                self.tracker(self.history, k)
            if final:
                break
            epoch, indices = next(batches)
            self.update(k, epoch, indices)
            if self.callback is not None and self.callback(k, self.history) is True:
                stop = "callback"
        return stop or "completed"

    def evaluate(self, k: int) -> None:
        """Full-data loss and accuracy at θ_k, on the training and the test data."""
        h = self.history
        full, accuracy = self.evaluation()
        if not math.isfinite(full):
            raise _nonfinite(
                "full training loss",
                k,
                self.plan.epoch_of(k),
                self.optimizer.param_groups[0]["lr"],
                h,
            )
        h.eval_step.append(k)
        h.full_loss.append(full)
        if accuracy is not None:
            h.accuracy.append(accuracy)
        if self.test_evaluation is not None:
            test_loss, test_accuracy = self.test_evaluation()
            h.test_loss.append(test_loss)
            if test_accuracy is not None:
                h.test_accuracy.append(test_accuracy)

    def update(self, k: int, epoch: int, indices: torch.Tensor | None) -> None:
        """Update ``k``: the minibatch loss and gradient at θ_k, one optimizer step."""
        p, h, opt = self.problem, self.history, self.optimizer
        xb, yb = (p.x, p.y) if indices is None else (p.x[indices], p.y[indices])
        p.model.train()
        opt.zero_grad(set_to_none=True)
        value = self.loss_fn(p.model(xb), yb)
        lr = float(opt.param_groups[0]["lr"])
        if not bool(torch.isfinite(value)):
            raise _nonfinite("training loss", k, epoch, lr, h)
        value.backward()
        sq = sum(
            float(q.grad.detach().double().pow(2).sum())
            for q in p.params
            if q.grad is not None
        )
        h.step.append(k)
        h.epoch.append(epoch)
        h.loss.append(float(value.detach()))
        h.grad_norm.append(math.sqrt(sq))
        h.lr.append(lr)
        opt.step()
        self.scheduler.step()
        self.bar.advance()

    def _reached_stop_loss(self) -> bool:
        return (
            self.stop_loss is not None and self.history.full_loss[-1] <= self.stop_loss
        )


def _nonfinite(
    what: str, step: int, epoch: int, lr: float, history: History
) -> NonFiniteError:
    msg = (
        f"the {what} became non-finite at step {step} (epoch {epoch}, lr={lr:.3g}): "
        f"the iterates diverged. Use a smaller learning rate (e.g. lr={lr / 2:.3g}), "
        "a warm-up (warmup_steps=...), or float64 for the model"
    )
    err = NonFiniteError(msg)
    err.history = history  # type: ignore[attr-defined]
    return err


@contextmanager
def _session(model: nn.Module) -> Iterator[None]:
    """Fork the global random streams; put the model's train/eval flags back after."""
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def _seed_streams(seed: int, device: torch.device) -> None:
    """Seed the (forked) global streams the forward pass draws from (dropout)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


# --------------------------------------------------------------------- train


def train(
    model: nn.Module,
    data: Any,
    loss: str | LossFn = "cross_entropy",
    optimizer: str | type[torch.optim.Optimizer] = "sgd",
    lr: float = 0.1,
    batch_size: int | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    seed: int | torch.Generator | None = 0,
    track: Iterable[str] | str | None = None,
    track_every: int | None = None,
    track_tol: float = 1e-3,
    test_data: Any = None,
    progress: ProgressArg = False,
    callback: Callable[[int, History], Any] | None = None,
    *,
    drop_last: bool = False,
    eval_every: int | None = None,
    stop_loss: float | None = None,
    track_probes: int = 4,
    track_lanczos_steps: int = 40,
    eig_rtol: float = 1e-3,
    track_train_mode: bool = False,
    optimizer_kwargs: Mapping[str, Any] | None = None,
) -> History:
    """Train ``model`` in place with a ``torch.optim`` optimizer, optionally tracking curvature.

    Parameters
    ----------
    model : torch.nn.Module
        The model, trained in place (its initialisation is the caller's
        business, e.g. ``build_model(..., seed=0)``). It is in train mode
        during the updates; its train/eval flags are restored at the end.
    data : Data or (inputs, targets)
        Training data held in memory. Floating tensors are cast to the model's
        dtype and moved to its device.
    loss : str or callable
        ``"cross_entropy"``, ``"mse"`` (one-hot targets for class labels),
        ``"bce"`` or ``module:function`` (see :func:`critpoint.losses.get_loss`),
        or ``loss(outputs, targets) -> mean loss``.
    optimizer : str or torch.optim.Optimizer subclass
        ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"rmsprop"``, ``"adam"``,
        ``"adamw"`` (see :func:`make_optimizer`).
    lr : float
        Peak learning rate, > 0.
    batch_size : int, optional
        Minibatch size; shuffled every epoch, the last batch of an epoch may
        be short. ``None`` (or ≥ the number of samples) is full-batch
        gradient descent: one update per epoch on the exact training loss.
    drop_last : bool
        Skip the short last minibatch of each epoch (as ``DataLoader`` does):
        a batch of a few samples makes one large noisy step. Every epoch
        draws a fresh permutation, so no sample is left out for good.
    epochs, steps : int, optional
        Length of the run: at most one of them (``epochs=1`` if neither).
    momentum : float
        Momentum of ``"momentum"`` and ``"nesterov"``.
    betas : (float, float)
        Of ``"adam"`` and ``"adamw"``.
    warmup_steps : int
        Linear warm-up of the learning rate over this many updates.
    schedule : {"constant", "cosine", "step", "linear"}
        Per-update schedule after the warm-up (closed forms in :func:`lr_factor`).
    weight_decay : float
        L2 penalty passed to the optimizer.
    seed : int, torch.Generator or None
        Seed of the minibatch order (a local ``torch.Generator``), of the
        Lanczos / SLQ start vectors, and of the CPU random stream used by the
        forward pass (dropout), which runs inside ``torch.random.fork_rng``:
        the caller's global random state is the same before and after. A
        generator (or ``None``: torch's global RNG) draws the run's int seed,
        which ``History.settings["seed"]`` records.
    track : set of str, optional
        Curvature of the full training loss to record: ``"sharpness"`` (top
        Hessian eigenvalue, Lanczos ``which="LA"``, ``k=1``, tolerance
        ``track_tol``), ``"lambda_min"`` (``which="SA"``) and
        ``"minimum_ratio"`` (``1 −`` the SLQ mass below ``−eig_rtol·scale``,
        with ``track_probes`` probes of ``track_lanczos_steps`` steps).
    track_every : int, optional
        Track every this many updates (plus at step 0 and the final step);
        default ``max(1, T // 10)`` for ``T`` updates, about 11 points.
    track_tol : float
        Relative residual tolerance of the Lanczos runs.
    test_data : Data or (inputs, targets), optional
        Evaluated (loss, accuracy) at each evaluation point.
    progress : bool, callable or None
        ``True`` shows a ``tqdm`` progress bar over the updates; a callable is
        called as ``progress(done, total)`` after every update.
    callback : callable, optional
        ``callback(step, history)`` after every update, with ``step`` the
        index of the update just made (``history.step[-1]``). Returning
        ``True`` stops training; the final point is then evaluated and tracked.
    eval_every : int, optional
        Evaluate the full training (and test) data every this many updates,
        plus at step 0 and the final step; default ``max(1, T // 50)``.
    stop_loss : float, optional
        Stop as soon as the full training loss at an evaluation point is
        ≤ this (compare models at matched training loss).
    track_probes, track_lanczos_steps : int
        SLQ size for ``"minimum_ratio"``.
    eig_rtol : float
        Relative zero tolerance of the minimum ratio, as in :func:`critpoint.diagnose`.
    track_train_mode : bool
        Evaluate the full-data loss, accuracy and Hessian with BatchNorm in
        train mode: ``Objective(train_mode=True)``, batch statistics of each
        chunk of :data:`~critpoint.training.evaluation.EVAL_CHUNK` samples
        (the whole data when it is smaller), running statistics neither used
        nor updated (see :class:`~critpoint.training.evaluation.FullDataEvaluation`).
        Default: eval mode, the library's default, which uses the running
        statistics. Dropout is on
        in train mode too, and the Hessian's symmetry probe then refuses it
        (:class:`~critpoint.NonDeterministicError`).
    optimizer_kwargs : dict, optional
        Further options of the torch optimizer (``eps``, ``alpha``, …).

    Returns
    -------
    History
        Per-update loss, gradient norm and learning rate; full-data loss
        and accuracy at the evaluation points; curvature at the tracking points.

    Raises
    ------
    InputError
        For an unknown optimizer or schedule, a bad learning rate, both
        ``epochs`` and ``steps``, data that is not in memory, and the like.
    NonFiniteError
        When the training loss becomes NaN or infinite (the message names the
        step and suggests a smaller learning rate); the partial history is in
        the exception's ``history`` attribute.

    Notes
    -----
    Cost of tracking, in Hessian-vector products (HVPs) on the full training
    data, each about two to three times a full-data gradient: the sharpness
    and ``lambda_min`` each take one Lanczos run, typically 10–60 HVPs at
    ``track_tol=1e-3`` (more when the top eigenvalues are close together);
    the minimum ratio takes ``track_probes × track_lanczos_steps`` HVPs
    (160 by default, in ``track_lanczos_steps`` batched passes); the first
    tracking point adds the symmetry probe (a forward pass, no HVP). The exact count of every
    point is in ``History.track_matvecs``. The Hessian is taken in the
    model's own dtype (a float64 model gives float64 curvature).

    Examples
    --------
    >>> import critpoint as cp
    >>> from critpoint.data import load_data
    >>> from critpoint.models import build_model
    >>> from critpoint.training import train
    >>> model = build_model("mlp", widths=[16], seed=0)
    >>> h = train(model, load_data("digits"), optimizer="adam", lr=1e-2, steps=20,
    ...           batch_size=64, track={"sharpness"})
    >>> len(h.step), h.track_step[-1]
    (20, 20)
    """
    # 1. Check every argument, in groups, before any work.
    problem = _problem(model, data, test_data)
    opt_key, _ = resolve_optimizer(optimizer)
    lr = check_lr(lr)
    schedule = check_schedule(schedule)
    plan = _plan(
        problem.num_samples,
        batch_size,
        epochs,
        steps,
        drop_last,
        eval_every,
        track_every,
    )
    warmup_steps = integer(warmup_steps, "warmup_steps", minimum=0)
    run_seed = _run_seed(seed)
    tracking = TrackOptions.check(
        track, track_tol, track_probes, track_lanczos_steps, eig_rtol
    )
    if stop_loss is not None:
        stop_loss = finite_float(stop_loss, "stop_loss", hint="or None")
    if callback is not None and not callable(callback):
        msg = f"callback must be callable as callback(step, history); got {type(callback).__name__}"
        raise InputError(msg)
    check_progress(progress)
    if optimizer_kwargs is not None and not isinstance(optimizer_kwargs, Mapping):
        msg = f"optimizer_kwargs must be a dict; got {type(optimizer_kwargs).__name__}"
        raise InputError(msg)
    loss_fn = _loss_function(loss, problem)

    # 2. The optimizer and its schedule.
    opt = make_optimizer(
        problem.params,
        optimizer,
        lr,
        momentum=momentum,
        betas=tuple(betas),  # type: ignore[arg-type]
        weight_decay=weight_decay,
        **dict(optimizer_kwargs or {}),
    )
    scheduler = make_scheduler(opt, schedule, plan.total, warmup_steps)
    history = History(
        settings={
            "optimizer": opt_key,
            "optimizer_class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "lr": lr,
            "momentum": float(momentum)
            if opt_key in ("momentum", "nesterov")
            else None,
            "betas": [float(b) for b in betas]
            if opt_key in ("adam", "adamw")
            else None,
            "weight_decay": float(weight_decay),
            "optimizer_kwargs": clean(dict(optimizer_kwargs or {})),
            "schedule": schedule,
            "warmup_steps": warmup_steps,
            "batch_size": None if plan.full_batch else plan.batch_size,
            "full_batch": plan.full_batch,
            "drop_last": plan.drop_last,
            "epochs": epochs,
            "steps": steps,
            "total_steps": plan.total,
            "steps_per_epoch": plan.steps_per_epoch,
            "num_samples": plan.num_samples,
            "num_params": sum(p.numel() for p in problem.params),
            "dtype": dtype_name(problem.params[0].dtype),
            "loss": loss_name(loss),
            "seed": run_seed,
            "track": list(tracking.quantities),
            "track_every": plan.track_every,
            "track_tol": tracking.tol,
            "track_probes": tracking.probes,
            "track_lanczos_steps": tracking.lanczos_steps,
            "eig_rtol": tracking.eig_rtol,
            "track_train_mode": bool(track_train_mode),
            "eval_every": plan.eval_every,
            "stop_loss": stop_loss,
            "critpoint_version": __version__,
            "torch_version": str(torch.__version__),
        }
    )

    # 3. The loop, in forked random streams seeded by the run's seed.
    train_mode = bool(track_train_mode)
    with (
        _session(model),
        Progress(progress, plan.total, "train", unit="step") as bar,
    ):
        evaluation = FullDataEvaluation(
            model,
            loss_fn,
            problem.x,
            problem.y,
            classification=problem.classification,
            train_mode=train_mode,
        )
        test_evaluation = None
        if problem.test is not None:
            test_evaluation = FullDataEvaluation(
                model,
                loss_fn,
                *problem.test,
                classification=problem.classification,
                train_mode=train_mode,
            )
        tracker = None
        if tracking.quantities:
            # The same loss, in the same batches, as the evaluation's.
            objective = Objective(
                model,
                loss_fn,
                (problem.x, problem.y),
                train_mode=train_mode,
                batch_size=EVAL_CHUNK,
            )
            tracker = CurvatureTracker(objective, tracking, run_seed)
        _seed_streams(run_seed, problem.params[0].device)
        loop = _Loop(
            problem,
            plan,
            loss_fn,
            opt,
            scheduler,
            history,
            evaluation=evaluation,
            test_evaluation=test_evaluation,
            tracker=tracker,
            stop_loss=stop_loss,
            callback=callback,
            bar=bar,
        )
        history.stop_reason = loop.run(torch.Generator().manual_seed(run_seed))
    logger.debug(
        "trained %d steps (%s, lr=%g): final loss %.4g",
        history.num_steps,
        opt_key,
        lr,
        history.final_loss,
    )
    return history
