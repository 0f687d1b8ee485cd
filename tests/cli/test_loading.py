"""Models, checkpoints and data as people have them, through the command line.

A Lightning ``.ckpt``, a ``torch.compile`` state dict, a model file that
imports its neighbour, half-precision weights, int64 token data for a
language model (``causal_lm``), dict batches with ``--batch-loss``, a
``DataLoader`` with ``drop_last``, and a Hugging Face ``save_pretrained``
folder (when transformers is installed).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from critpoint.losses import causal_lm
from critpoint.models import build_model
from tests._huggingface import tiny_gpt2

MODEL = {"in_features": 4, "widths": [3], "out_features": 3}
FAST = ("-k", "2", "--no-density", "--no-trace")


def invoke(*args: str) -> Result:
    from critpoint_cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.stdout)
    return result


def error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("critpoint: error: ")
    return lines[0]


def diagnosis(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """Run ``critpoint diagnose`` with JSON to a file; the document and the text."""
    out = tmp_path / "d.json"
    result = ok(invoke("diagnose", *args, *FAST, "--json", out))
    return json.loads(out.read_text()), result.stdout


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mlp")
    model = build_model("mlp", seed=0, **MODEL)
    g = torch.Generator().manual_seed(0)
    np.savez(
        folder / "d.npz",
        inputs=torch.randn(20, 4, generator=g).numpy(),
        targets=(torch.arange(20) % 3).numpy(),
    )
    state = model.state_dict()
    torch.save(state, folder / "plain.pt")
    torch.save(
        {
            "epoch": 4,
            "global_step": 80,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}],
            "lr_schedulers": [],
            "hyper_parameters": {"widths": [3]},
        },
        folder / "lightning.ckpt",
    )
    torch.save(torch.compile(model).state_dict(), folder / "compiled.pt")
    torch.save({k: v.half() for k, v in state.items()}, folder / "half.pt")
    return {"dir": folder, "data": folder / "d.npz"}


def test_lightning_and_compiled_checkpoints_load_and_say_so(
    tmp_path, mlp_files
) -> None:
    spec = ("--model", "mlp", "--model-kwargs", json.dumps(MODEL))
    data = ("--data", mlp_files["data"])
    folder = mlp_files["dir"]
    plain, _ = diagnosis(tmp_path, folder / "plain.pt", *spec, *data)
    assert plain["settings"]["checkpoint_notes"] == []
    light, text = diagnosis(tmp_path, folder / "lightning.ckpt", *spec, *data)
    assert "note: a PyTorch Lightning checkpoint (epoch 4, global step 80)" in text
    assert "note: removed the prefix 'model.' from every tensor name" in text
    assert light["settings"]["checkpoint_notes"][1].startswith(
        "removed the prefix 'model.'"
    )
    compiled, text = diagnosis(tmp_path, folder / "compiled.pt", *spec, *data)
    assert "note: removed the prefix '_orig_mod.'" in text
    assert "torch.compile" in compiled["settings"]["checkpoint_notes"][0]
    for doc in (light, compiled):  # the same weights, so the same numbers
        assert doc["loss"] == plain["loss"]
        assert doc["lambda_min"] == plain["lambda_min"]
        assert doc["lambda_max"] == plain["lambda_max"]


def test_weights_that_do_not_fit_show_a_few_names_and_the_cause(mlp_files) -> None:
    line = error_line(
        invoke(
            "diagnose",
            mlp_files["dir"] / "lightning.ckpt",
            "--model",
            "mlp",
            "--model-kwargs",
            json.dumps({**MODEL, "widths": [3, 3]}),
            "--data",
            mlp_files["data"],
        )
    )
    assert "renaming that fits most names: removed the prefix 'model.'" in line
    assert (
        "2 missing keys (in the model, not the file): ['net.4.bias', 'net.4.weight']"
        in line
    )
    assert "Likely cause: the file lacks some of the model's tensors" in line
    assert line.count("net.") < 12  # a few names, not every key twice


def test_half_precision_weights_name_the_dtype_option(tmp_path, mlp_files) -> None:
    args = (
        mlp_files["dir"] / "half.pt",
        "--model",
        "mlp",
        "--model-kwargs",
        json.dumps(MODEL),
        "--data",
        mlp_files["data"],
    )
    line = error_line(invoke("diagnose", *args))
    assert "the weights in" in line
    assert "half.pt' are float16, too coarse for the eigensolvers" in line
    assert "--dtype float32" in line
    doc, _ = diagnosis(tmp_path, *args, "--dtype", "float32")
    assert doc["settings"]["dtype"] == "float32"


def test_a_model_file_imports_its_neighbour(tmp_path, mlp_files, monkeypatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.delitem(sys.modules, "cli_test_blocks", raising=False)
    (project / "cli_test_blocks.py").write_text(
        "import torch\n"
        "def block(a, b):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Tanh())\n"
    )
    (project / "model.py").write_text(
        "import torch\n"
        "from cli_test_blocks import block\n"
        "def make(width=3):\n"
        "    return torch.nn.Sequential(block(4, width), torch.nn.Linear(width, 3))\n"
    )
    torch.manual_seed(0)
    same = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()),
        torch.nn.Linear(3, 3),
    )
    torch.save(same.state_dict(), project / "weights.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    doc, _ = diagnosis(
        tmp_path,
        "../project/weights.pt",
        "--model",
        "../project/model.py:make",
        "--data",
        mlp_files["data"],
        "--loss",
        "cross_entropy",
    )
    assert doc["settings"]["num_model_params"] == 4 * 3 + 3 + 3 * 3 + 3
    x = torch.from_numpy(np.load(mlp_files["data"])["inputs"])
    y = torch.from_numpy(np.load(mlp_files["data"])["targets"])
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(same(x), y))
    assert doc["loss"] == pytest.approx(expected, rel=1e-6)


LM_FILE = """
import torch

