"""How much memory is free where the work runs (host or GPU), within a container's limit.

Also the one reader of a memory size given by a person (``"8GB"``, ``"512 MiB"``).
"""

from __future__ import annotations

import math
import os
import re

import torch

from critpoint.errors import InputError

#: Multipliers of the size units :func:`parse_bytes` reads (decimal SI, binary IEC).
UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE
)


def parse_bytes(value: int | float | str, name: str = "memory") -> int:
    """A memory size in bytes, from a number of bytes or a string such as ``"8GB"``.

    Parameters
    ----------
    value : int, float or str
        Bytes (``8_000_000_000``), or a number with a unit: ``k``/``kB``,
        ``M``/``MB``, ``G``/``GB``, ``T``/``TB`` (powers of 1000) or ``KiB``,
        ``MiB``, ``GiB``, ``TiB`` (powers of 1024); case does not matter.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    int
        Bytes, at least 1.

    Raises
    ------
    InputError
        For anything else (negative, zero, unknown unit).
    """
    if isinstance(value, bool):
        number, unit = math.nan, ""
    elif isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        number, unit = math.nan, ""
    if unit not in UNITS or not (math.isfinite(number) and number * UNITS[unit] >= 1):
        msg = (
            f"{name} must be a positive number of bytes or a size such as '8GB', "
            f"'512MiB' or '1.5G', got {value!r}"
        )
        raise InputError(msg)
    return int(number * UNITS[unit])


def format_bytes(size: float) -> str:
    """``size`` bytes in words: ``"1.50 GiB"``, ``"300 MiB"``, ``"12 KiB"``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(size) >= scale:
            value = size / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(size)} B"


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
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):  # no CUDA in this build or process
            return 0
        return int(free)
    if device.type == "cpu":
        return free_host_memory()
    return 0  # no portable way to ask other devices
