"""Plain-text rendering of results for the terminal, and JSON output.

Pure formatting: no torch import, no numerics. The text is what a person
reads; the JSON (``--json``) is what a program reads.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import click

WIDTH = 88
LABEL = 15  # width of the label column


def num(x: Any, digits: int = 6) -> str:
    """A number with ``digits`` significant digits; ``n/a`` when missing."""
    if x is None:
        return "n/a"
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def field_line(label: str, text: str) -> str:
    """``label`` in a column, then ``text`` wrapped with a hanging indent."""
    return textwrap.fill(
        text,
        width=WIDTH,
        initial_indent=f"{label:<{LABEL}}",
        subsequent_indent=" " * LABEL,
        break_on_hyphens=False,
    )


def _reason(text: str) -> str:
    """The diagnosis's reason without the numbers it repeats."""
    return text.split(" (λ_min =")[0]


def diagnosis_text(dg: Any, header: str | None = None, hint: str | None = None) -> str:
    """The verdict block of ``critpoint diagnose``.

    Parameters
    ----------
    dg : Diagnosis
    header : str, optional
        First line (what was diagnosed).
    hint : str, optional
        A command to try next.

    Returns
    -------
    str
    """
    lines = []
    if header:
        lines += [header, ""]
    lines.append(field_line("Verdict", dg.headline()))
    lines.append(field_line("Loss", num(dg.loss)))
    lines.append(
        field_line(
            "Gradient norm",
            f"{num(dg.grad_norm, 4)}  (critical below {num(dg.grad_tol, 2)})",
        )
    )
    lines.append(
        field_line("λ_min", f"{num(dg.lambda_min)} ± {num(dg.lambda_min_error, 2)}")
    )
    lines.append(
        field_line(
            "λ_max",
            f"{num(dg.lambda_max)} ± {num(dg.lambda_max_error, 2)}  "
            f"(zero tolerance {num(dg.zero_tol, 2)})",
        )
    )
    lower = getattr(dg, "lambda_lower", None)
    if lower is not None and dg.bound_probability is not None:
        lines.append(
            field_line(
                "Spectrum",
                f"every eigenvalue in [{num(lower, 4)}, {num(dg.lambda_upper, 4)}] with "
                f"probability ≥ {100 * dg.bound_probability:.6g}% over the random start",
            )
        )
    if dg.minimum_ratio is not None:
        neg = 100 * (dg.negative_fraction or 0.0)
        flat = 100 * (dg.flat_fraction or 0.0)
        lines.append(
            field_line(
                "Minimum ratio",
                f"{dg.minimum_ratio:.4f}  ({neg:.3g}% of the spectrum clearly negative, "
                f"{flat:.3g}% flat)",
            )
        )
    if dg.trace is not None:
        lines.append(
            field_line("Trace", f"{num(dg.trace.value)} ± {num(dg.trace.stderr, 2)}")
        )
    lines.append(field_line("Why", _reason(dg.reason) + "."))
    lines.append(field_line("Next", dg.advice()))
    if hint:
        lines.append(" " * LABEL + hint)
    if not dg.converged:
        lines.append(
            field_line(
                "Warning",
                "the eigensolver did not reach its tolerance; the bounds shown are "
                "looser than asked (raise --max-matvecs or loosen --tol).",
            )
        )
    return "\n".join(lines)


def layer_table(layers: Sequence[Any]) -> str:
    """The per-layer table: one row per layer."""
    head = (
        "layer",
        "type",
        "params",
        "kind",
        "λ_min ± bound",
        "λ_max ± bound",
        "min. ratio",
    )
    rows = [head]
    for layer in layers:
        dg = layer.diagnosis
        rows.append(
            (
                layer.name,
                layer.module_type,
                f"{dg.num_params:,}",
                dg.kind,
                f"{num(dg.lambda_min, 4)} ± {num(dg.lambda_min_error, 1)}",
                f"{num(dg.lambda_max, 4)} ± {num(dg.lambda_max_error, 1)}",
                num(dg.minimum_ratio, 4),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    right = {2, 4, 5, 6}
    out = []
    for j, row in enumerate(rows):
        cells = [
            str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i])
            for i, c in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def dumps(document: Mapping[str, Any]) -> str:
    """Strict JSON (non-finite numbers become ``null``), indented."""
    return json.dumps(_clean(document), indent=2, allow_nan=False)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def printable(text: str) -> str:
    """``text`` with file names that are not UTF-8 shown with replacement characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        from critpoint._text import printable as replace

        return replace(text)
    return text


class Output:
    """Where messages go: standard output, unless JSON is printed there.

    With ``--json -`` the JSON document is the only thing on standard output;
    messages then go to standard error (and nowhere with ``--quiet``).
    """

    def __init__(self, json_path: str | None, quiet: bool) -> None:
        self.json_to_stdout = json_path == "-"
        self.json_path = json_path
        self.quiet = quiet

    def result(self, text: str) -> None:
        """The main result text (the verdict): standard output unless JSON is there."""
        if self.json_to_stdout:
            return
        click.echo(printable(text))

    def info(self, text: str) -> None:
        """A side message (files written...): hidden with --quiet."""
        if self.quiet:
            return
        click.echo(printable(text), err=self.json_to_stdout)

    def warn(self, text: str) -> None:
        """A warning: always on standard error."""
        click.echo(printable(f"critpoint: warning: {text}"), err=True)

    def json(self, document: Mapping[str, Any]) -> None:
        """Write the JSON document to the --json target, if any."""
        if self.json_path is None:
            return
        text = dumps(document)
        if self.json_to_stdout:
            click.echo(text)
            return
        from critpoint._files import write_text_atomic

        write_text_atomic(self.json_path, text + "\n")

    def written(self) -> None:
        """Say where the JSON went (after the result text)."""
        if self.json_path is not None and not self.json_to_stdout:
            self.info(f"JSON written to {self.json_path}")
