"""Pure linear algebra on torch tensors: Lanczos, SLQ densities, trace estimators.

Nothing here knows about models: the solvers see a symmetric operator only
through ``matmat`` (see :mod:`critpoint.linalg._operator`). The block Lanczos
recurrence is one kernel, :class:`critpoint.linalg._tridiag.BlockLanczos`;
:func:`eigsh` drives it, and :mod:`critpoint.linalg._bounds` turns its Krylov
spaces into probabilistic bounds on the whole spectrum.

The submodules stay reachable by their names: ``critpoint.linalg.trace`` is
the module, so the trace estimator is :func:`critpoint.trace` (or
``critpoint.linalg.trace.trace``). This package re-exports no name that equals
one of its submodules.
"""

from critpoint.linalg._operator import DenseOperator, SymmetricOperator, as_operator
from critpoint.linalg.blocks import BlockSpectra, BlockSpectrum, block_spectra
from critpoint.linalg.lanczos import EigenResult, eigsh
from critpoint.linalg.slq import SpectralDensity, default_num_probes, spectral_density
from critpoint.linalg.trace import TraceEstimate

__all__ = [
    "BlockSpectra",
    "BlockSpectrum",
    "DenseOperator",
    "EigenResult",
    "SpectralDensity",
    "SymmetricOperator",
    "TraceEstimate",
    "as_operator",
    "block_spectra",
    "default_num_probes",
    "eigsh",
    "spectral_density",
]
