"""The ``critpoint`` command: happy paths, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

import critpoint as cp
from critpoint.data import load_data
from critpoint.io.checkpoint import save_checkpoint
from critpoint.models import build_model

COMMANDS = ["diagnose", "escape", "report", "train", "demo"]

#: Synthetic classification data small enough for every test to run in well
#: under a second: 48 samples, 6 features, 3 classes.
TEACHER = {
    "task": "classification",
    "n_samples": 48,
    "in_features": 6,
    "num_classes": 3,
    "seed": 1,
}
MODEL = {"in_features": 6, "widths": [4], "out_features": 3, "activation": "tanh"}


def invoke(*args: str) -> Result:
    """Run the ``critpoint`` command in-process (stdout and stderr kept apart)."""
    from critpoint_cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def one_error_line(result: Result) -> str:
    """Assert the result is a one-line error on stderr and return the line."""
    assert result.exit_code not in (0, 2), (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("critpoint: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def parse_json(text: str) -> dict:
    """Parse JSON output, failing with the text when it is not pure JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # pragma: no cover - the message helps
        raise AssertionError(f"not pure JSON: {exc}\n{text[:500]}") from exc


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A critpoint checkpoint of a 43-parameter MLP that knows its data and loss."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    model = build_model("mlp", seed=0, **MODEL)
    save_checkpoint(
        path,
        model,
        data_spec={"name": "teacher", "kwargs": TEACHER},
        loss="cross_entropy",
    )
    return path


@pytest.fixture(scope="session")
def saddle_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-weight net ``y = w1·w2·x`` at the origin: a saddle with eigenvalues ±2."""
    path = tmp_path_factory.mktemp("ckpt") / "saddle.ckpt"
    save_checkpoint(path, build_model("two_weight"), data_spec="two_weight", loss="mse")
    return path


# ------------------------------------------------------------------ start-up


def test_help_of_every_command_does_not_import_torch() -> None:
    code = f"""
import sys
from click.testing import CliRunner
from critpoint_cli.main import cli
for args in [[], *[[c] for c in {COMMANDS!r}]]:
    r = CliRunner().invoke(cli, args + ["--help"])
    assert r.exit_code == 0, (args, r.output)
    assert "Usage: " in r.stdout, r.stdout
