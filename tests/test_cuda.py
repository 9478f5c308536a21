"""What tests/test_offload.py proves on the CPU, on a CUDA GPU: block swap with side-stream prefetch from pinned host
copies gives the resident model's output bit for bit and leaves nothing on the device; a real CUDA out-of-memory
error from the allocator ends in GPUMemoryError naming the settings, with the memory back; fp8 storage on CUDA;
the attention kernel "auto" picks; per-block compile (inductor) with block swap. Skipped without CUDA."""

from __future__ import annotations

import gc
import importlib.util

import pytest
import torch

from avcontrol_core import backbone, checkpoint as ckpt, fp8, kernels, latents, offload, sampling
from avcontrol_core.fidelity import align_with_current_source
from avcontrol_core.guidance import Guidance
from avcontrol_core.offload import BlockSwap
from avcontrol_core.residency import GPUMemoryError
from tests import test_offload as on_cpu
from tests.test_sampling import rel

W, H, FRAMES, FPS, LAYERS = on_cpu.W, on_cpu.H, on_cpu.FRAMES, on_cpu.FPS, on_cpu.LAYERS
plan_of = on_cpu.plan_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=(
    "needs a CUDA GPU: block swap on CUDA (side stream, pinned copies) equals resident, a real CUDA OOM returns "
    "the memory, fp8 / fp8_scaled (_scaled_mm) / 'auto' attention / inductor compile / two-stage upscale / pre-quantised fp8 files on CUDA"))

CUDA = torch.device("cuda")
MIB = 2**20
# torch.cuda.memory_allocated() after a swap is removed or an OOM is handled, against before the model was placed
# (cuBLAS workspaces are allocated by the warm-up first); the fp32 tiny model places 2.2 MiB (budget) / 2.9 MiB
LEAK_TOLERANCE = MIB // 2
KERNEL_TOLERANCE = 1e-2  # relative L2, two bf16 attention kernels on the same q, k, v
BF16_TOLERANCE = 3e-2  # relative L2 of a bf16 model output, two kernel choices (attention, inductor vs eager)
SDPA = backbone.ModelOptions(attention="sdpa")
FP8 = backbone.ModelOptions(weights="fp8", attention="sdpa")
FP8_SCALED = backbone.ModelOptions(weights="fp8_scaled", attention="sdpa")
FP8_COMPUTE_LINEAR = 0.06  # relative L2 of one Linear's output, both operands in e4m3, against bf16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return on_cpu.write_six_block_checkpoint(tmp_path_factory.mktemp("cuda"))


@pytest.fixture(scope="module")
def ctx(checkpoint, make_context):
    return make_context(backbone.load_model(checkpoint, "cpu", "fp32"), seed=1)


@pytest.fixture(scope="module", autouse=True)
def warm(checkpoint, ctx):
    """One run per dtype first: cuBLAS / cuBLASLt keep a workspace per stream in the caching allocator from their
    first call on, which must be part of every memory baseline below."""
    for dtype in ("fp32", "bf16"):
        model = backbone.load_model(checkpoint, CUDA, dtype, SDPA)
        sample(model.transformer, ctx, steps=1, dtype=model.dtype)
    del model
    settle()


def settle() -> int:
    gc.collect()
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def sample(transformer, ctx, steps=2, dtype=torch.bfloat16):
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    sigmas = sampling.schedule("ltx2", steps, latent.video[0, 0].numel())
    return sampling.sample(transformer, latent, ctx, None, Guidance(), sigmas, 7, causal_positions=True, dtype=dtype,
                           device=CUDA)


def velocity(transformer, ctx, dtype=torch.bfloat16):
    """One forward's (video, audio) velocity on fixed inputs (test_offload.one_forward on CUDA)."""
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    states = sampling.video_state(latent, True, CUDA), sampling.audio_state(latent, CUDA)
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(s.latent.shape, generator=g).to(CUDA) for s in states]
    d = sampling.Denoiser(transformer, Guidance(), ctx, None, 1, dtype, CUDA)
    sigma = torch.tensor([0.7], device=CUDA)
    with torch.inference_mode():
        contexts = d.video_context, d.audio_context
        video, audio = (d._modality(x, s, sigma, c) for x, s, c in zip(noise, states, contexts))
        return transformer(video=video, audio=audio, perturbations=d.perturbations)


