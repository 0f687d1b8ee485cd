"""Pure linear algebra on torch tensors: Lanczos, SLQ densities, trace estimators.

Nothing here knows about models: the solvers see a symmetric operator only
through ``matmat`` (see :mod:`critpoint.linalg._operator`). The block Lanczos
recurrence is one kernel, :class:`critpoint.linalg._tridiag.BlockLanczos`;
:func:`eigsh` drives it, and :mod:`critpoint.linalg._bounds` turns its Krylov
spaces into probabilistic bounds on the whole spectrum.
"""

from critpoint.linalg._operator import DenseOperator, SymmetricOperator, as_operator
from critpoint.linalg.lanczos import EigenResult, eigsh
from critpoint.linalg.slq import SpectralDensity, spectral_density
from critpoint.linalg.trace import TraceEstimate, trace

__all__ = [
    "DenseOperator",
    "EigenResult",
    "SpectralDensity",
    "SymmetricOperator",
    "TraceEstimate",
    "as_operator",
    "eigsh",
    "spectral_density",
    "trace",
]
