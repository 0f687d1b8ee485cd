"""How true the cost a diagnosis says up front is: the plan against what was spent.

``cp.diagnose`` times its gradient and its symmetry probe, then plans the
rest (``on_plan=`` receives the :class:`critpoint.CostPlan`). This script
diagnoses the engine's digits networks (``benchmarks/engine.py``: ReLU MLP
85k and BatchNorm CNN 1.9k, float32, at initialisation and after 200 Adam
steps) with the default settings and prints, per workload, the products
planned and spent by phase and the estimated against the measured seconds of
the work after the plan. Counts are deterministic; the times need a quiet
machine.

Usage::

    .venv/bin/python benchmarks/cost_plan.py                  # CPU, one torch thread
    python benchmarks/cost_plan.py --device cuda              # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine

import critpoint as cp


def run(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    obj = cp.Objective(model, F.cross_entropy, (x, y))
    seen: dict[str, float | cp.CostPlan] = {}

    def on_plan(plan: cp.CostPlan) -> None:
        seen["plan"] = plan
        seen["t"] = time.perf_counter()

    d = cp.diagnose(obj, on_plan=on_plan)
    engine.sync()
    elapsed = time.perf_counter() - float(seen["t"])  # type: ignore[arg-type]
    plan = seen["plan"]
    assert isinstance(plan, cp.CostPlan)
    planned = {p.name: p.products for p in plan.phases}
    spent = d.num_matvecs_by_phase
    phases = ", ".join(
        f"{key} {planned.get(key, 0)}/{spent.get(key, 0)}"
        for key in ("eigenvalues", "density", "trace")
    )
    estimate = plan.seconds or float("nan")
    print(
        f"{name:<22} n={obj.num_params:>6,}  planned/spent: {phases}  "
        f"estimate {estimate:7.2f} s, measured {elapsed:7.2f} s "
        f"(ratio {estimate / elapsed:4.2f})  {plan.summary()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    engine.DEVICE = torch.device(args.device)
    engine.configure()
    x, y = engine.digits()
    x, y = x.to(engine.DEVICE), y.to(engine.DEVICE)
    images = x.reshape(-1, 1, 8, 8)
    for label, make, inputs in (
        ("MLP 85k", engine.make_mlp, x),
        ("BatchNorm CNN 1.9k", engine.make_cnn, images),
    ):
        model = make().to(engine.DEVICE).eval()
        run(f"{label}, init", model, inputs, y)
        engine.train(model, inputs, y)
        run(f"{label}, trained", model, inputs, y)


if __name__ == "__main__":
    main()
