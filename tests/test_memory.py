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


def test_parse_bytes_reads_numbers_and_sizes():
    import pytest

    from critpoint.errors import InputError

    assert _memory.parse_bytes(12345) == 12345
    assert _memory.parse_bytes("8GB") == 8 * 10**9
    assert _memory.parse_bytes("8 gb") == 8 * 10**9
    assert _memory.parse_bytes("1.5G") == 1_500_000_000
    assert _memory.parse_bytes("512MiB") == 512 * 2**20
    assert _memory.parse_bytes("2TiB") == 2 * 2**40
    assert _memory.parse_bytes("1e9") == 10**9
    for bad in ("", "0", "-1GB", "8 parsecs", "GB", True, None, float("inf"), 0.5):
        with pytest.raises(InputError, match="a size such as '8GB'"):
            _memory.parse_bytes(bad)


def test_format_bytes():
    assert _memory.format_bytes(512) == "512 B"
    assert _memory.format_bytes(1.5 * 2**30) == "1.50 GiB"
    assert _memory.format_bytes(300 * 2**20) == "300 MiB"


def test_free_gpu_memory_is_zero_without_cuda(monkeypatch):
    def broken(device):
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(torch.cuda, "mem_get_info", broken)
    assert _memory.free_memory(torch.device("cuda")) == 0