def same(a, b) -> bool:
    return torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)


# --- block swap -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [plan_of((0, 2, 4)), plan_of((0, 2, 4), depth=0), plan_of((), 0)],
                         ids=["3of6-2slots", "3of6-1slot", "all-1slot"])
def test_block_swap_on_cuda_equals_resident_and_leaves_nothing_behind(checkpoint, ctx, plan):
    resident = backbone.load_model(checkpoint, CUDA, "bf16", SDPA)
    reference = sample(resident.transformer, ctx, steps=3)
    assert same(sample(resident.transformer, ctx, steps=3), reference)  # deterministic, else the check means nothing
    del resident
    before = settle()
    t = backbone.load_model(checkpoint, "cpu", "bf16", SDPA).transformer
    blocks = t.transformer_blocks
    swap = BlockSwap(t, plan, CUDA).install()
    assert swap._stream is not None and swap._stream != torch.cuda.current_stream()  # copies on a side stream
    assert all(blocks[i]._avc_packed.flat.is_pinned() for i in plan.streamed)
    assert all(p.is_cuda for i in plan.resident for p in blocks[i].parameters())
    slots = [(s.buffer.data_ptr(), s.buffer.data_ptr() + s.buffer.numel()) for s in swap._slots]
    seen = {}

    def probe(i):
        def hook(m, _args):  # where block i's weights are while it computes
            w = m.weight
            seen.setdefault(i, (w.device.type, any(lo <= w.data_ptr() < hi for lo, hi in slots)))
        return hook

    handles = [blocks[i].attn1.to_q.register_forward_pre_hook(probe(i)) for i in range(LAYERS)]
    out = sample(t, ctx, steps=3)
    assert seen == {i: ("cuda", i in plan.streamed) for i in range(LAYERS)}
    assert same(out, reference)
    assert swap.loads >= 3 * len(plan.streamed)
    for h in handles:
        h.remove()
    swap.remove()
    assert all(x.device.type == "cpu" for x in (*t.parameters(), *t.buffers()))
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in blocks)
    assert settle() - before <= LEAK_TOLERANCE
    assert same(sample(t.to(CUDA), ctx, steps=3), reference)  # the host copies were not changed by streaming


# --- a real CUDA out-of-memory error --------------------------------------------------------------------------------


def out_of_memory(checkpoint, ctx, budgeted: bool, hold: int = 0) -> tuple[GPUMemoryError, int]:
    """Run the sampler until block 2, where a forward pre-hook holds `hold` bytes (standing in for the activations a
    real-scale forward holds at that point) and asks the allocator for more than the card has. Returns the error and
    memory_allocated() at the failure."""
    budget = on_cpu.budget_for(backbone.load_model(checkpoint, "cpu", "fp32"), 2) if budgeted else 0.0
    options = backbone.ModelOptions(offload_budget_gb=budget, attention="sdpa")
    model = backbone.load_model(checkpoint, CUDA, "fp32", options)
    at_failure = []

    def hook(*_):
        held = torch.empty(hold, dtype=torch.uint8, device=CUDA)  # noqa: F841 -- kept alive by this frame
        at_failure.append(torch.cuda.memory_allocated())
        torch.empty(torch.cuda.get_device_properties(CUDA).total_memory + 2**30, dtype=torch.uint8, device=CUDA)

    model.transformer.transformer_blocks[2].register_forward_pre_hook(hook)
    try:
        on_cpu.run(model, ctx)
    except GPUMemoryError as err:
        error = err
    else:
        pytest.fail("no GPUMemoryError")
    if budgeted:
        assert model.plan is None and model.loaded() == ["transformer"]
        assert all(p.device.type == "cpu" for p in model.transformer.parameters())
    else:
        assert model.loaded() == []  # the resident transformer is dropped, rebuilt on next use
    return error, at_failure[0]


