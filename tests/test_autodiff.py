"""Hessian-vector products in both modes against plain autograd double backward.

The oracle is :func:`critpoint.testing.autograd_hessian` (plain autograd, row
by row): ``torch.func.hessian`` and ``jvp(jacrev)`` are wrong through
LayerNorm and train-mode BatchNorm on torch 2.13, so they cannot serve.
"""

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp
from critpoint import _autodiff
from critpoint.testing import autograd_hessian

MODES = ["rev-rev", "fwd-rev"]


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def data(n=11, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (n,), generator=g)
    targets = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return X, labels, targets


def net(norm: str, seed=0):
    torch.manual_seed(seed)
    middle = {
        "layernorm": nn.LayerNorm(4),
        "batchnorm": nn.BatchNorm1d(4),
        "none": nn.Identity(),
    }[norm]
    model = nn.Sequential(nn.Linear(3, 4), middle, nn.Tanh(), nn.Linear(4, 2)).double()
    if norm == "layernorm":  # non-trivial affine parameters
        with torch.no_grad():
            model[1].weight.uniform_(0.5, 1.5)
            model[1].bias.uniform_(-0.3, 0.3)
    return model


def loss_of(obj, X, y, loss):
    """The objective's function written out by hand, for the oracle."""
    model = obj._work

    def f(theta):
        out = torch.func.functional_call(model, obj.unflatten(theta), (X,))
        return loss(out, y)

    return f


def whole_data_hessian(obj, X, y, loss, train_mode):
    """Oracle: all samples in one batch (train-mode BN: one batch, so the same function)."""
    mode = obj._work.training
    obj._work.train(train_mode)
    stats = [
        (m, m.running_mean, m.running_var)
        for m in obj._work.modules()
        if isinstance(m, nn.BatchNorm1d)
    ]
    if train_mode:
        for m, _, _ in stats:  # batch statistics, running ones left alone
            m.running_mean = m.running_var = None
    try:
        return autograd_hessian(loss_of(obj, X, y, loss), obj.theta)
    finally:
        for m, mean, var in stats:
            m.running_mean, m.running_var = mean, var
        obj._work.train(mode)


CASES = [
    ("layernorm", "ce", False),
    ("layernorm", "mse", False),
    ("batchnorm", "ce", True),
    ("batchnorm", "mse", True),
    ("none", "mse", False),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("norm", "loss_name", "train_mode"), CASES)
def test_both_modes_match_double_backward(mode, norm, loss_name, train_mode):
    X, labels, targets = data()
    loss, y = (
        (F.cross_entropy, labels) if loss_name == "ce" else (nn.MSELoss(), targets)
    )
    model = net(norm)
    # train-mode BatchNorm depends on the batching: one batch, so the oracle agrees
    batch_size = None if train_mode else 4
    obj = cp.Objective(
        model,
        loss,
        (X, y),
        train_mode=train_mode,
        hvp_mode=mode,
        batch_size=batch_size,
    )
    H_ref = whole_data_hessian(obj, X, y, loss, train_mode)
    g = torch.Generator().manual_seed(2)
    V = torch.randn(obj.num_params, 3, generator=g, dtype=torch.float64)
    assert rel(obj.hvp(V[:, 0]), H_ref @ V[:, 0]) < 1e-12
    assert rel(obj.hvp(V), H_ref @ V) < 1e-12
    H = obj.hessian()  # the symmetry probe passes: no "stateful layer?" refusal
    assert rel(H.dense(), H_ref) < 1e-12
    # forward-over-reverse is itself, not a silent fallback, on all of these
    assert obj.hvp_mode == mode
    assert obj.hvp_fallback is None


def test_forward_over_reverse_survives_mse_inside_batch_loss():
    # F.mse_loss under jvp(grad) fails on torch 2.13 (pytorch issue 123996);
    # the product must still run in fwd-rev, whoever calls F.mse_loss.
    X, labels, _ = data()
    model = net("layernorm")

    def batch_loss(m, batch):
        out = m(batch["x"])
        return F.mse_loss(out, F.one_hot(batch["y"], 2).to(out.dtype))

    batches = [{"x": X[:6], "y": labels[:6]}, {"x": X[6:], "y": labels[6:]}]
    obj = cp.Objective(model, data=batches, batch_loss=batch_loss, hvp_mode="fwd-rev")
    H_ref = autograd_hessian(
        lambda t: batch_loss(
            lambda x: torch.func.functional_call(model, obj.unflatten(t), (x,)),
            {"x": X, "y": labels},
        ),
        obj.theta,
    )
    V = torch.randn(obj.num_params, 2, dtype=torch.float64)
    assert rel(obj.hvp(V), H_ref @ V) < 1e-12
    assert obj.hvp_fallback is None


