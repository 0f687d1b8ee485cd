"""Per-block spectra in one batched pass: against dense blocks, separate runs, counts."""

import json

import numpy as np
import pytest
import torch

import critpoint as cp
from critpoint.linalg._operator import DenseOperator
from critpoint.linalg.blocks import block_spectra, heterogeneity, js_distances
from critpoint.testing import planted_matrix


def dense_blocks():
    """A 240 × 240 planted matrix and three blocks, one of them scattered."""
    A, _ = planted_matrix(torch.linspace(-2.0, 5.0, 240), seed=3)
    scattered = list(range(100, 240, 2))
    blocks = {"head": slice(0, 30), "body": slice(30, 200), "odd": scattered}
    index = {
        "head": torch.arange(0, 30),
        "body": torch.arange(30, 200),
        "odd": torch.tensor(scattered),
    }
    return A, blocks, index


def test_block_extremes_match_the_dense_blocks():
    A, blocks, index = dense_blocks()
    r = block_spectra(A, blocks, num_probes=3, num_steps=20, tol=1e-10, max_steps=170)
    assert [b.name for b in r.blocks] == ["head", "body", "odd"]
    for b in r.blocks:
        rows = index[b.name]
        ev = torch.linalg.eigvalsh(A[rows][:, rows])
        assert b.size == rows.numel()
        # the extremes to the tolerance asked, inside their own error bounds
        assert abs(b.lambda_min - float(ev[0])) <= b.lambda_min_error + 1e-12
        assert abs(b.lambda_max - float(ev[-1])) <= b.lambda_max_error + 1e-12
        assert b.lambda_min == pytest.approx(float(ev[0]), abs=1e-9)
        assert b.lambda_max == pytest.approx(float(ev[-1]), abs=1e-9)
        assert b.converged_min
        assert b.converged_max
        assert b.lower <= float(ev[0])
        assert b.upper >= float(ev[-1])
        # Hutchinson's trace from the probes, within four standard errors
        assert abs(b.trace - float(ev.sum())) <= 4 * b.trace_stderr
        # the Ritz vectors are the eigenvectors of the block
        Ab = A[rows][:, rows]
        u = b.vector_max
        assert float(torch.linalg.vector_norm(Ab @ u - b.lambda_max * u)) <= 1e-8
        # each probe's quadrature rule is a probability measure on the block's spectrum
        w = b.density.weights
        assert torch.allclose(w.sum(dim=1), torch.ones(3, dtype=torch.float64))
        used = b.density.nodes[w > 0]
        assert float(used.min()) >= float(ev[0]) - 1e-9
        assert float(used.max()) <= float(ev[-1]) + 1e-9


def test_a_small_block_is_exact():
    A, _, _ = dense_blocks()
    r = block_spectra(A, {"five": slice(0, 5)}, num_probes=2, num_steps=60)
    ev = torch.linalg.eigvalsh(A[:5, :5])
    (b,) = r.blocks
    assert b.lambda_min == pytest.approx(float(ev[0]), abs=1e-12)
    assert b.lambda_max == pytest.approx(float(ev[-1]), abs=1e-12)
    # the space spans the block: the trace is exact, the bound is the spectrum
    assert b.trace == pytest.approx(float(ev.sum()), abs=1e-12)
    assert b.trace_stderr == 0.0
    assert b.probability == 1.0
    assert b.lower == pytest.approx(float(ev[0]), abs=1e-9)


def test_one_pass_equals_separate_runs_and_costs_one_pass_per_step():
    A, blocks, index = dense_blocks()
    op = DenseOperator(A)
    options = {"num_probes": 3, "num_steps": 15, "tol": 1e-6, "seed": 7}
    together = block_spectra(op, blocks, **options)
    # every column the batched run passed to matmat is one product of the count
    assert op.num_matvecs == together.num_matvecs
    passes = []
    for b in together.blocks:
        rows = index[b.name]
        alone_op = DenseOperator(A[rows][:, rows].contiguous())
        run = block_spectra(alone_op, [("all", slice(None))], **options)
        (alone,) = run.blocks
        assert alone.lambda_min == pytest.approx(b.lambda_min, abs=1e-10)
        assert alone.lambda_max == pytest.approx(b.lambda_max, abs=1e-10)
        assert alone.lambda_max_error == pytest.approx(b.lambda_max_error, abs=1e-10)
        assert alone.trace == pytest.approx(b.trace, abs=1e-10)
        assert torch.allclose(alone.density.nodes, b.density.nodes, atol=1e-10)
        assert torch.allclose(alone.density.weights, b.density.weights, atol=1e-10)
        assert alone.num_matvecs == b.num_matvecs
        assert alone_op.num_matvecs == b.num_matvecs
        passes.append(run.num_passes)
    assert together.num_matvecs == sum(b.num_matvecs for b in together.blocks)
    # one batched pass per step: as many passes as the longest block needs,
    # where separate runs pay every block's passes
    assert together.num_passes == max(passes)
    assert together.num_passes < sum(passes)


