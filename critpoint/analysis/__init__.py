"""Minimum, maximum, saddle or degenerate? The diagnosis of a point, with error bars.

* :mod:`critpoint.analysis.rule` — THE rule for the sign of curvature, its
  zero tolerance, and the one eigen-solve behind every verdict;
* :mod:`critpoint.analysis.step` — the one quadratic step along negative
  curvature, its predicted change, and the line search that measures it;
* :mod:`critpoint.analysis.batchnorm` — which function a model with
  BatchNorm layers is analysed as, and whether its statistics lag;
* :mod:`critpoint.analysis.diagnosis` — :class:`Diagnosis`, the result, and
  its JSON document;
* :mod:`critpoint.analysis.diagnose` — :func:`diagnose`, which gathers the
  evidence through the objective's Hessian operator, and
  :func:`diagnose_layers`, the same for each layer's block;
* :mod:`critpoint.analysis.plan` — :class:`CostPlan`, what a diagnosis will
  cost (each phase's products, the time from measured ones), said before
  the work; :func:`plan_diagnosis` makes one alone;
* :mod:`critpoint.analysis.memory` — :func:`plan_memory`, what every phase
  will hold, chosen within a budget before anything is allocated;
* :mod:`critpoint.analysis.sampling` — the standard errors over batches of
  the numbers a verdict rests on;
* :mod:`critpoint.analysis.blocks` — :func:`diagnose_blocks`, every layer's
  block in one batched pass (what :func:`diagnose_layers` runs by default).
"""

from critpoint.analysis.batchnorm import BN_GAP_RTOL, BatchNormCheck, check_batchnorm
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
    with_error,
)
from critpoint.analysis.memory import MemoryPlan, plan_memory
from critpoint.analysis.plan import CostPlan, plan_diagnosis
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
    LineSearch,
    QuadraticStep,
    downhill,
    line_search,
    predicted_change,
    quadratic_step,
)

__all__ = [
    "BN_GAP_RTOL",
    "DIAGNOSIS_SCHEMA",
    "DIAGNOSIS_SCHEMA_VERSION",
    "BatchNormCheck",
    "CostPlan",
    "Curvature",
    "Diagnosis",
    "Extremes",
    "Kind",
    "LayerDiagnoses",
    "LayerDiagnosis",
    "LayerGroup",
    "LineSearch",
    "MemoryPlan",
    "QuadraticStep",
    "SamplingError",
    "Verdict",
    "block_indices",
    "check_batchnorm",
    "classify",
    "curvature",
    "default_grad_tol",
    "diagnose",
    "diagnose_blocks",
    "diagnose_layers",
    "downhill",
    "layer_groups",
    "line_search",
    "measure_extremes",
    "measure_sampling_error",
    "minimum_ratio",
    "plan_diagnosis",
    "plan_memory",
    "predicted_change",
    "quadratic_step",
    "verdict",
    "with_error",
    "zero_tolerance",
]