def test_forward_ad_gap_falls_back_to_reverse_over_reverse_and_says_so(caplog):
    # huber_loss's backward has no forward-mode derivative in torch 2.13
    X, _, targets = data()
    model = net("none")
    obj = cp.Objective(model, F.huber_loss, (X, targets), hvp_mode="fwd-rev")
    H_ref = autograd_hessian(loss_of(obj, X, targets, F.huber_loss), obj.theta)
    v = torch.randn(obj.num_params, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="critpoint"):
        hv = obj.hvp(v)
    assert rel(hv, H_ref @ v) < 1e-12
    assert obj.hvp_mode == "rev-rev"
    assert "huber_loss" in obj.hvp_fallback
    assert "reverse-over-reverse" in caplog.text
    assert "fell back" in repr(obj)
    assert rel(obj.hessian().dense(), H_ref) < 1e-12


def test_wrong_forward_products_are_caught_by_the_probe(monkeypatch, caplog):
    # Put back the formulation torch gets wrong through LayerNorm (jvp of
    # jacrev): the probe must notice and switch to reverse-over-reverse.
    def jvp_of_jacrev(f, theta, V, chunk_size=None):
        jac = torch.func.jacrev(f)
        if V.ndim == 1:
            return torch.func.jvp(jac, (theta,), (V,))[1].detach()
        cols = [torch.func.jvp(jac, (theta,), (V[:, i],))[1] for i in range(V.shape[1])]
        return torch.stack(cols, dim=1).detach()

    monkeypatch.setattr(_autodiff, "_forward_over_reverse", jvp_of_jacrev)
    X, labels, _ = data()
    model = net("layernorm")
    obj = cp.Objective(model, F.cross_entropy, (X, labels), hvp_mode="fwd-rev")
    H_ref = autograd_hessian(loss_of(obj, X, labels, F.cross_entropy), obj.theta)
    v = torch.randn(obj.num_params, dtype=torch.float64)
    assert rel(obj.hvp(v), H_ref @ v) > 1e-3  # the broken formulation is wrong
    with caplog.at_level(logging.WARNING, logger="critpoint"):
        H = obj.hessian()
        # the probe runs on the first product; its wrong value never comes out
        Hv = H @ v
    assert obj.hvp_mode == "rev-rev"
    assert "disagree" in obj.hvp_fallback
    assert "reverse-over-reverse" in caplog.text
    assert rel(Hv, H_ref @ v) < 1e-12
    assert rel(H @ v, H_ref @ v) < 1e-12
    assert rel(H.dense(), H_ref) < 1e-12


def test_padding_embedding_falls_back_to_the_reverse_convention(caplog):
    # torch's reverse mode never differentiates an Embedding's padding row;
    # its forward mode does. critpoint follows the gradient it reports
    # (reverse mode: the padding row is frozen), so fwd-rev must fall back.
    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 3, padding_idx=0)
            self.position = nn.Embedding(4, 3)
            self.head = nn.Linear(3, 5)

        def forward(self, ids):
            h = self.embed(ids) + self.position(torch.arange(ids.shape[1]))
            return self.head(h.tanh())

    model = Tokens().double()
    ids = torch.randint(0, 5, (6, 4), generator=torch.Generator().manual_seed(1))

    def batch_loss(m, batch):
        ids = batch["ids"]
        return F.cross_entropy(m(ids).reshape(-1, 5), ids.reshape(-1))

    obj = cp.Objective(
        model,
        data=[{"ids": ids[:4]}, {"ids": ids[4:]}],
        batch_loss=batch_loss,
        hvp_mode="fwd-rev",
    )
    H_ref = autograd_hessian(
        lambda t: batch_loss(
            lambda x: torch.func.functional_call(model, obj.unflatten(t), (x,)),
            {"ids": ids},
        ),
        obj.theta,
    )
    assert torch.count_nonzero(H_ref[:3]) == 0  # the padding row: frozen
    with caplog.at_level(logging.WARNING, logger="critpoint"):
        H = obj.hessian()
        dense = H.dense()  # the probe runs on its first block, then falls back
    assert "padding_idx" in caplog.text
    assert obj.hvp_mode == "rev-rev"
    assert "padding_idx in embed" in obj.hvp_fallback
    assert rel(dense, H_ref) < 1e-12
    assert rel(H.dense(), H_ref) < 1e-12


# --------------------------------------------------------------------- attention
VOCAB, WIDTH, HEADS, LENGTH = 7, 4, 2, 5


