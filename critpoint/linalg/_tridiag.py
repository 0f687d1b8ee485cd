"""The block Lanczos recurrence: the one kernel of the Krylov solvers.

:class:`BlockLanczos` holds a block Krylov basis on the operator's device and
its projected (block-tridiagonal) matrix on the host in float64. Each step
multiplies the newest block (the *frontier*) by ``H``, reorthogonalises the
products fully (classical Gram–Schmidt with a second pass where the first one
cancelled much: :func:`project_rows`) against everything stored, and
orthonormalises what is left into the next block, column by column: a
direction whose norm is below ``breakdown_rtol`` times the spectrum's scale is
dropped, because the Krylov space has reached an invariant subspace along it.
When every direction is dropped the space is *exhausted*: its Ritz pairs are
exact. The small projected eigenproblem is solved in :meth:`BlockLanczos.ritz`.

These three — reorthogonalisation (:func:`project_out`), the breakdown test
(:meth:`BlockLanczos.threshold`) and the projected eigenproblem
(:func:`projected_eigh`) — live here only; the certificate's product-free
recurrences in coordinates (:mod:`critpoint.linalg._bounds`) use them too.
Two solvers drive the kernel:

* :func:`critpoint.eigsh` runs one block Krylov space (:meth:`BlockLanczos.step`),
  with thick restarts and locking;
* :func:`critpoint.spectral_density` runs one single-vector space per random
  probe, all advanced together: it multiplies the frontiers of every running
  probe in one batched ``matmat`` and hands each kernel its columns
  (:meth:`BlockLanczos.frontier_block`, then :meth:`BlockLanczos.extend`).
  Without reorthogonalisation a kernel keeps only its last ``window`` basis
  vectors (``window=2``: the three-term recurrence), in a fixed memory.

Storage is one ``(capacity, n)`` tensor whose *rows* are the basis vectors
(so each vector is contiguous and a reorthogonalisation reads exactly the
vectors it needs; :attr:`BlockLanczos.Q` is its transposed view), in order,

* ``locked``: vectors deflated out of the search (converged eigenvectors);
  every new vector is kept orthogonal to them;
* ``done``: basis vectors whose product ``H q`` is known;
* ``frontier``: the newest block, whose products are not taken yet;

It lives on the operator's device, or on the host (``storage="cpu"``) for a
run on a GPU whose memory cannot hold it: the reorthogonalisation then runs
on the host, and only the products' blocks cross. There is a host matrix
``P`` with ``P[i, j] = q_iᵀ H q_j`` for every ``done``
column ``j`` and every stored row ``i``. So ``H Q_done = Q P[:, done]`` up to
the dropped parts, whose norms are kept in :attr:`lost`: Rayleigh–Ritz is the
eigenproblem of ``P[done, done]`` and the residual of a Ritz vector
``Q_done s`` is ``‖P[locked ∪ frontier, done] s‖`` (plus the dropped parts).
With one column per block ``P[done, done]`` is the Lanczos tridiagonal matrix.

References
----------
G. H. Golub and R. Underwood, "The block Lanczos method for computing
eigenvalues", Mathematical Software III, 1977.
Z. Bai, J. Demmel, J. Dongarra, A. Ruhe, H. van der Vorst (eds.), "Templates
for the Solution of Algebraic Eigenvalue Problems", SIAM, 2000, §4.6 (block
Lanczos with deflation of rank-deficient blocks).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from critpoint.errors import InputError, NonFiniteError
from critpoint.linalg._operator import SymmetricOperator

Array = TypeVar("Array", torch.Tensor, np.ndarray)

#: A thick restart combines the basis a slice of its columns at a time, so
#: that it needs this much working memory, not a second basis.
RESTART_SLICE_BYTES = 64 * 2**20

#: A residual direction this small relative to the spectrum's scale is rounding:
#: products carry an error of a few eps·‖H‖, so 1000·eps leaves a wide margin.
BREAKDOWN_EPS = 1e3
#: A new direction whose norm fell below this share of the product it came
#: from is mostly the rounding of two Gram–Schmidt passes: a third pass keeps
#: it orthogonal to the basis.
REORTHOGONALISE = 1e-3


def project_out(W: Array, Q: Array) -> tuple[Array, Array]:
    """Remove from the columns of ``W`` (n, f) their components along ``Q`` (n, j), twice.

    Classical Gram–Schmidt applied twice ("twice is enough": Giraud, Langou,
    Rozložník 2005): the one reorthogonalisation of the Krylov solvers, on
    torch tensors (the basis on the device) or NumPy arrays (the certificate's
    recurrences in coordinates, :func:`critpoint.linalg._bounds.start_rules`).
    ``W`` may also be one vector ``(n,)``.

    Returns the cleaned block and the coefficients ``Qᵀ W`` (j, f).
    """
    if Q.shape[1] == 0:
        return W, W[:0] * 0
    h = Q.T @ W
    W = W - Q @ h
    h2 = Q.T @ W
    W = W - Q @ h2
    return W, h + h2


#: The second Gram–Schmidt pass runs only for the columns whose norm the first
#: pass brought below this share of what it was (Daniel, Gragg, Kaufman &
#: Stewart 1976): above it, the rounding of the first pass leaves components
#: along the basis of a few ``eps`` only, so a second pass would change
#: nothing beyond rounding ("twice is enough" needs the second pass only when
#: the first cancelled).
DGKS_ETA = 1 / math.sqrt(2)


def project_rows(
    W: torch.Tensor,
    R: torch.Tensor,
    before: torch.Tensor | None = None,
    local: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Remove from the columns of ``W`` (n, f) their components along the rows of ``R`` (j, n).

    Classical Gram–Schmidt against orthonormal basis vectors stored as rows
    (each one contiguous: ``R W`` and ``Rᵀ h`` read exactly the ``j`` vectors,
    once each), then a second pass for the columns that the first one
    shrank below :data:`DGKS_ETA` of their norm: the reorthogonalisation of
    the Krylov kernel.

    With ``local = c``, the last ``c`` rows are projected out first: in a
    Lanczos step they are the last two blocks, which hold nearly all of
    ``H q`` (the recurrence coefficients). The pass over all ``j`` rows then
    removes only what rounding left along the older vectors, so it seldom
    cancels much and seldom needs its second pass: ``c + j`` vectors read
    instead of ``2j``, to the same orthogonality.

    Parameters
    ----------
    W : torch.Tensor
        Shape ``(n, f)``, on the device and in the dtype of ``R``.
    R : torch.Tensor
        Shape ``(j, n)``, orthonormal rows.
    before : torch.Tensor, optional
        Norms of the columns of ``W``, shape ``(f,)`` (computed when not given).
    local : int
        Rows at the end of ``R`` to project out first (0: none).

    Returns
    -------
    W : torch.Tensor
        The cleaned block, shape ``(n, f)``.
    h : torch.Tensor
        The coefficients ``R W`` of both passes, shape ``(j, f)``.
    second : int
        Columns that took a second pass.
    """
    j = R.shape[0]
    if j == 0:
        return W, W.new_zeros((0, W.shape[1])), 0
    # The block as rows (f, n), each column of W one contiguous row: skinny
    # products against the (j, n) rows then run at the memory's speed on a
    # CPU (as columns of a row-major block they measured 3–4× slower).
    # Our own copy, updated in place (a fused product and update, half the
    # memory traffic of an update into a new block).
    Wt = W.T.contiguous()
    if Wt.data_ptr() == W.data_ptr():
        Wt = Wt.clone()
    h_local = None
    if 0 < local < j:
        near = R[j - local :]
        h_local = Wt @ near.T  # (f, local)
        Wt.addmm_(h_local, near, alpha=-1)
        before = None  # the pass over all rows is judged against what is left
    if before is None:
        before = torch.linalg.vector_norm(Wt, dim=1)
    ht = Wt @ R.T  # (f, j)
    Wt.addmm_(ht, R, alpha=-1)
    if h_local is not None:
        ht[:, j - local :] += h_local
    again = torch.linalg.vector_norm(Wt, dim=1) < DGKS_ETA * before
    idx = again.nonzero().reshape(-1).cpu()
    second = int(idx.numel())
    if second == Wt.shape[0]:
        h2 = Wt @ R.T
        Wt.addmm_(h2, R, alpha=-1)
        ht = ht + h2
    elif second:
        idx = idx.to(W.device)
        part = Wt[idx]
        h2 = part @ R.T
        Wt[idx] = part - h2 @ R
        ht[idx] += h2
    return Wt.T, ht.T, second


