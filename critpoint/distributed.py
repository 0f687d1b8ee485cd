"""Data-parallel Hessian products over ``torch.distributed``.

The pattern: every rank holds a shard of the data and the same model; the
:class:`~critpoint.Objective` built with ``process_group=`` computes the
gradient or HVP of its shard's *summed* loss, one ``all_reduce(SUM)`` per
product, divided by the global sample count (all-reduced once). Every rank runs
the same solver with the same seed, so all ranks agree bit for bit; only rank 0
should print or write (:func:`is_main`).

Launch a script with ``torchrun`` (gloo on CPU, NCCL on GPU)::

    torchrun --nproc-per-node=2 my_analysis.py

where the script takes its part with :func:`setup` — which, under
``torchrun``, initialises the default group from the environment and shards
the data, and otherwise hands the data back whole — and builds
``Objective(..., data=part.data, process_group=part.process_group)``; the same
script then runs in one process too. :func:`init_from_env` and :func:`shard`
are the two halves, for a script that wants them apart.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

from critpoint.errors import InputError

__all__ = [
    "Part",
    "allreduce_bytes_per_hvp",
    "finish",
    "init_from_env",
    "is_main",
    "launched_by_torchrun",
    "local_device",
    "setup",
    "shard",
    "shard_range",
]


def shard_range(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of samples that ``rank`` holds.

    Shards differ in size by at most one sample (uneven shards are exact: the
    objective weights by sample counts, not by ranks).

    Parameters
    ----------
    num_samples : int
        Total number of samples.
    rank, world_size : int
        This process's rank and the number of processes.

    Returns
    -------
    tuple of int
    """
    if world_size < 1 or not 0 <= rank < world_size:
        msg = f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}"
        raise InputError(msg)
    if num_samples < world_size:
        msg = f"cannot shard {num_samples} samples over {world_size} processes: every rank needs at least one"
        raise InputError(msg)
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return start, stop