class TinyLM(torch.nn.Module):
    def __init__(self, vocab=13, width=4):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids)))

def make():
    torch.manual_seed(0)
    return TinyLM()

def per_position(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs.transpose(1, 2), targets)
"""


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lm")
    (folder / "lm.py").write_text(LM_FILE)
    namespace: dict = {}
    exec(compile(LM_FILE, "lm.py", "exec"), namespace)
    model = namespace["make"]()
    torch.save(model.state_dict(), folder / "lm.pt")
    ids = torch.randint(0, 13, (6, 8), generator=torch.Generator().manual_seed(0))
    np.savez(folder / "tokens.npz", input_ids=ids.numpy())
    torch.save({"inputs": ids, "targets": ids}, folder / "tokens.pt")
    return {"dir": folder, "ids": ids, "model": model, "weights": folder / "lm.pt"}


def test_int64_token_data_with_causal_lm(tmp_path, lm_files) -> None:
    folder = lm_files["dir"]
    model_spec = f"{folder / 'lm.py'}:make"
    for data in ("tokens.npz", "tokens.pt"):
        doc, text = diagnosis(
            tmp_path,
            lm_files["weights"],
            "--model",
            model_spec,
            "--data",
            folder / data,
            "--loss",
            "causal_lm",
            "--dtype",
            "float64",
        )
        assert "loss causal_lm" in text
        ids = lm_files["ids"]
        with torch.no_grad():
            expected = float(causal_lm(lm_files["model"].double()(ids), ids))
        assert doc["loss"] == pytest.approx(expected, rel=1e-12)
        assert doc["settings"]["num_samples"] == 6
    # The default loss for labels is cross_entropy, which says what to use instead.
    line = error_line(
        invoke(
            "diagnose",
            lm_files["weights"],
            "--model",
            model_spec,
            "--data",
            folder / "tokens.npz",
        )
    )
    assert "--loss causal_lm" in line
    # A loss of the user's takes 2-D integer targets without one-hot advice.
    doc, _ = diagnosis(
        tmp_path,
        lm_files["weights"],
        "--model",
        model_spec,
        "--data",
        folder / "tokens.npz",
        "--loss",
        f"{folder / 'lm.py'}:per_position",
    )
    assert doc["settings"]["loss"].endswith("lm.py:per_position")


BATCH_FILE = """
import torch

def batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g)
    y = torch.arange(10) % 3
    return [{"features": x[i:i + 4], "label": y[i:i + 4]} for i in range(0, 10, 4)]

def loss(model, batch):
    return torch.nn.functional.cross_entropy(model(batch["features"]), batch["label"])
"""


def test_batch_loss_for_dict_batches(tmp_path, mlp_files) -> None:
    (tmp_path / "dicts.py").write_text(BATCH_FILE)
    weights = mlp_files["dir"] / "plain.pt"
    spec = (weights, "--model", "mlp", "--model-kwargs", json.dumps(MODEL))
    doc, text = diagnosis(
        tmp_path,
        *spec,
        "--data",
        f"{tmp_path / 'dicts.py'}:batches",
        "--batch-loss",
        f"{tmp_path / 'dicts.py'}:loss",
        "--seed",
        "0",
    )
    assert "batch loss" in text
    assert doc["settings"]["loss"] is None
    assert doc["settings"]["batch_loss"].endswith("dicts.py:loss")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g)
    y = torch.arange(10) % 3
    model = build_model("mlp", seed=0, **MODEL)
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(model(x), y))
    # Batches of 4, 4 and 2 weighted by their sizes: the mean over all 10 samples.
    assert doc["loss"] == pytest.approx(expected, rel=1e-6)
    line = error_line(
        invoke(
            "diagnose",
            *spec,
            "--data",
            f"{tmp_path / 'dicts.py'}:batches",
            "--batch-loss",
            f"{tmp_path / 'dicts.py'}:loss",
            "--loss",
            "mse",
        )
    )
    assert "give --loss" in line
    assert "or --batch-loss" in line


def test_drop_last_is_named(tmp_path, mlp_files) -> None:
    (tmp_path / "loader.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch.utils.data import DataLoader, TensorDataset

            def make():
                g = torch.Generator().manual_seed(0)
                data = TensorDataset(torch.randn(10, 4, generator=g), torch.arange(10) % 3)
                return DataLoader(data, batch_size=4, shuffle=True, drop_last=True)
            """
        )
    )
    line = error_line(
        invoke(
            "diagnose",
            mlp_files["dir"] / "plain.pt",
            "--model",
            "mlp",
            "--model-kwargs",
            json.dumps(MODEL),
            "--data",
            f"{tmp_path / 'loader.py'}:make",
            "--loss",
            "cross_entropy",
        )
    )
    assert "DataLoader with drop_last=True" in line
    assert "drop_last=False" in line


def test_hugging_face_folder(tmp_path, lm_files) -> None:
    model = tiny_gpt2(vocab_size=13, n_embd=8, n_positions=16)
    folder = tmp_path / "tiny-gpt2"
    model.save_pretrained(folder)
    tokens = lm_files["dir"] / "tokens.npz"
    doc, text = diagnosis(tmp_path, folder, "--data", tokens)
    assert "GPT2LMHeadModel" in text
    assert "loss causal_lm" in text
    assert "note: a Hugging Face model folder, loaded with transformers" in text
    assert doc["settings"]["checkpoint_format"] == "huggingface"
    ids = lm_files["ids"]
    with torch.no_grad():
        hf_loss = float(model(ids, labels=ids).loss)  # no padding: the same mean
    assert doc["loss"] == pytest.approx(hf_loss, rel=1e-5)
    # The model's own .loss through --batch-loss: the same number.
    (tmp_path / "hf_loss.py").write_text(
        "def lm_loss(model, batch):\n"
        "    ids, labels = batch\n"
        "    return model(input_ids=ids, labels=labels).loss\n"
    )
    own, text = diagnosis(
        tmp_path,
        folder,
        "--data",
        tokens,
        "--batch-loss",
        f"{tmp_path / 'hf_loss.py'}:lm_loss",
    )
    assert own["loss"] == pytest.approx(hf_loss, rel=1e-5)
    assert own["lambda_min"] == pytest.approx(doc["lambda_min"], rel=1e-3)
