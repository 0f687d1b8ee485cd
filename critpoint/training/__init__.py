"""Demo training with ``torch.optim``, learning-rate schedules and curvature tracking.

:func:`train` runs a standard PyTorch training loop on in-memory data: a
``torch.optim`` optimizer picked by name, a per-step learning-rate schedule
from ``torch.optim.lr_scheduler``, full-batch gradient descent or shuffled
minibatches, and — optionally, every few steps — the curvature of the *full*
training loss at the current parameters: the sharpness (top Hessian
eigenvalue), the most negative eigenvalue and the minimum ratio, computed
matrix-free with critpoint's Lanczos and stochastic Lanczos quadrature. It
returns a :class:`History` that :func:`critpoint.io.checkpoint.save_checkpoint`
stores next to the weights.

* :mod:`critpoint.training.history` — :class:`History` and its JSON dictionary;
* :mod:`critpoint.training.optim` — optimizers by name, schedules;
* :mod:`critpoint.training.evaluation` — the full-data loss and accuracy;
* :mod:`critpoint.training.tracking` — curvature at the tracking points;
* :mod:`critpoint.training.loop` — :func:`train`.
"""

from critpoint.training.evaluation import EVAL_CHUNK
from critpoint.training.history import HISTORY_SCHEMA, HISTORY_SCHEMA_VERSION, History
from critpoint.training.loop import train
from critpoint.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    STEP_GAMMA,
    STEP_MILESTONES,
    lr_factor,
    make_optimizer,
    make_scheduler,
)
from critpoint.training.tracking import TRACKABLE

__all__ = [
    "EVAL_CHUNK",
    "HISTORY_SCHEMA",
    "HISTORY_SCHEMA_VERSION",
    "OPTIMIZERS",
    "SCHEDULES",
    "STEP_GAMMA",
    "STEP_MILESTONES",
    "TRACKABLE",
    "History",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "train",
]
