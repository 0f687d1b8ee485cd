"""The teaching notebooks: stored clean, and each one runs top to bottom.

The stored ``notebooks/*.ipynb`` carry no outputs and no execution counts (the
diffs stay reviewable, and nothing stale is shown). Each notebook is executed
with nbclient in a fresh ``python3`` kernel (the interpreter running pytest) in
an empty temporary working directory, with ``CRITPOINT_SMOKE=1`` (small sizes;
set ``CRITPOINT_SMOKE=0`` to run them at full size) and ``MPLBACKEND=Agg``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_quickstart.ipynb",
    "02_saddle_points.ipynb",
    "03_minimum_ratio.ipynb",
    "04_optimizers_and_batchnorm.ipynb",
    "05_large_models.ipynb",
    "06_real_models.ipynb",
]
KERNEL = "python3"
CELL_TIMEOUT_S = 600

nbformat = pytest.importorskip("nbformat")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_all_notebooks_present() -> None:
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} carry outputs or execution counts; "
        "clear them before committing (Jupyter: Edit > Clear Outputs of All Cells, "
        "or `jupyter nbconvert --clear-output --inplace`)"
    )
    assert nb.metadata["kernelspec"]["name"] == KERNEL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path: Path) -> None:
    nb = _read(path)
    assert nb.cells[0].cell_type == "markdown", (
        f"{path.name} must open with what it shows"
    )
    assert nb.cells[-1].cell_type == "markdown"
    assert "what to try next" in nb.cells[-1].source.lower(), (
        f"{path.name} must end with what to try next"
    )
    code = _code(nb)
    assert 'os.environ.get("CRITPOINT_SMOKE") == "1"' in code, (
        f"{path.name} must read the smoke switch"
    )
    assert "torch.set_num_threads(1)" in code
    private = re.findall(
        r"critpoint(?:\.\w+)*\._\w+|from critpoint\S* import _\w+", code
    )
    assert not private, (
        f"{path.name} uses private critpoint names {private}; use the public API"
    )


def _execute(path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    nbclient = pytest.importorskip("nbclient")
    # The kernel inherits this environment.
    monkeypatch.setenv("CRITPOINT_SMOKE", os.environ.get("CRITPOINT_SMOKE", "1"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = _read(path)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = _execute(path, tmp_path, monkeypatch)
    stderr = [
        (i, out["text"])
        for i, cell in enumerate(nb.cells)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]
    warned = [(i, text) for i, text in stderr if "warn" in text.lower()]
    assert not warned, f"{path.name}: cells printed warnings: {warned}"
    # Notebooks write their files to a temporary directory, never next to
    # themselves (the kernel's working directory).
    assert list(tmp_path.iterdir()) == [], (
        f"{path.name} left files in its working directory"
    )


@pytest.mark.slow
def test_kernel_is_this_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``python3`` kernel must run the interpreter (and critpoint) under test."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys, critpoint\nprint(sys.executable)\nprint(critpoint.__file__)"
        )
    ]
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    workdir = tmp_path / "run"
    workdir.mkdir()
    ran = _execute(path, workdir, monkeypatch)
    executable, module = ran.cells[0].outputs[0]["text"].split()
    # Not resolved: a venv's python is a symlink to the base interpreter.
    assert os.path.abspath(executable) == os.path.abspath(sys.executable)
    import critpoint

    assert Path(module).resolve() == Path(critpoint.__file__).resolve()
