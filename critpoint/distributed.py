"""Data-parallel Hessian products over ``torch.distributed``.

The pattern: every rank holds a shard of the data and the same model; the
:class:`~critpoint.Objective` built with ``process_group=`` computes the
gradient or HVP of its shard's *summed* loss, one ``all_reduce(SUM)`` per
product, divided by the global sample count (all-reduced once). Every rank runs
the same solver with the same seed, so all ranks agree bit for bit; only rank 0
should print or write (:func:`is_main`).

Launch a script with ``torchrun`` (gloo on CPU, NCCL on GPU)::

    torchrun --nproc-per-node=2 my_analysis.py

where the script calls :func:`init_from_env`, takes its part of the data with
:func:`shard` and builds ``Objective(..., process_group=dist.group.WORLD)``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from critpoint.errors import InputError


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
    if hasattr(data, "inputs") and hasattr(data, "targets") and hasattr(data, "subset"):
        start, stop = shard_range(len(data.inputs), rank, world_size)
        import dataclasses

        return dataclasses.replace(
            data, inputs=data.inputs[start:stop], targets=data.targets[start:stop]
        )
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
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
