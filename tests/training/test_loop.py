"""critpoint.training.loop: train — determinism, batching, stopping, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import critpoint as cp
from critpoint.data import load_data
from critpoint.errors import InputError, NonFiniteError
from critpoint.losses import get_loss
from critpoint.models import build_model
from critpoint.training import train


def params_of(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ------------------------------------------------------------- determinism


def test_same_seed_same_history_and_parameters(digits, small_model):
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


def test_global_rng_untouched_and_mode_restored(digits, small_model):
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


# ------------------------------------------------------ full batch, minibatch


def test_full_batch_is_gradient_descent_on_the_exact_loss(digits, small_model):
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


def test_minibatch_epochs_and_drop_last(digits, small_model):
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


def test_tensor_pair_test_data_and_mse_by_name(digits, small_model):
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


# --------------------------------------------------------- stopping, callback


def test_stop_loss_and_callback(digits, small_model):
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


def test_progress_bar(digits, small_model, capsys):
    h = train(small_model(), digits, steps=3, progress=True)
    assert h.num_steps == 3
    assert "train" in capsys.readouterr().err
    seen = []
    h = train(small_model(), digits, steps=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(
        InputError, match="progress must be True, False, None or a callable"
    ):
        train(small_model(), digits, steps=1, progress="yes")


def test_seed_may_be_a_generator_or_none(digits, small_model):
    h = train(
        small_model(),
        digits,
        batch_size=50,
        steps=6,
        seed=torch.Generator().manual_seed(7),
    )
    drawn = h.settings["seed"]
    expected = int(
        torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(7))
    )
    assert drawn == expected
    again = train(small_model(), digits, batch_size=50, steps=6, seed=drawn)
    assert again == h  # the recorded seed reproduces the run
    runs = []
    for _ in range(2):
        torch.manual_seed(11)  # None: the global RNG draws the seed
        runs.append(train(small_model(), digits, batch_size=50, steps=6, seed=None))
    assert runs[0] == runs[1]
    assert runs[0].loss != h.loss


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"optimizer": "adagrad"},
            r"unknown optimizer 'adagrad'; choose one of \['adam'",
        ),
        ({"schedule": "exp"}, r"unknown schedule 'exp'; choose one of \['constant'"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": -1}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"lr": "0.1"}, "lr must be a finite number > 0"),
        ({"epochs": 2, "steps": 3}, "give epochs or steps, not both"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0; use None"),
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
        ({"seed": 1.0}, "seed must be an integer"),
        ({"loss": 3}, "loss must be a name"),
        ({"callback": 3}, "callback must be callable"),
        ({"stop_loss": float("inf")}, "stop_loss must be a finite number"),
        ({"optimizer": "nesterov", "momentum": 0.0}, "nesterov needs momentum > 0"),
        ({"optimizer_kwargs": {"bogus": 1}}, "rejected the options"),
    ],
)
def test_bad_arguments_raise_input_errors(kwargs, match, digits, small_model):
    with pytest.raises(InputError, match=match):
        train(small_model(), digits, **kwargs)


def test_bad_data_and_model(small_model):
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_matches_the_cpu(digits, small_model):
    """Full-batch float64 GD: the same run on CUDA as on the CPU; CUDA's RNG untouched."""
    cuda_state = torch.cuda.get_rng_state()
    runs = {}
    for device in ("cpu", "cuda"):
        model = small_model().to(device)
        runs[device] = train(
            model, digits, lr=0.3, steps=5, track={"sharpness"}, track_tol=1e-10
        )
        assert next(model.parameters()).device.type == device
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert gpu.loss == pytest.approx(cpu.loss, rel=1e-10)
    assert gpu.full_loss == pytest.approx(cpu.full_loss, rel=1e-10)
    assert gpu.accuracy == cpu.accuracy
    assert gpu.sharpness == pytest.approx(cpu.sharpness, rel=1e-8)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
