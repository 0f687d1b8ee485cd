"""The memory plan: what each phase holds, chosen within a (patched) budget, refused up front."""

import pytest
import torch

import critpoint as cp
from critpoint.analysis import memory
from critpoint.analysis.memory import plan_memory
from critpoint.linalg.lanczos import eigsh_memory
from critpoint.linalg.slq import density_memory
from critpoint.linalg.trace import trace_memory
from critpoint.testing import Quadratic, planted_matrix, quadratic_batch_loss

MB = 10**6


def free(monkeypatch, nbytes, gpu=None):
    """Pretend ``nbytes`` are free on the host (and ``gpu`` on a CUDA device)."""

    def fake(device):
        device = torch.device(device)
        return gpu if device.type == "cuda" else nbytes

    monkeypatch.setattr(memory, "free_memory", fake)
    monkeypatch.setattr(cp.operator, "free_memory", fake)
    monkeypatch.setattr(cp.linalg.lanczos, "free_memory", fake)


# A 1M-parameter float32 model: one vector is 4 MB.
N, F32 = 1_000_000, torch.float32
VEC = 4 * MB


def test_plenty_of_memory_keeps_every_default(monkeypatch):
    free(monkeypatch, 64_000 * MB)
    plan = plan_memory(N, F32, "cpu", num_probes=8)
    assert plan.budget == 32_000 * MB  # half the free memory
    assert (plan.ncv, plan.reorth, plan.window, plan.trace_method) == (
        160,
        "full",
        None,
        "auto",
    )
    # on a CPU a block's columns run one by one: a block of 4, not 16
    assert plan.trace_block == memory.CPU_TRACE_BLOCK == 4
    # the phases are what the solvers state
    assert plan.lanczos == sum(eigsh_memory(N, 6, 160, F32, 2))
    assert plan.density == density_memory(N, 8, 60, F32, "full")
    assert plan.trace == trace_memory(N, 60, "auto", F32, 4)
    assert plan.kept == 9 * VEC  # gradient, 6 eigenvectors, the two extreme ones
    assert plan.peak == plan.kept + plan.hvp_cache + max(
        plan.lanczos, plan.density, plan.trace
    )
    assert plan.peak <= plan.budget


def test_the_density_falls_back_to_partial_then_local(monkeypatch):
    free(monkeypatch, 64_000 * MB)
    # blocks as wide as on a GPU (batched products), so the trace's choice shows
    monkeypatch.setattr(memory, "COLUMN_BY_COLUMN", frozenset())
    # full SLQ: 8 probes x (60 + 2) vectors = 1984 MB; the basis 162 x 4 MB = 648 MB
    full = density_memory(N, 8, 60, F32, "full")
    assert full == 8 * 62 * VEC
    plan = plan_memory(N, F32, "cpu", memory=1500 * MB, hvp_cache=None, num_probes=8)
    assert plan.reorth == "partial"
    room = 1500 * MB - plan.kept
    assert plan.window == 16  # the default window: 43 would fit, but buys nothing
    assert plan.density == 8 * (16 + 2) * VEC <= room
    assert plan.ncv == 160  # the Lanczos basis still fits
    assert plan.lanczos <= room
    # Hutch++'s sketch (40 vectors + blocks) still fits
    assert plan.trace_method == "auto"
    small = plan_memory(N, F32, "cpu", memory="250MB", hvp_cache=None, num_probes=8)
    assert (small.reorth, small.window) == ("partial", 4)  # 214 MB // 32 MB - 2
    assert small.ncv == 21  # (21 + 2) x 4 MB + 120 MB working vectors <= 214 MB
    assert (small.trace_method, small.trace_block) == ("auto", 3)  # 40 + 4 x 3 vectors
    assert small.peak <= 250 * MB
    # 20 probes: three vectors each would not fit, two do
    local = plan_memory(N, F32, "cpu", memory="386MB", hvp_cache=None, num_probes=20)
    assert (local.reorth, local.window) == ("local", 2)
    assert local.density == 20 * 4 * VEC
    # Hutch++'s 40-vector sketch and a block of 16 would not fit beside nothing else
    # Hutch++'s 40-vector sketch and blocks of 4 x 11 vectors: 336 of 350 MB
    assert (local.trace_method, local.trace_block) == ("auto", 11)
    # k = 2 (a basis of 5 + 1 vectors): 150 MB left, the sketch needs 176 with a block of 1
    tiny = plan_memory(
        N, F32, "cpu", k=2, block_size=1, memory="170MB", hvp_cache=None, density=False
    )
    assert (tiny.trace_method, tiny.trace_block) == ("hutchinson", 9)


