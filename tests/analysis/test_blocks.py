"""Every layer's Hessian block in one batched pass, against the dense autograd Hessian."""

import json

import pytest
import torch

import critpoint as cp
from critpoint.analysis.blocks import block_indices, diagnose_blocks
from critpoint.linalg._random import make_generator, randn
from critpoint.testing import reference_hessian


def wide_mlp():
    """An MLP 4-12-3 (99 parameters) on 40 teacher samples, float64."""
    from critpoint.data import load_data
    from critpoint.models import build_model

    data = load_data(
        "teacher",
        task="classification",
        n_samples=40,
        in_features=4,
        num_classes=3,
        seed=2,
        dtype=torch.float64,
    )
    model = build_model(
        "mlp", in_features=4, widths=[12], out_features=3, seed=1, dtype="float64"
    )
    return model, cp.get_loss("cross_entropy"), data.as_tuple()


OPTIONS = {"num_probes": 2, "num_steps": 20, "tol": 1e-10, "seed": 3}


def test_one_pass_blocks_match_the_dense_blocks():
    model, loss, (X, Y) = wide_mlp()
    obj = cp.Objective(model, loss, (X, Y))
    layers = cp.diagnose_layers(obj, **OPTIONS)
    assert isinstance(layers, cp.LayerDiagnoses)
    assert [x.name for x in layers] == ["net.0", "net.2"]
    H = reference_hessian(model, loss, X, Y)
    g = obj.grad()
    start = 0
    for layer in layers:
        dg = layer.diagnosis
        n = dg.num_params
        block = H[start : start + n, start : start + n]
        ev = torch.linalg.eigvalsh((block + block.T) / 2)
        assert dg.lambda_min == pytest.approx(float(ev[0]), abs=1e-9)
        assert dg.lambda_max == pytest.approx(float(ev[-1]), abs=1e-9)
        assert dg.converged
        assert dg.lambda_lower <= float(ev[0]) + 1e-9
        assert dg.lambda_upper >= float(ev[-1]) - 1e-9
        # Hutchinson over the block's own Gaussian probes (unit vectors q: n·qᵀBq)
        Z = randn((n, 2), make_generator(3), torch.float64, torch.device("cpu"))
        Q = Z / torch.linalg.vector_norm(Z, dim=0)
        samples = n * (Q * (block @ Q)).sum(dim=0)
        assert dg.trace.value == pytest.approx(float(samples.mean()), rel=1e-10)
        assert dg.trace.stderr == pytest.approx(float(samples.std() / 2**0.5), rel=1e-8)
        assert dg.grad_norm == pytest.approx(
            float(torch.linalg.vector_norm(g[start : start + n])), rel=1e-12
        )
        # the verdict is the rule's, read off the block's numbers
        expected = cp.classify(
            dg.lambda_min,
            dg.lambda_min_error,
            dg.lambda_max,
            dg.lambda_max_error,
            lower=dg.lambda_lower,
            upper=dg.lambda_upper,
        )
        assert dg.kind == expected.kind
        assert dg.density is not None
        assert dg.minimum_ratio is not None
        # the Ritz vector of λ_max is the block's eigenvector
        u = dg.eigenvector_max
        assert float(torch.linalg.vector_norm(block @ u - dg.lambda_max * u)) < 1e-8
        start += n
    assert layers.heterogeneity > 0  # two layers of different kinds of curvature


