"""The training loop: :func:`train`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from critpoint._json import clean
from critpoint._version import __version__
from critpoint.errors import InputError, NonFiniteError
from critpoint.training.history import History
from critpoint.training.optim import (
    OPTIMIZERS,
    _check_int,
    _check_lr,
    _check_schedule,
    _is_number,
    _optimizer_class,
    make_optimizer,
    make_scheduler,
)
from critpoint.training.tracking import _normalise_track

logger = logging.getLogger("critpoint")

__all__ = ["train"]

#: Samples per forward pass when the full training or test data is evaluated.
EVAL_CHUNK = 4096


def _as_pair(
    data: Any, what: str
) -> tuple[torch.Tensor, torch.Tensor, bool, int | None]:
    """``(inputs, targets, is_classification, num_classes)`` of Data or a tensor pair."""
    from critpoint.data import Data

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
    x: torch.Tensor, y: torch.Tensor, like: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move to the model's device; cast floating tensors to its dtype."""
    if like is None:
        return x, y
    conv = lambda t: t.to(  # noqa: E731
        device=like.device, dtype=like.dtype if t.is_floating_point() else None
    )
    return conv(x), conv(y)


def _evaluate(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    classification: bool,
    train_mode: bool,
) -> tuple[float, float | None]:
    """Mean loss (and accuracy) over all samples, leaving the model as it was."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = (
        {name: b.clone() for name, b in model.named_buffers()} if train_mode else {}
    )
    total = 0.0
    correct = 0
    n = int(x.shape[0])
    try:
        model.train(train_mode)
        with torch.no_grad():
            for start in range(0, n, EVAL_CHUNK):
                xb, yb = x[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
                out = model(xb)
                total += float(loss_fn(out, yb)) * int(xb.shape[0])
                if classification:
                    correct += int((out.argmax(dim=1) == yb).sum())
    finally:
        for m, mode in modes:
            m.training = mode
        if buffers:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
    return total / n, (correct / n if classification else None)


def _batches(
    n: int, batch_size: int, full_batch: bool, drop_last: bool, gen: torch.Generator
) -> Iterator[tuple[int, torch.Tensor | None]]:
    """Yield ``(epoch, indices)`` forever; ``indices`` is None for the full batch."""
    epoch = 0
    stop = n - batch_size + 1 if drop_last else n
    while True:
        if full_batch:
            yield epoch, None
        else:
            perm = torch.randperm(n, generator=gen)
            for start in range(0, stop, batch_size):
                yield epoch, perm[start : start + batch_size]
        epoch += 1


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


# --------------------------------------------------------------------- train


def train(
    model: nn.Module,
    data: Any,
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
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
    seed: int = 0,
    track: Iterable[str] | str | None = None,
    track_every: int | None = None,
    track_tol: float = 1e-3,
    test_data: Any = None,
    progress: bool = False,
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
        ``"bce"`` or ``module:function`` (see :func:`critpoint.data.get_loss`),
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
    seed : int
        Seed of the minibatch order (a local ``torch.Generator``), of the
        Lanczos / SLQ start vectors, and of the CPU random stream used by the
        forward pass (dropout), which runs inside ``torch.random.fork_rng``:
        the caller's global random state is the same before and after.
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
    progress : bool
        Show a ``tqdm`` progress bar over the updates.
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
        train mode (batch statistics of the whole data, running statistics
        left alone; ``Objective(train_mode=True)``). Default: eval mode, the
        library's default, which uses the running statistics. Dropout is on
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
    tracking point adds a 3-HVP symmetry probe. The exact count of every
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
    if not isinstance(model, nn.Module):
        msg = f"model must be a torch.nn.Module; got {type(model).__name__}"
        raise InputError(msg)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        msg = "the model has no trainable parameters (requires_grad=True); nothing to train"
        raise InputError(msg)
    x, y, classification, num_classes = _as_pair(data, "data")
    n = int(x.shape[0])
    if n == 0:
        msg = "data holds no samples; give at least one"
        raise InputError(msg)
    x, y = _place(x, y, params[0])
    test = None
    if test_data is not None:
        tx, ty, _, _ = _as_pair(test_data, "test_data")
        tx, ty = _place(tx, ty, params[0])
        test = (tx, ty)

    opt_name, opt_cls = _optimizer_class(optimizer)
    _check_lr(lr)
    schedule = _check_schedule(schedule)
    if epochs is not None and steps is not None:
        msg = f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})"
        raise InputError(msg)
    if batch_size is not None:
        _check_int(
            batch_size, "batch_size", hint="; use None for full-batch gradient descent"
        )
    full_batch = batch_size is None or batch_size >= n
    bs = n if full_batch else int(batch_size)  # type: ignore[arg-type]
    if not isinstance(drop_last, bool):
        msg = f"drop_last must be True or False; got {drop_last!r}"
        raise InputError(msg)
    steps_per_epoch = n // bs if drop_last else math.ceil(n / bs)
    if steps is not None:
        total = _check_int(steps, "steps")
    else:
        total = _check_int(1 if epochs is None else epochs, "epochs") * steps_per_epoch
    warmup_steps = _check_int(warmup_steps, "warmup_steps", minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"seed must be an int; got {seed!r}"
        raise InputError(msg)
    tracked = _normalise_track(track)
    if track_every is None:
        track_every = max(1, total // 10)
    track_every = _check_int(track_every, "track_every")
    if eval_every is None:
        eval_every = max(1, total // 50)
    eval_every = _check_int(eval_every, "eval_every")
    if not (_is_number(track_tol) and track_tol >= 0 and math.isfinite(track_tol)):
        msg = f"track_tol must be a finite number >= 0; got {track_tol!r}"
        raise InputError(msg)
    if not (_is_number(eig_rtol) and eig_rtol >= 0 and math.isfinite(eig_rtol)):
        msg = f"eig_rtol must be a finite number >= 0; got {eig_rtol!r}"
        raise InputError(msg)
    track_probes = _check_int(track_probes, "track_probes")
    track_lanczos_steps = _check_int(track_lanczos_steps, "track_lanczos_steps")
    if stop_loss is not None and not (
        _is_number(stop_loss) and math.isfinite(stop_loss)
    ):
        msg = f"stop_loss must be a finite number or None; got {stop_loss!r}"
        raise InputError(msg)
    if callback is not None and not callable(callback):
        msg = f"callback must be callable as callback(step, history); got {type(callback).__name__}"
        raise InputError(msg)
    if not isinstance(progress, bool):
        msg = f"progress must be True or False; got {progress!r}"
        raise InputError(msg)
    if optimizer_kwargs is not None and not isinstance(optimizer_kwargs, Mapping):
        msg = f"optimizer_kwargs must be a dict; got {type(optimizer_kwargs).__name__}"
        raise InputError(msg)

    from critpoint.data import _loss_name, get_loss

    if isinstance(loss, str):
        loss_fn = get_loss(loss, num_classes if classification else None)
    elif callable(loss):
        loss_fn = loss
    else:
        msg = f"loss must be a name such as 'cross_entropy' or a callable; got {loss!r}"
        raise InputError(msg)

    opt = make_optimizer(
        params,
        opt_cls if opt_name not in OPTIMIZERS else opt_name,
        lr,
        momentum=momentum,
        betas=tuple(betas),  # type: ignore[arg-type]
        weight_decay=weight_decay,
        **dict(optimizer_kwargs or {}),
    )
    scheduler = make_scheduler(opt, schedule, total, warmup_steps)

    settings: dict[str, Any] = {
        "optimizer": opt_name,
        "optimizer_class": f"{type(opt).__module__}.{type(opt).__qualname__}",
        "lr": float(lr),
        "momentum": float(momentum) if opt_name in ("momentum", "nesterov") else None,
        "betas": [float(b) for b in betas] if opt_name in ("adam", "adamw") else None,
        "weight_decay": float(weight_decay),
        "optimizer_kwargs": clean(dict(optimizer_kwargs or {})),
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "batch_size": None if full_batch else bs,
        "full_batch": full_batch,
        "drop_last": drop_last,
        "epochs": epochs,
        "steps": steps,
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "num_samples": n,
        "num_params": sum(p.numel() for p in params),
        "dtype": str(params[0].dtype).removeprefix("torch."),
        "loss": _loss_name(loss),
        "seed": seed,
        "track": tracked,
        "track_every": track_every,
        "track_tol": float(track_tol),
        "track_probes": track_probes,
        "track_lanczos_steps": track_lanczos_steps,
        "eig_rtol": float(eig_rtol),
        "track_train_mode": bool(track_train_mode),
        "eval_every": eval_every,
        "stop_loss": None if stop_loss is None else float(stop_loss),
        "critpoint_version": __version__,
        "torch_version": str(torch.__version__),
    }
    history = History(settings=settings)

    objective = None
    if tracked:
        from critpoint.objective import Objective

        objective = Objective(model, loss_fn, (x, y), train_mode=track_train_mode)
    first_track = True

    def do_track(k: int) -> None:
        nonlocal first_track
        from critpoint.analysis import minimum_ratio
        from critpoint.linalg.lanczos import eigsh
        from critpoint.linalg.slq import spectral_density
        from critpoint.rule import zero_tolerance

        assert objective is not None
        H = objective.hessian(check=first_track)
        first_track = False
        top = bottom = None
        if "sharpness" in tracked:
            top = float(
                eigsh(
                    H,
                    k=1,
                    which="LA",
                    tol=track_tol,
                    seed=seed,
                    return_eigenvectors=False,
                ).eigenvalues[-1]
            )
            history.sharpness.append(top)
        if "lambda_min" in tracked:
            bottom = float(
                eigsh(
                    H,
                    k=1,
                    which="SA",
                    tol=track_tol,
                    seed=seed,
                    return_eigenvectors=False,
                ).eigenvalues[0]
            )
            history.lambda_min.append(bottom)
        if "minimum_ratio" in tracked:
            dens = spectral_density(
                H,
                num_probes=track_probes,
                num_steps=min(track_lanczos_steps, objective.num_params),
                seed=seed,
            )
            # The rule's zero tolerance, from the best ends known here: the
            # density's extreme nodes (Ritz values) and any eigsh run above.
            lo, hi = dens.support
            tau = zero_tolerance(
                min(lo, bottom if bottom is not None else lo),
                max(hi, top if top is not None else hi),
                eig_rtol,
            )
            history.minimum_ratio.append(minimum_ratio(dens, tau)[0])
        history.track_step.append(k)
        history.track_matvecs.append(int(H.num_matvecs))

    def do_eval(k: int) -> None:
        full, acc = _evaluate(model, loss_fn, x, y, classification, track_train_mode)
        if not math.isfinite(full):
            epoch = k // steps_per_epoch
            raise _nonfinite(
                "full training loss", k, epoch, opt.param_groups[0]["lr"], history
            )
        history.eval_step.append(k)
        history.full_loss.append(full)
        if acc is not None:
            history.accuracy.append(acc)
        if test is not None:
            t_loss, t_acc = _evaluate(
                model, loss_fn, *test, classification, track_train_mode
            )
            history.test_loss.append(t_loss)
            if t_acc is not None:
                history.test_accuracy.append(t_acc)

    gen = torch.Generator().manual_seed(seed)
    device = params[0].device
    fork_devices = [device] if device.type == "cuda" else []
    modes = [(m, m.training) for m in model.modules()]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="train", unit="step", leave=False)
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
            batches = _batches(n, bs, full_batch, drop_last, gen)
            k = 0
            stop = None
            while True:
                final = k == total or stop is not None
                if k % eval_every == 0 or final:
                    do_eval(k)
                    if (
                        stop_loss is not None
                        and history.full_loss[-1] <= stop_loss
                        and not final
                    ):
                        stop, final = "stop_loss", True
                if tracked and (k % track_every == 0 or final):
                    do_track(k)
                if final:
                    break
                epoch, idx = next(batches)
                xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                model.train()
                opt.zero_grad(set_to_none=True)
                value = loss_fn(model(xb), yb)
                current_lr = float(opt.param_groups[0]["lr"])
                if not bool(torch.isfinite(value)):
                    raise _nonfinite("training loss", k, epoch, current_lr, history)
                value.backward()
                sq = sum(
                    float(p.grad.detach().double().pow(2).sum())
                    for p in params
                    if p.grad is not None
                )
                history.step.append(k)
                history.epoch.append(epoch)
                history.loss.append(float(value.detach()))
                history.grad_norm.append(math.sqrt(sq))
                history.lr.append(current_lr)
                opt.step()
                scheduler.step()
                if bar is not None:
                    bar.update(1)
                    if k % 10 == 0:
                        bar.set_postfix(loss=f"{history.loss[-1]:.4g}")
                if callback is not None and callback(k, history) is True:
                    stop = "callback"
                k += 1
            history.stop_reason = stop or "completed"
    finally:
        for m, mode in modes:
            m.training = mode
        if bar is not None:
            bar.close()
    logger.debug(
        "trained %d steps (%s, lr=%g): final loss %.4g",
        history.num_steps,
        opt_name,
        lr,
        history.final_loss,
    )
    return history