heavy = [m for m in ("torch", "critpoint", "numpy", "matplotlib") if m in sys.modules]
print("heavy:", heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "heavy: []" in out.stdout, out.stdout + out.stderr


def test_installed_script_runs_in_a_subprocess(tiny_ckpt: Path) -> None:
    script = Path(sys.executable).with_name("critpoint")
    if not script.exists():
        pytest.skip("the critpoint script is not installed next to this python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [str(script), "diagnose", str(tiny_ckpt), "--json", "-", "--no-density"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "critpoint.diagnosis"
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True
    )
    assert "critpoint" in version.stdout


# --------------------------------------------------------------- happy paths


def test_diagnose_prints_a_verdict(tiny_ckpt: Path) -> None:
    r = invoke("diagnose", str(tiny_ckpt))
    assert r.exit_code == 0, r.stderr
    for word in (
        "Verdict",
        "Loss",
        "Gradient norm",
        "λ_min",
        "λ_max",
        "Minimum ratio",
        "Trace",
        "Next",
    ):
        assert word in r.stdout
    assert "Spectrum       every eigenvalue in [" in r.stdout
    assert "with probability ≥ 99%" in r.stdout
    assert "mlp (43 parameters) on teacher (48 samples)" in r.stdout
    assert r.stderr == ""


def test_diagnose_json_on_stdout_is_pure_and_complete(tiny_ckpt: Path) -> None:
    r = invoke(
        "--seed", "3", "--device", "cpu",
        "diagnose", str(tiny_ckpt), "--json", "-", "--progress",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["schema"] == "critpoint.diagnosis"
    assert doc["schema_version"] == 1
    assert doc["critpoint_version"]
    assert doc["torch_version"] == str(torch.__version__)
    s = doc["settings"]
    assert s["seed"] == 3
    assert s["checkpoint"] == str(tiny_ckpt)
    assert s["model"]["name"] == "mlp"
    assert MODEL.items() <= s["model"]["kwargs"].items()  # and the defaults
    assert s["data"]["name"] == "teacher"
    assert TEACHER.items() <= s["data"]["kwargs"].items()
    assert s["loss"] == "cross_entropy"
    assert s["command"] == "diagnose"
    assert (s["k"], s["tol"], s["max_matvecs"]) == (6, 1e-4, None)
    assert (s["density"], s["trace"]) == (True, True)
    assert (s["dtype"], s["device"]) == ("float32", "cpu")
    # the numbers are the library's, to the bit, for the same model, data, loss
    # and seed (the same operations in the same order)
    model = build_model("mlp", seed=0, **MODEL)
    data = load_data("teacher", **TEACHER)
    obj = cp.Objective(model, cp.get_loss("cross_entropy"), data.as_tuple())
    dg = cp.diagnose(obj, seed=3)
    expected = dg.to_dict()
    for key in (
        "kind",
        "side",
        "critical",
        "converged",
        "verdict",
        "reason",
        "advice",
        "num_params",
        "num_matvecs",
        "has_escape_direction",
        "loss",
        "grad_norm",
        "grad_tol",
        "lambda_min",
        "lambda_min_error",
        "lambda_max",
        "lambda_max_error",
        "zero_tol",
        "minimum_ratio",
        "negative_fraction",
        "flat_fraction",
        "escape_prediction",
        "lambda_lower",
        "lambda_upper",
        "bound_probability",
    ):
        assert doc[key] == expected[key], key
    assert doc["eigenvalues"] == expected["eigenvalues"]
    assert doc["eigenvalue_errors"] == expected["eigenvalue_errors"]
    assert doc["trace"] == expected["trace"]
    assert doc["density"] == expected["density"]
    assert doc["summary"] == dg.summary()
    # progress bars went to stderr, not into the JSON
    assert "Lanczos" in r.stderr or "SLQ" in r.stderr or "%" in r.stderr


def test_seed_after_the_command_overrides_the_global_one(tiny_ckpt: Path) -> None:
    r = invoke(
        "--seed",
        "1",
        "diagnose",
        str(tiny_ckpt),
        "--seed",
        "7",
        "--json",
        "-",
        "--no-density",
        "--no-trace",
    )
    assert r.exit_code == 0, r.stderr
    assert parse_json(r.stdout)["settings"]["seed"] == 7


def test_diagnose_report_per_layer_and_rerender(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    rep = tmp_path / "rep"
    js = tmp_path / "d.json"
    r = invoke(
        "diagnose",
        str(tiny_ckpt),
        "--per-layer",
        "--report",
        str(rep),
        "--json",
        str(js),
    )
    assert r.exit_code == 0, r.stderr
    assert "Per layer" in r.stdout
    assert "net.0" in r.stdout
    assert "net.2" in r.stdout
    for name in (
        "report.html",
        "diagnosis.json",
        "spectrum.png",
        "landscape.png",
        "per_layer.png",
    ):
        assert (rep / name).is_file(), name
    doc = parse_json(js.read_text())
    assert [x["name"] for x in doc["per_layer"]] == ["net.0", "net.2"]
    # every layer's block in one batched run, with the heterogeneity between them
    blocks = doc["per_layer_blocks"]
    assert 0 <= blocks["heterogeneity"] <= 1
    assert blocks["num_passes"] < blocks["num_matvecs"]
    assert f"{blocks['heterogeneity']:.3f}" in r.stdout
    assert doc["per_layer"][0]["diagnosis"]["settings"]["method"].startswith("one pass")
    assert doc["landscape"]["slice_min"]["losses"]
    # re-render from the --json document (the report's own JSON: tests/report)
    out = tmp_path / "again"
    r2 = invoke("report", str(js), "-o", str(out), "--dpi", "40")
    assert r2.exit_code == 0, r2.stderr
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert f"{doc['lambda_max']:.6g}" in html
    assert f"{doc['per_layer'][1]['diagnosis']['lambda_max']:.6g}" in html


def test_params_glob_selects_a_layer(tiny_ckpt: Path) -> None:
    r = invoke(
        "diagnose",
        str(tiny_ckpt),
        "--params",
        "net.2.*",
        "--json",
        "-",
        "--no-density",
        "--no-trace",
    )
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["num_params"] == 4 * 3 + 3
    assert doc["settings"]["param_globs"] == ["net.2.*"]


def test_train_writes_a_checkpoint_diagnose_understands(tmp_path: Path) -> None:
    ckpt = tmp_path / "trained.ckpt"
    r = invoke(
        "train",
        "--model-kwargs", json.dumps(MODEL),
        "--data", "teacher",
        "--data-kwargs", json.dumps(TEACHER),
        "--optimizer", "momentum",
        "--lr", "0.1",
        "--steps", "30",
        "--track", "sharpness",
        "--track", "lambda_min",
        "-o", str(ckpt),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "Written" in r.stdout
    assert ckpt.is_file()
    assert "Sharpness" in r.stdout
    r2 = invoke("diagnose", str(ckpt), "--report", str(tmp_path / "rep"), "--json", "-")
    assert r2.exit_code == 0, r2.stderr
    doc = parse_json(r2.stdout)
    assert doc["history"]["sharpness"], (
        "the training history travels with the checkpoint"
    )
    assert (tmp_path / "rep" / "training.png").is_file()


def test_escape_leaves_the_two_weight_saddle(saddle_ckpt: Path, tmp_path: Path) -> None:
    before = parse_json(invoke("diagnose", str(saddle_ckpt), "--json", "-").stdout)
    assert before["kind"] == "saddle"
    assert before["lambda_min"] == pytest.approx(-2.0, rel=1e-5)
    assert before["lambda_max"] == pytest.approx(2.0, rel=1e-5)
    out = tmp_path / "moved.ckpt"
    r = invoke("escape", str(saddle_ckpt), "-o", str(out), "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["schema"] == "critpoint.escape"
    assert doc["num_steps_taken"] >= 1
    assert doc["loss_after"] < doc["loss_before"] == pytest.approx(1.0)
    assert out.is_file()
    after = parse_json(invoke("diagnose", str(out), "--json", "-").stdout)
    assert after["loss"] == pytest.approx(doc["loss_after"])
    text = invoke("escape", str(saddle_ckpt), "-o", str(tmp_path / "b.ckpt"))
    assert "Step 1" in text.stdout
    assert "→" in text.stdout
    # the same solve as diagnose -k: its settings are recorded
    doc = parse_json(
        invoke(
            "escape",
            str(saddle_ckpt),
            "-k",
            "2",
            "-o",
            str(tmp_path / "c.ckpt"),
            "--json",
            "-",
        ).stdout
    )
    assert doc["settings"]["k"] == 2
    assert doc["steps"][0]["eigenvalue"] == pytest.approx(
        before["lambda_min"], rel=1e-9
    )


def test_demo_quick(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = invoke("demo", "-o", str(out), "--steps", "30", "--quick")
    assert r.exit_code == 0, r.stderr
    for name in (
        "report.html",
        "diagnosis.json",
        "model.ckpt",
        "spectrum.png",
        "landscape.png",
        "training.png",
    ):
        assert (out / name).is_file(), name
    doc = parse_json((out / "diagnosis.json").read_text())
    assert next(e["label"] for e in doc["entries"]) == "initialisation"
    assert doc["entries"][-1]["label"] == "end"
    r2 = invoke("diagnose", str(out / "model.ckpt"), "--no-density", "--no-trace")
    assert r2.exit_code == 0, r2.stderr


# -------------------------------------------------------------- closed forms


def test_user_model_file_with_state_dict_and_npz_gives_least_squares_hessian(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    n, d = 40, 3
    x = rng.normal(size=(n, d)) * np.array([1.0, 2.0, 0.5])
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=n)
    a = np.hstack([x, np.ones((n, 1))])
    sol = np.linalg.lstsq(a, y, rcond=None)[0]
    exact = np.linalg.eigvalsh(2.0 * a.T @ a / n)
    np.savez(tmp_path / "data.npz", inputs=x, targets=y)
    (tmp_path / "linear.py").write_text(
        "import torch\n\ndef make(in_features=3):\n    return torch.nn.Linear(in_features, 1)\n"
    )
    weights = {
        "weight": torch.tensor(sol[:d]).reshape(1, d),
        "bias": torch.tensor(sol[d:]),
    }
    torch.save(weights, tmp_path / "weights.pt")
    r = invoke(
        "--dtype", "float64",
        "diagnose", str(tmp_path / "weights.pt"),
        "--model", f"{tmp_path / 'linear.py'}:make",
        "--data", str(tmp_path / "data.npz"),
        "--loss", "mse",
        "--tol", "1e-10",
        "--json", "-",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["kind"] == "minimum"
    assert doc["critical"] is True
    assert doc["lambda_min"] == pytest.approx(exact[0], rel=1e-6)
    assert doc["lambda_max"] == pytest.approx(exact[-1], rel=1e-6)
    assert doc["settings"]["checkpoint_format"] == "state_dict"
    assert doc["num_params"] == d + 1


# -------------------------------------------------------------------- errors


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    r = invoke("diagnose", str(path), "--model", "mlp", "--data", "teacher")
    line = one_error_line(r)
    assert r.exit_code == 1
    assert "unpickle" in line
    assert "builtins.exec" in line
    assert "--trust-checkpoint" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["diagnose", "no/such/file.ckpt"], "not found"),
        (["diagnose", "{ckpt}", "--model", "no_such_model"], "unknown model"),
        (
            ["diagnose", "{ckpt}", "--model", "nomodule_xyz:make"],
            "cannot import module",
        ),
        (["diagnose", "{ckpt}", "--data", "no_such_data"], "unknown data"),
        (["diagnose", "{ckpt}", "--loss", "no_such_loss"], "unknown loss"),
        (
            [
                "diagnose",
                "{ckpt}",
                "--data",
                "teacher",
                "--data-kwargs",
                json.dumps({**TEACHER, "in_features": 5}),
            ],
            "expects 6 input features",
        ),
        (
            [
                "diagnose",
                "{ckpt}",
                "--model",
                "mlp",
                "--model-kwargs",
                json.dumps({**MODEL, "widths": [5]}),
            ],
            "do not fit the model",
        ),
        (["report", "{ckpt}", "-o", "{tmp}/r"], "not valid JSON"),
        (
            [
                "train",
                "--model-kwargs",
                json.dumps(MODEL),
                "--data",
                "teacher",
                "--data-kwargs",
                json.dumps(TEACHER),
                "--loss",
                "bce",
                "-o",
                "{tmp}/x.ckpt",
            ],
            "bce",
        ),
    ],
)
def test_errors_are_one_line_with_exit_code_1(
    args: list[str], needle: str, tiny_ckpt: Path, tmp_path: Path
) -> None:
    argv = [
        a.replace("{ckpt}", str(tiny_ckpt)).replace("{tmp}", str(tmp_path))
        for a in args
    ]
    line = one_error_line(invoke(*argv))
    assert needle in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["diagnose", "{ckpt}", "--model-kwargs", "not json"],
        ["diagnose", "{ckpt}", "-k", "1"],
        ["diagnose", "{ckpt}", "--dtype", "float16"],
        ["diagnose"],
        ["train", "--steps", "3", "--epochs", "2"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tiny_ckpt: Path) -> None:
    r = invoke(*[a.replace("{ckpt}", str(tiny_ckpt)) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert "Traceback" not in r.stderr


def test_traceback_only_with_debug() -> None:
    r = invoke("--debug", "diagnose", "no/such/file.ckpt")
    assert r.exit_code == 1
    assert type(r.exception).__name__ == "CheckpointError"
    r = invoke("diagnose", "no/such/file.ckpt", "--debug")
    assert type(r.exception).__name__ == "CheckpointError"


def test_unconverged_solver_exits_3_with_partial_results(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    js = tmp_path / "partial.json"
    r = invoke(
        "--dtype", "float64",
        "diagnose", str(tiny_ckpt),
        "--max-matvecs", "5",
        "--tol", "1e-9",
        "--json", str(js),
        "--no-density",
        "--no-trace",
    )  # fmt: skip
    assert r.exit_code == 3, r.stderr
    assert r.stderr == (
        "critpoint: warning: the eigensolver did not converge for the whole model "
        "(tol 1e-09); the results above use the looser bounds it reached. Raise "
        "--max-matvecs or loosen --tol.\n"
    )
    assert "Verdict" in r.stdout
    doc = parse_json(js.read_text())
    assert doc["converged"] is False
    assert doc["settings"]["max_matvecs"] == 5
    assert doc["num_matvecs"] <= 5  # the symmetry probe's 3 counted
    # an outcome, not a fault: no traceback with --debug either
    r = invoke(
        "--debug", "--dtype", "float64",
        "diagnose", str(tiny_ckpt),
        "--max-matvecs", "5", "--tol", "1e-9", "--no-density", "--no-trace",
    )  # fmt: skip
    assert r.exit_code == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("critpoint: warning: the eigensolver did not converge")


def test_convergence_error_is_exit_code_3() -> None:
    from critpoint.errors import ConvergenceError, InputError
    from critpoint_cli.main import EXIT_NOT_CONVERGED, error_message

    assert EXIT_NOT_CONVERGED == 3
    error = ConvergenceError("did not\nconverge", partial={"kind": "saddle"})
    assert error_message(error) == ("did not converge", 3)
    assert error.partial == {"kind": "saddle"}
    assert error_message(InputError("bad")) == ("bad", 1)


def test_diagnose_memory_budget_is_kept_stated_or_refused(tiny_ckpt: Path) -> None:
    r = invoke("diagnose", str(tiny_ckpt), "--memory", "20MB", "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["memory"]["budget"] == 20_000_000
    assert doc["memory"]["source"] == "memory="
    assert doc["memory"]["reorth"] == doc["density"]["reorth"] == "full"
    assert doc["memory"]["peak"] <= 20_000_000
    assert doc["settings"]["memory"] == "20MB"
    # 43 float32 parameters: the smallest run holds about 5 KiB
    line = one_error_line(invoke("diagnose", str(tiny_ckpt), "--memory", "2kB"))
    assert "over the budget of 1.95 KiB (memory=)" in line
    assert "--memory" in line
    line = one_error_line(invoke("diagnose", str(tiny_ckpt), "--memory", "lots"))
    assert "a size such as '8GB'" in line


def test_max_samples_makes_the_verdict_carry_the_sampling_error(
    tiny_ckpt: Path,
) -> None:
    r = invoke("diagnose", str(tiny_ckpt), "--max-samples", "40", "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = parse_json(r.stdout)
    assert doc["settings"]["sampled"] is True
    s = doc["sampling"]
    assert s["used"] is True
    assert s["num_batches"] == 8  # 40 samples in batches of 5
    assert s["lambda_min"] > 0
    assert s["lambda_max"] > 0
    # the error bars include two standard errors of the sampling error
    assert doc["lambda_min_error"] >= 2 * s["lambda_min"]
    full = parse_json(invoke("diagnose", str(tiny_ckpt), "--json", "-").stdout)
    assert full["sampling"] is None  # 48 samples in one batch
    assert full["settings"]["sampled"] is False
    text = invoke("diagnose", str(tiny_ckpt), "--max-samples", "40", "--memory", "1GB")
    assert "Sampling error over 8 batches (one standard error): λ_min ±" in text.stdout
    assert "(in the verdict's error bars)." in text.stdout
    assert "Memory: peak " in text.stdout
    assert "of 954 MiB (memory=) on cpu: Lanczos basis 43 vectors" in text.stdout
