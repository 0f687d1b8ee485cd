"""The report's JSON document: labelled diagnoses, landscapes, per-layer results, history.

A report directory holds ``diagnosis.json`` with the schema
``critpoint.report``: everything the figures and tables are drawn from, so
``critpoint report diagnosis.json -o DIR`` re-renders a report without the
model. :func:`load_report` also reads a single diagnosis document
(``critpoint.diagnosis``, as written by ``critpoint diagnose --json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from critpoint._json import check_header, clean, dumps, header
from critpoint.analysis.diagnosis import DIAGNOSIS_SCHEMA, Diagnosis, LayerDiagnosis
from critpoint.errors import InputError
from critpoint.surface import Landscape

__all__ = [
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_VERSION",
    "LayerEntry",
    "ReportDocument",
    "ReportEntry",
    "diagnosis_document",
    "load_report",
]

REPORT_SCHEMA = "critpoint.report"
REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ReportEntry:
    """One diagnosed point of a report.

    Attributes
    ----------
    label : str
        Name of the point (``"initialisation"``, ``"stalled"``, a file name...).
    diagnosis : Diagnosis
        Its diagnosis.
    landscape : Landscape or None
        Loss slices and plane around it, if computed.
    step : int or None
        Training step at which it was taken (marked on the training curves).
    summary : str or None
        The diagnosis's text (``Diagnosis.summary()``), kept as written: a
        diagnosis rebuilt from JSON has no escape direction, so its advice
        could differ. Filled in from ``diagnosis`` when not given.
    """

    label: str
    diagnosis: Diagnosis
    landscape: Landscape | None = None
    step: int | None = None
    summary: str | None = None
    #: The diagnosis document as read from JSON, written back unchanged (a
    #: rebuilt Diagnosis has no escape direction, so its dict would differ).
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.summary is None:
            object.__setattr__(self, "summary", self.diagnosis.summary())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "label": self.label,
            "step": self.step,
            "summary": self.summary,
            "diagnosis": self.raw if self.raw is not None else self.diagnosis.to_dict(),
            "landscape": self.landscape.to_dict()
            if self.landscape is not None
            else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReportEntry:
        """Rebuild from :meth:`to_dict`."""
        land = data.get("landscape")
        step = data.get("step")
        return cls(
            label=str(data.get("label", "")),
            diagnosis=Diagnosis.from_dict(dict(data["diagnosis"])),
            landscape=Landscape.from_dict(land) if land is not None else None,
            step=int(step) if step is not None else None,
            summary=data.get("summary"),
            raw=dict(data["diagnosis"]),
        )


#: A per-layer result of a report: the result of :func:`critpoint.diagnose_layers`.
LayerEntry = LayerDiagnosis


@dataclass(frozen=True)
class ReportDocument:
    """Everything a report shows.

    Attributes
    ----------
    title : str
    entries : list of ReportEntry
        The diagnosed points, in order.
    per_layer : list of LayerEntry or None
        Per-layer diagnoses (of the first entry's point).
    history : dict or None
        Training curves (``History.to_dict()``).
    settings : dict
        The command's settings (checkpoint, model, data, loss, seed...).
    source : str or None
        The file it was read from (:func:`load_report`), for messages.
    """

    title: str
    entries: list[ReportEntry]
    per_layer: list[LayerEntry] | None = None
    history: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``critpoint.report`` JSON document (strict JSON values)."""
        return clean(
            {
                **header(REPORT_SCHEMA, REPORT_SCHEMA_VERSION),
                "title": self.title,
                "settings": self.settings,
                "entries": [e.to_dict() for e in self.entries],
                "per_layer": [layer.to_dict() for layer in self.per_layer]
                if self.per_layer is not None
                else None,
                "history": self.history,
            }
        )

    def to_json(self, indent: int | None = 1) -> str:
        """:meth:`to_dict` as JSON text (non-finite numbers become ``null``)."""
        return dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReportDocument:
        """Read a ``critpoint.report`` or a ``critpoint.diagnosis`` document.

        A diagnosis document (``critpoint diagnose --json``) becomes a report
        of one entry (see :func:`diagnosis_document`); its optional keys
        ``landscape``, ``per_layer`` and ``history`` are used when present.
        """
        schema = data.get("schema") if isinstance(data, Mapping) else None
        try:
            if schema == REPORT_SCHEMA:
                check_header(
                    data, REPORT_SCHEMA, REPORT_SCHEMA_VERSION, "report document"
                )
                layers = data.get("per_layer")
                return cls(
                    title=str(data.get("title", "critpoint report")),
                    entries=[ReportEntry.from_dict(e) for e in data["entries"]],
                    per_layer=[LayerEntry.from_dict(x) for x in layers]
                    if layers is not None
                    else None,
                    history=data.get("history"),
                    settings=dict(data.get("settings") or {}),
                )
            if schema == DIAGNOSIS_SCHEMA:
                layers = data.get("per_layer")
                entry = ReportEntry.from_dict(
                    {
                        "label": data.get("label") or _label_of(data),
                        "diagnosis": {
                            k: v
                            for k, v in data.items()
                            if k not in ("landscape", "per_layer", "history", "step")
                        },
                        "landscape": data.get("landscape"),
                        # the training step its checkpoint stored, if any
                        "step": data.get("step"),
                        "summary": data.get("summary"),
                    }
                )
                return cls(
                    title=str(data.get("title") or "critpoint diagnosis"),
                    entries=[entry],
                    per_layer=[LayerEntry.from_dict(x) for x in layers]
                    if layers is not None
                    else None,
                    history=data.get("history"),
                    settings=dict(data.get("settings") or {}),
                )
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            IndexError,
            OverflowError,
            RecursionError,
        ) as exc:
            if isinstance(exc, InputError):
                raise
            detail = " ".join(str(exc).split())[:200]
            msg = f"damaged {schema} document: {type(exc).__name__}: {detail}"
            raise InputError(msg) from exc
        msg = (
            f"not a critpoint report or diagnosis document (schema {schema!r}); give the "
            f"diagnosis.json of a report or the output of `critpoint diagnose --json`"
        )
        raise InputError(msg)