def shard(data: Any, rank: int | None = None, world_size: int | None = None) -> Any:
    """Return this rank's part of ``(inputs, targets)`` tensors (or of a ``Data``).

    Parameters
    ----------
    data : tuple of torch.Tensor or critpoint.data.Data
        The whole data set.
    rank, world_size : int, optional
        Default: from the initialised default process group.

    Returns
    -------
    Same type as ``data``, holding the rank's contiguous shard.
    """
    import torch.distributed as dist

    if rank is None or world_size is None:
        if not dist.is_available() or not dist.is_initialized():
            msg = "torch.distributed is not initialised; call init_from_env() under torchrun, or pass rank and world_size"
            raise InputError(msg)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    if _is_data(data):
        start, stop = shard_range(len(data.inputs), rank, world_size)
        return dataclasses.replace(
            data, inputs=data.inputs[start:stop], targets=data.targets[start:stop]
        )
    if _is_pair(data):
        inputs, targets = data
        start, stop = shard_range(inputs.shape[0], rank, world_size)
        return inputs[start:stop], targets[start:stop]
    msg = (
        f"shard() takes (inputs, targets) tensors or a Data, got {type(data).__name__}; "
        "for a Dataset use torch.utils.data.DistributedSampler(shuffle=False, drop_last=False)"
    )
    raise InputError(msg)


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` (``WORLD_SIZE``, ``RANK``) is present."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def local_device(device: str | torch.device) -> torch.device:
    """The device of this process: under ``torchrun``, ``cuda`` is its own GPU.

    ``torchrun`` starts one process per GPU of a machine and gives each its
    ``LOCAL_RANK``: a ``cuda`` device without an index becomes
    ``cuda:LOCAL_RANK`` (modulo the GPUs visible). Any other device, or a
    process outside ``torchrun``, keeps the device it names.

    Parameters
    ----------
    device : str or torch.device

    Returns
    -------
    torch.device
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device(
            "cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count()
        )
    return device


@dataclass(frozen=True)
class Part:
    """The part of a (possibly) data-parallel run that one process holds: see :func:`setup`.

    Attributes
    ----------
    data : object
        The rank's contiguous shard of the data (the whole data in one process).
    process_group : torch.distributed.ProcessGroup or None
        For ``Objective(process_group=...)``; ``None`` in one process.
    rank, world_size : int
        ``0`` and ``1`` in one process.
    """

    data: Any
    process_group: Any = None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process should print and write (rank 0)."""
        return self.rank == 0


def setup(data: Any, device: str | torch.device | None = None) -> Part:
    """The part of the data this process holds, and its process group under ``torchrun``.

    Under ``torchrun`` (:func:`launched_by_torchrun`): initialises the default
    process group from the environment (:func:`init_from_env`; nothing
    happens if it is already up) and takes this rank's contiguous shard of
    the data (:func:`shard`). Otherwise the data comes back whole, with no
    group, so one script serves both.

    Parameters
    ----------
    data : critpoint.data.Data, (inputs, targets) tensors, or any data
        The whole data set. Under ``torchrun`` it must be held in memory
        (a ``Data`` or a tensor pair): a ``Dataset`` or ``DataLoader`` is
        sharded by its own ``DistributedSampler``, not here.
    device : str or torch.device, optional
        The device the analysis runs on (NCCL for CUDA, gloo otherwise).

    Returns
    -------
    Part

    Raises
    ------
    InputError
        Under ``torchrun``, for data not held in memory, or fewer samples
        than processes.
    """
    if not launched_by_torchrun():
        return Part(data)
    if not _in_memory(data):
        what = type(data).__name__
        if hasattr(data, "kind") and hasattr(data, "name"):  # a critpoint DataSource
            what = f"{data.name!r}, a {data.kind}"
        msg = (
            f"data {what}: under torchrun critpoint shards in-memory (inputs, targets) "
            "data only; return a tensor pair from your data function, or shard it "
            "yourself in a Python script"
        )
        raise InputError(msg)
    import torch.distributed as dist

    group = init_from_env(device)
    return Part(
        shard(data),
        process_group=group,
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
    )


def _in_memory(data: Any) -> bool:
    """A ``Data`` or a pair of tensors: what :func:`shard` takes."""
    return _is_data(data) or _is_pair(data)


def _is_data(data: Any) -> bool:
    """A :class:`critpoint.data.Data` (duck-typed: inputs, targets, subset)."""
    return all(hasattr(data, a) for a in ("inputs", "targets", "subset"))


def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def init_from_env(device: str | torch.device | None = None) -> Any:
    """Initialise the default process group from ``torchrun``'s environment.

    Chooses NCCL for CUDA devices and gloo otherwise; does nothing if the group
    is already initialised.

    Parameters
    ----------
    device : str or torch.device, optional
        The device the analysis runs on.

    Returns
    -------
    torch.distributed.ProcessGroup
        The default (world) group.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device is not None and torch.device(device).type == "cuda"
        if use_cuda and torch.device(device).index is not None:
            # NCCL builds its communicators on the current device: make it ours.
            torch.cuda.set_device(torch.device(device))
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend)
    return dist.group.WORLD


def finish(wait: bool = True) -> None:
    """End the default process group cleanly.

    A process that exits with its group still open can abort in gloo's or
    NCCL's teardown ("terminate called without an active exception") while
    another rank is still writing. With ``wait`` every rank first waits for the
    slowest (a barrier: call it on every rank); after an error, pass
    ``wait=False`` so a failing rank does not block on the others. Does
    nothing without a group.

    Parameters
    ----------
    wait : bool
        Whether to pass a barrier before destroying the group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def is_main(process_group: Any = None) -> bool:
    """Whether this process should print and write (rank 0, or no distribution)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return True
    return dist.get_rank(group=process_group) == 0


def allreduce_bytes_per_hvp(num_params: int, dtype: torch.dtype) -> int:
    """Bytes each rank sends into the all-reduce of one HVP: one gradient-sized vector."""
    return num_params * torch.finfo(dtype).bits // 8
