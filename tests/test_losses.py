"""Losses by name: the registry, the functions against torch, the names back."""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from critpoint.errors import InputError, UnsafeCheckpointError
from critpoint.losses import (
    LOSSES,
    bce,
    builtin_loss_name,
    cross_entropy,
    get_loss,
    loss_name,
    mse,
)


def test_loss_registry_and_names() -> None:
    assert set(LOSSES) == {"cross_entropy", "mse", "bce"}
    assert get_loss("cross_entropy") is cross_entropy
    assert get_loss("cross-entropy") is cross_entropy
    assert get_loss("CE") is cross_entropy
    assert get_loss("mse") is mse
    assert get_loss("bce") is bce
    for fn in (cross_entropy, mse, bce):
        assert pickle.loads(pickle.dumps(fn)) is fn
    with pytest.raises(
        InputError,
        match=r"unknown loss 'hinge'; built-in losses are \['bce', 'cross_entropy', 'mse'\]",
    ):
        get_loss("hinge")
    with pytest.raises(InputError, match="loss must be a name or a callable"):
        get_loss(3)  # type: ignore[arg-type]


def test_losses_match_torch_functionals() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (7,), generator=g)
    real = torch.randn(7, 4, generator=g, dtype=torch.float64)
    probs = torch.rand(7, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        get_loss("cross_entropy")(logits, labels),
        F.cross_entropy(logits, labels),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        get_loss("mse")(logits, real), F.mse_loss(logits, real), rtol=0, atol=0
    )
    onehot = F.one_hot(labels, 4).double()
    torch.testing.assert_close(
        get_loss("mse")(logits, labels), F.mse_loss(logits, onehot), rtol=0, atol=0
    )
    # The mean runs over samples and outputs: 1/C of the per-sample sum of squares.
    per_sample = ((logits - onehot) ** 2).sum(1).mean()
    torch.testing.assert_close(get_loss("mse")(logits, labels), per_sample / 4)
    torch.testing.assert_close(
        get_loss("bce")(logits, probs),
        F.binary_cross_entropy_with_logits(logits, probs),
        rtol=0,
        atol=0,
    )
    col = torch.randn(5, 1, dtype=torch.float64)
    flat = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(mse(col, flat), F.mse_loss(col, flat[:, None]))
    torch.testing.assert_close(
        bce(col, (flat > 0).long()),
        F.binary_cross_entropy_with_logits(col, (flat > 0).double()[:, None]),
    )


def test_mse_with_num_classes() -> None:
    fn = get_loss("mse", num_classes=6)
    assert fn.__name__ == "mse"
    out = torch.randn(3, 6)
    labels = torch.tensor([0, 5, 2])
    torch.testing.assert_close(
        fn(out, labels), F.mse_loss(out, F.one_hot(labels, 6).float())
    )
    assert pickle.loads(pickle.dumps(fn))(out, labels) == fn(out, labels)


def test_user_loss(tmp_path) -> None:
    assert get_loss("torch.nn.functional:l1_loss") is F.l1_loss
    mod = get_loss("torch.nn:MSELoss")
    assert isinstance(mod, nn.MSELoss)
    src = tmp_path / "losses.py"
    src.write_text("def half_sq(out, y):\n    return 0.5 * ((out - y) ** 2).mean()\n")
    fn = get_loss(f"{src}:half_sq")
    assert float(fn(torch.ones(2), torch.zeros(2))) == 0.5
    with pytest.raises(InputError, match="is not callable"):
        get_loss("math:pi")


def test_untrusted_names_may_only_be_builtins(tmp_path) -> None:
    assert get_loss("mse", trust=False) is mse
    src = tmp_path / "mine.py"
    src.write_text("def sq(out, y):\n    return ((out - y) ** 2).mean()\n")
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"checkpoint 'c\.pt' names code as its loss function.*--trust-checkpoint",
    ):
        get_loss(f"{src}:sq", trust=False, source="checkpoint 'c.pt'")
    with pytest.raises(InputError, match="the loss name is empty"):
        get_loss("  ")


def _my_loss(outputs, targets):
    return ((outputs - targets) ** 2).mean()


def test_names_back_from_losses() -> None:
    assert builtin_loss_name("CE") == "cross_entropy"
    assert builtin_loss_name("bce-with-logits") == "bce"
    assert builtin_loss_name(mse) == "mse"
    assert builtin_loss_name(get_loss("mse", num_classes=3)) == "mse"
    assert builtin_loss_name(F.mse_loss) is None  # torch's, not ours
    assert builtin_loss_name(functools.partial(_my_loss)) is None
    assert builtin_loss_name("hinge") is None
    assert loss_name("Cross-Entropy") == "cross_entropy"
    assert loss_name(bce) == "bce"
    assert loss_name("pkg.mod:fn") == "pkg.mod:fn"
    assert loss_name(_my_loss) == "_my_loss"
    assert loss_name(nn.MSELoss()) == "MSELoss"
