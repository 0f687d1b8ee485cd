"""Which layer of a model made which node of its autograd graph.

Torch's errors about a missing derivative name an operator
(``aten::_scaled_dot_product_flash_attention_for_cpu_backward``), never the
layer that called it, and a custom ``autograd.Function`` whose backward is not
differentiable gives no error at all, only a wrong (non-symmetric) Hessian.
:func:`find_nodes` runs one forward pass with forward hooks on every module
and attributes each new graph node to the innermost module whose forward made
it (what a module computed between the calls of its children is its own), so
that messages can name the layer at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves


@dataclass(frozen=True)
class Culprit:
    """A graph node of interest and the layer that made it.

    Attributes
    ----------
    module : str
        Dotted name of the innermost module whose forward made the node;
        ``""`` for the model's own forward, ``None`` outside the model (the
        loss function).
    kind : str
        That module's class name (or ``"loss"``).
    node : str
        The node's name, ``ScaledDotProductFlashAttentionForCpuBackward0``, or
        the name of a custom ``autograd.Function`` class.
    once_differentiable : bool
        A custom Function whose backward is marked ``@once_differentiable``.
    """

    module: str | None
    kind: str
    node: str
    once_differentiable: bool = False

    def where(self) -> str:
        """The layer in words: ``layer 'body.1' (FlashBlock)``."""
        if self.module is None:
            return "the loss function"
        if self.module == "":
            return f"the forward of {self.kind} itself"
        return f"layer '{self.module}' ({self.kind})"


def node_prefix(op: str) -> str:
    """The autograd node name of an aten operator: ``_foo_bar`` → ``FooBarBackward``."""
    return (
        "".join(part[:1].upper() + part[1:] for part in op.split("_") if part)
        + "Backward"
    )


def _is_custom(node: Any) -> bool:
    return isinstance(node, torch.autograd.function.BackwardCFunction)


def _marked_once(node: Any) -> bool:
    """Whether a custom Function's backward is wrapped by ``@once_differentiable``."""
    code = getattr(getattr(node._forward_cls, "backward", None), "__code__", None)
    return "once_differentiable" in getattr(code, "co_qualname", "")


def find_nodes(
    model: nn.Module, run: Callable[[], torch.Tensor], op: str | None
) -> list[Culprit]:
    """Run ``run()`` once and list the nodes of an operator, or of custom Functions.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose modules get the forward hooks (removed on return).
    run : callable
        Runs the forward pass with gradients and returns the loss.
    op : str or None
        The aten operator (``_scaled_dot_product_flash_attention_for_cpu``);
        ``None`` lists every custom ``autograd.Function`` instead.

    Returns
    -------
    list of Culprit
        Each distinct (layer, node name) once, earlier layers first.
    """
    owner: dict[Any, str | None] = {}  # node -> module name; None: the loss function
    order: list[Any] = []  # nodes in the order their layers finished

    def claim(name: str | None, outputs: Any) -> None:
        stack = [
            t.grad_fn
            for t in tree_leaves(outputs)
            if isinstance(t, torch.Tensor) and t.grad_fn is not None
        ]
        while stack:
            node = stack.pop()
            if node is None or node in owner:
                continue
            owner[node] = name
            order.append(node)
            stack.extend(child for child, _ in node.next_functions)

    running: list[str | None] = [None]  # the modules whose forward is running

    def enter(name: str, args: Any, kwargs: Any) -> None:
        # What the caller computed before this call is the caller's.
        claim(running[-1], (args, kwargs))
        running.append(name)

    def leave(name: str, outputs: Any) -> None:
        claim(name, outputs)
        running.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(
            module.register_forward_pre_hook(
                lambda _m, args, kwargs, name=name: enter(name, args, kwargs),
                with_kwargs=True,
            )
        )
        handles.append(
            module.register_forward_hook(
                lambda _m, _args, out, name=name: leave(name, out)
            )
        )
    try:
        loss = run()
    finally:
        for handle in handles:
            handle.remove()
    claim(None, loss)  # what the loss function made after the model

    prefix = None if op is None else re.compile(re.escape(node_prefix(op)) + r"\d*$")
    kinds = {name: type(module).__name__ for name, module in model.named_modules()}
    found: list[Culprit] = []
    for node in order:
        matched = (
            _is_custom(node) if prefix is None else bool(prefix.match(node.name()))
        )
        if not matched:
            continue
        name = owner[node]
        kind = "loss" if name is None else kinds[name]
        custom = _is_custom(node)
        label = node._forward_cls.__name__ if custom else node.name()
        culprit = Culprit(name, kind, label, custom and _marked_once(node))
        if culprit not in found:
            found.append(culprit)
    return found
