"""Demo models by name, and models rebuilt from a JSON-able spec.

critpoint diagnoses a model it can rebuild: a checkpoint stores a *spec*
``{"name": ..., "kwargs": {...}}`` next to the state dict, and
:func:`model_from_spec` turns that spec back into an ``nn.Module``. The
built-in names are:

``mlp``
    A fully connected net (optional BatchNorm), inputs ``(N, in_features)``.
``cnn``
    A small conv net for the 1×8×8 digits (optional BatchNorm); it takes flat
    ``(N, 64)`` inputs as well as images ``(N, 1, 8, 8)``.
``two_weight``
    The lecture's ``y = w1·w2·x``: two scalar weights, whose origin is a saddle
    of the square loss at ``x = y = 1`` with Hessian eigenvalues ±2.
``deep_linear``
    A product of ``depth`` linear maps (no bias, no activation), with a
    controllable initial scale (``init="zero"`` is a degenerate critical point).

Any other name of the form ``package.module:factory`` or ``path/file.py:factory``
calls the user's factory with the keyword arguments: that is the user's code,
and it runs because the user named it. A spec read from a file
(``model_from_spec(spec, trust=False)``, as checkpoints do) may name only the
built-in models.

Initialisation is deterministic given ``seed=``: the weights are drawn inside
``torch.random.fork_rng``, so the global random state is left as it was.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from critpoint._checks import positive_int
from critpoint.errors import InputError
from critpoint.specs import dtype_name, load_object, parse_dtype

__all__ = [
    "CNN",
    "MLP",
    "MODELS",
    "DeepLinear",
    "TwoWeight",
    "build_model",
    "check_materialised",
    "count_parameters",
    "load_object",
    "model_from_spec",
    "model_spec",
    "probe_builtin",
]

#: Attribute under which :func:`build_model` records the spec of the model it
#: built, so that :func:`critpoint.io.checkpoint.save_checkpoint` can store it.
SPEC_ATTR = "critpoint_spec"

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        msg = f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}"
        raise InputError(msg) from None


class MLP(nn.Module):
    """Fully connected network ``in → widths… → out``.

    Each hidden block is ``Linear → [BatchNorm1d] → activation``; the last
    layer is a plain ``Linear`` (logits or regression outputs).

    Parameters
    ----------
    in_features : int
        Input features per sample. Inputs of shape ``(N, d1, d2, ...)`` are
        flattened to ``(N, d1·d2·…)`` first, so 8×8 images work too.
    widths : sequence of int
        Hidden widths; ``()`` gives a linear (softmax/logistic) model.
    out_features : int
        Outputs per sample (classes for cross-entropy).
    activation : {"relu", "tanh", "gelu", "sigmoid"}
        Hidden nonlinearity.
    batchnorm : bool
        Insert ``BatchNorm1d`` after each hidden ``Linear``.
    bias : bool
        Give every ``Linear`` a bias.

    Shapes
    ------
    ``(N, in_features)`` → ``(N, out_features)``.
    """

    def __init__(
        self,
        in_features: int = 64,
        widths: Sequence[int] = (32,),
        out_features: int = 10,
        activation: str = "relu",
        batchnorm: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(widths, int):
            widths = (widths,)
        sizes = [positive_int(in_features, "in_features")]
        sizes += [positive_int(w, "each of widths") for w in widths]
        out = positive_int(out_features, "out_features")
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers.append(nn.Linear(a, b, bias=bias))
            if batchnorm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(_activation(activation))
        layers.append(nn.Linear(sizes[-1], out, bias=bias))
        self.in_features = sizes[0]
        self.out_features = out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_features)`` (or ``(N, ...)`` to flatten) to ``(N, out_features)``."""
        if x.dim() > 2:
            x = x.flatten(1)
        return self.net(x)


