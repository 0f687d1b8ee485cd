"""How much memory is free where the work runs (host or GPU), within a container's limit."""

from __future__ import annotations

import os

import torch

#: (limit, usage) files of a container's memory cgroup, v2 then v1.
CGROUP_MEMORY_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)


def free_host_memory() -> int:
    """Free host memory in bytes, within a container's memory limit; 0 if unknown."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
    # A cgroup limit (v2, then v1) caps what this process may use, whatever the host has.
    for limit_file, usage_file in CGROUP_MEMORY_FILES:
        try:
            with open(limit_file) as f:
                limit_text = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text.isdigit():
            free = min(free, max(0, int(limit_text) - usage))
        break
    return free


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (host memory for the CPU); 0 if it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return free_host_memory()
    return 0  # no portable way to ask other devices
