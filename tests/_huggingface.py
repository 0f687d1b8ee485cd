"""A tiny Hugging Face language model built from a config (no download), for the tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch

SKIP_REASON = (
    "transformers is not installed (pip install 'critpoint[hf]'; the dev extra has it)"
)


def tiny_gpt2(
    vocab_size: int = 50, n_embd: int = 16, n_positions: int = 32, seed: int = 0
) -> Any:
    """A one-layer GPT-2 (two heads) in eval mode; skips the test without transformers."""
    transformers = pytest.importorskip("transformers", reason=SKIP_REASON)
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=n_embd,
        vocab_size=vocab_size,
        n_positions=n_positions,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()
