"""The demo workflow: train a small MLP, diagnose three points, write one report.

:func:`run_demo` is what ``critpoint demo`` (and ``make demo``) runs, callable
from a notebook: it trains the MLP 64 → 32 → 10 (ReLU) on the 8×8 digits by
full-batch gradient descent from a small initialisation (the default weights
× :data:`INIT_SCALE`), so that training first stalls next to the saddle at
the origin; it diagnoses the point at initialisation, the stalled point
(:class:`StallWatch`) and the end of training, and writes the report, its
figures and two checkpoints into one folder.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from critpoint._checks import integer, positive_int
from critpoint._progress import ProgressArg, check_progress
from critpoint.analysis import Diagnosis, diagnose
from critpoint.data import load_data
from critpoint.errors import InputError
from critpoint.io.checkpoint import save_checkpoint
from critpoint.losses import get_loss
from critpoint.models import build_model
from critpoint.objective import Objective
from critpoint.report import ReportEntry, build_report
from critpoint.specs import dtype_name
from critpoint.surface import Landscape, landscape
from critpoint.training import History, train
from critpoint.training.optim import check_lr

logger = logging.getLogger("critpoint")

__all__ = [
    "INIT_SCALE",
    "PLATEAU",
    "DemoPoint",
    "DemoResult",
    "StallWatch",
    "run_demo",
]

#: Initial weights are the default ones times this: gradient descent then
#: starts next to the saddle at the origin and stalls there for a while.
INIT_SCALE = 1e-4

#: The loss is still on its starting plateau while it is above this fraction
#: of the loss at initialisation.
PLATEAU = 0.98

#: What ``quick=True`` shrinks: the SLQ / trace sizes of each diagnosis and
#: the landscape's grid (the data shrinks to 200 / 100 samples, the net to 8).
QUICK_DIAGNOSIS = {"num_probes": 4, "num_steps": 20, "trace_max_matvecs": 12}
QUICK_LANDSCAPE = {"num": 9, "plane_num": 7}

Stage = Callable[[str], AbstractContextManager[Any]]


class StallWatch:
    """The stall rule, as a :func:`~critpoint.training.train` callback.

    The stalled point is θ_k with the smallest full-batch gradient norm among
    the steps whose loss is still on the plateau the run started on:
    ``history.loss[k] > plateau · loss0``. The watch keeps a copy of the
    model's state before every update, so that θ_k itself can be rebuilt.

    Parameters
    ----------
    model : nn.Module
        The model being trained.
    loss0 : float
        The loss at initialisation.
    plateau : float
        See :data:`PLATEAU`.

    Attributes
    ----------
    step : int or None
        The stalled step (``None`` while no step was on the plateau).
    grad_norm : float
        Its gradient norm (``inf`` before).
    state : dict or None
        The model's ``state_dict`` at that step (a copy).
    """

    def __init__(
        self, model: nn.Module, loss0: float, plateau: float = PLATEAU
    ) -> None:
        self.model = model
        self.threshold = plateau * loss0
        self.step: int | None = None
        self.grad_norm = math.inf
        self.state: dict[str, torch.Tensor] | None = None
        # θ_k is the state before update k: the snapshot taken after update k − 1.
        self._before = copy.deepcopy(model.state_dict())

    def __call__(self, k: int, history: History) -> None:
        """After update ``k``: consider θ_k, then remember θ_{k+1}."""
        if history.loss[k] > self.threshold and history.grad_norm[k] < self.grad_norm:
            self.step, self.grad_norm, self.state = (
                k,
                history.grad_norm[k],
                self._before,
            )
        self._before = copy.deepcopy(self.model.state_dict())


@dataclass(frozen=True)
class DemoPoint:
    """One diagnosed point of the demo: its label, step, diagnosis and landscape."""

    label: str
    step: int
    diagnosis: Diagnosis
    landscape: Landscape


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did and wrote.

    Attributes
    ----------
    points : tuple of DemoPoint
        ``"initialisation"``, ``"stalled"`` (when a step stalled on the
        plateau) and ``"end"``, in that order.
    history : History
        The training run.
    report : Path
        ``report.html`` (``diagnosis.json`` and the figures beside it).
    checkpoint : Path
        ``model.ckpt``, the trained model with its history.
    stalled_checkpoint : Path or None
        ``stalled.ckpt``, the stalled point, if any.
    settings : dict
        Every setting of the run, as stored in the checkpoint and the report.
    width, num_params, num_samples : int
        Hidden width, parameters of the net, training samples.
    lr : float
        The learning rate.
    """

    points: tuple[DemoPoint, ...]
    history: History
    report: Path
    checkpoint: Path
    stalled_checkpoint: Path | None
    settings: dict[str, Any]
    width: int
    num_params: int
    num_samples: int
    lr: float


@contextmanager
def _log_stage(text: str) -> Iterator[None]:
    t0 = time.perf_counter()
    logger.info("%s …", text)
    yield
    logger.info("%s: done in %.1f s", text, time.perf_counter() - t0)