def _label_of(data: Mapping[str, Any]) -> str:
    settings = data.get("settings") or {}
    checkpoint = settings.get("checkpoint") if isinstance(settings, Mapping) else None
    return Path(str(checkpoint)).name if checkpoint else "diagnosis"


def load_report(path: str | Path) -> ReportDocument:
    """Read a report's ``diagnosis.json`` (or a ``critpoint diagnose --json`` file).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ReportDocument

    Raises
    ------
    InputError
        Missing file, invalid JSON or an unknown schema.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"diagnosis file {str(path)!r} not found; give the diagnosis.json of a report or the output of `critpoint diagnose --json FILE`"
        raise InputError(msg)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        msg = f"diagnosis file {str(path)!r} is not valid JSON ({exc})"
        raise InputError(msg) from None
    if not isinstance(data, Mapping):
        msg = f"diagnosis file {str(path)!r} holds a JSON {type(data).__name__}, not an object"
        raise InputError(msg)
    try:
        doc = ReportDocument.from_dict(data)
    except InputError as exc:
        msg = f"diagnosis file {str(path)!r}: {exc}"
        raise InputError(msg) from exc
    return replace(doc, source=str(path))


def entries_from(
    items: Sequence[ReportEntry | tuple[str, Diagnosis] | Diagnosis],
) -> list[ReportEntry]:
    """Normalise ``build_report``'s entries: ``ReportEntry``, ``(label, Diagnosis)`` or ``Diagnosis``."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, ReportEntry):
            out.append(item)
        elif isinstance(item, Diagnosis):
            out.append(
                ReportEntry(f"point {i + 1}" if len(items) > 1 else "diagnosis", item)
            )
        elif isinstance(item, tuple) and len(item) == 2:
            out.append(ReportEntry(str(item[0]), item[1]))
        else:
            msg = f"report entries must be ReportEntry, (label, Diagnosis) or Diagnosis; got {type(item).__name__}"
            raise InputError(msg)
    if not out:
        msg = "a report needs at least one diagnosis"
        raise InputError(msg)
    return out


def diagnosis_document(
    diagnosis: Diagnosis,
    *,
    label: str | None = None,
    settings: Mapping[str, Any] | None = None,
    landscape: Landscape | None = None,
    per_layer: Sequence[LayerDiagnosis] | None = None,
    history: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``critpoint diagnose --json`` document: a diagnosis with what a report draws.

    A ``critpoint.diagnosis`` document (:meth:`Diagnosis.to_dict`) with the
    keys ``settings`` (replaced when given), ``label``, ``summary`` (the
    diagnosis's text as written), ``landscape``, ``per_layer`` and
    ``history``; :func:`load_report` reads it back as a report of one entry.

    Parameters
    ----------
    diagnosis : Diagnosis
    label : str, optional
        Name of the point (a file name).
    settings : dict, optional
        Every setting that produced it (default the diagnosis's own).
    landscape : Landscape, optional
    per_layer : sequence of LayerDiagnosis, optional
    history : dict, optional
        Training curves (``History.to_dict()``).
    **extra
        More keys, placed after ``summary`` (e.g. ``elapsed_seconds``).

    Returns
    -------
    dict
        Strict JSON values.
    """
    document = diagnosis.to_dict()
    if settings is not None:
        document["settings"] = dict(settings)
    document["label"] = label
    document["summary"] = diagnosis.summary()
    document.update(extra)
    document["landscape"] = landscape.to_dict() if landscape is not None else None
    document["per_layer"] = (
        [layer.to_dict() for layer in per_layer] if per_layer is not None else None
    )
    document["history"] = dict(history) if history is not None else None
    return clean(document)
