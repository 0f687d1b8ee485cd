"""Helpers shared by the experiment scripts.

``experiments/`` is not a package: each script loads this file by its path
(see ``load_common`` in the scripts), so they run as ``python
experiments/NAME.py`` from any folder and import the same way from the tests.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from critpoint._files import atomic_path

#: Where the scripts write by default.
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

#: Line styles that stay distinct in grey-scale print: (colour, linestyle, marker).
STYLES = [
    ("black", "-", "o"),
    ("0.45", "--", "s"),
    ("0.25", ":", "^"),
    ("0.6", "-.", "D"),
    ("0.1", (0, (5, 1, 1, 1, 1, 1)), "v"),
    ("0.55", (0, (1, 1)), "P"),
    ("0.35", (0, (8, 2)), "X"),
]


def setup_torch() -> None:
    """One torch thread (the 2-core machine) and no denormals (see papers.md §0)."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


def square_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cohen et al.'s square loss: ½ Σ_classes (f − onehot(y))², averaged over samples.

    Not ``F.mse_loss``, which also averages over the C classes (a factor 2/C
    smaller): the edge-of-stability value 2/η refers to the loss trained.
    """
    onehot = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return 0.5 * (outputs - onehot).pow(2).sum(dim=1).mean()


def new_figure(
    ncols: int, width: float = 4.2, height: float = 3.6
) -> tuple[Any, list[Any]]:
    """A ``Figure`` with ``ncols`` axes in a row, on an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def panel_label(ax: Any, text: str) -> None:
    """Bold panel letter in the top-left corner, outside the data."""
    ax.set_title(text, loc="left", fontsize=11, fontweight="bold")


def save_figure(fig: Any, path: Path) -> Path:
    """Write the figure as a PNG at 100 dpi, whole (temporary name, then rename).

    The figures are grey-scale line plots, so a 128-colour palette loses
    nothing visible and keeps each file near 100 KB.
    """
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=128)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _clean(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return value


def save_json(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as indented JSON, whole; non-finite floats become strings."""
    text = json.dumps(_clean(data), indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def environment() -> dict[str, Any]:
    """Versions and thread settings, stored with every result."""
    import critpoint

    return {
        "critpoint": critpoint.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }


class Clock:
    """Wall-clock and CPU time since creation, in seconds."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def read(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall0, 2),
            "cpu_s": round(time.process_time() - self.cpu0, 2),
        }


def run_cli(main: Callable[..., dict[str, Any]], description: str) -> None:
    """Parse ``--out`` and ``--quick``, run ``main`` and print where the files went."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder for the PNG and JSON (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the smaller configuration the test suite runs (still shows the effect)",
    )
    args = parser.parse_args()
    result = main(args.out, quick=args.quick)
    print(json.dumps(_clean(result.get("summary", {})), indent=2))
    for key in ("figure", "json"):
        if key in result:
            print(f"{key}: {result[key]}")
