"""The block Lanczos kernel: projections, residuals, breakdown, restarts and locking."""

import numpy as np
import pytest
import torch

import critpoint as cp
from critpoint.linalg._operator import DenseOperator
from critpoint.linalg._tridiag import BlockLanczos
from critpoint.testing import planted_matrix


def start(kry, p, seed=0):
    g = torch.Generator().manual_seed(seed)
    return kry.add_block(torch.randn(kry.n, p, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("p", [1, 3])
def test_projection_is_q_transpose_h_q_and_residuals_are_true(p):
    A, _ = planted_matrix(torch.linspace(-1.0, 2.0, 60, dtype=torch.float64), seed=0)
    op = DenseOperator(A)
    kry = BlockLanczos(op, capacity=40)
    B = start(kry, p)
    assert B.shape == (p, p)
    for _ in range(6):
        kry.step()
    assert kry.num_matvecs == op.num_matvecs == 6 * p
    assert kry.num_done == 6 * p
    Q = kry.Q[:, : kry.used]
    assert torch.allclose(Q.T @ Q, torch.eye(kry.used, dtype=torch.float64), atol=1e-12)
    # P holds qᵢᵀ H qⱼ for every stored row and every done column
    exact = (Q.T @ A @ Q[:, kry.done]).numpy()
    assert np.allclose(kry.P[: kry.used, kry.done], exact, atol=1e-12)
    # block tridiagonal: nothing couples blocks two apart
    T = kry.P[kry.done, kry.done]
    for i in range(6):
        for j in range(i + 2, 6):
            assert np.abs(T[i * p : (i + 1) * p, j * p : (j + 1) * p]).max() < 1e-12
    theta, S = kry.ritz()
    Y = kry.vectors(S)
    true = torch.linalg.vector_norm(A @ Y - Y * torch.from_numpy(theta), dim=0)
    total, reducible = kry.residual_norms(S)
    assert np.allclose(total, true.numpy(), atol=1e-12)
    assert np.allclose(reducible, total)  # nothing locked


def test_an_invariant_subspace_is_dropped_from_the_block():
    # A start block inside a 3-dimensional invariant subspace, plus one generic column
    A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    op = DenseOperator(A)
    kry = BlockLanczos(op, capacity=10)
    Z = torch.zeros(10, 2, dtype=torch.float64)
    Z[:3, 0] = 1.0
    Z[:, 1] = torch.linspace(1.0, 2.0, 10, dtype=torch.float64)
    kry.add_block(Z)
    widths = []
    while kry.width:
        widths.append(kry.step())
    # the first column's space ran out after 3 steps, the second's after 10 - 3
    assert sum(widths) + 2 == 10
    assert kry.num_matvecs == 10
    theta, S = kry.ritz()
    assert np.allclose(theta, np.arange(1.0, 11.0), atol=1e-10)
    total, _ = kry.residual_norms(S)
    assert total.max() < 1e-10


def test_zero_operator_is_exhausted_at_the_first_product():
    op = DenseOperator(torch.zeros(50, 50, dtype=torch.float64))
    kry = BlockLanczos(op, capacity=20)
    start(kry, 4)
    assert kry.step() == 0
    theta, _ = kry.ritz()
    assert np.array_equal(theta, np.zeros(4))
    assert kry.num_matvecs == 4


def test_restart_keeps_the_ritz_pairs_and_the_frontier():
    A, _ = planted_matrix(torch.linspace(0.0, 1.0, 80, dtype=torch.float64), seed=1)
    kry = BlockLanczos(DenseOperator(A), capacity=30)
    start(kry, 2)
    for _ in range(8):
        kry.step()
    theta, S = kry.ritz()
    keep = np.arange(theta.size - 5, theta.size)
    before, _ = kry.residual_norms(S[:, keep])
    kry.restart(theta, S, keep)
    assert kry.num_done == 5
    assert kry.width == 2
    theta2, S2 = kry.ritz()
    assert np.allclose(theta2, theta[keep], atol=1e-13)
    after, _ = kry.residual_norms(S2)
    assert np.allclose(np.sort(after), np.sort(before), atol=1e-12)
    kry.step()  # the recurrence goes on from the kept frontier
    Q = kry.Q[:, : kry.used]
    exact = (Q.T @ A @ Q[:, kry.done]).numpy()
    assert np.allclose(kry.P[: kry.used, kry.done], exact, atol=1e-11)


def test_locked_vectors_stay_orthogonal_and_their_coupling_counts():
    A, _ = planted_matrix(torch.linspace(0.0, 1.0, 40, dtype=torch.float64), seed=2)
    kry = BlockLanczos(DenseOperator(A), capacity=30)
    start(kry, 1)
    for _ in range(4):
        kry.step()
    theta, S = kry.ritz()
    kry.lock(S[:, [-1]])  # an unconverged pair: its residual is not small
    assert kry.num_locked == 1
    assert kry.num_done == 0
    start(kry, 2, seed=1)
    for _ in range(3):
        kry.step()
    Q = kry.Q[:, : kry.used]
    assert torch.allclose(Q.T @ Q, torch.eye(kry.used, dtype=torch.float64), atol=1e-12)
    theta, S = kry.ritz()
    Y = kry.vectors(S)
    true = torch.linalg.vector_norm(A @ Y - Y * torch.from_numpy(theta), dim=0)
    total, reducible = kry.residual_norms(S)
    assert np.allclose(total, true.numpy(), atol=1e-12)
    assert (reducible <= total + 1e-15).all()
    assert (reducible < total - 1e-6).any()  # the locked coupling is seen


def test_non_finite_product_is_refused():
    A = torch.eye(5, dtype=torch.float64)
    A[2, 2] = float("nan")
    kry = BlockLanczos(DenseOperator(A), capacity=5)
    start(kry, 2)
    with pytest.raises(cp.NonFiniteError, match="NaN/Inf inside Lanczos"):
        kry.step()


def test_extend_is_step_with_the_product_computed_outside():
    A, _ = planted_matrix(torch.linspace(-1.0, 2.0, 50, dtype=torch.float64), seed=4)
    op = DenseOperator(A)
    inner, outer = BlockLanczos(op, capacity=30), BlockLanczos(op, capacity=30)
    start(inner, 2)
    start(outer, 2)
    for _ in range(5):
        inner.step()
        outer.extend(A @ outer.frontier_block())
    assert torch.equal(inner.Q, outer.Q)
    assert np.array_equal(inner.P, outer.P)
    assert outer.num_matvecs == inner.num_matvecs == 10
    with pytest.raises(cp.InputError, match="matmat returned shape"):
        outer.extend(torch.zeros(50, 3, dtype=torch.float64))


def test_a_window_runs_the_three_term_recurrence_in_fixed_memory():
    A, _ = planted_matrix(torch.linspace(-1.0, 2.0, 200, dtype=torch.float64), seed=5)
    op = DenseOperator(A)
    full, short = BlockLanczos(op, capacity=40), BlockLanczos(op, capacity=40, window=2)
    start(full, 1)
    start(short, 1)
    assert short.Q.shape == (200, 2)
    for _ in range(12):
        full.step()
        short.step()
    assert short.first == short.num_done - 1  # the last done vector and the frontier
    # in exact arithmetic the same tridiagonal matrix; in twelve steps
    # orthogonality is not lost yet, so they agree to rounding
    T_full, T_short = full.P[full.done, full.done], short.P[short.done, short.done]
    assert np.abs(np.triu(T_short, 2)).max() == 0  # nothing beyond the window
    band = np.triu(T_full, -1) - np.triu(T_full, 2)  # the tridiagonal part
    assert np.allclose(T_short, band, atol=1e-12)
    assert np.allclose(short.ritz()[0], full.ritz()[0], atol=1e-12)
    with pytest.raises(cp.InputError, match="not kept"):
        short.vectors(short.ritz()[1])
    with pytest.raises(cp.InputError, match="whole basis"):
        short.lock(short.ritz()[1][:, :1])


def test_a_window_stops_at_an_invariant_subspace():
    lam = torch.tensor([-1.0] * 20 + [0.5] * 30 + [2.0] * 10, dtype=torch.float64)
    A, _ = planted_matrix(lam, seed=6)
    kry = BlockLanczos(DenseOperator(A), capacity=40, window=2)
    start(kry, 1)
    widths = [kry.step() for _ in range(3)]
    assert widths == [1, 1, 0]  # three distinct eigenvalues: three steps
    theta, _ = kry.ritz()
    assert np.allclose(theta, [-1.0, 0.5, 2.0], atol=1e-12)


def test_single_vector_ritz_pairs_are_the_gauss_rule_of_the_start():
    lam = torch.linspace(-2.0, 3.0, 25, dtype=torch.float64)
    A, U = planted_matrix(lam, seed=7)
    kry = BlockLanczos(DenseOperator(A), capacity=25)
    z = torch.randn(
        25, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    kry.add_block(z)
    while kry.width:
        kry.step()
    theta, S = kry.ritz()
    assert np.allclose(theta, lam.numpy(), atol=1e-12)
    q0 = (z / torch.linalg.vector_norm(z))[:, 0]
    assert np.allclose(S[0] ** 2, ((U.T @ q0) ** 2).numpy(), atol=1e-12)


def test_the_breakdown_threshold_is_relative_to_the_spectrum():
    for scale in (1e-6, 1.0, 1e6):
        A = scale * torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64))
        kry = BlockLanczos(DenseOperator(A), capacity=4)
        kry.add_block(torch.ones(4, 1, dtype=torch.float64))
        assert kry.step() == 1
        assert kry.step() == 0  # two distinct eigenvalues, at any scale
        eps = torch.finfo(torch.float64).eps
        assert kry.threshold() == pytest.approx(1e3 * eps * kry.scale)


def test_one_reorthogonalisation_for_tensors_and_arrays():
    from critpoint.linalg._tridiag import project_out, projected_eigh

    g = torch.Generator().manual_seed(8)
    Q, _ = torch.linalg.qr(torch.randn(30, 5, generator=g, dtype=torch.float64))
    W = torch.randn(30, 3, generator=g, dtype=torch.float64)
    cleaned, h = project_out(W, Q)
    assert torch.allclose(
        Q.T @ cleaned, torch.zeros(5, 3, dtype=torch.float64), atol=1e-15
    )
    assert torch.allclose(Q @ h + cleaned, W, atol=1e-14)  # nothing else removed
    arr, h_arr = project_out(W.numpy(), Q.numpy())
    assert np.allclose(arr, cleaned.numpy(), atol=1e-14, rtol=0)
    assert np.allclose(h_arr, h.numpy(), atol=1e-14, rtol=0)
    vec, _ = project_out(W[:, 0].numpy(), Q.numpy())  # one vector
    assert np.allclose(vec, arr[:, 0], atol=1e-14, rtol=0)
    empty, coef = project_out(W, Q[:, :0])
    assert torch.equal(empty, W)
    assert coef.shape == (0, 3)
    T = np.array([[2.0, 1.0 + 1e-13], [1.0, 2.0]])  # symmetric up to rounding
    assert np.allclose(projected_eigh(T, vectors=False), [1.0, 3.0])
    theta, S = projected_eigh(T)
    assert np.allclose(S @ np.diag(theta) @ S.T, (T + T.T) / 2)


def test_a_window_must_hold_two_blocks():
    A, _ = planted_matrix(torch.linspace(0.0, 1.0, 20, dtype=torch.float64), seed=9)
    kry = BlockLanczos(DenseOperator(A), capacity=10, window=3)
    with pytest.raises(cp.InputError, match="cannot hold two blocks of 2"):
        start(kry, 2)
    with pytest.raises(cp.InputError, match="at least 2 vectors"):
        BlockLanczos(DenseOperator(A), capacity=10, window=1)


def test_project_rows_takes_a_second_pass_only_after_cancellation():
    from critpoint.linalg._tridiag import project_rows

    g = torch.Generator().manual_seed(10)
    Q, _ = torch.linalg.qr(torch.randn(400, 8, generator=g, dtype=torch.float64))
    R = Q.T.contiguous()
    generic = torch.randn(400, 3, generator=g, dtype=torch.float64)
    # A column almost inside the span: the first pass cancels nearly all of it.
    inside = (
        Q @ torch.randn(8, 1, generator=g, dtype=torch.float64) + 1e-9 * generic[:, :1]
    )
    W = torch.cat([generic, inside], dim=1)
    cleaned, h, second = project_rows(W.clone(), R)
    assert second == 1  # only the cancelled column
    assert (R @ cleaned).abs().max() < 1e-15 * float(torch.linalg.vector_norm(W))
    assert torch.allclose(Q @ h + cleaned, W, atol=1e-14)
    # the recurrence's two blocks first: the same result to rounding
    local, h_local, _ = project_rows(W.clone(), R, local=3)
    assert torch.allclose(local, cleaned, atol=1e-14)
    assert torch.allclose(h_local, h, atol=1e-14)


@pytest.mark.parametrize("p", [1, 2])
def test_each_step_reads_the_basis_about_once_and_stays_orthogonal(p):
    A, _ = planted_matrix(torch.linspace(-1.0, 2.0, 300, dtype=torch.float64), seed=11)
    kry = BlockLanczos(DenseOperator(A), capacity=120)
    start(kry, p)
    steps = 50
    for _ in range(steps):
        kry.step()
    # one pass over the stored vectors per step, a second one almost never
    assert kry.num_passes <= steps + 2
    assert kry.num_second_passes <= 2 * p
    Q = kry.Q[:, : kry.used]
    eye = torch.eye(kry.used, dtype=torch.float64)
    assert (Q.T @ Q - eye).abs().max() < 1e-13
    exact = (Q.T @ A @ Q[:, kry.done]).numpy()
    assert np.allclose(kry.P[: kry.used, kry.done], exact, atol=1e-12)


def test_the_basis_is_stored_as_rows():
    A, _ = planted_matrix(torch.linspace(0.0, 1.0, 50, dtype=torch.float64), seed=12)
    kry = BlockLanczos(DenseOperator(A), capacity=20)
    start(kry, 1)
    kry.step()
    # each basis vector is contiguous: a reorthogonalisation reads only what it needs
    assert kry.Q.stride() == (1, 50)
    assert kry.Q[:, 0].is_contiguous()


def test_a_basis_in_host_memory_gives_the_same_numbers():
    A, _ = planted_matrix(torch.linspace(-1.0, 2.0, 80, dtype=torch.float64), seed=13)
    op = DenseOperator(A)
    here, host = (
        BlockLanczos(op, capacity=30),
        BlockLanczos(op, capacity=30, storage="cpu"),
    )
    assert host.storage == torch.device("cpu")
    start(here, 2)
    start(host, 2)
    for _ in range(8):
        here.step()
        host.step()
    assert np.array_equal(here.P, host.P)
    _theta, S = host.ritz()
    assert torch.equal(host.vectors(S), here.vectors(S))


def test_storage_bytes_is_what_the_kernel_allocates():
    from critpoint.linalg._tridiag import storage_bytes

    A = torch.eye(64, dtype=torch.float32)
    for window, stored in ((None, 40), (2, 2)):
        kry = BlockLanczos(DenseOperator(A), capacity=40, window=window)
        held = kry.Q.untyped_storage().nbytes()
        assert storage_bytes(64, stored, torch.float32) == held == 64 * stored * 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_run_with_its_basis_on_the_host():
    A, _ = planted_matrix(torch.linspace(-1.0, 2.0, 300, dtype=torch.float64), seed=14)
    op = DenseOperator(A.cuda())
    dev, host = (
        BlockLanczos(op, capacity=60),
        BlockLanczos(op, capacity=60, storage="cpu"),
    )
    assert host.Q.device.type == "cpu"
    assert host.Q.is_pinned()
    for kry in (dev, host):
        start(kry, 2)
        for _ in range(20):
            kry.step()
        assert kry.frontier_block().device.type == "cuda"
    assert np.allclose(dev.P, host.P, atol=1e-12)
    _theta, S = host.ritz()
    Y = host.vectors(S)
    assert Y.device.type == "cuda"
    assert torch.allclose(Y, dev.vectors(S), atol=1e-10)
    r = cp.eigsh(op, k=4, which="BE", tol=1e-8, seed=0, basis="cpu")
    ref = cp.eigsh(op, k=4, which="BE", tol=1e-8, seed=0)
    assert torch.allclose(r.eigenvalues, ref.eigenvalues, atol=1e-10)
