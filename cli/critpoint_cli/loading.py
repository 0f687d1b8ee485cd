"""From command-line options to a model, data, a loss and an ``Objective``.

Imported only inside command callbacks (it imports torch). Every decision is
the library's: this module only picks which library call to make and records
what was chosen, so that the JSON output can name every setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from critpoint import distributed
from critpoint.data import (
    Data,
    DataSource,
    check_data_against_model,
    data_from_spec,
)
from critpoint.errors import InputError
from critpoint.io.checkpoint import Checkpoint, load_checkpoint
from critpoint.losses import get_batch_loss, get_loss
from critpoint.models import build_model, count_parameters
from critpoint.objective import Objective, batchnorm_modules
from critpoint.specs import dtype_name, parse_dtype
from critpoint_cli.options import State

#: Precisions too coarse to analyse in (the CLI names the fix, --dtype).
_HALF = (torch.float16, torch.bfloat16)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cuda`` must be available.

    Under ``torchrun``, ``cuda`` is the process's own GPU
    (:func:`critpoint.distributed.local_device`).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        msg = "--device cuda was asked for but CUDA is not available here (torch was built without it or no GPU is visible); use --device cpu or auto"
        raise InputError(msg)
    return distributed.local_device(name)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first parameter (float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def normalise_data_spec(spec: Any) -> dict[str, Any]:
    """A data spec as ``{"name", "kwargs", "max_samples", "subset_seed"}`` (see critpoint.specs)."""
    from critpoint.specs import normalise_data_spec as normalise

    return normalise(spec)


def load_data_spec(spec: Mapping[str, Any], dtype: torch.dtype) -> Data | DataSource:
    """Load the data a normalised spec the user gave describes, in ``dtype``, subset if asked."""
    return data_from_spec(spec, dtype=dtype, trust=True)


def data_spec_for(output: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` as a checkpoint at ``output`` stores it: data paths relative to its folder.

    A checkpoint's relative paths are read from its own folder, so a path
    given relative to the current folder is rewritten to be relative to the
    output's folder (absolute paths stay absolute).
    """
    from critpoint.specs import relative_to

    out = dict(spec)
    out["name"] = relative_to(output, str(spec.get("name", "")))
    return out


def model_spec_for(output: str, spec: Any) -> Any:
    """A model spec as a checkpoint at ``output`` stores it (see :func:`data_spec_for`)."""
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return data_spec_for(output, spec)
    return spec


def loss_for(output: str, loss: str | None) -> str | None:
    """A loss name as a checkpoint at ``output`` stores it (see :func:`data_spec_for`).

    ``None`` (a ``--batch-loss`` run, whose loss is no ``(outputs, targets)``
    function) stays ``None``.
    """
    from critpoint.specs import relative_to

    return None if loss is None else relative_to(output, loss)


def num_samples(data: Data | DataSource) -> int | None:
    """Samples in the data, when known without a pass."""
    if isinstance(data, Data):
        return len(data)
    try:
        return len(data.obj.dataset if data.kind == "dataloader" else data.obj)
    except TypeError:
        return None


def default_loss(data: Data | DataSource) -> str:
    """``cross_entropy`` for class labels, ``mse`` for real targets."""
    if isinstance(data, Data):
        return "cross_entropy" if data.task == "classification" else "mse"
    msg = f"data {data.name!r} is a {data.kind}, so the loss cannot be guessed; give --loss (cross_entropy, mse, bce or module:function)"
    raise InputError(msg)


