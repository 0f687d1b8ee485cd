"""The record of a training run: :class:`History` and its JSON dictionary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from critpoint._json import check_header, clean, header
from critpoint.errors import InputError

__all__ = ["HISTORY_SCHEMA", "HISTORY_SCHEMA_VERSION", "History"]

#: Schema name and version of :meth:`History.to_dict` documents.
HISTORY_SCHEMA = "critpoint.history"
HISTORY_SCHEMA_VERSION = 1
#: Older names of the same document, still read by :meth:`History.from_dict`.
OLD_HISTORY_SCHEMAS = ("critpoint-history",)
_HEADER_KEYS = frozenset(
    ("schema", "schema_version", "version", "critpoint_version", "torch_version")
)


@dataclass
class History:
    """What happened during :func:`train`, step by step.

    Step ``k`` names the parameters θ_k after ``k`` updates (θ_0 is the
    starting point). The per-step lists have one entry per update; the
    evaluation and tracking lists have one entry per evaluation / tracking
    point, whose step numbers are in ``eval_step`` and ``track_step``.

    Attributes
    ----------
    step : list of int
        ``0, 1, …, T−1``: the update index.
    epoch : list of int
        Epoch (0-based) of each update.
    loss : list of float
        Minibatch training loss at θ_k, i.e. the loss whose gradient made
        update ``k`` (for full-batch training, the full training loss).
    grad_norm : list of float
        Euclidean norm of that minibatch gradient, over all trainable parameters.
    lr : list of float
        Learning rate of update ``k`` (of the first parameter group).
    eval_step : list of int
        Steps at which the full training data (and the test data) were
        evaluated; always includes 0 and the final step.
    full_loss : list of float
        Mean loss over all training samples at each ``eval_step``.
    accuracy : list of float
        Training accuracy at each ``eval_step`` (classification only; empty
        otherwise).
    test_loss, test_accuracy : list of float
        The same on ``test_data`` (empty without test data; accuracy only for
        classification).
    track_step : list of int
        Steps at which the curvature was tracked; always includes 0 and the
        final step when tracking is on.
    sharpness : list of float
        Largest Hessian eigenvalue of the full training loss at each
        ``track_step`` (if tracked).
    lambda_min : list of float
        Smallest (most negative) Hessian eigenvalue (if tracked).
    minimum_ratio : list of float
        ``1 −`` the SLQ mass of eigenvalues below ``−eig_rtol·scale`` (if tracked).
    track_matvecs : list of int
        Hessian-vector products spent at each tracking point.
    settings : dict
        Every setting of the run (optimizer, learning rate, schedule, batch
        size, seed, tracking options, …), JSON-able.
    stop_reason : str
        ``"completed"``, ``"stop_loss"`` (the full training loss reached
        ``stop_loss``) or ``"callback"`` (the callback returned True).
    """

    step: list[int] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    full_loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    track_step: list[int] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    lambda_min: list[float] = field(default_factory=list)
    minimum_ratio: list[float] = field(default_factory=list)
    track_matvecs: list[int] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = "completed"

    @property
    def num_steps(self) -> int:
        """Number of updates made (the final parameters are θ at this step)."""
        return len(self.step)

    @property
    def final_loss(self) -> float:
        """Full training loss at the final parameters (``nan`` before any evaluation)."""
        if self.full_loss:
            return self.full_loss[-1]
        if self.loss:
            return self.loss[-1]
        return math.nan

    @property
    def final_accuracy(self) -> float | None:
        """Training accuracy at the last evaluation, or ``None`` without one."""
        return self.accuracy[-1] if self.accuracy else None

    @property
    def final_test_accuracy(self) -> float | None:
        """Test accuracy at the last evaluation, or ``None`` without one."""
        return self.test_accuracy[-1] if self.test_accuracy else None

    @property
    def final_sharpness(self) -> float | None:
        """Sharpness at the last tracking point, or ``None`` if not tracked."""
        return self.sharpness[-1] if self.sharpness else None

    def to_dict(self) -> dict[str, Any]:
        """The history as a JSON document (what :func:`~critpoint.io.checkpoint.save_checkpoint` stores).

        Returns
        -------
        dict
            The header of :func:`critpoint._json.header` (schema
            ``"critpoint.history"``) and one key per field; strict JSON values
            (a NaN or an infinity is written as ``None``).
        """
        out = header(HISTORY_SCHEMA, HISTORY_SCHEMA_VERSION)
        for f in fields(self):
            out[f.name] = clean(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "history") -> History:
        """Rebuild a history written by :meth:`to_dict`.

        Documents of the older ``"critpoint-history"`` schema (with a
        ``"version"`` key) are read too, and so is a bare dictionary of fields
        (no ``"schema"`` key). ``None`` in a list of floats reads as NaN.

        Parameters
        ----------
        data : dict
            The dictionary.
        source : str
            What to call it in messages (a file name).

        Raises
        ------
        InputError
            If ``data`` is not such a dictionary (another schema or a newer
            version, unknown keys, values of the wrong type, lists of other
            lengths than their step lists).
        """
        if not isinstance(data, Mapping):
            msg = f"a History dictionary must be a dict; got {type(data).__name__}"
            raise InputError(msg)
        if "schema" in data:
            check_header(
                data,
                HISTORY_SCHEMA,
                HISTORY_SCHEMA_VERSION,
                source,
                aliases=OLD_HISTORY_SCHEMAS,
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - _HEADER_KEYS)
        if unknown:
            msg = (
                f"unknown History field(s) {unknown}; known fields are {sorted(names)}"
            )
            raise InputError(msg)
        kwargs: dict[str, Any] = {}
        for name in names & set(data):
            kwargs[name] = _read_field(name, data[name])
        history = cls(**kwargs)
        history._check_lengths()
        return history

    def _check_lengths(self) -> None:
        groups = {
            "step": ("epoch", "loss", "grad_norm", "lr"),
            "eval_step": ("full_loss", "accuracy", "test_loss", "test_accuracy"),
            "track_step": ("sharpness", "lambda_min", "minimum_ratio", "track_matvecs"),
        }
        for key, members in groups.items():
            n = len(getattr(self, key))
            for name in members:
                m = len(getattr(self, name))
                if m not in (0, n) or (key == "step" and m != n):
                    msg = f"History field {name!r} has {m} entries but {key!r} has {n}"
                    raise InputError(msg)


#: Fields holding integers; every other list holds floats.
_INT_FIELDS = frozenset(("step", "epoch", "eval_step", "track_step", "track_matvecs"))


def _read_field(name: str, value: Any) -> Any:
    """One field of a history dictionary, checked and converted."""
    if name == "stop_reason":
        return str(value)
    if name == "settings":
        if not isinstance(value, Mapping):
            msg = f"History 'settings' must be a dict; got {type(value).__name__}"
            raise InputError(msg)
        return clean(value)
    if not isinstance(value, (list, tuple)):
        msg = f"History field {name!r} must be a list; got {type(value).__name__}"
        raise InputError(msg)
    try:
        if name in _INT_FIELDS:
            return [int(v) for v in value]
        return [math.nan if v is None else float(v) for v in value]
    except (TypeError, ValueError) as exc:
        kind = "integers" if name in _INT_FIELDS else "numbers"
        msg = f"History field {name!r} must hold {kind}: {exc}"
        raise InputError(msg) from exc
