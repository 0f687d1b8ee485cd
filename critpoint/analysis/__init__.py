"""Minimum, maximum, saddle or degenerate? The diagnosis of a point, with error bars.

* :mod:`critpoint.analysis.rule` — THE rule for the sign of curvature, its
  zero tolerance, and the one eigen-solve behind every verdict;
* :mod:`critpoint.analysis.step` — the one quadratic step along negative
  curvature and its predicted change;
* :mod:`critpoint.analysis.diagnosis` — :class:`Diagnosis`, the result, and
  its JSON document;
* :mod:`critpoint.analysis.diagnose` — :func:`diagnose`, which gathers the
  evidence through the objective's Hessian operator, and
  :func:`diagnose_layers`, the same for each layer's block;
* :mod:`critpoint.analysis.blocks` — :func:`diagnose_blocks`, every layer's
  block in one batched pass (what :func:`diagnose_layers` runs by default).
"""

from critpoint.analysis.blocks import LayerDiagnoses, block_indices, diagnose_blocks
from critpoint.analysis.diagnose import (
    LayerGroup,
    diagnose,
    diagnose_layers,
    layer_groups,
)
from critpoint.analysis.diagnosis import (
    DIAGNOSIS_SCHEMA,
    DIAGNOSIS_SCHEMA_VERSION,
    Diagnosis,
    Kind,
    LayerDiagnosis,
    Verdict,
)
from critpoint.analysis.rule import (
    Curvature,
    Extremes,
    classify,
    curvature,
    default_grad_tol,
    measure_extremes,
    minimum_ratio,
    verdict,
    zero_tolerance,
)
from critpoint.analysis.step import (
    QuadraticStep,
    downhill,
    predicted_change,
    quadratic_step,
)

__all__ = [
    "DIAGNOSIS_SCHEMA",
    "DIAGNOSIS_SCHEMA_VERSION",
    "Curvature",
    "Diagnosis",
    "Extremes",
    "Kind",
    "LayerDiagnoses",
    "LayerDiagnosis",
    "LayerGroup",
    "QuadraticStep",
    "Verdict",
    "block_indices",
    "classify",
    "curvature",
    "default_grad_tol",
    "diagnose",
    "diagnose_blocks",
    "diagnose_layers",
    "downhill",
    "layer_groups",
    "measure_extremes",
    "minimum_ratio",
    "predicted_change",
    "quadratic_step",
    "verdict",
    "zero_tolerance",
]