@dataclass
class Setup:
    """Everything a command needs to build objectives, and how it was chosen."""

    model: nn.Module
    data: Data | DataSource
    loss_name: str | None
    loss_fn: Any
    device: torch.device
    dtype: torch.dtype
    batch_size: int | None
    checkpoint: Checkpoint | None = None
    model_spec: Any = None
    data_spec: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    batch_loss: str | None = None
    batch_loss_fn: Any = None
    bn: str = "eval"

    @property
    def data_input(self) -> Any:
        """What ``Objective`` takes as data."""
        if isinstance(self.data, Data):
            return self.data.as_tuple()
        return self.data.obj

    def objective(self, params: Any = None) -> Objective:
        """An :class:`Objective` over the selected parameters (``None``: all).

        Under ``torchrun`` each rank takes a contiguous shard of the data and
        the objective all-reduces over the default process group
        (:func:`critpoint.distributed.setup`).
        """
        part = distributed.setup(self.data, self.device)
        return Objective(
            self.model,
            self.loss_fn,
            part.data,
            params=params,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            process_group=part.process_group,
            batch_loss=self.batch_loss_fn,
            bn=self.bn,
        )

    def describe(self) -> str:
        """One line: model, parameters, data, loss, precision, device.

        Then one indented line per note of the checkpoint (what loading
        adapted: a prefix removed from the weights' names, the kind of file).
        """
        spec = self.model_spec
        model = (
            spec.get("name") if isinstance(spec, Mapping) else type(self.model).__name__
        )
        n = count_parameters(self.model)
        data = self.data.name
        ns = num_samples(self.data)
        samples = f" ({ns:,} samples)" if ns is not None else ""
        loss = (
            f"loss {self.loss_name}"
            if self.batch_loss is None
            else f"batch loss {self.batch_loss}"
        )
        line = (
            f"{model} ({n:,} parameters) on {data}{samples}, {loss}, "
            f"{dtype_name(self.dtype)} on {self.device}"
        )
        if batchnorm_modules(self.model):
            line += f", BatchNorm in {self.bn} mode"
        notes = self.checkpoint.notes if self.checkpoint is not None else []
        return "\n".join([line, *(f"  note: {note}" for note in notes)])


