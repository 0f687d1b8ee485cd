"""critpoint.training.optim: torch.optim by name, schedules in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from critpoint.training import (
    OPTIMIZERS,
    SCHEDULES,
    lr_factor,
    make_optimizer,
    make_scheduler,
    train,
)


@pytest.mark.parametrize(
    ("name", "cls", "group"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
        ("momentum", torch.optim.SGD, {"momentum": 0.8, "nesterov": False}),
        ("nesterov", torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99)}),
        ("adamw", torch.optim.AdamW, {"betas": (0.8, 0.99), "weight_decay": 1e-3}),
    ],
)
def test_optimizer_by_name_builds_the_torch_class(
    name, cls, group, digits, small_model
):
    model = small_model()
    opt = make_optimizer(
        model.parameters(),
        name,
        lr=0.05,
        momentum=0.8,
        betas=(0.8, 0.99),
        weight_decay=1e-3,
    )
    assert type(opt) is cls
    assert OPTIMIZERS[name] is cls
    pg = opt.param_groups[0]
    assert pg["lr"] == 0.05
    assert pg["weight_decay"] == 1e-3
    for key, value in group.items():
        assert pg[key] == value, key
    h = train(small_model(), digits, optimizer=name, lr=0.01, steps=3, batch_size=64)
    assert h.settings["optimizer_class"] == f"{cls.__module__}.{cls.__qualname__}"
    assert h.settings["optimizer"] == name


def test_optimizer_class_and_extra_options(digits, small_model):
    opt = make_optimizer(small_model().parameters(), "rmsprop", lr=1e-3, alpha=0.9)
    assert opt.param_groups[0]["alpha"] == 0.9
    h = train(
        small_model(),
        digits,
        optimizer=torch.optim.Adagrad,
        lr=0.01,
        steps=2,
        optimizer_kwargs={"lr_decay": 0.1},
    )
    assert h.settings["optimizer_class"] == "torch.optim.adagrad.Adagrad"


# ------------------------------------------------------------------ schedules


def test_warmup_then_cosine_matches_the_closed_form(digits, small_model):
    total, warm, lr = 40, 10, 0.2
    model = small_model()
    h = train(
        model,
        digits,
        optimizer="sgd",
        lr=lr,
        steps=total,
        warmup_steps=warm,
        schedule="cosine",
        batch_size=60,
    )
    expected = [
        lr * (t + 1) / warm
        if t < warm
        else lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        for t in range(total)
    ]
    assert h.lr == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert max(h.lr) == pytest.approx(lr)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_schedule_is_a_lambdalr_with_its_closed_form(schedule):
    total = 20
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], "sgd", lr=1.0)
    sched = make_scheduler(opt, schedule, total_steps=total, warmup_steps=0)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    closed = {
        "constant": [1.0] * total,
        "cosine": [0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)],
        "linear": [1 - t / total for t in range(total)],
        "step": [1.0] * 10 + [0.1] * 5 + [0.01] * 5,
    }[schedule]
    assert seen == pytest.approx(closed, rel=1e-12, abs=1e-15)
    assert [lr_factor(schedule, total)(t) for t in range(total)] == pytest.approx(
        closed
    )