def run_demo(
    out_dir: str | Path = "critpoint-demo",
    *,
    steps: int = 400,
    lr: float = 0.5,
    quick: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: ProgressArg = False,
    stage: Stage | None = None,
) -> DemoResult:
    """Train the demo MLP, diagnose three points, write the report and checkpoints.

    Parameters
    ----------
    out_dir : str or Path
        Folder for ``report.html``, ``diagnosis.json``, the figures (``*.png``),
        ``model.ckpt`` and ``stalled.ckpt``.
    steps : int
        Gradient-descent steps.
    lr : float
        Learning rate η, > 0.
    quick : bool
        A much smaller run (tests): 200 training samples, a net 64 → 8 → 10,
        smaller densities and landscapes, coarser figures.
    seed : int
        Seed of the initialisation, the subsets, the solvers.
    device : str or torch.device, optional
        Where to train and analyse (default: the CPU).
    dtype : torch.dtype, optional
        Floating dtype of the model and data (default ``torch.float32``).
    progress : bool, callable or None
        Progress of each long step (training, Lanczos, SLQ, landscapes).
    stage : callable, optional
        ``stage(text)`` returns a context manager around each named step
        ("training (400 steps of gradient descent)", …); the CLI announces
        them on standard error. Default: logged at INFO level.

    Returns
    -------
    DemoResult
    """
    steps = positive_int(steps, "steps")
    lr = check_lr(lr)
    seed = integer(seed, "seed")
    check_progress(progress)
    if not isinstance(quick, bool):
        msg = f"quick must be True or False; got {quick!r}"
        raise InputError(msg)
    if dtype is not None and not (
        isinstance(dtype, torch.dtype) and dtype.is_floating_point
    ):
        msg = (
            f"dtype must be a floating torch.dtype such as torch.float64; got {dtype!r}"
        )
        raise InputError(msg)
    stage = stage or _log_stage
    out = Path(out_dir)
    device = torch.device("cpu" if device is None else device)
    dtype = dtype or torch.float32

    width = 8 if quick else 32
    net = build_model("mlp", seed=seed, widths=[width], activation="relu")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(INIT_SCALE)
    net = net.to(device=device, dtype=dtype)
    data = load_data("digits", dtype=dtype)
    test = load_data("digits", split="test", dtype=dtype)
    data_spec: dict[str, Any] = {"name": "digits", "kwargs": {}}
    sizes: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    if quick:
        data = data.subset(200, seed=seed)
        test = test.subset(100, seed=seed)
        data_spec.update(max_samples=200, subset_seed=seed)
        sizes, grid = QUICK_DIAGNOSIS, QUICK_LANDSCAPE
    loss_fn = get_loss("cross_entropy")

    def examine(label: str, step: int, model: nn.Module) -> DemoPoint:
        obj = Objective(model, loss_fn, data.as_tuple(), device=device, dtype=dtype)
        dg = diagnose(obj, seed=seed, progress=progress, **sizes)
        land = landscape(obj, dg, seed=seed, progress=progress, **grid)
        return DemoPoint(label, step, dg, land)

    points: list[DemoPoint] = []
    with stage("diagnosing the initialisation"):
        points.append(examine("initialisation", 0, net))

    watch = StallWatch(net, points[0].diagnosis.loss)
    with stage(f"training ({steps} steps of gradient descent)"):
        history = train(
            net,
            data,
            loss="cross_entropy",
            optimizer="sgd",
            lr=lr,
            steps=steps,
            seed=seed,
            track={"sharpness", "lambda_min"},
            track_every=max(1, steps // 10),
            test_data=test,
            progress=progress,
            callback=watch,
        )
    stalled_path = None
    if watch.state is not None and watch.step is not None:
        stalled = copy.deepcopy(net)
        stalled.load_state_dict(watch.state)
        with stage(f"diagnosing the stalled point (step {watch.step})"):
            points.append(examine("stalled", watch.step, stalled))
        stalled_path = save_checkpoint(
            out / "stalled.ckpt",
            stalled,
            data_spec=data_spec,
            loss="cross_entropy",
            meta={"demo": "stalled point", "step": watch.step, "seed": seed},
        )
    with stage("diagnosing the end of training"):
        points.append(examine("end", history.num_steps, net))

    settings = {
        "command": "demo",
        "model": net.critpoint_spec,
        "init_scale": INIT_SCALE,
        "data": data_spec,
        "test_data": {"name": "digits", "kwargs": {"split": "test"}},
        "quick": quick,
        "num_samples": len(data),
        "loss": "cross_entropy",
        "optimizer": "sgd",
        "lr": lr,
        "steps": steps,
        "seed": seed,
        "device": str(device),
        "dtype": dtype_name(dtype),
        "checkpoint": str(out / "model.ckpt"),
    }
    checkpoint = save_checkpoint(
        out / "model.ckpt",
        net,
        data_spec=data_spec,
        loss="cross_entropy",
        history=history,
        meta={"demo": settings},
    )
    with stage("writing the report"):
        page = build_report(
            [ReportEntry(p.label, p.diagnosis, p.landscape, p.step) for p in points],
            out,
            history=history.to_dict(),
            title="critpoint demo: an MLP on the digits, from initialisation to the end of training",
            settings=settings,
            dpi=50 if quick else 110,
        )
    return DemoResult(
        points=tuple(points),
        history=history,
        report=page,
        checkpoint=checkpoint,
        stalled_checkpoint=stalled_path,
        settings=settings,
        width=width,
        num_params=sum(p.numel() for p in net.parameters()),
        num_samples=len(data),
        lr=lr,
    )