@pytest.mark.parametrize("budgeted", [True, False], ids=["budget", "resident"])
def test_real_cuda_oom_names_the_settings_and_returns_the_memory(checkpoint, ctx, budgeted):
    before = settle()
    error, at_failure = out_of_memory(checkpoint, ctx, budgeted)
    assert at_failure - before > 2 * LEAK_TOLERANCE  # the model really held memory on the card
    text = str(error)
    assert "ran out of GPU memory while sampling 64x64x17" in text and "Tried to allocate" in text
    assert "weights (now default: fp8" in text and "resolution or frames (now 64x64x17" in text
    assert ("offload_budget_gb (now" if budgeted else "offload_budget_gb (now 0, everything resident") in text
    del error  # the caller lets go of the error (see the next test for while it holds it)
    assert settle() - before <= LEAK_TOLERANCE


@pytest.mark.parametrize("budgeted", [True, False], ids=["budget", "resident"])
def test_memory_is_back_while_the_caller_still_holds_the_error(checkpoint, ctx, budgeted):
    """A host keeps the error to show it: the failed run's frames (activations, the placed transformer) must not keep
    their memory through it (memory_guard clears them; test_offload proves the mechanism on the CPU)."""
    before = settle()
    error, _ = out_of_memory(checkpoint, ctx, budgeted, hold=64 * MIB)
    held = settle() - before
    assert held <= LEAK_TOLERANCE, f"{held / MIB:.1f} MiB still allocated while {type(error).__name__} is held"


# --- fp8, attention, compile ------------------------------------------------------------------------------------------


def linear_bytes(block: torch.nn.Module) -> int:
    return sum(offload.tensor_bytes(m) for m in block.modules() if isinstance(m, torch.nn.Linear))


def test_fp8_on_cuda_halves_linear_bytes_stays_close_to_bf16_and_swaps_exactly(checkpoint, ctx):
    t16 = backbone.load_model(checkpoint, CUDA, "bf16", SDPA).transformer
    t8 = backbone.load_model(checkpoint, CUDA, "bf16", FP8).transformer
    assert all(p.is_cuda for p in t8.parameters()) and kernels.stores_fp8(t8)
    for b16, b8 in zip(t16.transformer_blocks, t8.transformer_blocks):
        assert linear_bytes(b8) * 2 == linear_bytes(b16) > 0
    for x, ref in zip(velocity(t8, ctx), velocity(t16, ctx)):
        assert x.is_cuda and 0 < rel(x, ref) < on_cpu.FP8_TOLERANCE
    reference = sample(t8, ctx)
    swapped = backbone.load_model(checkpoint, "cpu", "bf16", FP8)
    swap = BlockSwap(swapped.transformer, plan_of((2,)), CUDA).install()
    assert same(sample(swapped.transformer, ctx), reference)  # fp8 tensors streamed as bytes through the slots
    swap.remove()


