"""One rank of the two-process test: run as a script by tests/test_distributed.py.

Usage: python _distributed_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR
"""

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint.distributed import shard


def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(23, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (23,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    return model, X, y


def analyse(obj):
    H = obj.hessian()
    r = cp.eigsh(H, k=4, which="BE", tol=1e-10, seed=3)
    t = cp.trace(H, max_matvecs=30, method="hutchpp", seed=4)
    d = cp.spectral_density(H, num_probes=4, num_steps=20, seed=5)
    loss, grad = obj.loss_and_grad()
    return {
        "eigenvalues": r.eigenvalues,
        "residuals": r.residuals,
        "trace": torch.tensor([t.value, t.stderr], dtype=torch.float64),
        "nodes": d.nodes,
        "weights": d.weights,
        "loss": torch.tensor([loss, obj.loss()], dtype=torch.float64),
        "grad": grad,
        "num_samples": torch.tensor([obj.num_samples]),
    }


def analyse_sum(obj):
    """Loss, gradient and products of a summed loss (no division by the count)."""
    g = torch.Generator().manual_seed(6)
    V = torch.randn(obj.num_params, 2, generator=g, dtype=torch.float64)
    loss, grad = obj.loss_and_grad()
    return {
        "sum_loss": torch.tensor([loss, obj.loss()], dtype=torch.float64),
        "sum_grad": grad,
        "sum_hvp": obj.hvp(V),
        "sum_dense": obj.hessian().dense(),
    }


def main():
    rank, world, init_file, out_dir = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
    )
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    model, X, y = problem()
    # uneven shards: ranks hold 12 and 11 samples, each in batches of 5 (a short last batch)
    local = shard((X, y), rank, world)
    obj = cp.Objective(
        model, F.cross_entropy, local, batch_size=5, process_group=dist.group.WORLD
    )
    result = analyse(obj)
    summed = cp.Objective(
        model,
        torch.nn.CrossEntropyLoss(reduction="sum"),
        local,
        batch_size=5,
        process_group=dist.group.WORLD,
    )
    result.update(analyse_sum(summed))
    result["local_samples"] = torch.tensor([local[0].shape[0]])
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