def load_setup(
    state: State,
    checkpoint: str | None,
    model: str | None,
    model_kwargs: Mapping[str, Any] | None,
    data: str | None,
    data_kwargs: Mapping[str, Any] | None,
    loss: str | None,
    batch_size: int | None,
    max_samples: int | None,
    trust_checkpoint: bool,
    *,
    batch_loss: str | None = None,
) -> Setup:
    """Load a checkpoint (or build a fresh model), the data and the loss.

    Parameters
    ----------
    state : State
        Global options (device, dtype, seed).
    checkpoint : str or None
        Path of a checkpoint; ``None`` builds a fresh model from ``model``.
    model, model_kwargs : str, dict or None
        Overrides the checkpoint's model spec (needed for plain state dicts).
    data, data_kwargs : str, dict or None
        Overrides the checkpoint's data spec.
    loss : str or None
        Overrides the checkpoint's loss.
    batch_size, max_samples : int or None
        Batching of the passes; random subset of the data.
    trust_checkpoint : bool
        Allow checkpoints that need code to unpickle.
    batch_loss : str or None
        ``file.py:fn`` / ``module:fn`` taking ``(model, batch)``, instead of
        a loss of ``(outputs, targets)`` (``--batch-loss``).

    Returns
    -------
    Setup
    """
    device = resolve_device(state.device)
    for option, value in (
        ("--model", model),
        ("--data", data),
        ("--loss", loss),
        ("--batch-loss", batch_loss),
    ):
        if value is not None and not value.strip():
            msg = f"{option} is empty; give a name or leave the option out"
            raise InputError(msg)
    if loss is not None and batch_loss is not None:
        msg = (
            "give --loss (a function of the model's outputs and the targets) or "
            "--batch-loss (a function of the model and a whole batch), not both"
        )
        raise InputError(msg)
    ckpt = None
    if model_kwargs is not None and model is None and checkpoint is not None:
        msg = "--model-kwargs needs --model (the checkpoint's own model spec already holds its options)"
        raise InputError(msg)
    model_spec: Any = None
    if model is not None:
        model_spec = {"name": model, "kwargs": dict(model_kwargs or {})}
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, trust=trust_checkpoint)
        # A spec given here is the user's; the checkpoint's own is trusted only
        # with --trust-checkpoint (ckpt.trusted).
        net = ckpt.build_model(model_spec)
        if model_spec is None and ckpt.trusted:
            model_spec = ckpt.resolve(ckpt.model_spec, "model file")
        elif model_spec is None:
            model_spec = ckpt.model_spec
    else:
        if model_spec is None:
            model_spec = {"name": "mlp", "kwargs": dict(model_kwargs or {})}
        net = build_model(model_spec["name"], seed=state.seed, **model_spec["kwargs"])
    analysis_dtype = parse_dtype(state.dtype) or model_dtype(net)
    if analysis_dtype in _HALF:
        where = f"the weights in {checkpoint!r} are" if ckpt else "the model is"
        msg = (
            f"{where} {dtype_name(analysis_dtype)}, too coarse for the eigensolvers "
            "(rounding swamps small eigenvalues); add --dtype float32 (or --dtype float64) "
            "to analyse a copy in that precision"
        )
        raise InputError(msg)
    # Data in the analysis precision when the model's own is too coarse.
    data_dtype = analysis_dtype if model_dtype(net) in _HALF else model_dtype(net)

    trusted_data = True
    base_dir = None
    if data is not None:
        data_spec = normalise_data_spec(
            {"name": data, "kwargs": dict(data_kwargs or {})}
        )
    elif data_kwargs is not None:
        msg = "--data-kwargs needs --data"
        raise InputError(msg)
    elif ckpt is not None and ckpt.data_spec is not None:
        data_spec = normalise_data_spec(ckpt.data_spec)
        trusted_data = ckpt.trusted
        base_dir = Path(ckpt.path).parent
    elif ckpt is None:
        data_spec = normalise_data_spec("digits")
    else:
        msg = (
            f"checkpoint {checkpoint!r} does not say which data it was trained on; give --data "
            "(digits, teacher, a file.pt / file.npz, or module:function)"
        )
        raise InputError(msg)
    if max_samples is not None:
        data_spec["max_samples"] = max_samples
        data_spec["subset_seed"] = state.seed
    source = ckpt.source if ckpt is not None else None
    if base_dir is not None:
        from critpoint.specs import resolve_relative

        data_spec["name"] = resolve_relative(data_spec["name"], base_dir, str(source))
    dataset = data_from_spec(
        data_spec, dtype=data_dtype, trust=trusted_data, source=source
    )

    num_classes = dataset.num_classes if isinstance(dataset, Data) else None
    batch_loss_fn = None
    loss_name: str | None
    if batch_loss is not None:
        # The user's function of (model, batch): the objective's first batch
        # checks it (no targets rule applies to it).
        batch_loss_fn = get_batch_loss(batch_loss)
        loss_name, loss_fn = None, None
    elif loss is None and ckpt is not None and ckpt.loss is not None:
        # Code it names runs only with --trust-checkpoint (ckpt.trusted).
        loss_fn = ckpt.get_loss(num_classes=num_classes)
        loss_name = ckpt.resolve(ckpt.loss, "loss file") if ckpt.trusted else ckpt.loss
    else:
        loss_name = loss if loss is not None else default_loss(dataset)
        loss_fn = get_loss(loss_name, num_classes=num_classes)
    if loss_fn is not None:
        check_data_against_model(net, dataset, loss_fn)

    setup = Setup(
        model=net,
        data=dataset,
        loss_name=loss_name,
        loss_fn=loss_fn,
        device=device,
        dtype=analysis_dtype,
        batch_size=batch_size,
        checkpoint=ckpt,
        model_spec=model_spec,
        data_spec=data_spec,
        batch_loss=batch_loss,
        batch_loss_fn=batch_loss_fn,
        bn=state.bn or "eval",
    )
    setup.settings = {
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_format": ckpt.format if ckpt is not None else None,
        "trust_checkpoint": bool(trust_checkpoint),
        "model": model_spec,
        "num_model_params": count_parameters(net),
        "data": data_spec,
        "num_samples": num_samples(dataset),
        "loss": loss_name,
        "batch_loss": batch_loss,
        "checkpoint_notes": list(ckpt.notes) if ckpt is not None else [],
        "batch_size": batch_size,
        "max_samples": max_samples,
        "device": str(device),
        "dtype": dtype_name(analysis_dtype),
        "seed": state.seed,
        "bn": setup.bn,
    }
    return setup
