"""critpoint.training: torch.optim by name, schedules, determinism, tracking, History."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import critpoint as cp
from critpoint.data import load_data
from critpoint.errors import InputError, NonFiniteError
from critpoint.io.checkpoint import load_checkpoint, save_checkpoint
from critpoint.losses import get_loss
from critpoint.models import build_model
from critpoint.training import (
    OPTIMIZERS,
    SCHEDULES,
    History,
    lr_factor,
    make_optimizer,
    make_scheduler,
    train,
)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", dtype="float64").subset(240)


def small_model(seed=0, **kw):
    return build_model("mlp", widths=[8], seed=seed, dtype="float64", **kw)


def params_of(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ------------------------------------------------------------- determinism


def test_same_seed_same_history_and_parameters(digits):
    runs = []
    for _ in range(2):
        model = small_model()
        h = train(
            model,
            digits,
            optimizer="adam",
            lr=1e-2,
            batch_size=32,
            epochs=3,
            seed=5,
            track={"sharpness"},
            track_every=7,
        )
        runs.append((h, params_of(model)))
    (h1, p1), (h2, p2) = runs
    assert h1 == h2
    assert torch.equal(p1, p2)
    other = small_model()
    h3 = train(
        other, digits, optimizer="adam", lr=1e-2, batch_size=32, epochs=3, seed=6
    )
    assert h3.loss != h1.loss  # another minibatch order
    assert not torch.equal(params_of(other), p1)


def test_global_rng_untouched_and_mode_restored(digits):
    model = small_model()
    model.eval()
    state = torch.random.get_rng_state()
    train(model, digits, batch_size=16, steps=5, track={"sharpness"}, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert not any(m.training for m in model.modules())


def test_dropout_is_deterministic_for_a_seed(digits):
    def run():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 10)
        ).double()
        torch.rand(3)  # the caller's global stream moves on between the runs
        return train(model, digits, batch_size=32, steps=6, seed=1).loss

    assert run() == run()


# ---------------------------------------------------------- optimizers by name


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
def test_optimizer_by_name_builds_the_torch_class(name, cls, group, digits):
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


def test_optimizer_class_and_extra_options(digits):
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


def test_warmup_then_cosine_matches_the_closed_form(digits):
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


# ------------------------------------------------------ full batch, minibatch


def test_full_batch_is_gradient_descent_on_the_exact_loss(digits):
    model = small_model()
    x, y = digits.as_tuple()
    obj = cp.Objective(model, get_loss("cross_entropy"), (x, y))
    theta0 = obj.theta
    loss0, g0 = obj.loss_and_grad()
    h = train(model, digits, optimizer="sgd", lr=0.3, steps=1, batch_size=None)
    assert h.settings["full_batch"]
    assert h.settings["steps_per_epoch"] == 1
    assert h.loss[0] == pytest.approx(loss0, rel=1e-12)
    assert h.grad_norm[0] == pytest.approx(float(g0.norm()), rel=1e-10)
    assert torch.allclose(obj.theta, theta0 - 0.3 * g0, rtol=0, atol=1e-13)
    assert h.full_loss == pytest.approx([loss0, obj.loss()], rel=1e-12)
    # more steps: the per-step loss is the full loss at every step
    h = train(small_model(), digits, lr=0.3, steps=6, eval_every=1)
    assert h.loss == pytest.approx(h.full_loss[:-1], rel=1e-12)
    assert h.epoch == list(range(6))


def test_minibatch_epochs_and_drop_last(digits):
    n = len(digits)  # 240
    h = train(small_model(), digits, batch_size=100, epochs=2)
    assert h.settings["steps_per_epoch"] == 3
    assert h.num_steps == 6
    assert h.epoch == [0, 0, 0, 1, 1, 1]
    h = train(small_model(), digits, batch_size=100, epochs=2, drop_last=True)
    assert h.settings["steps_per_epoch"] == n // 100
    assert h.epoch == [0, 0, 1, 1]
    h = train(small_model(), digits, batch_size=10_000, steps=2)  # ≥ n: full batch
    assert h.settings["full_batch"]
    h = train(small_model(), digits)  # neither epochs nor steps: one epoch
    assert h.num_steps == 1


def test_tensor_pair_test_data_and_mse_by_name(digits):
    x, y = digits.as_tuple()
    test = load_data("digits", split="test", dtype="float64").subset(50)
    h = train(
        small_model(),
        (x, y),
        loss="mse",
        lr=0.5,
        steps=8,
        eval_every=4,
        test_data=test.as_tuple(),
    )
    assert h.eval_step == [0, 4, 8]
    assert len(h.accuracy) == len(h.test_loss) == len(h.test_accuracy) == 3
    assert 0.0 <= h.test_accuracy[-1] <= 1.0
    assert h.full_loss[-1] < h.full_loss[0]
    assert h.settings["loss"] == "mse"
    reg = (
        x,
        torch.randn(
            len(x), 1, dtype=x.dtype, generator=torch.Generator().manual_seed(0)
        ),
    )
    h = train(small_model(out_features=1), reg, loss=F.mse_loss, steps=3)
    assert h.accuracy == []  # regression: no accuracy


# ------------------------------------------------------------------- tracking


def test_tracking_matches_an_independent_eigsh(digits):
    model = small_model()
    h = train(
        model,
        digits,
        optimizer="momentum",
        lr=0.05,
        batch_size=48,
        steps=12,
        track=["sharpness", "lambda_min", "minimum_ratio"],
        track_every=5,
        track_tol=1e-10,
        seed=2,
    )
    assert h.track_step == [0, 5, 10, 12]
    assert len(h.sharpness) == len(h.lambda_min) == len(h.minimum_ratio) == 4
    obj = cp.Objective(model, get_loss("cross_entropy"), digits.as_tuple())
    H = obj.hessian()
    top = float(cp.eigsh(H, k=1, which="LA", tol=1e-10, seed=99).eigenvalues[-1])
    bottom = float(cp.eigsh(H, k=1, which="SA", tol=1e-10, seed=99).eigenvalues[0])
    assert h.sharpness[-1] == pytest.approx(top, rel=1e-6)
    assert h.lambda_min[-1] == pytest.approx(bottom, rel=1e-6)
    dense = torch.linalg.eigvalsh(H.dense())
    assert h.sharpness[-1] == pytest.approx(float(dense[-1]), rel=1e-6)
    assert all(0.0 <= r <= 1.0 for r in h.minimum_ratio)
    # cost: the symmetry probe (3) once, two Lanczos runs, SLQ 4 probes x 40 steps
    assert all(m >= 160 for m in h.track_matvecs)
    assert h.final_sharpness == h.sharpness[-1]


def test_default_tracking_cadence_and_batchnorm_train_mode(digits):
    model = build_model("mlp", widths=[8], batchnorm=True, seed=0, dtype="float64")
    h = train(model, digits, lr=0.1, steps=20, track="sharpness", track_train_mode=True)
    assert h.track_step == list(range(0, 21, 2))  # about ten points: every T // 10
    obj = cp.Objective(
        model, get_loss("cross_entropy"), digits.as_tuple(), train_mode=True
    )
    top = float(cp.eigsh(obj.hessian(), k=1, which="LA", tol=1e-10).eigenvalues[-1])
    assert h.sharpness[-1] == pytest.approx(top, rel=1e-2)
    # The full-data evaluations (in train mode) leave the running statistics
    # alone: after one full-batch step they moved exactly once, by that step.
    expected = copy.deepcopy(model).train()
    with torch.no_grad():
        expected(digits.inputs)
    h2 = train(model, digits, lr=1e-9, steps=1, track_train_mode=True, eval_every=1)
    assert h2.eval_step == [0, 1]
    assert h2.full_loss[0] == pytest.approx(h.full_loss[-1], rel=1e-12)
    for name, buf in expected.named_buffers():
        assert torch.equal(buf, dict(model.named_buffers())[name]), name


# --------------------------------------------------------- stopping, callback


def test_stop_loss_and_callback(digits):
    h = train(
        small_model(),
        digits,
        lr=0.5,
        steps=500,
        stop_loss=1.0,
        eval_every=1,
        track={"sharpness"},
        track_every=1000,
    )
    assert h.stop_reason == "stop_loss"
    assert h.final_loss <= 1.0 < h.full_loss[-2]
    assert h.track_step == [0, h.num_steps]
    seen = []

    def callback(step, history):
        seen.append((step, len(history.loss)))
        return step == 3

    h = train(small_model(), digits, steps=50, callback=callback)
    assert seen == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert h.stop_reason == "callback"
    assert h.num_steps == 4
    assert h.eval_step[-1] == 4


def test_progress_bar(digits, capsys):
    h = train(small_model(), digits, steps=3, progress=True)
    assert h.num_steps == 3
    assert "train" in capsys.readouterr().err


# ------------------------------------------------------------------- history


def test_history_round_trips_through_json_and_a_checkpoint(digits, tmp_path):
    model = small_model()
    h = train(
        model,
        digits,
        batch_size=64,
        epochs=2,
        track={"sharpness", "lambda_min"},
        test_data=digits,
        seed=4,
    )
    d = h.to_dict()
    assert d["schema"] == "critpoint-history"
    again = History.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert again == h
    assert again.final_loss == h.final_loss == h.full_loss[-1]
    assert again.settings["seed"] == 4
    assert again.settings["track"] == [
        "sharpness",
        "lambda_min",
    ]
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, model, history=h)
    assert History.from_dict(load_checkpoint(path).history) == h


def test_history_from_dict_rejects_bad_input():
    with pytest.raises(InputError, match="schema is 'other'"):
        History.from_dict({"schema": "other"})
    with pytest.raises(InputError, match=r"unknown History field\(s\) \['bogus'\]"):
        History.from_dict({"bogus": []})
    with pytest.raises(InputError, match="'loss' has 1 entries but 'step' has 2"):
        History.from_dict(
            {
                "step": [0, 1],
                "epoch": [0, 0],
                "loss": [1.0],
                "grad_norm": [1, 1],
                "lr": [1, 1],
            }
        )
    assert math.isnan(History().final_loss)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"optimizer": "adagrad"},
            r"unknown optimizer 'adagrad'; choose one of \['adam'",
        ),
        ({"schedule": "exp"}, r"unknown schedule 'exp'; choose one of \['constant'"),
        ({"lr": 0.0}, "lr must be a positive finite number"),
        ({"lr": -1}, "lr must be a positive finite number"),
        ({"lr": float("nan")}, "lr must be a positive finite number"),
        ({"lr": "0.1"}, "lr must be a positive finite number"),
        ({"epochs": 2, "steps": 3}, "give epochs or steps, not both"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer; got 0; use None"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        (
            {"momentum": 1.0, "optimizer": "momentum"},
            r"momentum must be a number in \[0, 1\)",
        ),
        ({"betas": (0.9,)}, "betas must be two numbers"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
        ({"track": {"trace"}}, r"cannot track \['trace'\]"),
        (
            {"track": {"sharpness"}, "track_every": 0},
            "track_every must be a positive integer",
        ),
        ({"seed": 1.0}, "seed must be an int"),
        ({"loss": 3}, "loss must be a name"),
        ({"callback": 3}, "callback must be callable"),
        ({"stop_loss": float("inf")}, "stop_loss must be a finite number"),
        ({"optimizer": "nesterov", "momentum": 0.0}, "nesterov needs momentum > 0"),
        ({"optimizer_kwargs": {"bogus": 1}}, "rejected the options"),
    ],
)
def test_bad_arguments_raise_input_errors(kwargs, match, digits):
    with pytest.raises(InputError, match=match):
        train(small_model(), digits, **kwargs)


def test_bad_data_and_model():
    with pytest.raises(InputError, match="data must be a critpoint Data"):
        train(small_model(), torch.zeros(3, 64))
    with pytest.raises(InputError, match="same number of samples"):
        train(small_model(), (torch.zeros(3, 64), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(InputError, match=r"model must be a torch\.nn\.Module"):
        train(lambda x: x, (torch.zeros(3, 64), torch.zeros(3, dtype=torch.long)))


def test_divergence_raises_nonfinite_error_naming_the_step():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=gen)
    y = torch.randn(64, 1, generator=gen)
    model = build_model("mlp", in_features=5, widths=(), out_features=1, seed=0)
    with pytest.raises(
        NonFiniteError, match=r"at step \d+ .*Use a smaller learning rate"
    ) as info:
        train(model, (x, y), loss="mse", lr=50.0, steps=500)
    partial = info.value.history
    assert 0 < partial.num_steps < 500
    assert f"step {partial.num_steps}" in str(info.value)