class CNN(nn.Module):
    """Small conv net for 1×8×8 digit images.

    ``conv(1→c, 3×3) → [BN] → ReLU → maxpool 2 → conv(c→2c, 3×3) → [BN] → ReLU
    → maxpool 2 → flatten → Linear(2c·(s/4)² → num_classes)``; the
    convolutions use padding 1, so an 8×8 image ends as 2c×2×2.

    Parameters
    ----------
    channels : int
        Channels ``c`` of the first convolution (the second has ``2c``).
    num_classes : int
        Outputs per sample.
    batchnorm : bool
        Insert ``BatchNorm2d`` after each convolution.
    in_channels : int
        Image channels.
    image_size : int
        Side of the square image; must be divisible by 4.

    Shapes
    ------
    ``(N, in_channels, s, s)`` or flat ``(N, in_channels·s·s)`` → ``(N, num_classes)``.
    """

    def __init__(
        self,
        channels: int = 8,
        num_classes: int = 10,
        batchnorm: bool = False,
        in_channels: int = 1,
        image_size: int = 8,
    ) -> None:
        super().__init__()
        c = positive_int(channels, "channels")
        num_classes = positive_int(num_classes, "num_classes")
        in_channels = positive_int(in_channels, "in_channels")
        image_size = positive_int(image_size, "image_size")
        if image_size % 4:
            msg = f"image_size must be divisible by 4 (two 2×2 poolings); got {image_size}"
            raise InputError(msg)
        self.in_channels = in_channels
        self.image_size = image_size

        def block(a: int, b: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(a, b, kernel_size=3, padding=1)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(b))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            return layers

        self.features = nn.Sequential(*block(in_channels, c), *block(c, 2 * c))
        side = image_size // 4
        self.classifier = nn.Linear(2 * c * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, s, s)`` or flat ``(N, C·s·s)`` to ``(N, num_classes)``."""
        if x.dim() == 2:
            # Flat digits (N, 64) as load_data("digits") returns them.
            x = x.reshape(
                x.shape[0], self.in_channels, self.image_size, self.image_size
            )
        return self.classifier(self.features(x).flatten(1))


class TwoWeight(nn.Module):
    """The two-weight network ``y = w1·w2·x`` of the lecture.

    With the square loss ``½(w1·w2·x − y)²`` at ``x = y = 1`` the origin is a
    critical point with Hessian ``[[0, −1], [−1, 0]]`` (eigenvalues ±1 for the
    ½-scaled loss; ±2 for ``F.mse_loss``, which has no ½): a saddle.

    Parameters
    ----------
    w1, w2 : float
        Initial values of the two scalar parameters (shape ``()``).

    Shapes
    ------
    ``(N, 1)`` → ``(N, 1)`` (any shape works: the map is elementwise).
    """

    def __init__(self, w1: float = 0.0, w2: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor(float(w1)))
        self.w2 = nn.Parameter(torch.tensor(float(w2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``w1·w2·x`` (same shape as ``x``)."""
        return self.w1 * self.w2 * x


class DeepLinear(nn.Module):
    """Deep linear network ``W_depth ⋯ W_2 W_1 x`` (no activation).

    Parameters
    ----------
    depth : int
        Number of linear maps.
    width : int
        Width of the hidden layers.
    in_features, out_features : int
        Input and output features.
    bias : bool
        Give every layer a bias.
    init : float, "zero" or None
        ``None``: PyTorch's default initialisation. A float ``s``: every weight
        drawn from ``N(0, s²)`` (``s`` is the entry scale, so for width 1 the
        product starts near ``±s^depth``). ``"zero"``: all weights (and biases)
        zero; without bias this is a critical point where, for ``depth ≥ 3``,
        the Hessian vanishes.

    Shapes
    ------
    ``(N, in_features)`` → ``(N, out_features)``.
    """

    def __init__(
        self,
        depth: int = 3,
        width: int = 1,
        in_features: int = 1,
        out_features: int = 1,
        bias: bool = False,
        init: float | str | None = None,
    ) -> None:
        super().__init__()
        depth = positive_int(depth, "depth")
        sizes = [positive_int(in_features, "in_features")]
        sizes += [positive_int(width, "width")] * (depth - 1)
        sizes.append(positive_int(out_features, "out_features"))
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in itertools.pairwise(sizes)
        )
        with torch.no_grad():
            if init == "zero":
                for p in self.parameters():
                    p.zero_()
            elif isinstance(init, (int, float)) and not isinstance(init, bool):
                if not math.isfinite(init):
                    msg = f"deep_linear init scale must be finite; got {init!r}"
                    raise InputError(msg)
                for layer in self.layers:
                    layer.weight.normal_(0.0, float(init))
                    if layer.bias is not None:
                        layer.bias.zero_()
            elif init is not None:
                msg = f"deep_linear init must be a float scale, 'zero' or None; got {init!r}"
                raise InputError(msg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_features)`` to ``(N, out_features)``."""
        for layer in self.layers:
            x = layer(x)
        return x


#: Built-in model factories by name.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "two_weight": TwoWeight,
    "deep_linear": DeepLinear,
}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (trainable ones by default)."""
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )


