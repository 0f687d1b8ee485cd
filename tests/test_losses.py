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
    IGNORE_INDEX,
    LOSSES,
    bce,
    builtin_loss_name,
    causal_lm,
    cross_entropy,
    get_batch_loss,
    get_loss,
    logits_of,
    loss_name,
    mse,
)
from tests._huggingface import tiny_gpt2


def test_loss_registry_and_names() -> None:
    assert set(LOSSES) == {"cross_entropy", "mse", "bce", "causal_lm"}
    assert get_loss("cross_entropy") is cross_entropy
    assert get_loss("cross-entropy") is cross_entropy
    assert get_loss("CE") is cross_entropy
    assert get_loss("mse") is mse
    assert get_loss("bce") is bce
    for fn in (cross_entropy, mse, bce):
        assert pickle.loads(pickle.dumps(fn)) is fn
    with pytest.raises(
        InputError,
        match=r"unknown loss 'hinge'; built-in losses are \['bce', 'causal_lm', 'cross_entropy', 'mse'\]",
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


def _causal_lm_by_hand(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """The definition, one token at a time: mean over sequences of their token means."""
    total = 0.0
    for i in range(ids.shape[0]):
        losses = [
            -float(torch.log_softmax(logits[i, t - 1], 0)[ids[i, t]])
            for t in range(1, ids.shape[1])
            if ids[i, t] != IGNORE_INDEX
        ]
        total += sum(losses) / len(losses)
    return total / ids.shape[0]


def test_causal_lm_is_next_token_cross_entropy_per_sequence() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 9, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 9, (4, 6), generator=g)
    assert get_loss("causal_lm") is causal_lm
    assert get_loss("causal-lm") is causal_lm
    assert builtin_loss_name(causal_lm) == "causal_lm"
    value = float(causal_lm(logits, ids))
    assert value == pytest.approx(_causal_lm_by_hand(logits, ids), rel=1e-12)
    # Without padding: the plain mean over all predicted tokens (shifted by one).
    flat = F.cross_entropy(logits[:, :-1].reshape(-1, 9), ids[:, 1:].reshape(-1))
    assert value == pytest.approx(float(flat), rel=1e-12)
    # With padding: each sequence is the mean over its own predicted tokens.
    padded = ids.clone()
    padded[0, 3:] = IGNORE_INDEX
    padded[2, 5] = IGNORE_INDEX
    value = float(causal_lm(logits, padded))
    assert value == pytest.approx(_causal_lm_by_hand(logits, padded), rel=1e-12)
    pooled = F.cross_entropy(logits[:, :-1].reshape(-1, 9), padded[:, 1:].reshape(-1))
    assert abs(value - float(pooled)) > 1e-3  # not the pooled token mean
    with pytest.raises(
        InputError, match=r"causal_lm needs logits of shape \(N, T, V\)"
    ):
        causal_lm(logits[:, 0], ids)


def test_causal_lm_objective_does_not_depend_on_the_batching() -> None:
    """Every sequence is a sample, so batches weighted by size give the same mean."""
    import critpoint as cp

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, (10, 5), generator=g)
    ids[3, 2:] = IGNORE_INDEX
    ids[7, 4:] = IGNORE_INDEX
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 7)).double()
    with torch.no_grad():
        whole = float(causal_lm(model(ids.clamp_min(0)), ids))
    for batch_size in (1, 3, 10):
        obj = cp.Objective(
            model, causal_lm, (ids.clamp_min(0), ids), batch_size=batch_size
        )
        assert float(obj.loss()) == pytest.approx(whole, rel=1e-12)


class _Output:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.loss = None


def test_builtin_losses_take_the_logits_of_an_output_object() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (5,), generator=g)
    assert logits_of(logits) is logits
    assert logits_of(_Output(logits)) is logits
    assert logits_of({"logits": logits}) is logits
    for name in ("cross_entropy", "mse", "bce"):
        fn = get_loss(name)
        target = labels if name != "bce" else (labels > 0).double()[:, None]
        out = logits if name != "bce" else logits[:, :1]
        assert float(fn(_Output(out), target)) == float(fn(out, target))
    with pytest.raises(InputError, match=r"returned a tuple.*--batch-loss"):
        cross_entropy((logits,), labels)


def test_causal_lm_equals_the_hugging_face_loss() -> None:
    model = tiny_gpt2(vocab_size=20, n_embd=8, n_positions=16)
    ids = torch.randint(0, 20, (3, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(ids, labels=ids)
        ours = causal_lm(out, ids)  # the output object itself: its logits are used
    torch.testing.assert_close(ours, out.loss, rtol=1e-6, atol=0)


def test_batch_loss_by_name(tmp_path) -> None:
    src = tmp_path / "batch_losses.py"
    src.write_text(
        "def sq(model, batch):\n"
        "    return ((model(batch['x']) - batch['y']) ** 2).mean()\n"
        "answer = 42\n"
    )
    fn = get_batch_loss(f"{src}:sq")
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    batch = {"x": torch.ones(3, 2), "y": torch.zeros(3, 1)}
    assert float(fn(model, batch).detach()) == 4.0
    assert get_batch_loss(fn) is fn
    with pytest.raises(InputError, match=r"is not callable \(int\)"):
        get_batch_loss(f"{src}:answer")
    with pytest.raises(InputError, match="a batch loss is a function named"):
        get_batch_loss("mse")
    with pytest.raises(UnsafeCheckpointError, match=r"--batch-loss SPEC"):
        get_batch_loss(f"{src}:sq", trust=False, source="checkpoint 'c.pt'")