def test_one_pass_equals_separate_params_runs_in_one_pass_of_products():
    model, loss, data = wide_mlp()
    obj = cp.Objective(model, loss, data)
    groups = cp.layer_groups(model)
    together = diagnose_blocks(obj, groups, check=False, **OPTIONS)
    assert together.num_matvecs == sum(x.diagnosis.num_matvecs for x in together)
    passes = []
    for group, layer in zip(groups, together, strict=True):
        own = cp.Objective(model, loss, data, params=group.params)
        (alone,) = alone_run = diagnose_blocks(own, [group], check=False, **OPTIONS)
        a, b = alone.diagnosis, layer.diagnosis
        assert a.num_params == b.num_params
        assert a.lambda_min == pytest.approx(b.lambda_min, abs=1e-10)
        assert a.lambda_max == pytest.approx(b.lambda_max, abs=1e-10)
        assert a.trace.value == pytest.approx(b.trace.value, abs=1e-10)
        assert a.num_matvecs == b.num_matvecs
        passes.append(alone_run.num_passes)
        # and a full diagnose of the layer's own objective agrees to its tolerance
        full = cp.diagnose(own, k=2, tol=1e-10, density=False, trace=False)
        assert full.lambda_min == pytest.approx(b.lambda_min, abs=1e-8)
        assert full.lambda_max == pytest.approx(b.lambda_max, abs=1e-8)
    # the blocks share their passes over the data: as many as the longest needs
    assert together.num_passes == max(passes) < sum(passes)


def test_product_count_is_the_operators(monkeypatch):
    model, loss, data = wide_mlp()
    obj = cp.Objective(model, loss, data)
    seen = []
    real = cp.HessianOperator.matmat

    def counting(self, V):
        seen.append(V.shape[1])
        return real(self, V)

    monkeypatch.setattr(cp.HessianOperator, "matmat", counting)
    layers = cp.diagnose_layers(obj, check=False, **OPTIONS)
    assert sum(seen) == layers.num_matvecs == layers.spectra.num_matvecs
    assert len(seen) == layers.num_passes
    # the first pass carries every probe of every block
    assert seen[0] == 2 * len(layers)


def test_layer_diagnoses_json_and_indices():
    model, loss, data = wide_mlp()
    obj = cp.Objective(model, loss, data, params="net.2.*")
    layers = cp.diagnose_layers(obj, num_probes=2, num_steps=5, tol=1e-2)
    assert [x.name for x in layers] == ["net.2"]
    doc = json.loads(json.dumps(layers.to_dict()))
    assert doc["layers"][0]["diagnosis"]["settings"]["method"].startswith("one pass")
    assert doc["heterogeneity"] == 0.0
    assert doc["num_passes"] == layers.num_passes
    idx = block_indices(cp.Objective(model, loss, data), ["net.2.bias"])
    assert idx.tolist() == list(range(4 * 12 + 12 + 3 * 12, 99))
    with pytest.raises(cp.InputError, match="not among"):
        block_indices(obj, ["net.0.weight"])
    with pytest.raises(cp.InputError, match="at least one group"):
        diagnose_blocks(obj, [])


def test_the_probe_sees_an_asymmetry_between_blocks(monkeypatch):
    from critpoint.objective import Linearization

    model, loss, data = wide_mlp()
    obj = cp.Objective(model, loss, data)
    n0 = 4 * 12 + 12  # net.0's parameters come first
    K = torch.zeros(obj.num_params, obj.num_params, dtype=torch.float64)
    K[:n0, n0:] = 1e-3  # a coupling from net.2 into net.0 only: H + K is not symmetric
    K = K - K.T
    real = Linearization.hvp
    monkeypatch.setattr(
        Linearization,
        "hvp",
        lambda self, v, *, fresh=False: real(self, v, fresh=fresh) + K @ v,
    )
    groups = cp.layer_groups(model)
    with pytest.raises(cp.NonDeterministicError, match="not symmetric"):
        diagnose_blocks(obj, groups, **OPTIONS)


def test_diagnose_layers_keywords_in_one_pass():
    model, loss, data = wide_mlp()
    obj = cp.Objective(model, loss, data)
    # diagnose's solver keywords have no part in one pass; they are accepted
    layers = cp.diagnose_layers(
        obj, k=6, max_matvecs=10, trace_max_matvecs=5, num_probes=2, num_steps=5
    )
    assert layers.spectra.num_probes == 2
    with pytest.raises(cp.InputError, match="unknown keywords"):
        cp.diagnose_layers(obj, colour="red")
