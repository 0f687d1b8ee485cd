"""Hugging Face ``save_pretrained`` folders, read through transformers (tiny configs, no download)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from critpoint.errors import CheckpointError, UnsafeCheckpointError
from critpoint.io.checkpoint import load_checkpoint
from critpoint.io.huggingface import is_pretrained_dir, load_pretrained
from tests._huggingface import SKIP_REASON, tiny_gpt2

transformers = pytest.importorskip("transformers", reason=SKIP_REASON)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    model = tiny_gpt2()
    model.save_pretrained(folder)
    return folder, model


def test_a_save_pretrained_folder_loads_as_the_model_it_is(gpt2_dir) -> None:
    folder, model = gpt2_dir
    assert is_pretrained_dir(folder)
    ckpt = load_checkpoint(folder)
    assert ckpt.format == "huggingface"
    assert type(ckpt.module) is transformers.GPT2LMHeadModel
    assert ckpt.build_model() is ckpt.module
    assert not ckpt.module.training
    assert ckpt.module.config.use_cache is False
    assert ckpt.loss == "causal_lm"  # a causal LM: its natural loss, stored by name
    assert ckpt.meta["architecture"] == "GPT2LMHeadModel"
    assert ckpt.meta["model_type"] == "gpt2"
    assert ckpt.notes[0].startswith(
        "a Hugging Face model folder, loaded with transformers"
    )
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            ckpt.module(ids).logits, model(ids).logits, rtol=0, atol=0
        )


def test_a_classifier_has_no_default_loss(tmp_path) -> None:
    config = transformers.BertConfig(
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        vocab_size=30,
        max_position_embeddings=16,
        num_labels=3,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(
        tmp_path / "bert"
    )
    ckpt = load_checkpoint(tmp_path / "bert")
    assert type(ckpt.module) is transformers.BertForSequenceClassification
    assert ckpt.loss is None


def _copy_with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))


def test_custom_code_is_refused_without_trust(gpt2_dir, tmp_path) -> None:
    folder, _ = gpt2_dir
    custom = tmp_path / "custom"
    _copy_with_config(
        folder, custom, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilLM"}
    )
    (custom / "modeling_evil.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"names custom modelling code \(auto_map: .*modeling_evil.*--trust-checkpoint",
    ):
        load_checkpoint(custom)
    assert "modeling_evil" not in sys.modules


def test_pickled_weights_need_trust(gpt2_dir, tmp_path) -> None:
    folder, model = gpt2_dir
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(folder / "config.json", pickled / "config.json")
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"are a pickle \(pytorch_model\.bin\).*model\.save_pretrained",
    ):
        load_checkpoint(pickled)
    ckpt = load_checkpoint(pickled, trust=True)
    ids = torch.arange(6).reshape(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(
            ckpt.module(ids).logits, model(ids).logits, rtol=0, atol=0
        )


def test_broken_folders_say_what_is_wrong(gpt2_dir, tmp_path) -> None:
    folder, _ = gpt2_dir
    _copy_with_config(folder, tmp_path / "unknown", architectures=["NoSuchModelLM"])
    with pytest.raises(
        CheckpointError,
        match=r"names the architecture 'NoSuchModelLM', which is not a model class of transformers",
    ):
        load_checkpoint(tmp_path / "unknown")
    _copy_with_config(folder, tmp_path / "bare", architectures=None)
    with pytest.raises(
        CheckpointError, match=r"names no model class under 'architectures'"
    ):
        load_checkpoint(tmp_path / "bare")
    empty = tmp_path / "noweights"
    empty.mkdir()
    shutil.copy(folder / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match=r"holds no weights \(model\.safetensors"):
        load_checkpoint(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_pretrained(empty)


def test_without_transformers_the_message_names_the_extra(
    gpt2_dir, monkeypatch
) -> None:
    folder, _ = gpt2_dir
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(
        CheckpointError,
        match=r"transformers package, which is not installed: pip install 'critpoint\[hf\]'",
    ):
        load_checkpoint(folder)
