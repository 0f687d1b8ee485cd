"""`critpoint diagnose` under torchrun: two gloo ranks shard the data and agree with one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import critpoint as cp

CRITPOINT = Path(sys.executable).with_name("critpoint")


@pytest.mark.distributed
def test_diagnose_under_torchrun_matches_one_process(tmp_path):
    model = cp.build_model("mlp", widths=(8,), seed=0)
    data_spec = {"name": "digits", "kwargs": {}}
    ckpt = tmp_path / "m.ckpt"
    cp.save_checkpoint(ckpt, model, data_spec=data_spec, loss="cross_entropy")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [
        "--quiet",
        "--dtype",
        "float64",
        "diagnose",
        str(ckpt),
        "--no-density",
        "-k",
        "4",
    ]
    one = tmp_path / "one.json"
    two = tmp_path / "two.json"
    subprocess.run(
        [str(CRITPOINT), *common, "--json", str(one)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "critpoint_cli",
            *common,
            "--json",
            str(two),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["settings"]["world_size"] == 2
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)
    assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-10)
    for x, y in zip(a["eigenvalues"], b["eigenvalues"], strict=True):
        assert y == pytest.approx(x, rel=1e-9, abs=1e-12)
    assert b["trace"]["value"] == pytest.approx(a["trace"]["value"], rel=1e-9)
    assert b["kind"] == a["kind"]


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch):
    from critpoint_cli.loading import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda")
