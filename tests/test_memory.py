"""critpoint._memory: free memory where the work runs, within a container's limit."""

import builtins
import io
import os

import torch

from critpoint import _memory


def test_free_memory_is_capped_by_a_cgroup_limit(monkeypatch):
    page = 4096
    monkeypatch.setattr(
        os,
        "sysconf",
        lambda name: {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": page}[name],
    )
    files = {
        "/sys/fs/cgroup/memory.max": "3000000\n",
        "/sys/fs/cgroup/memory.current": "1000000\n",
    }
    real_open = builtins.open

    def fake_open(path, *a, **k):
        if path in files:
            return io.StringIO(files[path])
        if str(path).startswith("/sys/fs/cgroup"):
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert _memory.free_host_memory() == min(1000 * page, 3000000 - 1000000)
    files["/sys/fs/cgroup/memory.max"] = "max\n"  # no limit: the host's free memory
    assert _memory.free_host_memory() == 1000 * page
    assert _memory.free_memory(torch.device("cpu")) == 1000 * page
    assert _memory.free_memory(torch.device("meta")) == 0


def test_unknown_free_memory_is_zero(monkeypatch):
    def broken(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", broken)
    assert _memory.free_host_memory() == 0
