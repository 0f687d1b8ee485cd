"""Stochastic Lanczos quadrature: the eigenvalue density of a symmetric operator.

For a unit probe ``v``, ``m`` Lanczos steps build a tridiagonal matrix ``T``
whose eigenvalues ``θ_i`` (Ritz values) and squared first eigenvector
components ``τ_i`` form the Gauss quadrature rule of the spectral measure
``μ_v = Σ_j (q_jᵀ v)² δ(λ_j)`` of ``H`` seen from ``v``. Averaged over random
probes, ``E μ_v = (1/n) Σ_j δ(λ_j)``, the empirical spectral distribution.

References
----------
.. [1] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic
   Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
.. [2] L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large
   matrices", SIAM Review 58(1), 2016.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from critpoint import _checks
from critpoint._progress import Progress, ProgressArg, check_progress
from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._operator import as_operator
from critpoint.linalg._random import make_generator, rademacher, seed_record
from critpoint.linalg._tridiag import BlockLanczos, storage_bytes

#: Reorthogonalisation strategies of :func:`spectral_density`, most memory first.
REORTH = ("full", "partial", "local")
#: Basis vectors a ``"partial"`` run keeps per probe when ``window`` is not given.
PARTIAL_WINDOW = 16

#: Standard error of a mass fraction of the density (the negative fraction,
#: the minimum ratio) that :func:`default_num_probes` buys from the probes.
PROBE_STDERR = 0.005
#: Fewest probes :func:`default_num_probes` gives: a standard error over the
#: probes needs two, and two degrees of freedom make it a usable one.
MIN_PROBES = 3

#: Relative zero tolerance of a density's fractions when no ``zero_tol`` is
#: given: the default ``eig_rtol`` of :func:`critpoint.diagnose`.
DENSITY_RTOL = 1e-3


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """Gauss quadrature rules of the spectral measure, one per random probe.

    Attributes
    ----------
    nodes : torch.Tensor
        Ritz values, float64 on the CPU, shape ``(num_probes, m)``, each row
        ascending over its used entries. A probe whose Lanczos run stopped
        early (an invariant subspace was found) has fewer than ``m`` nodes; its
        row is padded with node ``0.0`` and weight ``0.0``.
    weights : torch.Tensor
        Quadrature weights, same shape; each row sums to 1.
    num_matvecs : int
        Hessian-vector products spent (columns passed to ``matmat``).
    seed : int or None
        The seed of the probes (``None`` if a generator or no seed was given).
    zero_tol : float or None
        The zero tolerance ``τ`` the fractions use by default: eigenvalues
        within ``τ`` of zero are flat, neither positive nor negative.
        :func:`critpoint.diagnose` sets it to its verdict's ``τ``; a density
        alone (``None``) uses :data:`DENSITY_RTOL` times the larger end of its
        support (:attr:`tolerance`).
    reorth : {"full", "partial", "local"}
        The reorthogonalisation that ran (see :func:`spectral_density`).
    window : int or None
        Basis vectors kept per probe (``None``: all of them, ``"full"``).
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    num_matvecs: int
    seed: int | None
    zero_tol: float | None = None
    reorth: str = "full"
    window: int | None = None

    def __post_init__(self) -> None:
        nodes = torch.as_tensor(self.nodes, dtype=torch.float64).cpu()
        weights = torch.as_tensor(self.weights, dtype=torch.float64).cpu()
        if nodes.ndim != 2 or nodes.shape != weights.shape or nodes.shape[0] < 1:
            msg = (
                f"nodes and weights must both have shape (num_probes, m) with num_probes >= 1, "
                f"got {tuple(nodes.shape)} and {tuple(weights.shape)}"
            )
            raise InputError(msg)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "weights", weights)
        if self.zero_tol is not None:
            tol = _checks.finite_float(self.zero_tol, "zero_tol", minimum=0.0)
            object.__setattr__(self, "zero_tol", tol)

    @property
    def num_probes(self) -> int:
        """Number of probe vectors (rows of ``nodes``)."""
        return int(self.nodes.shape[0])

    @property
    def num_steps(self) -> int:
        """Lanczos steps per probe (columns of ``nodes``)."""
        return int(self.nodes.shape[1])

    @property
    def support(self) -> tuple[float, float]:
        """``(lo, hi)``: smallest and largest node with nonzero weight."""
        used = self.nodes[self.weights > 0]
        if used.numel() == 0:
            return (0.0, 0.0)
        return (float(used.min()), float(used.max()))

    def pdf(
        self, grid: np.ndarray | torch.Tensor | list[float], sigma: float | None = None
    ) -> np.ndarray:
        """Gaussian-smoothed eigenvalue density on ``grid``, averaged over probes.

        Parameters
        ----------
        grid : array_like
            Points at which to evaluate, shape ``(g,)``, in eigenvalue units.
        sigma : float, optional
            Standard deviation of the Gaussian kernel, in eigenvalue units.
            Default: 1% of the support width, or ``1e-3 · max(1, |λ|)`` when
            the support is a single point.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(g,)``; it integrates to 1 over a grid that
            covers the support plus a few ``sigma``.
        """
        if isinstance(grid, torch.Tensor):
            grid = grid.detach().cpu().numpy()
        x = np.asarray(grid, dtype=np.float64)
        if x.ndim != 1:
            msg = f"grid must be one-dimensional, got shape {x.shape}; flatten it or use np.linspace"
            raise InputError(msg)
        if sigma is None:
            lo, hi = self.support
            width = hi - lo
            sigma = 0.01 * width if width > 0 else 1e-3 * max(1.0, abs(lo))
        sigma = _checks.finite_float(
            sigma,
            "sigma",
            minimum=0.0,
            strict=True,
            hint="leave it as None for 1% of the support width",
        )
        nodes = self.nodes.numpy().reshape(-1)
        weights = self.weights.numpy().reshape(-1) / self.num_probes
        keep = weights > 0
        nodes, weights = nodes[keep], weights[keep]
        out = np.zeros_like(x)
        norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
        chunk = 4096  # bounds the (chunk, nodes) temporary
        for start in range(0, x.size, chunk):
            z = (x[start : start + chunk, None] - nodes[None, :]) / sigma
            out[start : start + chunk] = norm * (np.exp(-0.5 * z * z) @ weights)
        return out

    @property
    def tolerance(self) -> float:
        """The zero tolerance of the fractions: :attr:`zero_tol`, else relative to the support.

        ``DENSITY_RTOL · max(|lo|, |hi|)`` of :attr:`support` when no
        ``zero_tol`` was given: the rule of :func:`critpoint.zero_tolerance`
        with the ends of the density for the extreme eigenvalues (the
        extreme Ritz values of SLQ are the first to converge).
        """
        if self.zero_tol is not None:
            return float(self.zero_tol)
        lo, hi = self.support
        return DENSITY_RTOL * max(abs(lo), abs(hi))

    def _tol(self, tol: float | None) -> float:
        if tol is None:
            return self.tolerance
        return _checks.finite_float(tol, "tol", minimum=0.0)

    def probe_fractions(self, side: str, tol: float | None = None) -> torch.Tensor:
        """Each probe's mass on one side of the zero band, shape ``(num_probes,)``.

        Parameters
        ----------
        side : {"negative", "positive", "flat"}
            Below ``−tol``, above ``tol``, or within ``[−tol, tol]``.
        tol : float, optional
            Non-negative threshold in eigenvalue units; default :attr:`tolerance`.

        Returns
        -------
        torch.Tensor
            float64; their mean is the fraction, their spread its error.
        """
        tol = self._tol(tol)
        if side == "negative":
            mask = self.nodes < -tol
        elif side == "positive":
            mask = self.nodes > tol
        elif side == "flat":
            mask = (self.nodes >= -tol) & (self.nodes <= tol)
        else:
            msg = f"side must be 'negative', 'positive' or 'flat', got {side!r}"
            raise InputError(msg)
        return (self.weights * mask).sum(dim=1)

    def fraction_stderr(self, side: str, tol: float | None = None) -> float:
        """Standard error of a fraction from the spread over probes.

        ``std(f_k) / √p`` of the probes' fractions ``f_k``
        (:meth:`probe_fractions`, sample standard deviation): each probe's
        quadrature is an unbiased estimate of the fraction (Rademacher
        probes), so their mean has this error. NaN with a single probe.

        Parameters
        ----------
        side : {"negative", "positive", "flat"}
        tol : float, optional
            Default :attr:`tolerance`.

        Returns
        -------
        float
        """
        f = self.probe_fractions(side, tol)
        if f.numel() < 2:
            return float("nan")
        return float(f.std(correction=1) / math.sqrt(f.numel()))

    def fraction_positive(self, tol: float | None = None) -> float:
        """Mass of the density strictly above ``tol`` (mean over probes).

        Parameters
        ----------
        tol : float, optional
            Non-negative threshold, in eigenvalue units. Default
            :attr:`tolerance` (the diagnosis's zero tolerance for a density of
            :func:`critpoint.diagnose`), so that a flat bulk whose sign is
            rounding is not split; ``0.0`` counts every node above zero.

        Returns
        -------
        float
            In ``[0, 1]``.
        """
        return float(self.probe_fractions("positive", tol).mean())

    def fraction_negative(self, tol: float | None = None) -> float:
        """Mass of the density strictly below ``-tol`` (mean over probes).

        Parameters
        ----------
        tol : float, optional
            Non-negative threshold, in eigenvalue units; default
            :attr:`tolerance` (see :meth:`fraction_positive`).

        Returns
        -------
        float
            In ``[0, 1]``.
        """
        return float(self.probe_fractions("negative", tol).mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (nested lists of floats)."""
        return {
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "num_matvecs": int(self.num_matvecs),
            "seed": self.seed,
            "zero_tol": self.zero_tol,
            "reorth": self.reorth,
            "window": self.window,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectralDensity:
        """Rebuild a density written by :meth:`to_dict`."""
        try:
            return cls(
                nodes=torch.tensor(data["nodes"], dtype=torch.float64),
                weights=torch.tensor(data["weights"], dtype=torch.float64),
                num_matvecs=int(data["num_matvecs"]),
                seed=data.get("seed"),
                zero_tol=None
                if data.get("zero_tol") is None
                else float(data["zero_tol"]),
                reorth=str(data.get("reorth", "full")),
                window=data.get("window"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"not a SpectralDensity dictionary ({exc}); it needs 'nodes', 'weights' and 'num_matvecs'"
            raise InputError(msg) from exc


def spectral_density(
    H: object,
    num_probes: int = 8,
    num_steps: int = 80,
    seed: int | torch.Generator | None = 0,
    reorthogonalize: bool = True,
    progress: ProgressArg = False,
    *,
    max_matvecs: int | None = None,
    reorth: str | None = None,
    window: int | None = None,
) -> SpectralDensity:
    """Estimate the eigenvalue density of ``H`` by stochastic Lanczos quadrature.

    Every probe runs its own Lanczos recurrence (this is not block Lanczos:
    one :class:`~critpoint.linalg._tridiag.BlockLanczos` kernel per probe,
    the kernel of :func:`critpoint.eigsh`), but all probes advance together:
    each step makes one ``matmat`` call on an ``(n, num_probes)`` block, i.e.
    one batched Hessian-vector pass. A probe whose recurrence breaks down (an
    invariant subspace was found: the new direction is below the kernel's
    breakdown threshold, ``1000·eps`` times the spectrum's scale seen so far)
    stops there with a shorter quadrature rule; the others continue, and
    later blocks hold only the running probes.

    Parameters
    ----------
    H : HessianOperator, SymmetricOperator or torch.Tensor
        Symmetric operator of shape ``(n, n)`` (see
        :func:`critpoint.linalg._operator.as_operator`).
    num_probes : int
        Number of random probes ``p``. Probes are the columns of an
        ``(n, p)`` Rademacher draw from ``seed``, divided by ``√n``.
    num_steps : int
        Lanczos steps per probe ``m`` (capped at ``n``); the cost is ``m``
        batched products, ``m · p`` Hessian-vector products in all.
    seed : int, torch.Generator or None
        Seed of the probes, drawn on the CPU (same numbers on any device).
    reorthogonalize : bool
        ``True`` (default): ``reorth="full"``; ``False``: ``reorth="local"``.
    progress : bool, callable or None
        ``True`` shows a progress bar (``tqdm.auto``); a callable is called as
        ``progress(step, num_steps)`` after each step; ``False`` or ``None``:
        silent.
    max_matvecs : int, optional
        Most Hessian-vector products to spend. The run costs ``num_probes``
        products per step, so a smaller budget shortens every probe to
        ``max_matvecs // num_probes`` steps (all probes keep the same length:
        their quadrature rules are averaged). Default: no cap beyond
        ``num_probes · num_steps``.
    reorth : {"full", "partial", "local"}, optional
        How each probe's new Lanczos vector is kept orthogonal to its own
        previous ones (classical Gram–Schmidt, a second pass where the first
        cancelled); the memory is :func:`density_memory`:

        * ``"full"``: against every previous vector. No ghost Ritz values;
          stores the whole basis, ``n × m × p`` numbers.
        * ``"partial"``: against the last ``window`` vectors only
          (``n × window × p`` numbers).
        * ``"local"``: the three-term recurrence, two vectors per probe
          (``n × 2 × p``), whatever ``m``.

        Without full reorthogonalisation converged Ritz values reappear as
        ghost copies, but the quadrature rule stays that of the same spectral
        measure to rounding (Paige; Knizhnerman 1996): the density is as
        accurate in Wasserstein distance (tested on planted spectra), the
        extreme nodes less clean. Default from ``reorthogonalize``.
    window : int, optional
        Vectors kept per probe by ``"partial"`` (at least 3; default
        :data:`PARTIAL_WINDOW`); only with ``reorth="partial"``.

    Returns
    -------
    SpectralDensity
        Nodes and weights of shape ``(p, m')``, ``m' <= m`` the longest run;
        ``reorth`` and ``window`` say which reorthogonalisation ran.

    Raises
    ------
    InputError
        If an argument is invalid or ``H`` is not square.
    NonFiniteError
        If a Hessian-vector product contains NaN or Inf.

    Notes
    -----
    Vectors stay in the operator's dtype and device; the recurrence
    coefficients are kept in float64 on the host (``m × m`` numbers per
    probe), where the small tridiagonal eigenproblems are solved.

    References
    ----------
    .. [1] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via
       stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
    .. [2] L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of
       large matrices", SIAM Review 58(1), 2016.
    """
    num_probes = _checks.positive_int(
        num_probes, "num_probes", "use e.g. num_probes=8 (more probes, less noise)"
    )
    num_steps = _checks.positive_int(
        num_steps, "num_steps", "use e.g. num_steps=80 (more steps, finer resolution)"
    )
    check_progress(progress)
    if max_matvecs is not None:
        max_matvecs = _checks.positive_int(max_matvecs, "max_matvecs", "or None")
        if max_matvecs < num_probes:
            msg = (
                f"max_matvecs={max_matvecs} cannot give each of the {num_probes} probes "
                f"one step; lower num_probes or raise max_matvecs"
            )
            raise InputError(msg)
        num_steps = min(num_steps, max_matvecs // num_probes)
    op = as_operator(H)
    n = int(op.shape[0])
    if n < 1:
        msg = "the operator has size 0; there is no spectrum to estimate"
        raise InputError(msg)
    dtype, device = op.dtype, op.device
    m, p = min(num_steps, n), num_probes
    gen = make_generator(seed)
    # Rademacher probes; each kernel normalises its own (‖z‖ = √n).
    Z = rademacher((n, p), gen, dtype, device)
    reorth, kept = _strategy(reorth, window, reorthogonalize, m)
    probes = [BlockLanczos(op, capacity=m, window=kept) for _ in range(p)]
    for k, kry in enumerate(probes):
        kry.add_block(Z[:, k : k + 1])
    del Z
    num_matvecs = 0
    bar = Progress(progress, m, "spectral density", unit="step")
    try:
        for j in range(m):
            running = [k for k in range(p) if probes[k].width]
            if not running:
                break
            # Each probe's vector contiguous (the block as rows, seen as its
            # transpose): a product and a kernel read a column in one sweep
            # instead of striding over the whole block.
            V = torch.cat([probes[k].frontier_block().T for k in running]).T
            W = op.matmat(V)
            num_matvecs += len(running)
            if W.shape != V.shape:
                msg = f"the operator's matmat returned shape {tuple(W.shape)} for input {tuple(V.shape)}"
                raise InputError(msg)
            del V
            for col, k in enumerate(running):
                try:
                    probes[k].extend(W[:, col : col + 1])
                except NonFiniteError as exc:
                    msg = (
                        f"a Hessian-vector product contains NaN or Inf (Lanczos step {j}, "
                        f"probe {k}); the loss is not finite or not twice differentiable "
                        "near these parameters: check obj.loss(), or try dtype=torch.float64"
                    )
                    raise NonFiniteError(msg) from exc
            bar.update(j + 1)
    finally:
        bar.close()

    nodes, weights = _gauss_rules(probes)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        num_matvecs=num_matvecs,
        seed=seed_record(seed),
        reorth=reorth,
        window=kept,
    )


def default_num_probes(n: int, most: int = 8) -> int:
    """Probes for a density of an ``n × n`` operator: as many as a mass fraction needs.

    One Rademacher probe estimates the mass ``p`` of any set of eigenvalues
    as ``zᵀPz / n`` with ``P`` the projector onto their eigenvectors, whose
    variance is ``2(‖P‖_F² − Σ P_ii²) / n² ≤ 2p(1 − p) / n ≤ 1 / (2n)``.
    So ``⌈1 / (2n·PROBE_STDERR²)⌉`` probes give every fraction a standard error
    of at most :data:`PROBE_STDERR` from the probes, between
    :data:`MIN_PROBES` and ``most``: ``most`` for the small models, where the
    probes are cheap, :data:`MIN_PROBES` from ``n ≈ 7,000`` on (at
    ``n = 10⁷`` one probe's standard error is 2e-4). The quadrature's own
    error is not in this bound; the density's measured spread over its probes
    (:meth:`SpectralDensity.fraction_stderr`) holds both.

    Parameters
    ----------
    n : int
        Dimension of the operator.
    most : int
        The most probes to give.

    Returns
    -------
    int
    """
    n = _checks.positive_int(n, "n", "the operator's dimension")
    need = math.ceil(1 / (2 * n * PROBE_STDERR**2))
    return max(min(MIN_PROBES, most), min(most, need))


def _strategy(
    reorth: str | None, window: int | None, reorthogonalize: bool, m: int
) -> tuple[str, int | None]:
    """The strategy and the kernel's window (``None``: all ``m`` vectors)."""
    if reorth is None:
        reorth = "full" if reorthogonalize else "local"
    elif reorth not in REORTH:
        msg = f"reorth must be one of {', '.join(repr(r) for r in REORTH)}, got {reorth!r}"
        raise InputError(msg)
    elif not reorthogonalize and reorth != "local":
        msg = f"reorthogonalize=False means reorth='local'; it contradicts reorth={reorth!r}: give one of them"
        raise InputError(msg)
    if window is not None and reorth != "partial":
        msg = f"window= is the vectors kept by reorth='partial'; reorth={reorth!r} takes none"
        raise InputError(msg)
    if reorth == "full":
        return reorth, None
    if reorth == "local":
        return reorth, min(2, m)
    if window is None:
        window = PARTIAL_WINDOW
    window = _checks.positive_int(window, "window", "at least 3 (2 is reorth='local')")
    if window < 3:
        msg = f"window={window} is the three-term recurrence; use reorth='local', or window >= 3"
        raise InputError(msg)
    return reorth, min(window, m)


def stored_vectors(
    num_steps: int, reorth: str = "full", window: int | None = None
) -> int:
    """Basis vectors one probe keeps under ``reorth`` (see :func:`spectral_density`)."""
    if reorth == "full":
        return num_steps
    if reorth == "local":
        return min(2, num_steps)
    return min(PARTIAL_WINDOW if window is None else window, num_steps)


def density_memory(
    n: int,
    num_probes: int,
    num_steps: int,
    dtype: torch.dtype,
    reorth: str = "full",
    window: int | None = None,
) -> int:
    """Bytes :func:`spectral_density` holds at its peak, on the operator's device.

    Each probe's stored basis (:func:`stored_vectors`), and the block of
    frontier vectors with its product (``2 × n × p`` numbers); the host-side
    tridiagonal matrices (``m² × p`` floats) are not counted.

    Parameters
    ----------
    n : int
        Dimension of the operator.
    num_probes, num_steps : int
    dtype : torch.dtype
        The operator's dtype.
    reorth : {"full", "partial", "local"}
    window : int, optional
        ``"partial"``'s window.

    Returns
    -------
    int
    """
    m = min(int(num_steps), int(n))
    vectors = num_probes * (stored_vectors(m, reorth, window) + 2)
    return storage_bytes(n, vectors, dtype)


def _gauss_rules(
    probes: list[BlockLanczos],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each probe's Gauss quadrature rule from its kernel's Ritz pairs (float64, CPU).

    Returns
    -------
    nodes, weights : torch.Tensor
        Shape ``(p, longest run)``, zero-padded.
    """
    p = len(probes)
    width = max(kry.num_done for kry in probes)
    nodes = torch.zeros((p, width), dtype=torch.float64)
    weights = torch.zeros((p, width), dtype=torch.float64)
    for k, kry in enumerate(probes):
        theta, S = kry.ritz()
        # The probe is the first basis vector: its weights are S[0]².
        tau = S[0] ** 2
        size = theta.size
        nodes[k, :size] = torch.from_numpy(theta)
        weights[k, :size] = torch.from_numpy(tau / tau.sum())
    return nodes, weights


__all__ = [
    "DENSITY_RTOL",
    "MIN_PROBES",
    "PARTIAL_WINDOW",
    "PROBE_STDERR",
    "REORTH",
    "SpectralDensity",
    "default_num_probes",
    "density_memory",
    "spectral_density",
    "stored_vectors",
]
