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
* :mod:`critpoint.analysis.memory` — :func:`plan_memory`, what every phase
  will hold, chosen within a budget before anything is allocated;
* :mod:`critpoint.analysis.sampling` — the standard errors over batches of
  the numbers a verdict rests on.
"""

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
from critpoint.analysis.memory import MemoryPlan, plan_memory
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
from critpoint.analysis.sampling import SamplingError, measure_sampling_error
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
    "LayerDiagnosis",
    "LayerGroup",
    "MemoryPlan",
    "QuadraticStep",
    "SamplingError",
    "Verdict",
    "classify",
    "curvature",
    "default_grad_tol",
    "diagnose",
    "diagnose_layers",
    "downhill",
    "layer_groups",
    "measure_extremes",
    "measure_sampling_error",
    "minimum_ratio",
    "plan_memory",
    "predicted_change",
    "quadratic_step",
    "verdict",
    "zero_tolerance",
]
