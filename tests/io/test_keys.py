"""A file's tensor names against a model's: wrapper prefixes, mismatch messages."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from torch import nn

from critpoint.errors import CheckpointError
from critpoint.io.checkpoint import load_state_dict_strict
from critpoint.io.keys import SHOWN, fit_keys
from critpoint.models import build_model


def _mlp() -> nn.Module:
    return build_model("mlp", in_features=4, widths=[3], out_features=2, seed=0)


def _prefixed(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("model.", "PyTorch Lightning"),
        ("_orig_mod.", "torch.compile"),
        ("module.", "DataParallel"),
        ("model._orig_mod.", "PyTorch Lightning .* and as torch.compile"),
        ("backbone.", "a wrapper module"),
    ],
)
def test_one_common_prefix_is_removed_and_said(prefix, why) -> None:
    model = _mlp()
    given = _prefixed(model, prefix)
    fit = fit_keys(model.state_dict(), given, "w.pt", "MLP")
    assert set(fit.state_dict) == set(model.state_dict())
    for k in model.state_dict():
        assert fit.state_dict[k] is given[prefix + k]  # the same tensors, renamed
    assert fit.note is not None
    assert f"removed the prefix {prefix!r}" in fit.note
    assert re.search(why, fit.note)


def test_matching_names_need_no_note_and_a_prefix_can_be_added() -> None:
    model = _mlp()
    assert fit_keys(model.state_dict(), model.state_dict(), "w.pt").note is None
    wrapped = nn.Sequential()
    wrapped.add_module("net", model)  # the model's names gain "net."
    bare = model.state_dict()
    fit = fit_keys(wrapped.state_dict(), bare, "w.pt")
    assert fit.note is not None
    assert "added the prefix 'net.'" in fit.note
    assert set(fit.state_dict) == set(wrapped.state_dict())
    both = fit_keys(wrapped.state_dict(), _prefixed(model, "model."), "w.pt")
    assert both.note is not None
    assert "replaced the prefix 'model.'" in both.note


def test_a_real_torch_compile_state_dict_loads_into_the_bare_model(caplog) -> None:
    model = _mlp()
    compiled = torch.compile(model)  # compiles lazily: state_dict() runs nothing
    state = compiled.state_dict()
    assert all(k.startswith("_orig_mod.") for k in state)
    fresh = build_model("mlp", in_features=4, widths=[3], out_features=2, seed=1)
    with caplog.at_level(logging.INFO, logger="critpoint"):
        note = load_state_dict_strict(fresh, state, source="compiled.pt")
    assert note is not None
    assert "'_orig_mod.'" in note
    assert "compiled.pt: removed the prefix '_orig_mod.'" in caplog.text
    x = torch.randn(5, 4)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_a_prefix_is_not_removed_when_names_still_differ() -> None:
    """A Lightning module with a loss's weights beside ``model.``: explained, not guessed."""
    model = _mlp()
    state = _prefixed(model, "model.")
    state["criterion.weight"] = torch.ones(2)
    with pytest.raises(CheckpointError) as info:
        fit_keys(model.state_dict(), state, "l.ckpt", "MLP")
    text = str(info.value)
    assert "compared after the renaming that fits most names" in text
    assert "removed the prefix 'model.'" in text
    assert "1 extra keys (in the file, not the model): ['criterion.weight']" in text
    assert "missing keys" not in text  # after the renaming nothing is missing
    assert "Likely cause: the file holds tensors the model does not have" in text


def test_mismatch_shows_the_first_few_names_not_all() -> None:
    big = nn.Sequential(*[nn.Linear(2, 2) for _ in range(20)])  # 40 tensors
    other = {f"layer{i}.w": torch.zeros(2) for i in range(30)}
    with pytest.raises(CheckpointError) as info:
        fit_keys(big.state_dict(), other, "x.pt", "Sequential")
    text = str(info.value)
    assert "40 missing keys" in text
    assert "30 extra keys" in text
    assert f"… {40 - SHOWN} more" in text
    assert f"… {30 - SHOWN} more" in text
    assert "'19.weight'" not in text  # sorted names past the fifth are not listed
    assert text.count("'layer") == SHOWN
    assert "no tensor name of the file is one of the model's" in text


def test_likely_causes() -> None:
    plain = build_model("mlp", in_features=4, widths=[3], out_features=2)
    bn = build_model("mlp", in_features=4, widths=[3], out_features=2, batchnorm=True)
    wide = build_model("mlp", in_features=4, widths=[5], out_features=2)
    with pytest.raises(CheckpointError, match="the file has BatchNorm statistics"):
        fit_keys(plain.state_dict(), bn.state_dict(), "bn.pt")
    with pytest.raises(
        CheckpointError,
        match=r"3 shape mismatches: \['net.0.bias: checkpoint \(5,\) vs model \(3,\)'.*"
        r"Likely cause: the same layers with other sizes",
    ):
        fit_keys(plain.state_dict(), wide.state_dict(), "wide.pt")
    # A shape mismatch after a prefix was removed says so too.
    with pytest.raises(CheckpointError, match=r"removed the prefix 'model\.'.*shape"):
        fit_keys(plain.state_dict(), _prefixed(wide, "model."), "wide.ckpt")
    short = dict(plain.state_dict())
    del short["net.2.bias"]
    with pytest.raises(CheckpointError, match="the file lacks some of the model's"):
        fit_keys(plain.state_dict(), short, "short.pt")