class CausalLM(nn.Module):
    """A tiny causal language model: tied embeddings, one attention block, LayerNorm.

    ``block="encoder"`` uses ``nn.TransformerEncoderLayer`` with a causal mask;
    ``block="sdpa"`` a hand-written block around
    ``F.scaled_dot_product_attention(is_causal=True)``.
    """

    def __init__(self, block: str, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.block = block
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(0.3 * torch.randn(LENGTH, WIDTH))
        if block == "encoder":
            self.layer = nn.TransformerEncoderLayer(
                WIDTH, HEADS, 2 * WIDTH, dropout=0.0, batch_first=True
            )
        else:
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
            self.out = nn.Linear(WIDTH, WIDTH)
            self.norm1 = nn.LayerNorm(WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        h = self.embed(ids) + self.position[:T]
        if self.block == "encoder":
            mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=h.dtype)
            h = self.layer(h, src_mask=mask, is_causal=True)
        else:
            B = h.shape[0]
            q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
            split = lambda t: t.view(B, T, HEADS, WIDTH // HEADS).transpose(1, 2)  # noqa: E731
            a = F.scaled_dot_product_attention(
                split(q), split(k), split(v), is_causal=True
            )
            h = h + self.out(a.transpose(1, 2).reshape(B, T, WIDTH))
        return self.norm(h) @ self.embed.weight.T  # tied output weights


def next_token_loss(model, batch):
    ids = batch["input_ids"]
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def token_batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (5, LENGTH + 1), generator=g)
    # uneven: 2, 2, 1 sequences, all of the same length (so the token mean is exact)
    return [
        {"input_ids": ids[:2]},
        {"input_ids": ids[2:4]},
        {"input_ids": ids[4:]},
    ], ids


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", ["encoder", "sdpa"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_causal_lm_products_match_double_backward(block, mode, train):
    model = CausalLM(block)
    model.train(train)  # eval: the encoder layer's fast path must not get in the way
    batches, ids = token_batches()
    obj = cp.Objective(model, data=batches, batch_loss=next_token_loss, hvp_mode=mode)
    assert obj.num_params > 100

    def f(theta):
        return next_token_loss(
            lambda x: torch.func.functional_call(model, obj.unflatten(theta), (x,)),
            {"input_ids": ids},
        )

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the oracle needs second derivatives too
        H_ref = autograd_hessian(f, obj.theta)
    v = torch.randn(obj.num_params, 3, dtype=torch.float64)
    assert rel(obj.hvp(v), H_ref @ v) < 1e-11
    H = obj.hessian()
    assert rel(H.dense(), H_ref) < 1e-11
    assert obj.hvp_mode == mode
    assert obj.hvp_fallback is None
    with torch.no_grad():
        assert obj.loss() == pytest.approx(f(obj.theta).item(), rel=1e-13)
    assert model.training == train


def test_multihead_attention_alone():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    X = torch.randn(6, 3, 4, dtype=torch.float64)
    Y = torch.randn(6, 3, 4, dtype=torch.float64)

    def loss(out, y):
        return F.mse_loss(out[0], y)

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)

    model = Self()
    for mode in MODES:
        obj = cp.Objective(model, loss, (X, Y), batch_size=4, hvp_mode=mode)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            H_ref = autograd_hessian(loss_of(obj, X, Y, loss), obj.theta)
        assert rel(obj.hessian().dense(), H_ref) < 1e-11


def test_loss_and_derivatives_are_one_function_despite_the_fast_path():
    # In eval mode under no_grad, nn.TransformerEncoder takes a nested-tensor
    # fast path that zeroes the padded positions; with gradients on it does
    # not. The loss critpoint reports must be the function it differentiates.
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True),
        1,
        enable_nested_tensor=True,
    ).double()
    encoder.eval()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True

    def batch_loss(model, batch):
        x, mask = batch
        return model(x, src_key_padding_mask=mask).square().mean()

    obj = cp.Objective(encoder, data=[(X, pad)], batch_loss=batch_loss)
    theta = obj.theta
    v = torch.randn(obj.num_params, generator=g, dtype=torch.float64)
    step = 1e-5
    slope = (obj.loss(theta + step * v) - obj.loss(theta - step * v)) / (2 * step)
    assert slope == pytest.approx(float(obj.grad() @ v), rel=1e-7)
    with torch.enable_grad():  # the slow path, as in training
        expected = batch_loss(encoder, (X, pad)).item()
    assert obj.loss() == pytest.approx(expected, rel=1e-13)


class _Once(torch.autograd.Function):
    """tanh with a backward that torch does not differentiate (as fused kernels do)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.tanh()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - x.tanh() ** 2)


class FusedTanh(nn.Module):
    def forward(self, x):
        return _Once.apply(x)


class FlashBlock(nn.Module):
    """Calls the CPU flash-attention kernel directly: no math kernel to pick."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        q = self.proj(x).unsqueeze(1)  # (B, 1 head, T, 4)
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, q, q)[0]
        return out.squeeze(1)


