"""Two gloo processes on loopback with uneven shards give the one-process answer."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import critpoint as cp
from critpoint.data import DataSource
from critpoint.distributed import (
    allreduce_bytes_per_hvp,
    local_device,
    setup,
    shard,
    shard_range,
)

WORKER = Path(__file__).with_name("_distributed_worker.py")


def load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_process(tmp_path):
    init_file = tmp_path / "store"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(rank),
                "2",
                str(init_file),
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["local_samples"].item() == 12
    assert ranks[1]["local_samples"].item() == 11
    # every rank agrees bit for bit
    for key in ranks[0]:
        if key == "local_samples":
            continue
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    # and matches one process holding all the data
    worker = load_worker()
    model, X, y = worker.problem()
    single = worker.analyse(cp.Objective(model, F.cross_entropy, (X, y), batch_size=5))
    dist = ranks[0]
    assert dist["num_samples"].item() == 23
    for key in ("eigenvalues", "trace", "loss", "grad", "nodes"):
        assert torch.allclose(dist[key], single[key], rtol=0, atol=1e-12), key
    assert torch.allclose(dist["weights"], single["weights"], rtol=0, atol=1e-12)
    # a summed loss is summed over the ranks too, never divided by the count
    summed = cp.Objective(
        model, torch.nn.CrossEntropyLoss(reduction="sum"), (X, y), batch_size=5
    )
    assert summed.reduction == "sum"
    one = worker.analyse_sum(summed)
    mean = cp.Objective(model, F.cross_entropy, (X, y))
    assert one["sum_loss"][0].item() == pytest.approx(23 * mean.loss(), rel=1e-13)
    for key in ("sum_loss", "sum_grad", "sum_hvp", "sum_dense"):
        assert torch.allclose(dist[key], one[key], rtol=1e-12, atol=1e-12), key


def test_shard_ranges_cover_the_data_unevenly():
    ranges = [shard_range(23, r, 3) for r in range(3)]
    assert ranges == [(0, 8), (8, 16), (16, 23)]
    X = torch.arange(10.0).reshape(10, 1)
    y = torch.arange(10)
    parts = [shard((X, y), r, 4) for r in range(4)]
    assert [len(p[0]) for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(cp.InputError, match="at least one"):
        shard_range(2, 0, 3)
    with pytest.raises(cp.InputError, match="rank must lie"):
        shard_range(10, 3, 3)
    with pytest.raises(cp.InputError, match="not initialised"):
        shard((X, y))
    assert allreduce_bytes_per_hvp(85002, torch.float32) == 340008


SETUP_SCRIPT = """
import json, sys
import torch
from critpoint import distributed
X = torch.arange(23.0).reshape(23, 1)
y = torch.arange(23)
part = distributed.setup((X, y), "cpu")
again = distributed.setup((X, y), "cpu")  # the group is up already: same part
out = {
    "rank": part.rank, "world_size": part.world_size, "is_main": part.is_main,
    "targets": part.data[1].tolist(), "grouped": part.process_group is not None,
    "again": again.data[1].tolist(),
}
distributed.finish()
print(json.dumps(out))
"""


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_setup_under_torchrun_shards_the_data_and_joins_the_group():
    import json
    import os

    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", SETUP_SCRIPT],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    parts = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        parts.append(json.loads(out.strip().splitlines()[-1]))
    assert [q["rank"] for q in parts] == [0, 1]
    assert [q["world_size"] for q in parts] == [2, 2]
    assert [q["is_main"] for q in parts] == [True, False]
    assert parts[0]["targets"] == list(range(12))  # uneven shards: 12 and 11
    assert parts[1]["targets"] == list(range(12, 23))
    assert all(q["grouped"] and q["again"] == q["targets"] for q in parts)


def test_setup_in_one_process_gives_the_whole_data(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    X = torch.zeros(5, 2)
    y = torch.arange(5)
    part = setup((X, y))
    assert part.data[0] is X
    assert part.data[1] is y
    assert part.process_group is None
    assert (part.rank, part.world_size, part.is_main) == (0, 1, True)
    loader = torch.utils.data.DataLoader(list(zip(X, y, strict=True)), batch_size=2)
    assert setup(loader).data is loader  # any data, whole, outside torchrun


def test_setup_under_torchrun_refuses_data_not_in_memory(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    source = DataSource(kind="dataloader", obj=[], name="mine:loader")
    with pytest.raises(
        cp.InputError, match="'mine:loader', a dataloader: under torchrun"
    ):
        setup(source)
    with pytest.raises(cp.InputError, match="data list: under torchrun"):
        setup([1, 2, 3])


def test_local_device_is_the_process_gpu_under_torchrun(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == torch.device("cuda", 1)
    assert local_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert local_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert local_device("cuda") == torch.device("cuda")