def test_auto_attention_on_cuda_runs_and_matches_sdpa(checkpoint, ctx):
    name, kernel = kernels.resolve_attention("auto", CUDA)
    have = kernels.available_attention(CUDA)
    hopper = torch.cuda.get_device_capability(CUDA)[0] == 9
    assert name == ("flash_attention_3" if "flash_attention_3" in have and hopper
                    else "xformers" if "xformers" in have else "sdpa"), have
    g = torch.Generator(CUDA).manual_seed(0)
    q, k, v = (torch.randn(2, 1024, 32 * 128, generator=g, device=CUDA, dtype=torch.bfloat16) for _ in range(3))
    bias = torch.zeros(2, 1, 1024, 1024, device=CUDA, dtype=torch.bfloat16)
    bias[..., 512:] = -2.0  # a reference's attention weight as its additive log bias
    for mask in (None, bias):
        assert rel(kernel(q, k, v, 32, mask), kernels.PytorchAttention()(q, k, v, 32, mask)) < KERNEL_TOLERANCE
    for dtype in ("bf16", "fp32"):  # whatever "auto" picks must run in every dtype the loader offers
        auto = backbone.load_model(checkpoint, CUDA, dtype)
        sdpa = backbone.load_model(checkpoint, CUDA, dtype, SDPA)
        assert auto.attention_kernel == name
        for x, ref in zip(velocity(auto.transformer, ctx, auto.dtype), velocity(sdpa.transformer, ctx, sdpa.dtype)):
            assert rel(x, ref) < BF16_TOLERANCE


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton: inductor compiles for CUDA")
def test_compiled_blocks_with_block_swap_on_cuda(checkpoint, ctx):
    """Inductor on CUDA: compiled + block swap gives what compiled resident gives, bit for bit (the same kernels on
    the same weights, whatever slot they sit in), and eager's output within bf16 rounding; traced without breaks."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() leaves the counters
    eager = sample(backbone.load_model(checkpoint, CUDA, "bf16", SDPA).transformer, ctx)
    compiled = backbone.ModelOptions(attention="sdpa", compile=True)
    resident = sample(backbone.load_model(checkpoint, CUDA, "bf16", compiled).transformer, ctx)
    model = backbone.load_model(checkpoint, "cpu", "bf16", compiled)
    swap = BlockSwap(model.transformer, plan_of((0, 2, 4)), CUDA).install()
    swapped = sample(model.transformer, ctx)
    swap.remove()
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters["graph_break"])
    assert same(swapped, resident)
    assert rel(swapped.video, eager.video) < BF16_TOLERANCE and rel(swapped.audio, eager.audio) < BF16_TOLERANCE
    torch._dynamo.reset()


# --- fp8 compute (weights fp8_scaled, torch._scaled_mm) ----------------------------------------------------------------

needs_fp8_matmul = pytest.mark.skipif(
    torch.cuda.is_available() and fp8.capability_problem(CUDA) is not None,
    reason=f"needs compute capability >= 8.9 for torch._scaled_mm: "
           f"{fp8.capability_problem(CUDA) if torch.cuda.is_available() else ''}")


def count_scaled_mm(monkeypatch) -> list:
    calls, real = [], torch._scaled_mm

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", counted)
    return calls


@needs_fp8_matmul
@pytest.mark.parametrize("shape", [(64, 32, 48), (2048, 4096, 4096)], ids=["tiny", "mid-4096"])
def test_fp8_scaled_linear_on_cuda_within_bound_of_bf16_and_equal_to_the_emulation(shape, monkeypatch):
    from tests.test_fp8_compute import emulate

    tokens, n_in, n_out = shape
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(n_out, n_in, generator=g) / n_in**0.5, torch.randn(n_out, generator=g)
    x = torch.randn(2, tokens // 2, n_in, generator=g).to(CUDA, torch.bfloat16)
    layer = fp8.make_linear(w.to(CUDA), b.to(CUDA), torch.bfloat16)
    calls = count_scaled_mm(monkeypatch)
    y = layer(x)
    assert calls and y.dtype == torch.bfloat16 and y.shape == (2, tokens // 2, n_out)
    ref = torch.nn.functional.linear(x, w.to(CUDA, torch.bfloat16), b.to(CUDA, torch.bfloat16))
    assert 0 < rel(y.float(), ref.float()) < FP8_COMPUTE_LINEAR
    layer.matmul = emulate  # the same quantised operands, multiplied in fp32 by plain torch
    assert rel(y.float(), layer(x).float()) < 1e-2  # bf16 output rounding and accumulation order only


@needs_fp8_matmul
def test_fp8_scaled_model_on_cuda_within_bound_of_bf16(checkpoint, ctx, monkeypatch):
    t16 = backbone.load_model(checkpoint, CUDA, "bf16", SDPA).transformer
    t8 = backbone.load_model(checkpoint, CUDA, "bf16", FP8_SCALED).transformer
    layers = fp8.scaled_linears(t8)
    assert layers and all(l.fallback is None and l.weight.is_cuda and l.weight_scale.is_cuda for _, l in layers)
    calls = count_scaled_mm(monkeypatch)
    for x, ref in zip(velocity(t8, ctx), velocity(t16, ctx)):
        assert x.is_cuda and 0 < rel(x, ref) < on_cpu.FP8_TOLERANCE
    assert len(calls) >= len(layers)


def home_fp8_scaled(path) -> torch.nn.Module:
    """The fp8_scaled transformer built on the host (as the loader does under a budget), attention sdpa."""
    t = backbone.build_component(path, ckpt.read_config(path), "transformer", "cpu", torch.bfloat16, "fp8_scaled")
    t = align_with_current_source(t)
    kernels.set_attention(t, kernels.resolve_attention("sdpa", CUDA)[1])
    return t


@needs_fp8_matmul
def test_fp8_scaled_block_swap_equals_resident_on_cuda(checkpoint, ctx):
    reference = sample(backbone.load_model(checkpoint, CUDA, "bf16", FP8_SCALED).transformer, ctx)
    t = home_fp8_scaled(checkpoint)
    swap = BlockSwap(t, plan_of((2,)), CUDA).install()
    assert same(sample(t, ctx), reference)  # fp8 weights and their fp32 scales streamed through the slots
    swap.remove()
    assert all(not l.weight.is_cuda and not l.weight_scale.is_cuda for _, l in fp8.scaled_linears(t))


@needs_fp8_matmul
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton: inductor compiles for CUDA")
def test_fp8_scaled_compiles_per_block_without_graph_breaks(checkpoint, ctx):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = sample(backbone.load_model(checkpoint, CUDA, "bf16", FP8_SCALED).transformer, ctx)
    options = backbone.ModelOptions(weights="fp8_scaled", attention="sdpa", compile=True)
    compiled = sample(backbone.load_model(checkpoint, CUDA, "bf16", options).transformer, ctx)
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters["graph_break"])
    assert rel(compiled.video, eager.video) < BF16_TOLERANCE and rel(compiled.audio, eager.audio) < BF16_TOLERANCE
    torch._dynamo.reset()


# --- two-stage upscale and pre-quantised fp8 files on CUDA -------------------------------------------------------------


def test_upscale_on_cuda_matches_the_cpu_and_leaves_nothing_behind(tiny_models, make_context):
    from avcontrol_core.conditioning import PromptPair
    from avcontrol_core.pipeline import run_sampler
    from avcontrol_core.upsampler import load_upsampler, upscale_for_model

    cpu = backbone.load_model(tiny_models["checkpoint_ltx2"], "cpu", "fp32")
    prompts = PromptPair(make_context(cpu, seed=3), None)
    stage_one = run_sampler(cpu, prompts, latents.empty_latent(64, 64, 9, FPS), Guidance(), steps=2,
                            schedule_name="ltx2", seed=5)
    upsampler = load_upsampler(tiny_models["upscaler"])
    expected = upscale_for_model(cpu, stage_one, upsampler)
    for dtype, tolerance in (("fp32", 1e-3), ("bf16", 3e-2)):
        model = backbone.load_model(tiny_models["checkpoint_ltx2"], CUDA, dtype, SDPA)
        before = settle()
        out = upscale_for_model(model, stage_one, upsampler)
        assert out.video.device.type == "cpu" and rel(out.video, expected.video) < tolerance
        assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in upsampler.parameters())
        assert settle() - before <= LEAK_TOLERANCE


def test_a_prequantised_fp8_file_loads_on_cuda(tiny_models, tmp_path):
    from tests.test_fp8_checkpoint import quantised_copy

    path, expected = quantised_copy(tiny_models["checkpoint_ltx2"], tmp_path / "fp8.safetensors")
    params = dict(backbone.load_model(path, CUDA, "fp32", SDPA).transformer.named_parameters())
    assert all(torch.equal(params[n].cpu(), v) and params[n].is_cuda for n, v in expected.items())
    fp8 = dict(backbone.load_model(path, CUDA, "bf16", FP8).transformer.named_parameters())
    assert all(fp8[n].dtype == kernels.FP8 and fp8[n].is_cuda for n in expected)