def test_max_columns_splits_the_product_not_the_numbers():
    A, blocks, _ = dense_blocks()
    whole = block_spectra(A, blocks, num_probes=2, num_steps=10, tol=1e-3)
    split = block_spectra(
        A, blocks, num_probes=2, num_steps=10, tol=1e-3, max_columns=2
    )
    assert split.num_matvecs == whole.num_matvecs
    assert split.num_passes > whole.num_passes
    for a, b in zip(whole.blocks, split.blocks, strict=True):
        assert a.lambda_max == pytest.approx(b.lambda_max, abs=1e-12)


def test_heterogeneity_is_zero_for_identical_blocks_and_positive_otherwise():
    A1, _ = planted_matrix(torch.linspace(0.5, 3.0, 40), seed=1)
    A2, _ = planted_matrix(
        torch.cat([torch.full((36,), 0.01), torch.tensor([5.0, 6.0, 7.0, 8.0])]),
        seed=2,
    )
    A = torch.block_diag(A1, A1, A2)
    blocks = {"a": slice(0, 40), "b": slice(40, 80), "c": slice(80, 120)}
    r = block_spectra(A, blocks, num_probes=2, num_steps=40)
    d = r.distances
    assert d.shape == (3, 3)
    assert np.allclose(d, d.T)
    assert d[0, 1] < 1e-6  # the same block: the same density
    assert d[0, 2] > 0.3
    assert d[1, 2] > 0.3
    assert r.heterogeneity == pytest.approx(d[np.triu_indices(3, 1)].mean())
    same = block_spectra(A, {"a": slice(0, 40), "b": slice(40, 80)}, num_probes=2)
    assert same.heterogeneity < 1e-6
    assert heterogeneity(np.zeros((1, 1))) == 0.0
    # the densities are compared by shape: a block scaled by 10 is no different
    scaled = block_spectra(
        torch.block_diag(A1, 10 * A1), [slice(0, 40), slice(40, 80)], num_probes=2
    )
    assert scaled.heterogeneity < 1e-6
    assert js_distances([b.density for b in r.blocks])[0, 1] < 1e-6


def test_block_spectra_to_dict_is_json():
    A, blocks, _ = dense_blocks()
    r = block_spectra(A, blocks, num_probes=2, num_steps=5, tol=1e-2)
    doc = json.loads(json.dumps(r.to_dict()))
    assert [b["name"] for b in doc["blocks"]] == ["head", "body", "odd"]
    assert doc["num_passes"] == r.num_passes
    assert doc["blocks"][0]["lambda_max"] == r.blocks[0].lambda_max
    assert "Jensen-Shannon" in doc["heterogeneity_definition"]
    back = cp.SpectralDensity.from_dict(doc["blocks"][1]["density"])
    assert torch.equal(back.nodes, r.blocks[1].density.nodes)


def test_block_spectra_refuses_bad_blocks():
    A, _, _ = dense_blocks()
    with pytest.raises(cp.InputError, match="empty"):
        block_spectra(A, {"none": []})
    with pytest.raises(cp.InputError, match="outside"):
        block_spectra(A, {"far": [0, 240]})
    with pytest.raises(cp.InputError, match="mapping name"):
        block_spectra(A, 3)
    with pytest.raises(cp.InputError, match="at least one block"):
        block_spectra(A, {})
    with pytest.raises(cp.InputError, match="num_probes"):
        block_spectra(A, [slice(0, 4)], num_probes=0)


def test_block_spectra_progress(check_progress_types):
    A, blocks, _ = dense_blocks()
    check_progress_types(
        lambda progress: block_spectra(
            A, blocks, num_probes=1, num_steps=3, tol=1e-1, progress=progress
        )
    )