def test_nothing_fits_refuses_with_the_numbers(monkeypatch):
    free(monkeypatch, 64_000 * MB)
    with pytest.raises(cp.MemoryBudgetError) as info:
        plan_memory(N, F32, "cpu", memory="100MB")
    text = str(info.value)
    # kept 36 MB + the smallest largest phase: Lanczos at 2k+1 = 13 vectors + working
    need = 9 * VEC + sum(eigsh_memory(N, 6, 13, F32, 2))
    assert f"{need / 2**20:.0f} MiB" in text
    assert "95.4 MiB" in text or "95 MiB" in text  # the budget
    assert "--memory" in text
    assert "--no-density" in text
    assert isinstance(info.value, MemoryError)
    # an explicit setting that does not fit is refused, not changed
    with pytest.raises(cp.MemoryBudgetError, match=r"density \(full reorth"):
        plan_memory(
            N, F32, "cpu", memory="1500MB", reorth="full", hvp_cache=None, num_probes=8
        )


def test_the_budget_defaults_to_half_the_free_memory_and_reads_sizes(monkeypatch):
    free(monkeypatch, 2000 * MB)
    assert plan_memory(N, F32, "cpu").budget == 1000 * MB
    assert plan_memory(N, F32, "cpu", memory="1.5GiB").budget == int(1.5 * 2**30)
    assert plan_memory(N, F32, "cpu", memory=3 * 10**9).source == "memory="
    free(monkeypatch, 0)  # unknown: no limit, every default
    plan = plan_memory(N, F32, "cpu")
    assert plan.budget is None
    assert plan.reorth == "full"
    with pytest.raises(cp.InputError, match="'8 parsecs'"):
        plan_memory(N, F32, "cpu", memory="8 parsecs")


def test_the_linearisations_get_what_the_smallest_settings_leave(monkeypatch):
    free(monkeypatch, 4000 * MB)  # auto cache: a quarter of it, 1000 MB
    plan = plan_memory(N, F32, "cpu", memory="1200MB")
    assert plan.hvp_cache == 1200 * MB - plan.minimum
    assert plan.hvp_cache < 1000 * MB
    roomy = plan_memory(N, F32, "cpu", memory="20GB")
    assert roomy.hvp_cache == 1000 * MB  # its own setting
    # once measured, the solvers share the rest
    measured = plan_memory(N, F32, "cpu", memory="1200MB", hvp_cache_kept=50 * MB)
    assert measured.hvp_cache == 50 * MB
    assert measured.peak <= 1200 * MB
    assert measured.density >= plan.density


def test_a_gpu_run_moves_the_basis_to_the_host(monkeypatch):
    # 180 MB on the device: the gradient and eigenvectors (36 MB) and the
    # working vectors (120 MB) fit, not with the smallest basis too (60 MB)
    free(monkeypatch, 800 * MB, gpu=360 * MB)
    plan = plan_memory(N, F32, "cuda", density=False, trace=False)
    assert plan.basis == "cpu"
    # the host holds the basis: within its own budget (400 MB: 98 vectors)
    assert plan.ncv + 2 <= 400 * MB // VEC
    assert eigsh_memory(N, 6, plan.ncv, F32, 2)[0] <= 400 * MB
    _, working = eigsh_memory(N, 6, plan.ncv, F32, 2)
    assert plan.lanczos == working  # the device holds the working vectors only
    roomy = plan_memory(N, F32, "cuda", density=False, trace=False, memory="10GB")
    assert roomy.basis == "cuda"


def quadratic(n=120, seed=0):
    lam = torch.cat([torch.linspace(-1.0, 3.0, n - 2), torch.tensor([5.0, 7.0])])
    A, _ = planted_matrix(lam.double(), seed=seed)
    model = Quadratic(A, theta=torch.full((n,), 0.1, dtype=torch.float64))
    return cp.Objective(
        model, data=[(torch.zeros(1),)], batch_loss=quadratic_batch_loss
    )


def test_diagnose_states_its_plan_and_runs_the_cheaper_density(monkeypatch):
    obj = quadratic()
    full = cp.diagnose(obj, seed=0, num_steps=40)
    assert full.memory["reorth"] == "full"
    assert full.density.reorth == "full"
    # room for the Lanczos basis, not for 8 full SLQ bases of 40 vectors
    budget = 9 * 960 + sum(eigsh_memory(120, 6, 60, torch.float64, 2))
    assert density_memory(120, 8, 40, torch.float64, "full") > budget - 9 * 960
    tight = cp.diagnose(obj, seed=0, num_steps=40, memory=budget)
    assert tight.memory["budget"] == budget
    assert tight.memory["reorth"] == tight.density.reorth == "partial"
    assert tight.density.window == tight.memory["window"]
    assert tight.memory["peak"] <= budget
    # the same verdict and extreme eigenvalues; the density as good
    assert tight.kind == full.kind
    assert tight.lambda_min == pytest.approx(full.lambda_min, abs=1e-8)
    assert tight.minimum_ratio == pytest.approx(full.minimum_ratio, abs=0.02)
    doc = tight.to_dict()
    assert doc["memory"]["reorth"] == "partial"
    assert doc["density"]["reorth"] == "partial"
    assert cp.Diagnosis.from_dict(doc).memory == doc["memory"]


