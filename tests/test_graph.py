"""Which layer made which autograd node: the names in SecondDerivativeError."""

import torch
import torch.nn.functional as F
from torch import nn

from critpoint._graph import Culprit, find_nodes, node_prefix


def test_node_prefix_follows_torch_naming():
    assert (
        node_prefix("_scaled_dot_product_flash_attention_for_cpu")
        == "ScaledDotProductFlashAttentionForCpuBackward"
    )
    assert node_prefix("huber_loss") == "HuberLossBackward"


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Sequential(
            nn.Linear(4, 4),
            nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True),
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.inner(x).tanh().mean(dim=1))  # tanh: the model's own


def test_nodes_are_attributed_to_the_innermost_layer():
    model = Model()
    x = torch.randn(3, 5, 4)
    y = torch.randn(3, 2)

    def run():
        return F.huber_loss(model(x), y)

    flash = find_nodes(model, run, "_scaled_dot_product_flash_attention_for_cpu")
    assert flash == [
        Culprit(
            "inner.1.self_attn",
            "MultiheadAttention",
            "ScaledDotProductFlashAttentionForCpuBackward0",
        )
    ]
    assert flash[0].where() == "layer 'inner.1.self_attn' (MultiheadAttention)"
    assert [c.module for c in find_nodes(model, run, "huber_loss")] == [None]
    assert find_nodes(model, run, "huber_loss")[0].where() == "the loss function"
    own = find_nodes(model, run, "tanh")
    assert [(c.module, c.where()) for c in own] == [("", "the forward of Model itself")]
    # two LayerNorms, one node each, in the order they ran
    norms = find_nodes(model, run, "native_layer_norm")
    assert [c.module for c in norms] == ["inner.1.norm1", "inner.1.norm2"]
    assert find_nodes(model, run, None) == []  # no custom Function here
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
