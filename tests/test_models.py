"""Models by name, specs, user factories and deterministic initialisation."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from critpoint.errors import InputError
from critpoint.models import (
    CNN,
    MLP,
    MODELS,
    DeepLinear,
    TwoWeight,
    build_model,
    count_parameters,
    load_object,
    model_from_spec,
    model_spec,
)


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_registry_names() -> None:
    assert set(MODELS) == {"mlp", "cnn", "two_weight", "deep_linear"}


@pytest.mark.parametrize(
    ("kwargs", "n_params"),
    [
        ({}, 64 * 32 + 32 + 32 * 10 + 10),
        ({"widths": [32, 32]}, 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10),
        ({"widths": []}, 64 * 10 + 10),
        ({"batchnorm": True}, 64 * 32 + 32 + 2 * 32 + 32 * 10 + 10),
        ({"bias": False}, 64 * 32 + 32 * 10),
        ({"in_features": 5, "widths": 7, "out_features": 2}, 5 * 7 + 7 + 7 * 2 + 2),
    ],
)
def test_mlp_shapes_and_parameter_counts(kwargs: dict, n_params: int) -> None:
    model = build_model("mlp", seed=0, **kwargs)
    assert isinstance(model, MLP)
    assert count_parameters(model) == n_params
    d_in = kwargs.get("in_features", 64)
    out = model.eval()(torch.randn(4, d_in))
    assert out.shape == (4, kwargs.get("out_features", 10))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid"])
def test_mlp_activations(activation: str) -> None:
    model = build_model("mlp", activation=activation, seed=0)
    acts = [m for m in model.modules() if type(m).__name__.lower() == activation]
    assert len(acts) == 1
    assert model(torch.randn(3, 64)).shape == (3, 10)


def test_mlp_batchnorm_on_off() -> None:
    on = build_model("mlp", widths=[16, 16], batchnorm=True, seed=0)
    off = build_model("mlp", widths=[16, 16], batchnorm=False, seed=0)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in on.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) for m in off.modules())
    assert "net.1.running_mean" in on.state_dict()


def test_mlp_flattens_images() -> None:
    model = build_model("mlp", seed=0)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model(x), model(x.flatten(1)))


def test_cnn_shapes_counts_and_flat_inputs() -> None:
    model = build_model("cnn", seed=0)
    assert isinstance(model, CNN)
    # conv 1->8 (72+8), conv 8->16 (1152+16), linear 16*2*2 -> 10 (640+10)
    assert count_parameters(model) == 80 + 1168 + 650
    x = torch.randn(5, 1, 8, 8)
    out = model(x)
    assert out.shape == (5, 10)
    torch.testing.assert_close(model(x.reshape(5, 64)), out)


def test_cnn_batchnorm_and_channels() -> None:
    model = build_model("cnn", channels=4, batchnorm=True, seed=0)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    assert count_parameters(model) == (36 + 4) + 8 + (4 * 8 * 9 + 8) + 16 + (
        8 * 4 * 10 + 10
    )
    assert model.eval()(torch.randn(2, 64)).shape == (2, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build_model("cnn").modules())


def test_cnn_rejects_bad_image_size() -> None:
    with pytest.raises(InputError, match="divisible by 4"):
        build_model("cnn", image_size=6)


def test_two_weight() -> None:
    model = build_model("two_weight", w1=2.0, w2=-3.0)
    assert isinstance(model, TwoWeight)
    assert count_parameters(model) == 2
    assert model.w1.shape == ()
    x = torch.tensor([[1.0], [2.0]])
    torch.testing.assert_close(model(x), torch.tensor([[-6.0], [-12.0]]))
    zero = build_model("two_weight")
    assert zero.w1.item() == 0.0
    assert zero.w2.item() == 0.0


def test_deep_linear() -> None:
    model = build_model("deep_linear", seed=0)
    assert isinstance(model, DeepLinear)
    assert count_parameters(model) == 3
    assert model(torch.ones(4, 1)).shape == (4, 1)
    wide = build_model(
        "deep_linear", depth=4, width=3, in_features=2, out_features=5, bias=True
    )
    assert count_parameters(wide) == (2 * 3 + 3) + 2 * (3 * 3 + 3) + (3 * 5 + 5)
    assert wide(torch.ones(7, 2)).shape == (7, 5)


def test_deep_linear_init() -> None:
    zero = build_model("deep_linear", depth=3, width=2, init="zero")
    assert all(torch.count_nonzero(p) == 0 for p in zero.parameters())
    big = build_model(
        "deep_linear", depth=2, width=200, in_features=200, init=3.0, seed=0
    )
    w = big.layers[0].weight.detach()
    assert abs(float(w.std()) - 3.0) < 0.1
    with pytest.raises(InputError, match="init must be a float scale"):
        build_model("deep_linear", init="ones")
    with pytest.raises(InputError, match="must be finite"):
        build_model("deep_linear", init=float("nan"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeded_init_is_deterministic_and_leaves_global_rng(name: str) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(name, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model(name, seed=7)
    assert _same_params(a, b)
    if name in ("mlp", "cnn"):
        assert not _same_params(a, build_model(name, seed=8))


def test_unseeded_follows_global_rng() -> None:
    torch.manual_seed(3)
    a = build_model("mlp")
    torch.manual_seed(3)
    b = build_model("mlp")
    assert _same_params(a, b)


def test_dtype() -> None:
    model = build_model("mlp", dtype="float64", seed=0)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.critpoint_spec["kwargs"]["dtype"] == "float64"
    with pytest.raises(InputError, match="unknown dtype"):
        build_model("mlp", dtype="float99")
    with pytest.raises(InputError, match="floating type"):
        build_model("mlp", dtype=torch.int64)


def test_spec_round_trip_through_json() -> None:
    spec = model_spec("mlp", widths=(16, 8), activation="tanh", batchnorm=True, seed=3)
    assert spec == {
        "name": "mlp",
        "kwargs": {
            "widths": [16, 8],
            "activation": "tanh",
            "batchnorm": True,
            "seed": 3,
        },
    }
    spec = json.loads(json.dumps(spec))
    a = model_from_spec(spec)
    b = build_model("mlp", widths=[16, 8], activation="tanh", batchnorm=True, seed=3)
    assert _same_params(a, b)
    assert a.critpoint_spec == spec
    assert _same_params(model_from_spec(json.dumps(spec)), a)
    assert isinstance(model_from_spec("two_weight"), TwoWeight)
    assert model_from_spec({"name": "cnn"}).critpoint_spec == {
        "name": "cnn",
        "kwargs": {},
    }


def test_spec_errors() -> None:
    with pytest.raises(InputError, match="cannot be stored in a spec"):
        model_spec("mlp", activation=object())
    with pytest.raises(InputError, match="needs a model name"):
        model_spec("")
    with pytest.raises(InputError, match="a model spec is a dict"):
        model_from_spec({"kwargs": {}})
    with pytest.raises(InputError, match="'kwargs' must be a dict"):
        model_from_spec({"name": "mlp", "kwargs": [1]})
    with pytest.raises(InputError, match="not valid JSON"):
        model_from_spec("{nope")


def test_unknown_model_lists_names_and_factory_form() -> None:
    with pytest.raises(
        InputError, match=r"unknown model 'resnet'.*'cnn'.*'mlp'.*module:factory"
    ):
        build_model("resnet")
    with pytest.raises(InputError, match="model name must be a non-empty string"):
        build_model(3)  # type: ignore[arg-type]


def test_bad_options() -> None:
    with pytest.raises(InputError, match=r"no option\(s\) \['width'\].*'widths'"):
        build_model("mlp", width=3)
    with pytest.raises(InputError, match="unknown activation 'swish'"):
        build_model("mlp", activation="swish")
    with pytest.raises(InputError, match="each of widths must be a positive integer"):
        build_model("mlp", widths=[0])
    with pytest.raises(InputError, match="depth must be a positive integer"):
        build_model("deep_linear", depth=0)
    with pytest.raises(InputError, match="model seed must be an int"):
        build_model("mlp", seed="1")


def test_user_factory_from_module() -> None:
    model = build_model("torch.nn:Linear", in_features=3, out_features=2, seed=0)
    assert isinstance(model, nn.Linear)
    assert _same_params(
        model, build_model("torch.nn:Linear", in_features=3, out_features=2, seed=0)
    )
    assert model.critpoint_spec == {
        "name": "torch.nn:Linear",
        "kwargs": {"in_features": 3, "out_features": 2, "seed": 0},
    }


def test_user_factory_from_file(tmp_path) -> None:
    src = tmp_path / "my_models.py"
    src.write_text(
        textwrap.dedent(
            """
            import torch

            def tiny(width=4):
                return torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(),
                                           torch.nn.Linear(width, 1))

            def not_a_module():
                return 3

            CONSTANT = 5
            """
        )
    )
    model = build_model(f"{src}:tiny", width=6, seed=1)
    assert count_parameters(model) == 2 * 6 + 6 + 6 + 1
    again = model_from_spec(json.loads(json.dumps(model.critpoint_spec)))
    assert _same_params(model, again)
    with pytest.raises(InputError, match=r"returned int, not a torch\.nn\.Module"):
        build_model(f"{src}:not_a_module")
    with pytest.raises(InputError, match="is not callable"):
        build_model(f"{src}:CONSTANT")
    with pytest.raises(
        InputError, match=r"has no attribute 'missing'; it defines \[.*'tiny'"
    ):
        build_model(f"{src}:missing")
    with pytest.raises(InputError, match=r"no option\(s\) \['depth'\]"):
        build_model(f"{src}:tiny", depth=2)


def test_user_factory_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        build_model(f"{tmp_path / 'nope.py'}:f")
    with pytest.raises(
        InputError, match=r"cannot import module 'no_such_pkg_xyz\.models'"
    ):
        build_model("no_such_pkg_xyz.models:f")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(
        InputError, match=r"running .*broken\.py' failed: RuntimeError: boom"
    ):
        build_model(f"{broken}:f")
    with pytest.raises(InputError, match=r"must look like 'package\.module:name'"):
        load_object("justaname:", what="model factory", trust=True)


def test_spec_survives_deepcopy_and_is_not_in_state_dict() -> None:
    import copy

    model = build_model("mlp", seed=0)
    assert copy.deepcopy(model).critpoint_spec == model.critpoint_spec
    assert all("spec" not in k for k in model.state_dict())


def test_sizes_are_checked_and_numpy_integers_accepted() -> None:
    import numpy as np

    with pytest.raises(
        InputError, match=r"^out_features must be a positive integer, got 0$"
    ):
        build_model("mlp", out_features=0)
    with pytest.raises(InputError, match="channels must be a positive integer"):
        build_model("cnn", channels=True)
    with pytest.raises(InputError, match="width must be a positive integer"):
        build_model("deep_linear", width=1.5)
    model = build_model("mlp", in_features=np.int64(3), widths=[np.int32(4)])
    assert [tuple(p.shape) for p in model.parameters()] == [
        (4, 3),
        (4,),
        (10, 4),
        (10,),
    ]
    assert all(
        type(m.in_features) is int for m in model.net if isinstance(m, nn.Linear)
    )
