"""Every bad input is one clear line: seeded fuzzing of checkpoints, data files and reports.

About 500 damaged files (truncated, bytes flipped or overwritten, entries of
the wrong type, keys removed), drawn from fixed seeds: 335 checkpoints and data
files go through the command in-process, 160 report documents through
load_report (and a sample through ``critpoint report``, drawing being slow). Whatever the damage, the command either works (some damage is
harmless: a flipped bit in a weight) or stops with exit code 1 and one line
naming the file and the fault; never a traceback, never the command's last
resort "unexpected X ... please report it". Each test also checks that most of
its damage was caught, so the files do reach the code under test.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from critpoint.errors import CritpointError
from critpoint.io.checkpoint import save_checkpoint
from critpoint.models import build_model
from critpoint.report import load_report, render_report
from tests.cli.test_cli import invoke

FAST = ["-k", "2", "--no-density", "--no-trace", "--max-matvecs", "30"]
MODEL = {"in_features": 3, "widths": [2], "out_features": 2}
TEACHER = {
    "task": "classification",
    "n_samples": 12,
    "in_features": 3,
    "num_classes": 2,
}


# ------------------------------------------------------------------ mutations


def byte_mutations(data: bytes, rng: random.Random) -> bytes:
    """One random damage of a file's bytes."""
    kind = rng.choice(["truncate", "flip", "overwrite", "insert", "zero", "head"])
    n = len(data)
    if kind == "truncate":
        return data[: rng.randrange(0, n)]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "overwrite":
        i = rng.randrange(n)
        span = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        return data[:i] + span + data[i + len(span) :]
    if kind == "insert":
        i = rng.randrange(n)
        return (
            data[:i]
            + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
            + data[i:]
        )
    if kind == "zero":
        i = rng.randrange(n)
        return data[:i] + bytes(min(n - i, rng.randint(1, 256))) + data[i + 256 :]
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 16))) + data[16:]


def weird_value(rng: random.Random) -> Any:
    """A value of a random JSON-able type, sometimes a nasty one."""
    return rng.choice(
        [
            None,
            True,
            0,
            -1,
            2**70,
            1e308,
            float("nan"),
            "",
            "x",
            "os:system",
            "../../etc/passwd.npz",
            [],
            [1, "a", None],
            {},
            {"name": 3},
            {"a": {"b": [1, 2]}},
            [[1.0, 2.0], [3.0]],
        ]
    )


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into nested dicts and lists."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            yield from paths(v, (*prefix, i))


def mutate_tree(obj: Any, rng: random.Random) -> Any:
    """Replace or delete the value at one random path of a nested structure."""
    import copy

    out = copy.deepcopy(obj)
    path = rng.choice([p for p in paths(out) if p])
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[key]
    else:
        parent[key] = weird_value(rng)
    return out


# -------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("fuzz-base")
    model = build_model("mlp", seed=0, **MODEL)
    spec = {"name": "teacher", "kwargs": TEACHER}
    save_checkpoint(folder / "m.ckpt", model, data_spec=spec, loss="cross_entropy")
    save_checkpoint(
        folder / "m.safetensors", model, data_spec=spec, loss="cross_entropy"
    )
    legacy = io.BytesIO()
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=gen)
    y = torch.randint(0, 2, (12,), generator=gen)
    pt = io.BytesIO()
    torch.save({"inputs": x, "targets": y}, pt)
    npz = io.BytesIO()
    np.savez(npz, inputs=x.numpy(), targets=y.numpy())
    npz_c = io.BytesIO()
    np.savez_compressed(npz_c, inputs=x.numpy(), targets=y.numpy())
    # A report document with every part (density, landscape, per-layer,
    # training curves), built in memory: drawing it is what the test samples.
    import critpoint as cp
    from critpoint.data import load_data
    from critpoint.report import LayerEntry, ReportDocument, ReportEntry

    data = load_data("teacher", **TEACHER)
    obj = cp.Objective(model, cp.get_loss("cross_entropy"), data.as_tuple())
    options = {"k": 2, "seed": 0, "density": True, "trace": True}
    dg = cp.diagnose(obj, **options)
    land = cp.landscape(obj, dg, num=7, plane_num=4)
    layer = LayerEntry("net.0", "Linear", ["net.0.weight", "net.0.bias"],
                       cp.diagnose(cp.Objective(model, cp.get_loss("cross_entropy"),
                                                data.as_tuple(), params="net.0.*"),
                                   **options))  # fmt: skip
    doc = ReportDocument(
        title="fuzz",
        entries=[ReportEntry("m.ckpt", dg, land, step=2)],
        per_layer=[layer],
        history={"loss": [2.0, 1.0, 0.5], "lr": [0.1, 0.1, 0.1], "step": [0, 1, 2]},
        settings={"checkpoint": "m.ckpt", "model": {"name": "mlp", "kwargs": MODEL}},
    )
    header = torch.load(folder / "m.ckpt", weights_only=True)
    return {
        "folder": folder,
        "ckpt": (folder / "m.ckpt").read_bytes(),
        "safetensors": (folder / "m.safetensors").read_bytes(),
        "legacy": legacy.getvalue(),
        "pt": pt.getvalue(),
        "npz": npz.getvalue(),
        "npz_compressed": npz_c.getvalue(),
        "header": header,
        "report": json.loads(doc.to_json()),
    }