def _jsonable(value: Any, where: str) -> Any:
    """Return ``value`` as JSON types (tuples become lists), or raise InputError.

    Not :func:`critpoint._json.clean`: a spec must come back from JSON as the
    same spec, so anything JSON cannot hold exactly (an object, a non-string
    key) is refused rather than converted, and a ``torch.dtype`` becomes its
    name (which :func:`critpoint.specs.parse_dtype` reads back).
    """
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                msg = f"{where}: keys must be strings; got {k!r}"
                raise InputError(msg)
            out[k] = _jsonable(v, where)
        return out
    msg = (
        f"{where}: {value!r} ({type(value).__name__}) cannot be stored in a spec; "
        "use numbers, strings, booleans, None, lists and dicts"
    )
    raise InputError(msg)


def model_spec(name: str, **kwargs: Any) -> dict[str, Any]:
    """Return the JSON-able spec ``{"name": name, "kwargs": kwargs}``.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`, or ``package.module:factory`` /
        ``path/file.py:factory``.
    **kwargs
        Keyword arguments of the factory, plus ``seed`` and ``dtype`` (which
        :func:`build_model` handles). Tuples become lists; a ``torch.dtype``
        becomes its name.

    Returns
    -------
    dict
        A spec that survives ``json.dumps`` / ``json.loads`` unchanged.
    """
    if not isinstance(name, str) or not name:
        msg = f"a model spec needs a model name (a string); got {name!r}"
        raise InputError(msg)
    return {"name": name, "kwargs": _jsonable(kwargs, f"model spec {name!r}")}


def model_from_spec(
    spec: Mapping[str, Any] | str, *, trust: bool = True, source: str | None = None
) -> nn.Module:
    """Build the model a spec describes.

    Parameters
    ----------
    spec : dict or str
        ``{"name": ..., "kwargs": {...}}`` as :func:`model_spec` returns (the
        ``kwargs`` key may be missing), a JSON string of it, or a bare name.
    trust : bool
        ``True`` (default): the caller names the spec, so a user factory
        (``module:factory``, ``file.py:factory``) is imported and run.
        ``False``: the spec was read from a file and may name only a built-in
        model; anything else raises :class:`~critpoint.errors.UnsafeCheckpointError`.
    source : str, optional
        Where the spec was read (``"checkpoint 'm.ckpt'"``), for messages.

    Returns
    -------
    nn.Module
    """
    shown = spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as exc:
                msg = f"model spec {spec!r} is not valid JSON: {exc}"
                raise InputError(msg) from None
        else:
            return _build(text, {}, trust=trust, source=source, shown=shown)
    if not isinstance(spec, Mapping) or "name" not in spec:
        msg = f'a model spec is a dict {{"name": ..., "kwargs": {{...}}}}; got {spec!r}'
        raise InputError(msg)
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        msg = f"model spec 'kwargs' must be a dict of options; got {kwargs!r}"
        raise InputError(msg)
    return _build(spec["name"], kwargs, trust=trust, source=source, shown=spec)


def probe_builtin(spec: Mapping[str, Any] | str) -> nn.Module | None:
    """The built-in model a spec names, built on the ``meta`` device (no memory).

    Returns
    -------
    nn.Module or None
        ``None`` when the spec does not name a built-in model (user factories
        are never run here). Errors in the spec raise as in :func:`model_from_spec`.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError:
                return None  # model_from_spec says what is wrong
        else:
            spec = {"name": text}
    if not isinstance(spec, Mapping) or spec.get("name") not in MODELS:
        return None
    with torch.device("meta"):
        return model_from_spec(spec, trust=False)


def build_model(
    name: str,
    *,
    seed: int | None = None,
    dtype: torch.dtype | str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name : str
        ``"mlp"``, ``"cnn"``, ``"two_weight"``, ``"deep_linear"``, or a user
        factory ``package.module:factory`` / ``path/to/file.py:factory``
        (imported and run: it is the caller's code).
    seed : int, optional
        Seed of the initialisation. The weights are drawn inside
        ``torch.random.fork_rng`` with the CPU generator seeded, so the same
        seed gives the same model and the global random state is untouched.
        ``None`` draws from the global RNG, as PyTorch would.
    dtype : torch.dtype or str, optional
        Cast the finished model (e.g. ``"float64"`` for exact tests).
    **kwargs
        Options of the model (see the classes :class:`MLP`, :class:`CNN`,
        :class:`TwoWeight`, :class:`DeepLinear`) or of the user factory.

    Returns
    -------
    nn.Module
        The model, with its spec (name, kwargs, seed, dtype) recorded in the
        attribute ``critpoint_spec`` for :func:`~critpoint.io.checkpoint.save_checkpoint`.
    """
    return _build(name, {**kwargs, "seed": seed, "dtype": dtype}, trust=True)


