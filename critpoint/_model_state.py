"""Everything an analysis can change on a model, captured and put back.

An analysis switches the model's mode (``train``/``eval``, whatever its
``train()`` override does with it), freezes the parameters outside θ, and
runs ``forward``, which may write to buffers (BatchNorm statistics, a call
counter, spectral norm's power-iteration vectors ``_u`` / ``_v``).
:class:`ModelState` records the mode flags, every parameter's
``requires_grad`` and every buffer (the tensor object and a copy of its
values) so that :meth:`ModelState.restore` leaves the model exactly as it was,
and restoring before each pass makes every pass see the same buffers.

What cannot be analysed at all, a forward that writes to a buffer inside
``torch.func``'s transforms, is turned into one clear error naming the module
by :func:`explain_mutation`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelState", "explain_mutation", "set_mode"]


def set_mode(model: nn.Module, training: bool) -> None:
    """``model.train(training)``, or only the flags where the model cannot switch.

    A ``torch.export`` program's module raises ``NotImplementedError`` from
    ``train()``/``eval()``: its graph was fixed when it was exported (in the
    mode the model had then), so only the flags are set.
    """
    try:
        model.train(training)
    except NotImplementedError:
        for m in model.modules():
            m.training = training


@dataclass
class _Buffer:
    module: nn.Module
    name: str
    tensor: torch.Tensor
    copy: torch.Tensor
    version: int


class ModelState:
    """A snapshot of a model's mode flags, ``requires_grad`` flags and buffers.

    Parameters
    ----------
    model : nn.Module
        The model to capture (buffers are copied: memory equal to theirs).
    """

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self.buffers: list[_Buffer] = []
        copies: dict[int, torch.Tensor] = {}  # a buffer shared by modules: one copy
        with torch.no_grad():
            for module in model.modules():
                for name, buf in module._buffers.items():
                    if buf is None:
                        continue
                    copy = copies.setdefault(id(buf), buf.detach().clone())
                    self.buffers.append(_Buffer(module, name, buf, copy, buf._version))

    def restore_buffers(self) -> None:
        """Put every buffer back as it was.

        A buffer written in place is replaced by the copy of its old values
        rather than overwritten: an autograd graph the analysis keeps (the
        operator's cache) may hold the written tensor, and must keep seeing
        the values its forward pass saw.
        """
        for b in self.buffers:
            if b.tensor._version != b.version:
                b.module._buffers[b.name] = b.copy
            elif b.module._buffers.get(b.name) is not b.tensor:
                b.module._buffers[b.name] = b.tensor  # reassigned (or None) in forward

    def restore(self) -> None:
        """Put back the buffers, the ``requires_grad`` flags and the mode flags (once)."""
        self.restore_buffers()
        for p, flag in self.requires_grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for m, mode in self.modes:
            m.training = mode


_MUTATION_MARKS = (
    "would mutate a captured tensor",  # grad / vjp / jvp
    "vmap: inplace arithmetic",  # vmap over a block of vectors
    "inplace operation inside a transform",
)


def _is_mutation(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in _MUTATION_MARKS)


def _culprit(exc: BaseException, model: nn.Module) -> tuple[str, nn.Module] | None:
    """The innermost module of ``model`` whose code was running when ``exc`` rose."""
    names = {id(m): name for name, m in model.named_modules()}
    found = None
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            found = (names[id(owner)], owner)
        tb = tb.tb_next
    return found


def explain_mutation(exc: BaseException, model: nn.Module) -> str | None:
    """A one-line explanation when ``exc`` says the model cannot be analysed as it is.

    Two such failures are known: torch refusing a buffer write inside a
    transform, and a ``torch.export`` program whose shape guards reject the
    batches (it was exported for one batch size).

    Returns
    -------
    str or None
        The message naming the module (found from the traceback), or ``None``
        when ``exc`` is something else.
    """
    if isinstance(exc, AssertionError) and "guard failed" in str(exc).lower():
        first = " ".join(str(exc).split())[:160]
        return (
            f"the exported program ({type(model).__name__}) rejects the batches: it was "
            "exported for other input shapes. Export it with a dynamic batch dimension "
            "(torch.export.export(..., dynamic_shapes=...)) or give batches of the shape "
            f"it was exported with (--batch-size). (torch: {first})"
        )
    if not _is_mutation(exc):
        return None
    found = _culprit(exc, model)
    if found is None:
        where = "a module of the model"
    elif found[0]:
        where = f"module {found[0]!r} ({type(found[1]).__name__})"
    else:
        where = f"the model ({type(found[1]).__name__})"
    first = " ".join(str(exc).split())[:160]
    return (
        f"{where} writes to a tensor it holds (a buffer such as a counter or a running "
        "statistic) in place during forward, which torch.func cannot differentiate "
        "through, so its Hessian cannot be taken. Do the update only when "
        "self.training is set and analyse in eval mode (bn='eval'), or move it "
        f"out of forward (a hook you remove for the analysis). (torch: {first})"
    )