def check(result: Any, what: str, codes: tuple[int, ...] = (0, 1, 3)) -> int:
    """Assert the command ended as a user would want; return its exit code."""
    text = result.stderr
    assert result.exit_code in codes, (what, result.exit_code, text)
    # The command's last resort for an error nobody foresaw; a library's own
    # wording quoted as detail ("unexpected EOF" from torch) is not that.
    assert "critpoint: error: unexpected" not in text, (what, text)
    assert "please report it" not in text, (what, text)
    assert "Traceback" not in text, (what, text)
    if result.exit_code == 1:
        lines = text.strip().splitlines()
        assert len(lines) == 1, (what, text)
        assert lines[0].startswith("critpoint: error: "), (what, text)
    return result.exit_code


# --------------------------------------------------------------------- tests


def test_damaged_checkpoints(base: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(13)
    cases = []
    for name, suffix, count in [
        ("ckpt", ".ckpt", 70),
        ("safetensors", ".safetensors", 50),
        ("legacy", ".pt", 30),
    ]:
        for _ in range(count):
            cases.append((f"{name}{suffix}", byte_mutations(base[name], rng)))
    cases += [
        ("text.ckpt", b"hello world\nthis is not a checkpoint\n"),
        ("json.ckpt", b'{"format": "critpoint-checkpoint"}'),
        ("zip.ckpt", _zip({"a.txt": b"x"})),
        ("empty-zip.ckpt", _zip({})),
    ]
    codes = []
    for i, (what, data) in enumerate(cases):
        suffix = "." + what.rsplit(".", 1)[1]
        path = tmp_path / f"{i}{suffix}"
        path.write_bytes(data)
        args = ["diagnose", str(path), *FAST]
        if what.startswith("legacy"):  # a plain state dict: model and data on the line
            args += ["--model", "mlp", "--model-kwargs", json.dumps(MODEL)]
            args += ["--data", "teacher", "--data-kwargs", json.dumps(TEACHER)]
        codes.append(check(invoke(*args), f"{what} #{i}"))
    assert codes.count(1) >= len(codes) // 2  # the damage did reach the loader


def test_checkpoints_with_mistyped_entries(
    base: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(14)
    header = {k: v for k, v in base["header"].items() if k != "state_dict"}
    state = base["header"]["state_dict"]
    codes = []
    for i in range(70):
        doc = mutate_tree(header, rng)
        tensors = dict(state)
        if i % 5 == 0:  # damage a tensor instead: dtype, shape or kind
            key = rng.choice(sorted(tensors))
            tensors[key] = rng.choice(
                [
                    tensors[key].to(torch.complex64),
                    tensors[key].to(torch.int64),
                    tensors[key].reshape(-1)[:1].clone(),
                    torch.full_like(tensors[key], float("nan")),
                    torch.empty(0),
                ]
            )
        elif i % 7 == 0:
            doc = {
                **doc,
                "state_dict": rng.choice([[1, 2], "x", {"w": 3}, {4: torch.ones(1)}]),
            }
            tensors = None
        if tensors is not None:
            doc = {**doc, "state_dict": tensors}
        path = tmp_path / f"{i}.ckpt"
        torch.save(doc, path)
        codes.append(check(invoke("diagnose", str(path), *FAST), f"header #{i}: {doc}"))
        if (
            i % 3 == 1 and tensors is not None
        ):  # the same damage in safetensors metadata
            from safetensors.torch import save_file

            meta = {k: v for k, v in doc.items() if k != "state_dict"}
            st = tmp_path / f"{i}.safetensors"
            text = json.dumps(meta, default=str)
            save_file(tensors, str(st), metadata={"critpoint": text})
            check(invoke("diagnose", str(st), *FAST), f"safetensors #{i}: {meta}")
    assert codes.count(1) >= len(codes) // 3


def test_damaged_data_files(base: dict[str, Any], tmp_path: Path) -> None:
    plain = tmp_path / "plain.ckpt"
    save_checkpoint(plain, build_model("mlp", seed=0, **MODEL))
    rng = random.Random(15)
    cases = []
    for name, suffix, count in [
        ("npz", ".npz", 30),
        ("npz_compressed", ".npz", 20),
        ("pt", ".pt", 30),
    ]:
        for _ in range(count):
            cases.append((suffix, byte_mutations(base[name], rng)))
    arrays = [
        {"inputs": np.ones((4, 3)), "targets": np.array(["a", "b", "c", "d"])},
        {"inputs": np.ones((4, 3)) + 1j, "targets": np.zeros(4, dtype=np.int64)},
        {"inputs": np.ones((4, 3)), "targets": np.zeros(5, dtype=np.int64)},
        {"inputs": np.ones((4, 2)), "targets": np.zeros(4, dtype=np.int64)},
        {"inputs": np.ones((0, 3)), "targets": np.zeros(0, dtype=np.int64)},
        {"x": np.ones((4, 3)), "y": np.zeros(4)},
        {"inputs": np.full((4, 3), np.nan), "targets": np.zeros(4, dtype=np.int64)},
        {"inputs": np.ones((4, 3)), "targets": np.full(4, 7, dtype=np.int64)},
        {"inputs": np.ones(()), "targets": np.zeros(())},
    ]
    for a in arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **a)
        cases.append((".npz", buffer.getvalue()))
    codes = []
    for i, (suffix, data) in enumerate(cases):
        path = tmp_path / f"{i}{suffix}"
        path.write_bytes(data)
        r = invoke("diagnose", str(plain), "--model", "mlp", "--model-kwargs",
                   json.dumps(MODEL), "--data", str(path), *FAST)  # fmt: skip
        codes.append(check(r, f"data {suffix} #{i}"))
    assert codes.count(1) >= len(codes) // 2


def test_damaged_diagnosis_documents(base: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(16)
    report = base["report"]
    single = dict(report["entries"][0]["diagnosis"])
    loaded = []
    failures = 0
    for i in range(160):
        doc = mutate_tree(report if i % 2 else single, rng)
        path = tmp_path / f"{i}.json"
        text = json.dumps(doc) if i % 9 else json.dumps(doc)[: rng.randrange(200)]
        path.write_text(text)
        try:
            loaded.append((path, load_report(path)))
        except CritpointError as exc:
            failures += 1
            message = str(exc)
            assert "\n" not in message
            assert "unexpected" not in message
    assert failures >= 20
    # Rendering is slower: a seeded sample of the documents that loaded, in-process
    # through the command (which also turns any drawing failure into one line).
    for path, _doc in rng.sample(loaded, 2):
        check(invoke("report", str(path), "-o", str(tmp_path / f"out-{path.stem}"),
                     "--dpi", "30"), f"report {path.read_text()[:300]}")  # fmt: skip


def test_drawing_failure_of_a_loaded_document_names_the_file(
    base: dict[str, Any], tmp_path: Path
) -> None:
    doc = json.loads(json.dumps(base["report"]))
    plane = doc["entries"][0]["landscape"]["plane"]
    plane["losses"] = plane["losses"][:1]  # rows no longer match the grid
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CritpointError, match=r"bad\.json"):
        render_report(load_report(path), tmp_path / "out", dpi=30)
    assert not (tmp_path / "out").exists()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()