def projected_eigh(
    T: np.ndarray, vectors: bool = True
) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """The small symmetric eigenproblem of the Krylov solvers, in float64 on the host.

    ``T`` is a projection of ``H`` (a block tridiagonal Lanczos matrix, a
    Gram matrix ``UᵀHU``), symmetric up to rounding; it is symmetrised first.

    Parameters
    ----------
    T : numpy.ndarray
        Shape ``(m, m)``.
    vectors : bool
        Return the eigenvectors too.

    Returns
    -------
    theta : numpy.ndarray
        Eigenvalues, ascending, shape ``(m,)``.
    S : numpy.ndarray
        Orthonormal eigenvectors as columns, shape ``(m, m)`` (with ``vectors``).
    """
    T = (T + T.T) / 2
    if not vectors:
        return np.linalg.eigvalsh(T)
    return np.linalg.eigh(T)


class BlockLanczos:
    """A block Krylov basis with full reorthogonalisation, a locked set and its projection.

    Parameters
    ----------
    op : SymmetricOperator
        The operator, shape ``(n, n)``; touched only through ``matmat``.
    capacity : int
        Basis vectors of storage (locked + done + frontier), at most ``n``.
        Memory: ``n × capacity`` numbers in the operator's dtype (see
        :func:`storage_bytes`), on ``storage``.
    breakdown_rtol : float, optional
        Relative size below which a residual direction counts as zero;
        default ``1000·eps`` of the operator's dtype.
    window : int, optional
        Keep only the newest ``window`` basis vectors (at least twice the
        widest block): the recurrence is then orthogonalised against those
        alone (``window=2`` for single vectors: the plain three-term
        recurrence), and the memory is ``n × window`` whatever the number of
        steps. The projection ``P`` is still recorded in full, but Ritz
        vectors, restarts and locking need the whole basis. Default ``None``:
        keep every vector (full reorthogonalisation).
    storage : str or torch.device, optional
        Where the basis lives; default the operator's device. ``"cpu"`` for an
        operator on a GPU keeps it in (pinned) host memory: each new block is
        reorthogonalised there, and only the blocks the operator multiplies,
        and the vectors it returns, cross to the GPU.

    Attributes
    ----------
    Q : torch.Tensor
        The basis as columns, shape ``(n, min(capacity, window))``: a
        transposed view of the row storage, on ``storage``; column ``i``
        holds basis vector ``first + i``.
    P : numpy.ndarray
        Projections ``q_iᵀ H q_j``, float64, shape ``(capacity, capacity)``;
        columns of ``done`` vectors are filled.
    lost : numpy.ndarray
        Norm of the dropped part of ``H q_j`` for each column, float64.
    num_matvecs : int
        Products taken (columns passed to ``matmat``).
    num_passes : int
        Gram–Schmidt passes of new blocks over the stored basis (one per
        block, plus one where a column needed the second pass): each reads
        the stored vectors twice (``R W`` and ``Rᵀ h``).
    num_second_passes : int
        Columns that needed the second pass.
    scale : float
        Largest magnitude seen in the projections: the spectrum's scale.
    first : int
        Index of the oldest basis vector still stored (0 without a window).
    """

    def __init__(
        self,
        op: SymmetricOperator,
        capacity: int,
        breakdown_rtol: float | None = None,
        window: int | None = None,
        storage: str | torch.device | None = None,
    ) -> None:
        n = int(op.shape[0])
        if not 1 <= capacity <= n:
            msg = f"capacity must lie in [1, n={n}], got {capacity}"
            raise InputError(msg)
        if window is not None and window < 2:
            msg = f"window must hold at least 2 vectors (the last two blocks), got {window}"
            raise InputError(msg)
        self.op = op
        self.n = n
        self.capacity = int(capacity)
        self.window = None if window is None else int(window)
        self.dtype, self.device = op.dtype, op.device
        self.storage = self.device if storage is None else torch.device(storage)
        eps = torch.finfo(self.dtype).eps
        self.breakdown_rtol = (
            BREAKDOWN_EPS * eps if breakdown_rtol is None else float(breakdown_rtol)
        )
        stored = self.capacity if window is None else min(self.capacity, window)
        # Pinned host memory makes the transfers to and from a GPU asynchronous-capable and faster.
        pin = self.storage.type == "cpu" and self.device.type == "cuda"
        self._R = torch.zeros(
            (stored, n), dtype=self.dtype, device=self.storage, pin_memory=pin
        )
        self.first = 0
        self.P = np.zeros((self.capacity, self.capacity))
        self.lost = np.zeros(self.capacity)
        self.num_locked = 0
        self.num_done = 0
        self.width = 0  # frontier columns
        self.previous = (
            0  # columns of the block before the frontier (its recurrence partner)
        )
        self.num_steps = 0  # block products since the last reset
        self.num_matvecs = 0
        self.num_passes = 0
        self.num_second_passes = 0
        self.scale = 0.0

    # ------------------------------------------------------------ layout
    @property
    def Q(self) -> torch.Tensor:
        """The stored basis as columns, shape ``(n, stored)``: a view of the rows."""
        return self._R.T

    @property
    def used(self) -> int:
        """Stored columns: locked + done + frontier."""
        return self.num_locked + self.num_done + self.width

    @property
    def done(self) -> slice:
        """Columns whose products are known."""
        return slice(self.num_locked, self.num_locked + self.num_done)

    @property
    def frontier(self) -> slice:
        """The newest block."""
        start = self.num_locked + self.num_done
        return slice(start, start + self.width)

    @property
    def locked(self) -> torch.Tensor:
        """The locked vectors, shape ``(n, num_locked)``, on the operator's device."""
        return self._to_device(self._rows(slice(0, self.num_locked)).T)

    def _to_device(self, X: torch.Tensor) -> torch.Tensor:
        """``X`` on the operator's device (no copy when the storage is there)."""
        return X.to(self.device, non_blocking=False)

    def _rows(self, cols: slice) -> torch.Tensor:
        """The stored basis vectors ``cols`` (global indices) as rows, a view of the storage."""
        if cols.start < self.first:
            msg = (
                f"basis vectors {cols.start}..{self.first - 1} were not kept "
                f"(window={self.window}); this needs the whole basis"
            )
            raise InputError(msg)
        return self._R[cols.start - self.first : cols.stop - self.first]

    def _stored(self) -> torch.Tensor:
        """Every stored basis vector as rows: global indices ``first .. used − 1``."""
        return self._R[: self.used - self.first]

    def _make_room(self, width: int) -> None:
        """With a window, drop the oldest done vectors so that ``width`` more fit."""
        if self.window is None:
            return
        if self.window < 2 * max(width, self.width):
            msg = (
                f"a window of {self.window} vectors cannot hold two blocks of "
                f"{max(width, self.width)}; widen it to at least twice the block"
            )
            raise InputError(msg)
        excess = self.used - self.first + width - self._R.shape[0]
        if excess > 0:
            # Row by row towards the front: each copy reads a row that no
            # earlier copy wrote (source after destination), so no clone.
            rows = self.used - self.first - excess
            for i in range(rows):
                self._R[i].copy_(self._R[excess + i])
            self.first += excess

    def _require_whole_basis(self, what: str) -> None:
        if self.window is not None:
            msg = f"{what} needs the whole basis; this kernel keeps a window of {self.window}"
            raise InputError(msg)

    def threshold(self) -> float:
        """Norm under which a residual direction counts as zero: the breakdown test.

        ``breakdown_rtol`` (default ``1000·eps``) times the spectrum's scale
        seen so far: products carry a rounding error of a few ``eps·‖H‖``.
        """
        return self.breakdown_rtol * self.scale

    # --------------------------------------------------------- building
    def reset(self, keep_rows: int = 0) -> None:
        """Drop the done and frontier vectors (the locked ones stay).

        ``keep_rows``: the rows after the locked ones that a restart has just
        written (not zeroed).
        """
        start = self.num_locked
        if self.first > start:  # a window: nothing older is stored
            self.first = start
        self._R[start - self.first + keep_rows :] = 0
        self.P[:, start:] = 0
        self.P[start:, :] = 0
        self.lost[start:] = 0
        self.num_done = 0
        self.width = 0
        self.previous = 0
        self.num_steps = 0

    def _project(
        self, W: torch.Tensor, before: torch.Tensor | None = None, local: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`project_rows` against every stored vector, counting the passes."""
        stored = self._stored()
        W, h, second = project_rows(W, stored, before, local)
        if stored.shape[0]:
            self.num_passes += 1 + (second > 0)
            self.num_second_passes += second
        return W, h

    def _orthonormal_block(
        self, W: torch.Tensor, room: int, before: np.ndarray | None = None
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Orthonormalise ``W`` (n, f), already orthogonal to the stored vectors.

        Gram–Schmidt column by column, dropping a column whose remainder is
        below the breakdown threshold: the block is tiny, so this costs a few
        vector operations and one host transfer per column (where an SVD or
        a QR of a tall block would cost a factorisation).

        Parameters
        ----------
        W : torch.Tensor
            Shape ``(n, f)``, on the storage device.
        room : int
            Most columns to keep.
        before : numpy.ndarray, optional
            Norms of the columns before they were projected off the basis:
            a remainder far below them is mostly rounding of that projection,
            and gets one more pass to stay orthogonal.

        Returns
        -------
        F : torch.Tensor
            The new columns, shape ``(n, r)``, ``r ≤ min(f, room)``.
        B : numpy.ndarray
            The coupling ``(r, f)``, ``W ≈ F B``.
        lost : numpy.ndarray
            Norm of what was dropped from each column of ``W``, shape ``(f,)``.
        """
        f = W.shape[1]
        thr = self.threshold()
        basis = self._stored()
        cols: list[torch.Tensor] = []
        # A kept column's remainder becomes the new direction, so nothing of it
        # is lost; a dropped column loses its remainder.
        lost = np.zeros(f)
        for j in range(f):
            w = W[:, j : j + 1]
            if cols:
                w, _ = project_out(w, torch.cat(cols, dim=1))
            norm = float(torch.linalg.vector_norm(w, dtype=torch.float64))
            if not math.isfinite(norm):
                msg = "the operator returned NaN/Inf inside Lanczos; check the model and data, or use float64"
                raise NonFiniteError(msg)
            if norm <= thr or len(cols) >= room:
                lost[j] = norm
                continue
            q = w / norm
            if before is not None and norm < REORTHOGONALISE * before[j]:
                q, _, _ = project_rows(q, basis)
                if cols:
                    q, _ = project_out(q, torch.cat(cols, dim=1))
                q = q / torch.linalg.vector_norm(q)
            cols.append(q)
        if not cols:
            return W[:, :0], np.zeros((0, f)), lost
        F = torch.cat(cols, dim=1)
        return F, (F.T @ W).double().cpu().numpy(), lost

    def _store(self, F: torch.Tensor) -> None:
        """Write the new frontier ``F`` (n, r) as rows after the stored vectors."""
        start = self.used - self.first
        self._R[start : start + F.shape[1]] = F.T

    def add_block(self, Z: torch.Tensor) -> np.ndarray:
        """Append ``Z`` (n, c), orthonormalised against the stored columns, to the frontier.

        The new columns have no coupling to the done ones: they start a
        Krylov space of their own (a random start, or fresh directions after
        a space ran out).

        Returns
        -------
        numpy.ndarray
            The coupling ``B`` (r, c), ``Z ≈ (stored part) + F B`` with ``F``
            the ``r`` new frontier columns; ``r`` is 0 when ``Z`` lies in
            the stored span.
        """
        Z = Z.to(dtype=self.dtype, device=self.storage)
        W, _ = self._project(Z)
        scale = self.scale
        # The rank of a start block is judged against its own size, not the spectrum's.
        self.scale = float(torch.linalg.matrix_norm(Z.double(), ord=2))
        F, B, _ = self._orthonormal_block(W, self.capacity - self.used)
        self.scale = scale
        r = F.shape[1]
        self._make_room(r)
        self._store(F)
        self.width += r
        return B

    def frontier_block(self) -> torch.Tensor:
        """The newest block, shape ``(n, width)`` on the operator's device: what the next product multiplies."""
        if self.width == 0:
            msg = "the Krylov basis has no frontier to expand; add a block first"
            raise InputError(msg)
        return self._to_device(self._rows(self.frontier).T)

    def step(self) -> int:
        """One block product: ``H`` times the frontier, reorthogonalised; a new frontier.

        Returns
        -------
        int
            Width of the new frontier (0: the Krylov space is exhausted).
        """
        return self.extend(self.op.matmat(self.frontier_block()))

    def extend(self, W: torch.Tensor) -> int:
        """Take ``W = H · frontier_block()`` (n, width) into the basis; a new frontier.

        :meth:`step` computes ``W`` itself; a caller that runs several
        kernels computes all their products in one batched call and hands
        each its columns. ``W`` is reorthogonalised against every stored
        vector (:func:`project_rows`), its coefficients complete the
        projection ``P``, and what is left becomes the next block (directions
        below :meth:`threshold` are dropped).

        Returns
        -------
        int
            Width of the new frontier (0: the Krylov space is exhausted, or
            the capacity is reached).
        """
        front = self.frontier
        if self.width == 0:
            msg = "the Krylov basis has no frontier to expand; add a block first"
            raise InputError(msg)
        self.num_matvecs += self.width
        if W.shape != (self.n, self.width):
            msg = f"the operator's matmat returned shape {tuple(W.shape)} for input {(self.n, self.width)}"
            raise InputError(msg)
        W = W.to(dtype=self.dtype, device=self.storage)
        before_t = torch.linalg.vector_norm(W, dim=0)
        # The frontier and the block before it first: they hold the recurrence.
        W, h = self._project(W, before_t, local=self.width + self.previous)
        # One host transfer of the coefficients; NaN/Inf anywhere in HQ reaches
        # them (Inf − Inf is NaN), so they carry the check.
        h64 = h.double().cpu().numpy()
        if not np.isfinite(h64).all():
            msg = "the operator returned NaN/Inf inside Lanczos; check the model and data, or use float64"
            raise NonFiniteError(msg)
        self.P[self.first : self.used, front] = h64
        self.scale = max(self.scale, float(np.abs(h64).max(initial=0.0)))
        # Room for the next block: the stored columns can never exceed n.
        room = self.capacity - self.used
        before = before_t.double().cpu().numpy()
        F, B, lost = self._orthonormal_block(W, room, before)
        if B.size:
            self.scale = max(self.scale, float(np.abs(B).max()))
        self.lost[front] = lost
        self._make_room(F.shape[1])
        self.num_done += self.width
        self.previous = self.width
        self.width = F.shape[1]
        new = self.frontier
        self._rows(new)[:] = F.T
        self.P[new, front] = B
        self.num_steps += 1
        return self.width

    # --------------------------------------------------- Rayleigh–Ritz
    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and their coordinates in the done basis.

        The projected eigenproblem of the Krylov solvers, in float64 on the
        host: ``P[done, done]``, symmetrised against rounding (block
        tridiagonal; tridiagonal for single-vector spaces, where ``S[0]²``
        are the Gauss quadrature weights of the start vector).

        Returns
        -------
        theta : numpy.ndarray
            Shape ``(num_done,)``.
        S : numpy.ndarray
            Shape ``(num_done, num_done)``, orthonormal columns.
        """
        d = self.done
        T = self.P[d, d]
        theta, S = projected_eigh(T)
        if theta.size:
            self.scale = max(self.scale, abs(theta[0]), abs(theta[-1]))
        return theta, S

    def residual_norms(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on ``‖H y − θ y‖`` for the Ritz vectors ``y = Q_done S``.

        Returns
        -------
        total : numpy.ndarray
            The whole residual: coupling to the frontier and to the locked
            vectors, plus what was dropped at breakdowns.
        krylov : numpy.ndarray
            The part that more steps reduce (the frontier coupling and the
            dropped parts). The coupling to locked vectors is their own
            residual seen from ``y``: no step of this space can remove it.
        """
        d = self.done
        dropped = np.abs(S).T @ self.lost[d]
        front = np.linalg.norm(self.P[self.frontier, d] @ S, axis=0)
        locked = np.linalg.norm(self.P[: self.num_locked, d] @ S, axis=0)
        return np.hypot(front, locked) + dropped, front + dropped

    def _combine(self, S: np.ndarray) -> torch.Tensor:
        """``Q_done S`` on the storage device, shape ``(n, S.shape[1])``."""
        Sd = torch.from_numpy(np.ascontiguousarray(S)).to(
            dtype=self.dtype, device=self.storage
        )
        return self._rows(self.done).T @ Sd

    def vectors(self, S: np.ndarray) -> torch.Tensor:
        """The Ritz vectors ``Q_done S``, shape ``(n, S.shape[1])``, on the operator's device."""
        return self._to_device(self._combine(S))

    # ------------------------------------------------------ restarting
    def restart(self, theta: np.ndarray, S: np.ndarray, keep: np.ndarray) -> None:
        """Thick restart (Wu & Simon 2000): keep the Ritz vectors ``keep`` and the frontier.

        Parameters
        ----------
        theta, S : numpy.ndarray
            From :meth:`ritz`.
        keep : numpy.ndarray
            Indices of the Ritz pairs to keep.
        """
        self._require_whole_basis("a thick restart")
        d, front = self.done, self.frontier
        Sk = S[:, keep]
        F = self._rows(front).clone()
        to_front = self.P[front, d] @ Sk
        to_locked = self.P[: self.num_locked, d] @ Sk
        lost = np.abs(Sk).T @ self.lost[d]
        width = self.width
        c = len(keep)
        L = self.num_locked
        # The kept Ritz vectors Sᵀ Q_done overwrite the done rows in place, a
        # slice of n at a time (each slice of the new rows needs only the
        # same slice of the old ones): no second copy of the basis.
        St = torch.from_numpy(np.ascontiguousarray(Sk.T)).to(
            dtype=self.dtype, device=self.storage
        )
        rows = self._rows(d)
        step = max(1, RESTART_SLICE_BYTES // max(1, rows.element_size() * c))
        for a in range(0, self.n, step):
            part = St @ rows[:, a : a + step]
            self._R[L : L + c, a : a + step] = part
        del rows, part
        self.reset(keep_rows=c)
        self._R[L + c : L + c + width] = F
        self.P[L : L + c, L : L + c] = np.diag(theta[keep])
        self.P[L + c : L + c + width, L : L + c] = to_front
        self.P[:L, L : L + c] = to_locked
        self.lost[L : L + c] = lost
        self.num_done = c
        self.width = width

    def lock(self, S: np.ndarray) -> None:
        """Lock the Ritz vectors ``Q_done S`` and drop the rest of the basis.

        The locked vectors' own coupling to the frontier (their residuals) is
        dropped: from here on the search runs orthogonal to them.
        """
        self._require_whole_basis("locking")
        Y = self._combine(S)
        self.reset()
        c = S.shape[1]
        L = self.num_locked
        self._R[L : L + c] = Y.T
        self.num_locked += c


def storage_bytes(n: int, vectors: int, dtype: torch.dtype) -> int:
    """Bytes of a kernel's basis: ``vectors`` rows of ``n`` numbers in ``dtype``.

    Parameters
    ----------
    n : int
        Dimension of the operator.
    vectors : int
        Stored basis vectors (``capacity``, or ``window`` when smaller).
    dtype : torch.dtype

    Returns
    -------
    int
    """
    return int(n) * int(vectors) * (torch.finfo(dtype).bits // 8)
