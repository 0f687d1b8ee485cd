"""critpoint.demo: the stall rule, and the demo workflow from a notebook."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch

import critpoint as cp
from critpoint.demo import PLATEAU, StallWatch, run_demo
from critpoint.io.checkpoint import load_checkpoint
from critpoint.training import History


def test_stall_watch_keeps_the_smallest_gradient_on_the_plateau():
    model = torch.nn.Linear(2, 1)
    watch = StallWatch(model, loss0=1.0)
    history = History()
    # loss on the plateau (> 0.98) for steps 0-3, off it from step 4
    losses = [1.0, 0.995, 0.99, 0.985, 0.5, 0.4]
    grads = [0.3, 0.2, 0.05, 0.1, 0.01, 0.001]
    states = []
    for k, (loss, grad) in enumerate(zip(losses, grads, strict=True)):
        states.append({n: t.clone() for n, t in model.state_dict().items()})  # θ_k
        with torch.no_grad():
            model.weight.add_(1.0)  # update k
        history.step.append(k)
        history.loss.append(loss)
        history.grad_norm.append(grad)
        watch(k, history)
    assert watch.step == 2  # the smallest gradient while loss > 0.98 · loss0
    assert watch.grad_norm == 0.05
    for name, value in states[2].items():
        assert torch.equal(watch.state[name], value), name
    assert PLATEAU == 0.98
    never = StallWatch(model, loss0=10.0)  # every loss is below the plateau
    never(0, history)
    assert never.step is None
    assert never.state is None


def test_run_demo_quick_from_python(tmp_path):
    stages = []

    @contextmanager
    def record(text):
        stages.append(text)
        yield

    seen = []
    result = run_demo(
        tmp_path / "demo",
        steps=30,
        quick=True,
        stage=record,
        progress=lambda done, total: seen.append(total),
    )
    labels = [p.label for p in result.points]
    assert labels == ["initialisation", "stalled", "end"]
    stalled = result.points[1].step
    assert [p.step for p in result.points] == [0, stalled, 30]
    assert stages == [
        "diagnosing the initialisation",
        "training (30 steps of gradient descent)",
        f"diagnosing the stalled point (step {stalled})",
        "diagnosing the end of training",
        "writing the report",
    ]
    assert seen  # progress reached the solvers and the training loop
    # weights × 1e-4: the outputs are all but zero, the loss is ln 10
    init = result.points[0].diagnosis
    assert init.loss == pytest.approx(math.log(10), abs=1e-3)
    # the stall rule on the history: the smallest gradient on the plateau
    h = result.history
    assert h.num_steps == 30
    plateau = [k for k in h.step if h.loss[k] > PLATEAU * init.loss]
    assert stalled == min(plateau, key=lambda k: h.grad_norm[k])
    # the stalled checkpoint is that point: its loss is the diagnosis's
    ckpt = load_checkpoint(result.stalled_checkpoint)
    assert ckpt.meta["step"] == stalled
    model = ckpt.build_model()
    data = cp.load_data("digits").subset(200, seed=0)
    obj = cp.Objective(model, torch.nn.functional.cross_entropy, data.as_tuple())
    assert obj.loss() == pytest.approx(result.points[1].diagnosis.loss, rel=1e-6)
    # the trained model's checkpoint holds the history
    saved = load_checkpoint(result.checkpoint)
    assert History.from_dict(saved.history) == h
    assert saved.meta["demo"]["steps"] == 30
    assert result.settings["quick"] is True
    assert result.num_params == 64 * 8 + 8 + 8 * 10 + 10
    assert result.num_samples == 200
    assert result.report == tmp_path / "demo" / "report.html"
    assert result.report.is_file()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"quick": "yes"}, "quick must be True or False"),
        ({"dtype": torch.int64}, "dtype must be a floating torch.dtype"),
        ({"progress": "bar"}, "progress must be True, False, None or a callable"),
        ({"seed": 0.5}, "seed must be an integer"),
    ],
)
def test_run_demo_refuses_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(cp.InputError, match=match):
        run_demo(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # refused before any work