def _build(
    name: Any,
    options: Mapping[str, Any],
    *,
    trust: bool,
    source: str | None = None,
    shown: Any = None,
) -> nn.Module:
    """Build model ``name`` with ``options`` (``seed`` and ``dtype`` included)."""
    kwargs = dict(options)
    seed = kwargs.pop("seed", None)
    dtype = kwargs.pop("dtype", None)
    if not isinstance(name, str) or not name.strip():
        msg = f"model name must be a non-empty string; got {name!r}"
        raise InputError(msg)
    torch_dtype = parse_dtype(dtype)
    if name in MODELS:
        factory = MODELS[name]
    elif ":" in name:
        factory = load_object(
            name,
            what="model factory",
            trust=trust,
            source=source,
            shown=shown if shown is not None else name,
            builtins=MODELS,
        )
        if not callable(factory):
            msg = f"model factory {name!r} is not callable ({type(factory).__name__})"
            raise InputError(msg)
    else:
        msg = (
            f"unknown model {name!r}; built-in models are {sorted(MODELS)}, or name "
            "your own factory as 'package.module:factory' or 'path/to/file.py:factory'"
        )
        raise InputError(msg)

    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63
    ):
        msg = f"model seed must be an integer in [0, 2**63); got {seed!r}"
        raise InputError(msg)
    _check_kwargs(factory, kwargs, name)
    if seed is None:
        model = _call_factory(factory, kwargs, name)
    else:
        # fork_rng restores the CPU RNG state on exit; seeding only the CPU
        # default generator (not torch.manual_seed) leaves CUDA RNGs alone.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            model = _call_factory(factory, kwargs, name)
    if not isinstance(model, nn.Module):
        msg = f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        raise InputError(msg)
    if not _building_on_meta():
        check_materialised(model, f"model {name!r}")
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    extra = {"seed": seed} if seed is not None else {}
    if torch_dtype is not None:
        extra["dtype"] = dtype_name(torch_dtype)
    try:
        spec = model_spec(name, **kwargs, **extra)
    except InputError:
        spec = (
            None  # kwargs that are not JSON-able: the model works, it just has no spec
        )
    # A plain attribute (not a buffer): not in the state dict, not moved by .to().
    setattr(model, SPEC_ATTR, spec)
    return model


def _building_on_meta() -> bool:
    """Whether a ``torch.device("meta")`` context is active (see :func:`probe_builtin`)."""
    return torch.empty(0).is_meta


def check_materialised(model: nn.Module, what: str) -> None:
    """Refuse a model whose tensors are on the ``meta`` device (shapes, no values).

    Raises
    ------
    InputError
        Naming the first such tensor and how to give it storage.
    """
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    for pname, t in tensors:
        if t.is_meta:
            msg = (
                f"{what} has its tensor {pname!r} on the meta device (a shape without values), "
                "so it cannot be evaluated; create it on a real device, or call "
                "model.to_empty(device='cpu') and then load or initialise its weights"
            )
            raise InputError(msg)


def _check_kwargs(
    factory: Callable[..., Any], kwargs: Mapping[str, Any], name: str
) -> None:
    """Raise InputError naming the accepted options when a keyword is unknown."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        k
        for k, p in params.items()
        if p.kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        msg = f"model {name!r} has no option(s) {unknown}; its options are {accepted}"
        raise InputError(msg)


def _call_factory(
    factory: Callable[..., Any], kwargs: Mapping[str, Any], name: str
) -> Any:
    try:
        return factory(**kwargs)
    except TypeError as exc:
        msg = f"model {name!r} could not be built with {dict(kwargs)}: {exc}"
        raise InputError(msg) from exc
    except InputError:
        raise
    except Exception as exc:  # the factory is the user's code: say where it failed
        msg = (
            f"model factory {name!r} raised {type(exc).__name__} when called with "
            f"{dict(kwargs)}: {exc}"
        )
        raise InputError(msg) from exc