def test_diagnose_refuses_before_any_product(monkeypatch):
    obj = quadratic()

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the memory check")

    monkeypatch.setattr(obj, "loss_and_grad", no_work)
    with pytest.raises(cp.MemoryBudgetError, match="over the budget of 1000 B"):
        cp.diagnose(obj, memory=1000)


def test_processes_plan_with_the_smallest_budget_of_any_rank(monkeypatch):
    import torch.distributed as dist

    free(monkeypatch, 64_000 * MB)
    # the other rank, in the order the plan reduces: 250 MB of budget, 10 MB of
    # linearisations measured, a preferred basis of 40, a slower vector pass
    other = [
        torch.tensor([250 * MB]),
        torch.tensor([10 * MB]),
        torch.tensor([40]),
        torch.tensor([0.5, 0.05], dtype=torch.float64),
        torch.tensor([0.0, 0.0], dtype=torch.float64),
    ]
    seen = []

    def all_reduce(t, op, group=None):
        theirs = other[len(seen)].to(t.dtype)
        seen.append(op)
        t.copy_(
            torch.minimum(t, theirs)
            if op == dist.ReduceOp.MIN
            else torch.maximum(t, theirs)
        )

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    plan = plan_memory(
        N,
        F32,
        "cpu",
        memory="20GB",
        hvp_cache_kept=0,
        process_group=object(),
        num_probes=8,
        seconds_per_product=1.0,
        seconds_per_vector=1e-3,
    )
    assert len(seen) == len(other)
    assert plan.budget == 250 * MB
    assert plan.hvp_cache_kept == 10 * MB
    assert "smallest over the processes" in plan.source
    assert plan.ncv <= 40  # the smaller preferred basis
    # this rank alone would take full (1 ms a pass); the other's 50 ms a pass
    # and 1 s a product leave 2 passes, a window of (2 + 3) / 1.6 -> 3, on both
    assert (plan.reorth, plan.window) == ("partial", 3)


def test_a_plan_reads_back_from_its_dictionary(monkeypatch):
    free(monkeypatch, 64_000 * MB)
    plan = plan_memory(N, F32, "cpu", memory="1500MB", hvp_cache=None, num_probes=8)
    again = memory.MemoryPlan.from_dict(plan.to_dict())
    assert again == plan
    text = again.describe()
    assert "density reorthogonalisation partial (window 16)" in text
    assert "of 1.40 GiB (memory=)" in text
    with pytest.raises(cp.InputError, match="not a memory plan"):
        memory.MemoryPlan.from_dict({"budget": 1})


def test_the_density_reorthogonalisation_is_chosen_by_its_time_too(monkeypatch):
    """Measured seconds of a product and of a pass over a vector bound the vector work.

    60 steps of 8 probes; beyond the three-term recurrence (5 Gram–Schmidt
    passes a step), full costs about 60/2 + 2 passes a step, a window of w
    about 1.6w + 2: the extra may take a tenth of a product, or 5 s over the
    whole phase.
    """
    free(monkeypatch, 64_000 * MB)

    def plan(product, vector):
        return plan_memory(
            N,
            F32,
            "cpu",
            num_probes=8,
            seconds_per_product=product,
            seconds_per_vector=vector,
        )

    # 1 ms a pass: full adds 27 ms to a product of 1 s, within 100 ms
    assert plan(1.0, 1e-3).reorth == "full"
    # 10 ms: 10 passes allowed, a window of (10 + 3) / 1.6 -> 8
    assert (plan(1.0, 1e-2).reorth, plan(1.0, 1e-2).window) == ("partial", 8)
    # 100 ms: 1 pass allowed, no window of 3: the recurrence alone
    assert (plan(1.0, 0.1).reorth, plan(1.0, 0.1).window) == ("local", 2)
    # a phase this short may spend 5 s whatever the ratio: full
    assert plan(1e-4, 1e-5).reorth == "full"
    # memory still rules: full would not fit in 1500 MB whatever the time
    tight = plan_memory(
        N,
        F32,
        "cpu",
        memory=1500 * MB,
        hvp_cache=None,
        num_probes=8,
        seconds_per_product=1.0,
        seconds_per_vector=1e-6,
    )
    assert (tight.reorth, tight.window) == ("partial", 16)
    # and an explicit choice is kept, whatever it costs
    explicit = plan_memory(
        N,
        F32,
        "cpu",
        reorth="full",
        num_probes=8,
        seconds_per_product=1.0,
        seconds_per_vector=5e-2,
    )
    assert explicit.reorth == "full"
