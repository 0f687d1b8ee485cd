"""The one module that calls the ``torch.func`` transforms.

Everything critpoint differentiates is a scalar function ``f(θ)`` of a flat
parameter vector θ (shape ``(n,)``). This module turns such a function into its
value, gradient and Hessian-vector products:

* ``rev-rev`` (the default): reverse-over-reverse, ``vjp`` of ``grad``. For
  a block of vectors the forward and first backward pass run once and only the
  second backward pass is vmapped, which measured fastest (see benchmarks/).
* ``fwd-rev``: forward-mode over reverse-mode, ``jvp`` of ``grad``. It builds
  no second autograd graph. ``jvp(jacrev(f))``, the textbook form, is avoided:
  on torch 2.13 it is wrong by 1–50 % through ``nn.LayerNorm`` and through
  BatchNorm with batch statistics, where ``jvp(grad(f))`` is exact. ``jvp`` of
  ``grad`` fails in turn with ``F.mse_loss`` ("ZeroTensors are immutable",
  pytorch issue 123996): while a forward-over-reverse product runs,
  ``F.mse_loss`` is computed as ``(input − target)²`` reduced, the same
  function, whose derivatives torch gets right. Where a layer has no
  forward-mode derivative at all (``huber_loss``), :func:`forward_ad_gap`
  recognises the error so that the caller can fall back to ``rev-rev``.

Blocks of ``k`` vectors go through ``vmap`` with a ``chunk_size`` that bounds
memory. A future torch fix or regression touches this file only.

Attention: PyTorch's fused attention kernels (flash, memory-efficient,
cuDNN) have no second derivative and no forward-mode derivative, and
``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` take a fused fast
path in eval mode without gradients. :func:`kernels` selects the math kernel of
``F.scaled_dot_product_attention`` and turns that fast path off, so that the
loss, the gradient and every product are one and the same twice-differentiable
function; the objective evaluates everything inside it.

:func:`linearize` keeps the reverse-over-reverse graph of one batch so that
later products at the same θ run the second backward pass only (the forward
and first backward pass are 35–45 % of a product). :func:`retain` does the
same with plain autograd (``create_graph=True``, the graph kept): that graph
can report its own size through saved-tensor hooks in the same pass (the
``torch.func`` transforms refuse such hooks), and its products skip the
transforms' wrappers, so the Hessian operator keeps these. :func:`graph_bytes`
measures what such a graph holds, so callers can decide whether it fits.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, grad_and_value, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

HVPMode = Literal["fwd-rev", "rev-rev"]
ScalarFn = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "HVPMode",
    "Linearized",
    "forward_ad_gap",
    "functional_call",
    "gradient",
    "gradient_and_hvp",
    "graph_bytes",
    "hvp",
    "hvp_block",
    "kept_gradient",
    "kernels",
    "linearize",
    "missing_derivative",
    "retain",
    "value_and_gradient",
]

#: Device types where :func:`retain`'s products take a block column by column:
#: on a CPU the batched backward is slower per vector (blocks of 8 on the
#: digits workloads: 21 against 16 ms per vector on the 85k MLP, 41 against 29
#: on the BatchNorm CNN); on a GPU batching wins by an order of magnitude.
COLUMN_BY_COLUMN = frozenset({"cpu"})

#: ``apply(V, chunk_size)``: ``∇²f(θ) V`` for ``V`` of shape ``(n,)`` or ``(n, k)``.
Linearized = Callable[[torch.Tensor, "int | None"], torch.Tensor]


@contextlib.contextmanager
def kernels() -> Iterator[None]:
    """Run attention through kernels that torch can differentiate twice.

    Inside, ``F.scaled_dot_product_attention`` uses its math kernel (on every
    device: the flash, memory-efficient and cuDNN kernels have no double
    backward and no forward-mode derivative), and the fused fast path of
    ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` is off: it runs
    in eval mode without gradients only, and with a padding mask it computes
    another function (nested tensors zero the padded positions), so a loss
    taken through it would not be the function whose derivatives are taken.
    Both settings are global in torch; they are restored on exit.
    """
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


class _PlainMSE(TorchFunctionMode):
    """``F.mse_loss`` as ``(input − target)²`` reduced: the same function.

    Under ``jvp`` of ``grad`` torch 2.13 fails inside ``mse_loss``'s backward
    ("ZeroTensors are immutable", pytorch issue 123996) whenever the target
    carries no tangent, which is always; the decomposed form has none of that.
    A weighted call already takes this form inside torch and is left alone.
    """

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.mse_loss and kwargs.get("weight") is None and len(args) == 2:
            reduction = kwargs.get("reduction", "mean")
            if (
                kwargs.get("size_average") is not None
                or kwargs.get("reduce") is not None
            ):
                from torch.nn import _reduction

                reduction = _reduction.legacy_get_string(
                    kwargs.get("size_average"), kwargs.get("reduce")
                )
            squares = (args[0] - args[1]).square()
            if reduction == "mean":
                return squares.mean()
            if reduction == "sum":
                return squares.sum()
            if reduction == "none":
                return squares
        return func(*args, **kwargs)


def _forward_over_reverse(
    f: ScalarFn, theta: torch.Tensor, V: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """``∇²f(θ) V`` as ``jvp`` of ``grad``; ``V`` of shape ``(n,)`` or ``(n, k)``."""
    g = grad(f)

    def column(v: torch.Tensor) -> torch.Tensor:
        return jvp(g, (theta,), (v,))[1]

    with _PlainMSE():
        if V.ndim == 1:
            return column(V).detach()
        if V.shape[1] == 1:
            return column(V[:, 0]).detach().unsqueeze(1)
        out = vmap(
            column, in_dims=1, out_dims=1, chunk_size=chunk_size, randomness="error"
        )(V)
    return out.detach()


#: Messages of torch errors for a missing forward-mode derivative.
_FORWARD_GAP = re.compile(
    r"forward AD|forward[- ]mode AD|jvp is not implemented|ZeroTensors are immutable",
    re.IGNORECASE,
)
#: ``derivative for aten::OP is not implemented`` / ``forward AD with OP that``.
_OP_NAME = re.compile(r"(?:derivative for aten::|forward AD with )(\w+)")


def forward_ad_gap(exc: BaseException) -> bool:
    """Whether ``exc`` says that some operation has no forward-mode derivative."""
    return isinstance(exc, (RuntimeError, NotImplementedError)) and bool(
        _FORWARD_GAP.search(str(exc))
    )


def missing_derivative(exc: BaseException) -> tuple[str, str | None] | None:
    """What a torch error says is not differentiable, or ``None`` for other errors.

    Returns
    -------
    (what, op) or None
        ``what`` is ``"second"`` (no double backward), ``"once"`` (a custom
        ``autograd.Function`` marked ``@once_differentiable``) or
        ``"forward"`` (no forward-mode derivative); ``op`` is the aten
        operator the message names (``_scaled_dot_product_flash_attention_for_cpu``),
        without a ``_backward`` suffix, or ``None``.
    """
    if not isinstance(exc, (RuntimeError, NotImplementedError)):
        return None
    text = str(exc)
    match = _OP_NAME.search(text)
    op = match.group(1) if match else None
    if op is not None and op.endswith("_backward"):
        op = op[: -len("_backward")]
    if "once_differentiable" in text:
        return "once", None
    if "derivative for" in text and "not implemented" in text:
        return "second", op
    if forward_ad_gap(exc):
        return "forward", op
    return None


def value_and_gradient(
    f: ScalarFn, theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(f(θ), ∇f(θ))``; the gradient has the shape of ``theta``."""
    g, value = grad_and_value(f)(theta)
    return value.detach(), g.detach()


def gradient(f: ScalarFn, theta: torch.Tensor) -> torch.Tensor:
    """Return ``∇f(θ)`` with the shape of ``theta``."""
    return grad(f)(theta).detach()


def hvp(
    f: ScalarFn, theta: torch.Tensor, v: torch.Tensor, mode: HVPMode
) -> torch.Tensor:
    """Return ``∇²f(θ) v`` for one vector ``v`` of shape ``(n,)``."""
    if mode == "fwd-rev":
        return _forward_over_reverse(f, theta, v, None)
    return linearize(f, theta)(v, None)


def hvp_block(
    f: ScalarFn,
    theta: torch.Tensor,
    V: torch.Tensor,
    mode: HVPMode,
    chunk_size: int | None,
) -> torch.Tensor:
    """Return ``∇²f(θ) V`` for a block ``V`` of shape ``(n, k)``, in one batched pass.

    ``vmap`` runs with ``randomness="error"`` so that a random forward pass
    (dropout left on) fails loudly instead of mixing random masks across columns.
    """
    if V.shape[1] == 1:
        return hvp(f, theta, V[:, 0], mode).unsqueeze(1)
    if mode == "fwd-rev":
        return _forward_over_reverse(f, theta, V, chunk_size)
    return linearize(f, theta)(V, chunk_size)


def linearize(f: ScalarFn, theta: torch.Tensor) -> Linearized:
    """Run the forward and first backward pass of ``f`` at θ once; return ``V ↦ ∇²f(θ) V``.

    The returned function keeps the autograd graph of ``∇f`` alive (see
    :func:`graph_bytes` for its size) and runs only the second backward pass
    per call, for one vector of shape ``(n,)`` or a block ``(n, k)``.
    """
    _, vjp_fn = vjp(grad(f), theta)

    def back(v: torch.Tensor) -> torch.Tensor:
        return vjp_fn(v)[0]

    def apply(V: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
        if V.ndim == 1:
            return back(V).detach()
        if V.shape[1] == 1:  # vmap over one column only adds its batching overhead
            return back(V[:, 0]).detach().unsqueeze(1)
        out = vmap(
            back, in_dims=1, out_dims=1, chunk_size=chunk_size, randomness="error"
        )(V)
        return out.detach()

    return apply


def retain(
    f: ScalarFn, theta: torch.Tensor, measure: bool = False
) -> tuple[Linearized, int]:
    """Like :func:`linearize`, with plain autograd; optionally measure the graph kept.

    Runs ``f(θ)`` and ``∇f(θ)`` with ``create_graph=True`` once and keeps that
    graph; each call of the returned function runs the second backward pass
    only (``retain_graph=True``), for one vector ``(n,)`` or a block ``(n, k)``
    (on a GPU batched through the autograd engine, ``chunk_size`` columns at a
    time; on a CPU column by column, which measured faster there).

    Parameters
    ----------
    f : callable
        Scalar function of a flat θ; plain autograd must be able to run it.
    theta : torch.Tensor
        The point, shape ``(n,)``.
    measure : bool
        Also count the bytes the graph saves (saved-tensor hooks; tensors
        sharing a storage count once). The hooks stay on that graph and cost
        a Python call per saved tensor per product, so measure one batch only.

    Returns
    -------
    apply : callable
        ``apply(V, chunk_size)`` = ``∇²f(θ) V``, detached, with the shape of ``V``.
    nbytes : int
        What the graph holds, or 0 without ``measure``.

    Raises
    ------
    RuntimeError
        When plain autograd cannot run ``f`` (callers then keep no graph).
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # no storage: count its elements
            storages[id(t)] = t.numel() * t.element_size()
        return t

    point = theta.detach().requires_grad_(True)
    hooks = (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        if measure
        else contextlib.nullcontext()
    )
    with torch.enable_grad(), hooks:
        value = f(point)
        (g,) = torch.autograd.grad(value, point, create_graph=True, allow_unused=True)
    loss = value.detach()
    del value
    if g is None or g.grad_fn is None:
        # ∇f does not depend on θ (f is constant or linear in θ): H = 0.
        def apply_zero(V: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
            return torch.zeros_like(V)

        apply_zero.gradient = torch.zeros_like(theta) if g is None else g.detach()  # type: ignore[attr-defined]
        apply_zero.value = loss  # type: ignore[attr-defined]
        return apply_zero, sum(storages.values())

    def back(v: torch.Tensor, batched: bool = False) -> torch.Tensor:
        (hv,) = torch.autograd.grad(
            g,
            point,
            v,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        return torch.zeros_like(v) if hv is None else hv.detach()

    def apply(V: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
        if V.ndim == 1:
            return back(V)
        if V.shape[1] == 1 or V.device.type in COLUMN_BY_COLUMN:
            # Stacked as rows: each product's column stays contiguous.
            return torch.stack([back(V[:, i]) for i in range(V.shape[1])]).T
        step = V.shape[1] if chunk_size is None else max(1, int(chunk_size))
        rows = V.T  # (k, n): the engine batches over the leading dimension
        parts = [
            back(rows[i : i + step].contiguous(), batched=True)
            for i in range(0, rows.shape[0], step)
        ]
        return torch.cat(parts).T

    # The graph keeps ∇f(θ) alive anyway: the batch's gradient comes free,
    # and its value is what a fresh forward pass must reproduce (determinism).
    apply.gradient = g.detach()  # type: ignore[attr-defined]
    apply.value = loss  # type: ignore[attr-defined]
    return apply, sum(storages.values())


def kept_gradient(apply: Linearized) -> torch.Tensor | None:
    """The gradient ``∇f(θ)`` a :func:`retain` linearisation holds, shape ``(n,)``; else ``None``."""
    return getattr(apply, "gradient", None)


def kept_value(apply: Linearized) -> torch.Tensor | None:
    """The value ``f(θ)`` (a 0-d tensor) of the forward pass a :func:`retain` linearisation kept; else ``None``."""
    return getattr(apply, "value", None)


def gradient_and_hvp(
    f: ScalarFn, theta: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∇f(θ), ∇²f(θ) V)`` from one graph, with plain autograd; ``V`` is ``(n, k)``.

    One forward and first backward pass (``create_graph=True``), then one
    second backward pass per column: the cost of a gradient and ``k``
    products from a kept linearisation.

    Raises
    ------
    RuntimeError
        When plain autograd cannot run ``f``.
    """
    point = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        value = f(point)
        (g,) = torch.autograd.grad(value, point, create_graph=True, allow_unused=True)
    del value
    if g is None or g.grad_fn is None:  # ∇f does not depend on θ: H = 0
        grad_out = torch.zeros_like(theta) if g is None else g.detach()
        return grad_out, torch.zeros_like(V)
    cols = []
    for j in range(V.shape[1]):
        (hv,) = torch.autograd.grad(
            g, point, V[:, j], retain_graph=j + 1 < V.shape[1], allow_unused=True
        )
        cols.append(torch.zeros_like(theta) if hv is None else hv.detach())
    return g.detach(), torch.stack(cols, dim=1)


def graph_bytes(f: ScalarFn, theta: torch.Tensor) -> int:
    """Bytes the autograd graph of ``∇f(θ)`` saves: what :func:`retain` keeps.

    Tensors sharing a storage count once.
    """
    _, nbytes = retain(f, theta, measure=True)
    return nbytes
