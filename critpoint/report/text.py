"""Plain-text tables and summaries of results, as the ``critpoint`` command prints them.

Pure formatting of result objects (no numerics): a notebook prints
``diagnosis_text(dg)`` and sees what ``critpoint diagnose`` shows. Labels sit
in a column of :data:`LABEL` characters, text wraps at :data:`WIDTH`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from critpoint.analysis.diagnosis import with_error

if TYPE_CHECKING:
    from critpoint.analysis.diagnosis import Diagnosis, LayerDiagnosis
    from critpoint.escape import EscapeRun

__all__ = [
    "LABEL",
    "WIDTH",
    "diagnosis_text",
    "escape_text",
    "field_line",
    "layer_table",
    "num",
]

#: Width of the text.
WIDTH = 88
#: Width of the label column.
LABEL = 15


def num(x: Any, digits: int = 6) -> str:
    """A number with ``digits`` significant digits; ``n/a`` when missing or not finite."""
    if x is None:
        return "n/a"
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def ratio_text(diagnosis: Any) -> str:
    """The minimum ratio ± its standard error over probes, with only the digits it has."""
    if diagnosis.minimum_ratio is None:
        return "n/a"
    return with_error(diagnosis.minimum_ratio, diagnosis.minimum_ratio_stderr)


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


def diagnosis_text(
    dg: Diagnosis, header: str | None = None, hint: str | None = None
) -> str:
    """The verdict block of ``critpoint diagnose``.

    Parameters
    ----------
    dg : Diagnosis
    header : str, optional
        First line (what was diagnosed).
    hint : str, optional
        A command to try next, shown under the advice.

    Returns
    -------
    str
        Lines of at most :data:`WIDTH` characters (a long word aside).
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
    if dg.lambda_lower is not None and dg.bound_probability is not None:
        lines.append(
            field_line(
                "Spectrum",
                f"every eigenvalue in [{num(dg.lambda_lower, 4)}, {num(dg.lambda_upper, 4)}] "
                f"with probability ≥ {100 * dg.bound_probability:.6g}% over the random start",
            )
        )
    if dg.minimum_ratio is not None:
        neg = with_error(dg.negative_fraction or 0.0, dg.negative_fraction_stderr, 100)
        flat = 100 * (dg.flat_fraction or 0.0)
        lines.append(
            field_line(
                "Minimum ratio",
                f"{with_error(dg.minimum_ratio, dg.minimum_ratio_stderr)}  ({neg} % of the "
                f"spectrum clearly negative, {flat:.2g} % flat; ± the standard error over "
                f"{dg.density.num_probes if dg.density is not None else 'the'} probes)",
            )
        )
    if dg.trace is not None:
        lines.append(
            field_line("Trace", f"{num(dg.trace.value)} ± {num(dg.trace.stderr, 2)}")
        )
    lines.append(field_line("BatchNorm", dg.bn_text()))
    lines.append(field_line("Why", _reason(dg.reason) + "."))
    lines.append(field_line("Next", dg.advice()))
    if hint:
        lines.append(" " * LABEL + hint)
    if dg.batchnorm is not None and dg.batchnorm.warning():
        lines.append(field_line("Warning", dg.batchnorm.warning() + "."))
    if not dg.converged:
        lines.append(
            field_line(
                "Warning",
                "the eigensolver did not reach its tolerance; the bounds shown are "
                "looser than asked (raise --max-matvecs or loosen --tol).",
            )
        )
    return "\n".join(lines)


def layer_table(layers: Sequence[LayerDiagnosis]) -> str:
    """The per-layer table: a header, a rule, one row per layer."""
    head = (
        "layer",
        "type",
        "params",
        "kind",
        "λ_min ± bound",
        "λ_max ± bound",
        "trace ± s.e.",
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
                "—"
                if dg.trace is None
                else f"{num(dg.trace.value, 4)} ± {num(dg.trace.stderr, 1)}",
                num(dg.minimum_ratio, 4),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    right = {2, 4, 5, 6, 7}
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


def escape_text(run: EscapeRun) -> str:
    """One line per escape step of :func:`critpoint.escape_until`, then the loss before → after."""
    lines = []
    for i, s in enumerate(run.steps, 1):
        if s.taken:
            lines.append(
                field_line(
                    f"Step {i}",
                    f"λ_min = {num(s.eigenvalue, 4)} ± {num(s.eigenvalue_error, 2)}; moved "
                    f"{num(s.step_size, 4)}; loss {num(s.loss_before)} → {num(s.loss_after)} "
                    f"(predicted change {num(s.predicted_change, 4)}, actual {num(s.actual_change, 4)})",
                )
            )
        else:
            lines.append(field_line(f"Step {i}", f"stopped: {s.reason}."))
    taken = run.num_steps_taken
    lines.append("")
    lines.append(
        field_line(
            "Loss",
            f"{num(run.loss_before)} → {num(run.loss_after)} after {taken} escape "
            f"step{'s' if taken != 1 else ''}",
        )
    )
    return "\n".join(lines)
