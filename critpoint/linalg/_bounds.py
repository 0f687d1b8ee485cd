"""Probabilistic bounds on the whole spectrum from a Krylov space with a random start.

A Ritz value is a Rayleigh quotient, so ``θ_min ≥ λ_min`` and ``θ_max ≤ λ_max``
always; what a Krylov space may have missed beyond its Ritz extremes is bounded
only in probability, over the random start. Two bounds are combined, each
given half of the failure probability:

* **a priori** (Kuczyński & Woźniakowski 1992, Theorem 4.2): for a unit start
  ``b`` uniform on the sphere and ``d`` Lanczos steps on an ``n × n`` positive
  semi-definite matrix, ``P[(λ_max − θ_max) > ε λ_max] ≤ 1.648 √n e^{−√ε (2d−1)}``.
  Applied to ``H − λ_min I`` it bounds the gap relative to the width
  ``w = λ_max − λ_min``. A block of ``p`` independent Gaussian columns holds
  the Krylov space of each column, and fails only when all ``p`` fail: the
  probability is the ``p``-th power.
* **a posteriori** (the Lanczos-polynomial bound of van Dorsselaer,
  Hochstenbach & van der Vorst 2000): for the Lanczos tridiagonal ``T_d`` of
  one start ``b`` with characteristic polynomial ``p_d`` and off-diagonals
  ``β_1 … β_d``, ``p_d(H) b = β_1⋯β_d q_{d+1}``, so
  ``|p_d(λ_max)| |u_maxᵀ b| ≤ β_1⋯β_d``. With ``(u_maxᵀ b)² ~ Beta(½, (n−1)/2)``
  the component is at least ``t_δ`` with probability ``1 − δ``, and ``λ_max``
  is at most the root beyond ``θ_max`` of ``p_d(x) = β_1⋯β_d / t_δ``. It
  shrinks as the Ritz values converge, which the a priori bound does not see.

References
----------
J. Kuczyński and H. Woźniakowski, "Estimating the largest eigenvalue by the
power and Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl.
13(4), 1992.
J. L. M. van Dorsselaer, M. E. Hochstenbach and H. A. van der Vorst,
"Computing probabilistic bounds for extreme eigenvalues of symmetric matrices
with the Lanczos method", SIAM J. Matrix Anal. Appl. 22(3), 2000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from critpoint.linalg._tridiag import project_out, projected_eigh

#: The constant of Kuczyński & Woźniakowski's Theorem 4.2 for Lanczos.
KW_CONSTANT = 1.648


@dataclass(frozen=True)
class StartRule:
    """The Lanczos tridiagonal of one random start vector, as the bound needs it.

    Attributes
    ----------
    theta : numpy.ndarray
        Its Ritz values, float64, ascending, shape ``(d,)``.
    log_beta : float
        ``log(β_1 ⋯ β_d)``, the log of ``‖p_d(H) b‖``.
    """

    theta: np.ndarray
    log_beta: float


def start_rules(
    M: np.ndarray, starts: np.ndarray, steps: int, floor: float
) -> list[StartRule]:
    """Run scalar Lanczos for each start inside a block Krylov space, without products.

    The block space gives ``H Q_done = Q M``; a start ``b = Q c`` with ``c``
    supported on the first block has ``H^j b`` inside the stored span for
    ``j ≤ steps``, so its own Lanczos recurrence runs on ``M`` in coordinates.

    Parameters
    ----------
    M : numpy.ndarray
        ``P[stored, done]``, shape ``(r, D)`` with ``r ≥ D``.
    starts : numpy.ndarray
        Coordinates of the start vectors, shape ``(r0, s)``, ``r0 ≤ D``.
    steps : int
        Block steps taken: the Krylov degree each start reached.
    floor : float
        Smallest ``β`` counted (the breakdown threshold): rounding below it is
        not resolved, so the bound keeps that much slack.

    Returns
    -------
    list of StartRule
    """
    r, D = M.shape
    rules = []
    for j in range(starts.shape[1]):
        v = np.zeros(r)
        v[: starts.shape[0]] = starts[:, j]
        v /= np.linalg.norm(v)
        basis = [v]
        alphas, betas = [], []
        for _ in range(steps):
            w = M @ v[:D]
            alpha = float(v @ w)
            w, _ = project_out(w, np.stack(basis, axis=1))
            beta = float(np.linalg.norm(w))
            alphas.append(alpha)
            betas.append(beta)
            if beta <= floor:
                break
            # v_i lies in the first i + 1 blocks: inside the done span for i < steps.
            v = w / beta
            basis.append(v)
        T = np.diag(alphas)
        if len(alphas) > 1:
            off = np.array(betas[:-1])
            T = T + np.diag(off, 1) + np.diag(off, -1)
        theta = projected_eigh(T, vectors=False)
        log_beta = float(sum(math.log(max(b, floor, 1e-300)) for b in betas))
        rules.append(StartRule(theta=theta, log_beta=log_beta))
    return rules


def kw_epsilon(n: int, steps: int, starts: int, delta: float) -> float:
    """The relative gap ``ε`` that ``starts`` random starts of ``steps`` steps miss with probability ≤ ``delta``.

    Solves ``(1.648 √n e^{−√ε (2·steps − 1)})^starts = delta``.

    Returns
    -------
    float
        ``ε``, or ``inf`` when no bound follows (fewer than 2 steps, or no start).
    """
    if steps < 2 or starts < 1:
        return math.inf
    root = (math.log(KW_CONSTANT * math.sqrt(n)) + math.log(1.0 / delta) / starts) / (
        2 * steps - 1
    )
    return root * root


def component_quantile(n: int, delta: float) -> float:
    """``t`` with ``P(|uᵀb| < t) = delta`` for ``b`` uniform on the unit sphere of ``ℝⁿ``."""
    if n <= 1:
        return 1.0
    from scipy.special import betaincinv

    return math.sqrt(float(betaincinv(0.5, (n - 1) / 2.0, delta)))


def polynomial_top(rule: StartRule, log_t: float) -> float:
    """The root beyond ``θ_max`` of ``Π (x − θ_i) = β_1⋯β_d / t`` (an upper bound on ``λ_max``)."""
    theta = rule.theta
    top = float(theta[-1])
    target = rule.log_beta - log_t
    if not math.isfinite(target):
        return top

    with np.errstate(divide="ignore"):
        log_gap = np.log(top - theta)  # −inf for θ_max itself

    def excess(log_s: float) -> float:
        # Σ log(gap_i + s), exact for s far below the gaps.
        return float(np.logaddexp(log_gap, log_s).sum()) - target

    # Each factor is at least s, so s = exp(target / d) is already enough.
    hi = target / theta.size
    lo = hi - 800.0
    if excess(lo) >= 0:
        return top + math.exp(lo)
    for _ in range(64):  # 800 / 2⁶⁴: far below rounding
        mid = 0.5 * (lo + hi)
        if excess(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return top + math.exp(hi)


@dataclass(frozen=True)
class Certificate:
    """What a Krylov run from random starts says about the whole spectrum.

    Attributes
    ----------
    n : int
        Dimension of the operator.
    steps : int
        Krylov degree reached by every random start (block steps of the
        first, unrestarted, undeflated Krylov space).
    block_size : int
        Columns of that space's start block.
    rules : tuple of StartRule
        One per random (Gaussian) start column.
    exhausted : bool
        That space became invariant: its extreme Ritz values are eigenvalues
        and, almost surely, the extreme ones.
    slack : float
        Rounding left unresolved (the breakdown threshold), added to both ends.
    """

    n: int
    steps: int
    block_size: int
    rules: tuple[StartRule, ...]
    exhausted: bool
    slack: float

    def bounds(
        self, ritz_min: float, ritz_max: float, delta: float
    ) -> tuple[float, float]:
        """``(lo, hi)`` holding every eigenvalue with probability at least ``1 − delta``.

        Parameters
        ----------
        ritz_min, ritz_max : float
            The extreme Ritz values seen (Rayleigh quotients: always inside
            the spectrum).
        delta : float
            Failure probability, in ``(0, 1)``.
        """
        if self.exhausted:
            return ritz_min - self.slack, ritz_max + self.slack
        starts = len(self.rules)
        # Four events share delta: each end, a priori and a posteriori.
        share = delta / 4
        eps = kw_epsilon(self.n, self.steps, starts, share)
        lo_kw = hi_kw = math.nan
        if eps < 0.5:
            width = (ritz_max - ritz_min) / (1 - 2 * eps)
            lo_kw, hi_kw = ritz_min - eps * width, ritz_max + eps * width
        # A posteriori: each column fails independently; all fail with
        # probability (δ')^starts = share, and on success the worst column holds.
        log_t = math.log(component_quantile(self.n, share ** (1.0 / starts)))
        hi_poly = max(polynomial_top(rule, log_t) for rule in self.rules)
        lo_poly = min(
            -polynomial_top(StartRule(-rule.theta[::-1], rule.log_beta), log_t)
            for rule in self.rules
        )
        hi = hi_poly if math.isnan(hi_kw) else min(hi_kw, hi_poly)
        lo = lo_poly if math.isnan(lo_kw) else max(lo_kw, lo_poly)
        return min(lo - self.slack, ritz_min), max(hi + self.slack, ritz_max)
