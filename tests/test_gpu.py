"""GPU paths: the same answers on CUDA as on the CPU (skipped without CUDA)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import critpoint as cp

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def problem(device, dtype):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (300,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 4)
    ).double()
    return cp.Objective(
        model, F.cross_entropy, (X, y), batch_size=128, device=device, dtype=dtype
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    cpu = problem("cpu", torch.float64)
    gpu = problem("cuda", dtype)
    assert gpu.theta.device.type == "cuda"
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    r_cpu = cp.eigsh(cpu.hessian(), k=4, which="BE", tol=1e-8, seed=1)
    r_gpu = cp.eigsh(
        gpu.hessian(),
        k=4,
        which="BE",
        tol=1e-8 if dtype == torch.float64 else 1e-5,
        seed=1,
    )
    scale = r_cpu.eigenvalues.abs().max()
    assert torch.allclose(
        r_gpu.eigenvalues, r_cpu.eigenvalues, rtol=0, atol=tol * scale * 10
    )
    assert r_gpu.eigenvectors.device.type == "cuda"
    t_cpu = cp.trace(cpu.hessian(), max_matvecs=30, seed=2)
    t_gpu = cp.trace(gpu.hessian(), max_matvecs=30, seed=2)
    assert t_gpu.value == pytest.approx(t_cpu.value, rel=tol * 100)
    d_cpu = cp.spectral_density(cpu.hessian(), num_probes=4, num_steps=20, seed=3)
    d_gpu = cp.spectral_density(gpu.hessian(), num_probes=4, num_steps=20, seed=3)
    assert torch.allclose(d_gpu.nodes, d_cpu.nodes, rtol=0, atol=tol * scale * 1e3)


def test_cuda_diagnose_and_escape():
    gpu = problem("cuda", torch.float32)
    d = cp.diagnose(gpu, k=4, num_steps=20, trace_max_matvecs=20)
    assert d.kind in ("saddle", "degenerate", "minimum", "maximum")
    assert d.settings["device"].startswith("cuda")
    assert d.settings["tf32"] == {
        "matmul": torch.backends.cuda.matmul.allow_tf32,
        "cudnn": torch.backends.cudnn.allow_tf32,
    }


def test_half_precision_is_refused():
    with pytest.raises(cp.InputError, match=r"float32 or torch\.float64"):
        problem("cuda", torch.bfloat16)


def test_cuda_operator_keeps_its_linearisations():
    gpu = problem("cuda", torch.float64)
    H = gpu.hessian()
    v = torch.randn(gpu.num_params, dtype=torch.float64, device="cuda")
    first = H @ v
    assert H.cached  # the auto budget reads free GPU memory
    plain = problem("cuda", torch.float64)
    plain.hvp_cache = None
    R = plain.hessian()
    assert torch.allclose(H @ v, R @ v, rtol=0, atol=1e-12)
    assert torch.allclose(H @ v, first, rtol=0, atol=0)
    assert not R.cached


class TinyLM(nn.Module):
    """Embedding tied to the output, one causal encoder layer (SDPA inside)."""

    def __init__(self, vocab=11, width=16, heads=2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, width)
        self.layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True
        )

    def forward(self, ids):
        T = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)
        h = self.layer(self.embed(ids), src_mask=mask, is_causal=True)
        return h @ self.embed.weight.T


def lm_loss(model, batch):
    ids = batch["input_ids"]
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@pytest.mark.parametrize("mode", ["rev-rev", "fwd-rev"])
def test_cuda_attention_products_run_and_match_cpu(mode):
    # float32 on CUDA would pick a fused attention kernel (no second derivative)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 11, (8, 9), generator=g)
    batches = [{"input_ids": ids[:5]}, {"input_ids": ids[5:]}]
    model = TinyLM()
    cpu = cp.Objective(
        model, data=batches, batch_loss=lm_loss, dtype=torch.float64, hvp_mode=mode
    )
    gpu = cp.Objective(
        model,
        data=batches,
        batch_loss=lm_loss,
        device="cuda",
        dtype=torch.float32,
        hvp_mode=mode,
    )
    V = torch.randn(cpu.num_params, 3, generator=g, dtype=torch.float64)
    ref = cpu.hessian().matmat(V)
    out = gpu.hessian().matmat(V.float().cuda()).double().cpu()
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-4
    assert gpu.hvp_fallback is None


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_cuda_block_lanczos_finds_copies_and_matches_cpu(block_size):
    # Linear(20, 3) + mean MSE: every eigenvalue three times
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 20, generator=g, dtype=torch.float64)
    Y = torch.randn(50, 3, generator=g, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = nn.Linear(20, 3).double()
        obj = cp.Objective(model, F.mse_loss, (X, Y), device=device)
        r = cp.eigsh(obj.hessian(), k=3, which="LA", tol=1e-10, block_size=block_size)
        results.append(r)
    r_cpu, r_gpu = results
    assert r_gpu.eigenvectors.device.type == "cuda"
    assert torch.allclose(r_gpu.eigenvalues, r_cpu.eigenvalues, rtol=0, atol=1e-9)
    assert float(r_gpu.eigenvalues.max() - r_gpu.eigenvalues.min()) < 1e-9
    lo, hi = r_gpu.extreme_bounds()
    assert lo <= r_gpu.ritz_min
    assert hi >= float(r_cpu.eigenvalues.max()) - 1e-9


def test_a_gpu_diagnosis_plans_within_cuda_free_memory_and_matches_the_cpu():
    free, _ = torch.cuda.mem_get_info()
    plan = cp.analysis.plan_memory(1000, torch.float32, "cuda")
    assert plan.budget == int(free * 0.5) or abs(plan.budget - free * 0.5) < 64 * 2**20
    cpu = cp.diagnose(problem("cpu", torch.float64), k=4, seed=0, sampled=True)
    gpu = cp.diagnose(problem("cuda", torch.float64), k=4, seed=0, sampled=True)
    assert gpu.memory["device"].startswith("cuda")
    assert gpu.sampling["num_batches"] == 3
    assert gpu.sampling["lambda_min"] == pytest.approx(
        cpu.sampling["lambda_min"], rel=1e-6
    )
    assert gpu.lambda_min == pytest.approx(cpu.lambda_min, rel=1e-8)
    assert gpu.kind == cpu.kind