def net_with(layer):
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), layer(), nn.Linear(4, 2))

        def forward(self, x):
            return self.body(x).mean(dim=1)

    X = torch.randn(3, 5, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (3,))
    return Net().double(), X, y


@pytest.mark.parametrize("mode", MODES)
def test_kernel_without_second_derivative_is_named(mode):
    model, X, y = net_with(FlashBlock)
    obj = cp.Objective(model, F.cross_entropy, (X, y), hvp_mode=mode)
    obj.grad()  # first derivatives exist
    v = torch.ones(obj.num_params, dtype=torch.float64)
    with pytest.raises(cp.SecondDerivativeError) as info:
        obj.hvp(v)
    text = str(info.value)
    assert "layer 'body.1' (FlashBlock)" in text
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in text
    assert "params=" in text  # the fix: rewrite it, or leave it out
    with pytest.raises(cp.SecondDerivativeError, match=r"'body\.1'"):
        cp.eigsh(obj.hessian(), k=1)  # the probe runs on the first products
    # parameters after the layer have a Hessian
    after = cp.Objective(
        model, F.cross_entropy, (X, y), params="body.2.*", hvp_mode=mode
    )
    assert after.hessian().dense().shape == (10, 10)


@pytest.mark.parametrize("mode", MODES)
def test_backward_torch_cannot_differentiate_is_named(mode):
    # torch itself raises nothing here: it drops the second derivative of the
    # custom Function, and the Hessian comes out wrong and not symmetric.
    model, X, y = net_with(FusedTanh)
    obj = cp.Objective(model, F.cross_entropy, (X, y), hvp_mode=mode)
    with pytest.raises(cp.SecondDerivativeError) as info:
        cp.eigsh(obj.hessian(), k=1)  # caught on the solver's first two products
    text = str(info.value)
    assert "not symmetric" in text
    assert "layer 'body.1' (FusedTanh)" in text
    assert "Function _Once," in text
    assert "@once_differentiable" in text
    assert "params=" in text


def test_transformers_is_not_needed():
    import subprocess
    import sys

    code = "import sys, critpoint; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_hugging_face_models_when_installed(kind):
    transformers = pytest.importorskip("transformers")
    sizes = {
        "vocab_size": VOCAB,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            n_positions=8, n_embd=4, n_layer=1, n_head=2, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, **sizes,
        )  # fmt: skip
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.BertConfig(
            hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=8, max_position_embeddings=8, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, **sizes,
        )  # fmt: skip
        model = transformers.BertForMaskedLM(config)
    model.double().eval()
    batches, ids = token_batches()

    def batch_loss(m, batch):
        # the loss of the logits here: the models' own casts them to float32
        return next_token_loss(lambda x: m(input_ids=x).logits, batch)

    for mode in MODES:
        obj = cp.Objective(model, data=batches, batch_loss=batch_loss, hvp_mode=mode)

        def f(theta, obj=obj):
            params = obj.unflatten(theta)
            out = torch.func.functional_call(
                model, params, (), {"input_ids": ids[:, :-1]}
            )
            return F.cross_entropy(
                out.logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)
            )

        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            H_ref = autograd_hessian(f, obj.theta)
        V = torch.randn(obj.num_params, 2, dtype=torch.float64)
        assert rel(obj.hessian() @ V, H_ref @ V) < 1e-10
        if kind == "bert" and mode == "fwd-rev":  # padding_idx: see the test above
            assert "padding_idx" in obj.hvp_fallback
        else:
            assert obj.hvp_fallback is None


def test_gradient_and_hvp_from_one_graph_match_double_backward():
    from critpoint._autodiff import gradient_and_hvp
    from critpoint.testing import autograd_hessian

    gen = torch.Generator().manual_seed(7)
    A = torch.randn(5, 5, generator=gen, dtype=torch.float64)

    def f(t):
        return torch.sum(torch.tanh(A @ t) ** 2) + t[0] * t[1] ** 3

    theta = torch.randn(5, generator=gen, dtype=torch.float64)
    V = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    g, HV = gradient_and_hvp(f, theta, V)
    point = theta.clone().requires_grad_(True)
    (expected_g,) = torch.autograd.grad(f(point), point)
    assert torch.allclose(g, expected_g, atol=1e-13)
    assert torch.allclose(HV, autograd_hessian(f, theta) @ V, atol=1e-12)
    # linear in θ: a zero Hessian, not a crash
    g0, H0 = gradient_and_hvp(lambda t: A[0] @ t, theta, V)
    assert torch.allclose(g0, A[0])
    assert torch.equal(H0, torch.zeros_like(V))
