"""critpoint: where a model stands on its loss surface, and which way is down.

Matrix-free Hessian analysis for PyTorch models: gradients, Hessian-vector
products, Lanczos eigenvalues, spectral densities and traces over a whole data
set, and a diagnosis of the point (minimum, saddle, maximum or degenerate) with
error bounds.
"""

from critpoint._version import __version__
from critpoint.analysis import (
    BatchNormCheck,
    CostPlan,
    Curvature,
    Diagnosis,
    LayerDiagnoses,
    LayerDiagnosis,
    LineSearch,
    Verdict,
    classify,
    curvature,
    diagnose,
    diagnose_layers,
    layer_groups,
    plan_diagnosis,
    zero_tolerance,
)
from critpoint.data import Data, load_data
from critpoint.errors import (
    CheckpointError,
    ConvergenceError,
    CritpointError,
    DenseTooLargeError,
    InputError,
    MemoryBudgetError,
    NonDeterministicError,
    NonFiniteError,
    OutputError,
    SecondDerivativeError,
    UnsafeCheckpointError,
)
from critpoint.escape import (
    EscapeRun,
    EscapeStep,
    QuadraticStep,
    SaddleEscape,
    escape_saddle,
    escape_until,
    quadratic_step,
)
from critpoint.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from critpoint.linalg.blocks import BlockSpectra, BlockSpectrum, block_spectra
from critpoint.linalg.lanczos import EigenResult, eigsh
from critpoint.linalg.slq import SpectralDensity, spectral_density
from critpoint.linalg.trace import TraceEstimate, trace
from critpoint.losses import get_loss
from critpoint.models import build_model
from critpoint.objective import Objective
from critpoint.operator import HessianOperator
from critpoint.report import build_report, load_report, render_report
from critpoint.surface import (
    Landscape,
    LossPlane,
    LossSlice,
    landscape,
    loss_plane,
    loss_slice,
)
from critpoint.training import History, train

__all__ = [
    "BatchNormCheck",
    "BlockSpectra",
    "BlockSpectrum",
    "Checkpoint",
    "CheckpointError",
    "ConvergenceError",
    "CostPlan",
    "CritpointError",
    "Curvature",
    "Data",
    "DenseTooLargeError",
    "Diagnosis",
    "EigenResult",
    "EscapeRun",
    "EscapeStep",
    "HessianOperator",
    "History",
    "InputError",
    "Landscape",
    "LayerDiagnoses",
    "LayerDiagnosis",
    "LineSearch",
    "LossPlane",
    "LossSlice",
    "MemoryBudgetError",
    "NonDeterministicError",
    "NonFiniteError",
    "Objective",
    "OutputError",
    "QuadraticStep",
    "SaddleEscape",
    "SecondDerivativeError",
    "SpectralDensity",
    "TraceEstimate",
    "UnsafeCheckpointError",
    "Verdict",
    "__version__",
    "block_spectra",
    "build_model",
    "build_report",
    "classify",
    "curvature",
    "diagnose",
    "diagnose_layers",
    "eigsh",
    "escape_saddle",
    "escape_until",
    "get_loss",
    "landscape",
    "layer_groups",
    "load_checkpoint",
    "load_data",
    "load_report",
    "loss_plane",
    "loss_slice",
    "plan_diagnosis",
    "quadratic_step",
    "render_report",
    "save_checkpoint",
    "spectral_density",
    "trace",
    "train",
    "zero_tolerance",
]
