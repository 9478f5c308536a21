"""GPU memory invariants, proven on the CPU: the block-swap plan is what the budget allows (hand-computed cases), the
swap hooks move weights in and out on the schedule the plan names, offloaded output equals resident output, a budget
too small is refused with the minimum named, running out of memory mid-run ends in an error naming what to lower
after the model released what it held, fp8 storage halves the blocks' Linear bytes and stays close to bf16, the
attention and compile settings, and the host's "free memory" reaching our models."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import re
import sys
import types
import weakref

import pytest
import torch
from safetensors.torch import save_file

from avcontrol_core import backbone, kernels, latents, offload, sampling, tiny
from avcontrol_core.conditioning import PromptPair
from avcontrol_core.errors import InputError
from avcontrol_core.guidance import Guidance, StreamGuidance
from avcontrol_core.offload import BlockSwap
from avcontrol_core.residency import GPUMemoryError
from avcontrol_core.offload_plan import GIB, BudgetError, Plan, plan_block_swap, spread
from avcontrol_core.pipeline import run_sampler

W, H, FRAMES, FPS = 64, 64, 17, 24.0
LAYERS = 6


# --- the plan: pure, hand-computed ---------------------------------------------------------------------------------


def test_spread_is_evenly_spaced_by_hand():
    assert spread(4, 2) == (1, 3)
    assert spread(4, 3) == (0, 2, 3)
    assert spread(6, 3) == (1, 3, 5)
    assert spread(48, 12) == tuple(range(2, 48, 4))
    assert spread(5, 5) == (0, 1, 2, 3, 4) and spread(5, 0) == ()


def test_everything_resident_when_it_fits():
    plan = plan_block_swap([10] * 4, 5, budget_bytes=100, free_bytes=1000, activation_bytes=5)
    assert plan == Plan((0, 1, 2, 3), (), 0, 0, 50, 100)
    assert not plan.enabled() and plan.slots == 0


def test_fewest_streamed_blocks_with_prefetch():
    # 4 blocks of 10, fixed 5, activations 5, limit 45. One or two streamed blocks save nothing (two slots cost
    # what they free): 3 streamed (0, 2, 3) + 1 resident + 2 slots = 10 + 10 + 20 = 40 <= 45.
    plan = plan_block_swap([10] * 4, 5, budget_bytes=45, free_bytes=1000, activation_bytes=5)
    assert plan == Plan(resident=(1,), streamed=(0, 2, 3), prefetch_depth=1, slot_bytes=10, device_bytes=40,
                        limit_bytes=45)
    assert plan.slots == 2


def test_free_memory_limits_like_a_budget():
    by_budget = plan_block_swap([10] * 4, 5, budget_bytes=45, free_bytes=1000, activation_bytes=5)
    by_free = plan_block_swap([10] * 4, 5, budget_bytes=100, free_bytes=45, activation_bytes=5)
    no_budget = plan_block_swap([10] * 4, 5, budget_bytes=0, free_bytes=45, activation_bytes=5)
    assert by_budget.resident == by_free.resident == no_budget.resident == (1,)


def test_prefetch_dropped_only_when_two_slots_cannot_fit():
    # limit 25: every block streamed through two slots needs 10 + 20 = 30; through one slot 10 + 10 = 20
    plan = plan_block_swap([10] * 4, 5, budget_bytes=25, free_bytes=1000, activation_bytes=5)
    assert plan == Plan((), (0, 1, 2, 3), 0, 10, 20, 25)
    assert plan.slots == 1


def test_budget_below_one_block_is_refused_with_the_minimum():
    blocks, fixed, act = [GIB] * 4, GIB // 2, GIB // 2
    with pytest.raises(BudgetError, match=r"offload_budget_gb 1\.50 is too small.*at least 2\.00 GB") as err:
        plan_block_swap(blocks, fixed, budget_bytes=int(1.5 * GIB), free_bytes=100 * GIB, activation_bytes=act)
    assert isinstance(err.value, InputError)  # raised before any work, like every input error
    assert "raise offload_budget_gb to at least 2.00" in str(err.value)
    plan_block_swap(blocks, fixed, budget_bytes=2 * GIB, free_bytes=100 * GIB, activation_bytes=act)  # the minimum runs
    # 0.504 GB needed: both numbers say 0.51 (rounded up, the budget to type), never "need 0.50; raise to 0.51"
    with pytest.raises(BudgetError) as err:
        plan_block_swap([int(0.3 * GIB)], int(0.104 * GIB), budget_bytes=GIB // 4, free_bytes=100 * GIB,
                        activation_bytes=int(0.1 * GIB))
    assert "need at least 0.51 GB; raise offload_budget_gb to at least 0.51," in str(err.value), str(err.value)
    with pytest.raises(BudgetError, match=r"only 1\.00 GB of GPU memory is free.*at least 2\.00 GB"):
        plan_block_swap(blocks, fixed, budget_bytes=20 * GIB, free_bytes=GIB, activation_bytes=act)


def test_a_19b_sized_stack_under_24_gb():
    # 48 blocks of 1 GB, 2 GB fixed, 2 GB activations, 24 GB: 24 - 4 - 2 slots = 18 resident, 30 streamed
    plan = plan_block_swap([GIB] * 48, 2 * GIB, 24 * GIB, 80 * GIB, 2 * GIB)
    assert len(plan.resident) == 18 and plan.streamed == spread(48, 30) and plan.prefetch_depth == 1
    assert plan.device_bytes == 24 * GIB
    gaps = {b - a for a, b in zip(plan.streamed, plan.streamed[1:])}
    assert gaps <= {1, 2}  # spread: no long runs of streamed blocks, no long runs of resident ones


def test_host_buffers_fill_powers_of_two_by_hand():
    """PyTorch pins each request rounded up to a power of two: 30 blocks of 0.72 GiB one by one would pin 30 GiB."""
    block = int(0.72 * GIB)
    groups = offload.host_buffers([block] * 30)
    assert [len(g) for g in groups] == [22, 5, 2, 1]  # 15.84 of 16 GiB, 3.6 of 4, 1.44 of 2, 0.72 of 1
    assert [i for g in groups for i in g] == list(range(30))
    pinned = sum(1 << (len(g) * block - 1).bit_length() for g in groups)
    assert pinned == 23 * GIB
    assert offload.host_buffers([5, 100, 3]) == [[0], [1], [2]]  # 108 -> 64 holds only 5; 103 -> 64 < 100: alone
    assert offload.host_buffers([]) == []


def test_slots_fit_the_largest_streamed_block():
    plan = plan_block_swap([10, 30, 10, 10], 0, budget_bytes=45, free_bytes=1000, activation_bytes=0)
    # two slots: (1, 3) streamed: 20 + 2 x 30 = 80; (0, 2, 3): 30 + 2 x 10 = 50; all: 2 x 30 = 60 -- none fits 45.
    # one slot: (2,): 50 + 10; (1, 3): 20 + 30 = 50; (0, 2, 3): 30 + 10 = 40 <= 45
    assert plan == Plan((1,), (0, 2, 3), 0, 10, 40, 45)


# --- a 6-block tiny model ------------------------------------------------------------------------------------------


def write_six_block_checkpoint(folder):
    config = tiny.tiny_config("ltx2")
    config["transformer"]["num_layers"] = LAYERS
    path = folder / "avcontrol-tiny-6.safetensors"
    save_file(tiny.tiny_state_dict(config, seed=3), str(path), metadata={"config": json.dumps(config)})
    return path


@pytest.fixture(scope="module")
def six_block_checkpoint(tmp_path_factory):
    return write_six_block_checkpoint(tmp_path_factory.mktemp("six"))


@pytest.fixture(scope="module")
def resident(six_block_checkpoint):
    return backbone.load_model(six_block_checkpoint, "cpu", "fp32")


@pytest.fixture(scope="module")
def ctx(resident, make_context):
    return make_context(resident, seed=1)


def sample(transformer, ctx, steps=2, guidance=None, dtype=torch.float32):
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    sigmas = sampling.schedule("ltx2", steps, latent.video[0, 0].numel())
    return sampling.sample(transformer, latent, ctx, None, guidance or Guidance(), sigmas, 7, causal_positions=True,
                           dtype=dtype)


@pytest.fixture(scope="module")
def reference(resident, ctx):
    return sample(resident.transformer, ctx, steps=2)


def fresh(path, **options) -> backbone.AVModel:
    return backbone.load_model(path, "cpu", "fp32", backbone.ModelOptions(**options))


def plan_of(resident: tuple[int, ...], depth: int = 1) -> Plan:
    streamed = tuple(i for i in range(LAYERS) if i not in resident)
    return Plan(resident, streamed, depth)


@pytest.mark.parametrize("plan", [plan_of((0, 2, 4)), plan_of((0, 2, 4), depth=0), plan_of((), 0)],
                         ids=["3of6", "3of6-1slot", "all-1slot"])
def test_offloaded_output_equals_resident_output(six_block_checkpoint, ctx, reference, plan):
    model = fresh(six_block_checkpoint)
    swap = BlockSwap(model.transformer, plan, "cpu").install()
    out = sample(model.transformer, ctx, steps=2)
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)
    assert swap.loads >= len(plan.streamed)
    swap.remove()
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in model.transformer.transformer_blocks)
    out = sample(model.transformer, ctx, steps=2)
    assert torch.equal(out.video, reference.video)


def test_remove_puts_every_tensor_back_on_the_host(six_block_checkpoint):
    """What install moved, remove restores from the host tensors themselves: a Parameter's .data, not the Parameter,
    whose .data placing replaces (holding the Parameter left the fixed layers and resident blocks on the GPU after
    remove; caught on an H100, where a move is a copy; on the CPU .to() returns the same tensor, so the CPU test
    checks what is held)."""
    model = fresh(six_block_checkpoint)
    t = model.transformer
    before = {n: x.data_ptr() for n, x in (*t.named_parameters(), *t.named_buffers())}
    swap = BlockSwap(t, plan_of((0, 2, 4)), "cpu").install()
    assert swap._home and not any(isinstance(home, torch.nn.Parameter) for _, _, home in swap._home)
    swap.remove()
    after = dict((*t.named_parameters(), *t.named_buffers()))
    streamed = ("transformer_blocks.1.", "transformer_blocks.3.", "transformer_blocks.5.")  # now in packed copies
    assert all(after[n].data_ptr() == ptr for n, ptr in before.items() if not n.startswith(streamed))


def test_prefetch_schedule_by_hand(six_block_checkpoint, ctx):
    model = fresh(six_block_checkpoint)
    t = model.transformer
    swap = BlockSwap(t, plan_of((0, 2, 4)), "cpu", record=True).install()  # streamed (1, 3, 5), two slots
    sample(t, ctx, steps=2)
    one_forward = [("load", 1, 0), ("load", 3, 1), ("run", 1, 0), ("free", 1, 0), ("load", 5, 0), ("run", 3, 1),
                   ("free", 3, 1), ("load", 1, 1), ("run", 5, 0), ("free", 5, 0), ("load", 3, 0)]
    assert swap.log[:11] == one_forward
    # second forward: blocks 1 and 3 were prefetched by the first; every streamed block's copy is issued before
    # the streamed block ahead of it starts computing (prefetch depth 1), three copies per forward
    assert swap.log[11:] == [("run", 1, 1), ("free", 1, 1), ("load", 5, 1), ("run", 3, 0), ("free", 3, 0),
                             ("load", 1, 0), ("run", 5, 1), ("free", 5, 1), ("load", 3, 1)]
    assert swap.loads == 2 + 3 * 2
    swap.remove()

    swap = BlockSwap(t, plan_of((0, 2, 4), depth=0), "cpu", record=True).install()  # one slot: no copy ahead
    sample(t, ctx, steps=1)
    assert swap.log == [("load", 1, 0), ("run", 1, 0), ("free", 1, 0), ("load", 3, 0), ("run", 3, 0), ("free", 3, 0),
                        ("load", 5, 0), ("run", 5, 0), ("free", 5, 0), ("load", 1, 0)]
    swap.remove()


def test_weights_live_in_a_slot_only_while_their_block_runs(six_block_checkpoint, ctx):
    model = fresh(six_block_checkpoint)
    t = model.transformer
    blocks = t.transformer_blocks
    swap = BlockSwap(t, plan_of((0, 2, 4)), "cpu").install()
    slots = [(s.buffer.data_ptr(), s.buffer.data_ptr() + s.buffer.numel()) for s in swap._slots]

    def in_slot(p):
        return any(lo <= p.data_ptr() < hi for lo, hi in slots)

    seen = {}

    def probe(i):
        def hook(m, _args):
            seen.setdefault(i, in_slot(m.weight))
        return hook

    handles = [blocks[i].attn1.to_q.register_forward_pre_hook(probe(i)) for i in range(LAYERS)]
    sample(t, ctx, steps=1)
    assert seen == {0: False, 1: True, 2: False, 3: True, 4: False, 5: True}
    for i in (1, 3, 5):  # at rest: the packed host copy, not a slot
        packed = blocks[i]._avc_packed.flat
        w = blocks[i].attn1.to_q.weight
        assert not in_slot(w) and packed.data_ptr() <= w.data_ptr() < packed.data_ptr() + packed.numel()
        assert packed.numel() == offload.packed_bytes(blocks[i])
    groups = offload.host_buffers([offload.packed_bytes(blocks[i]) for i in (1, 3, 5)])
    buffers = [blocks[i]._avc_packed.flat.untyped_storage().data_ptr() for i in (1, 3, 5)]
    assert len(groups) < 3 and len(set(buffers)) == len(groups)  # the packs share host buffers as grouped
    assert all(len({buffers[j] for j in g}) == 1 for g in groups)
    for h in handles:
        h.remove()
    swap.remove()


def test_a_weight_replaced_at_home_is_what_runs(six_block_checkpoint, ctx, reference):
    """A fused LoRA swaps a weight's tensor while its block is at home: the swap must run that tensor, and run the
    original again once it is put back (no stale slot)."""
    model, plain = fresh(six_block_checkpoint), fresh(six_block_checkpoint)
    swap = BlockSwap(model.transformer, plan_of((0, 2, 4)), "cpu").install()
    sample(model.transformer, ctx, steps=1)  # slots now hold prefetched blocks
    changed = [(m.transformer.transformer_blocks[3].ff.net[2], m.transformer.transformer_blocks[5].attn2.to_v)
               for m in (model, plain)]
    kept = [layer.weight.data for layer in changed[0]]
    for layers in changed:
        for layer in layers:
            layer.weight.data = layer.weight.data * 1.5
    assert torch.equal(sample(model.transformer, ctx, steps=2).video, sample(plain.transformer, ctx, steps=2).video)
    for layer, original in zip(changed[0], kept):
        layer.weight.data = original
    out = sample(model.transformer, ctx, steps=2)
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)
    swap.remove()


def test_a_forward_that_raised_leaves_the_swap_usable(six_block_checkpoint, ctx, reference):
    model = fresh(six_block_checkpoint)
    t = model.transformer
    swap = BlockSwap(t, plan_of((0, 2, 4)), "cpu").install()

    def boom(*_):
        raise RuntimeError("boom")

    handle = t.transformer_blocks[3].attn2.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        sample(t, ctx, steps=1)
    handle.remove()
    out = sample(t, ctx, steps=2)
    assert torch.equal(out.video, reference.video)
    swap.remove()


# --- the model with a budget, through the pipeline -----------------------------------------------------------------


def budget_for(model: backbone.AVModel, resident_blocks: int, rows: int = 1) -> float:
    """A budget (GB) that keeps `resident_blocks` blocks resident (two slots) when sampling with `rows` passes."""
    t = model.transformer
    act = offload.run_activation_bytes(model.config, latents.empty_latent(W, H, FRAMES, FPS), rows, model.dtype)
    block = max(offload.block_bytes(t))
    return (offload.fixed_bytes(t) + act + (resident_blocks + 2) * block + block // 2) / GIB


def run(model, ctx, steps=2, guidance=None, fuse=False):
    return run_sampler(model, PromptPair(ctx, ctx), latents.empty_latent(W, H, FRAMES, FPS), guidance, steps=steps,
                       schedule_name="ltx2", seed=7, fuse_loras=fuse)


def test_budgeted_model_plans_within_its_budget_and_matches_resident(six_block_checkpoint, ctx, reference):
    budget = budget_for(fresh(six_block_checkpoint), 2)
    model = fresh(six_block_checkpoint, offload_budget_gb=budget)
    assert model.plan is None  # nothing is placed until it runs
    out = run(model, ctx)
    plan = model.plan
    assert (len(plan.resident), len(plan.streamed), plan.prefetch_depth) == (2, 4, 1)
    assert plan.limit_bytes == int(budget * GIB)
    act = offload.run_activation_bytes(model.config, latents.empty_latent(W, H, FRAMES, FPS), 1, model.dtype)
    assert model._swap.device_bytes() + act <= plan.device_bytes <= plan.limit_bytes  # holds no more than it planned
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)
    model.release_all()
    assert model.plan is None and model.loaded() == ["transformer"]


def test_plan_follows_the_activations_of_each_run(six_block_checkpoint, ctx):
    guidance = Guidance(video=StreamGuidance(cfg=3.0, stg=1.0, stg_blocks=(1,)))  # 3 batched passes
    model = fresh(six_block_checkpoint, offload_budget_gb=budget_for(fresh(six_block_checkpoint), 2, rows=3))
    run(model, ctx, steps=1)
    assert not model.plan.enabled()  # one pass: all six fit
    guided = run(model, ctx, steps=2, guidance=guidance)
    assert len(model.plan.resident) == 2
    assert torch.equal(guided.video, run(fresh(six_block_checkpoint), ctx, steps=2, guidance=guidance).video)


def test_budget_too_small_is_refused_before_sampling(six_block_checkpoint, ctx):
    model = fresh(six_block_checkpoint, offload_budget_gb=1e-6)
    calls = []
    model.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(BudgetError, match=r"offload_budget_gb 0\.00 is too small.*at least 0\.\d\d GB"):
        run(model, ctx)
    assert calls == []


@pytest.mark.parametrize("budgeted", [True, False], ids=["budget", "resident"])
def test_out_of_memory_names_the_setting_and_frees_what_it_held(six_block_checkpoint, ctx, budgeted):
    probe = fresh(six_block_checkpoint)
    options = dict(offload_budget_gb=budget_for(probe, 2)) if budgeted else {}
    model = fresh(six_block_checkpoint, **options)
    model.component("video_decoder")
    if not budgeted:
        model.component("audio_decoder")
    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.transformer.transformer_blocks[2].register_forward_pre_hook(out_of_memory)
    with pytest.raises(GPUMemoryError) as err:
        run(model, ctx)
    text = str(err.value)
    assert "ran out of GPU memory while sampling 64x64x17" in text and "Tried to allocate 2.00 GiB" in text
    assert "resolution or frames (now 64x64x17: smaller)" in text and "weights (now default: fp8 halves" in text
    if budgeted:
        assert f"offload_budget_gb (now {options['offload_budget_gb']:g}, 2 blocks resident" in text
        assert model.plan is None  # block swap removed: streamed weights back on their host copies, hooks gone
        assert all(not b._forward_hooks for b in model.transformer.transformer_blocks)
    else:
        assert "offload_budget_gb (now 0, everything resident" in text
    assert "video_decoder" not in model.loaded() and "audio_decoder" not in model.loaded()
    handle.remove()


def test_out_of_memory_lets_the_failed_runs_activations_go_while_the_error_is_held(six_block_checkpoint, ctx):
    """ComfyUI keeps the error to report it; the activations of the failed forward must not live on in it."""
    model = fresh(six_block_checkpoint)
    alive = []

    def out_of_memory(*_):
        activation = torch.empty(1 << 20)  # a local of a frame inside the failed forward, as activations are
        alive.append(weakref.ref(activation))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.transformer.transformer_blocks[3].register_forward_pre_hook(out_of_memory)
    with pytest.raises(GPUMemoryError) as err:
        run(model, ctx)
    handle.remove()
    gc.collect()
    assert err.value is not None and alive and alive[0]() is None


def test_step_components_one_at_a_time_with_a_budget(six_block_checkpoint, ctx):
    model = fresh(six_block_checkpoint, offload_budget_gb=budget_for(fresh(six_block_checkpoint), 2))
    run(model, ctx, steps=1)
    assert model.plan is not None
    model.component("video_decoder")
    assert model.plan is None  # the transformer went home before the VAE was loaded
    model.component("audio_decoder")
    assert model.loaded() == ["audio_decoder", "transformer"]
    run(model, ctx, steps=1)
    assert model.loaded() == ["transformer"]


# --- fp8 storage ---------------------------------------------------------------------------------------------------


FP8_TOLERANCE = 0.08  # relative L2 of one forward's velocity, fp8 e4m3 weights vs bf16 (3 mantissa bits)


def one_forward(transformer, ctx, dtype):
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    v = sampling.video_state(latent, True, "cpu")
    a = sampling.audio_state(latent, "cpu")
    g = torch.Generator().manual_seed(0)
    xv, xa = torch.randn(v.latent.shape, generator=g), torch.randn(a.latent.shape, generator=g)
    d = sampling.Denoiser(transformer, Guidance(), ctx, None, 1, dtype, torch.device("cpu"))
    with torch.inference_mode():
        video = d._modality(xv, v, torch.tensor([0.7]), d.video_context)
        audio = d._modality(xa, a, torch.tensor([0.7]), d.audio_context)
        return transformer(video=video, audio=audio, perturbations=d.perturbations)


def test_fp8_storage_halves_linear_bytes_and_stays_close_to_bf16(six_block_checkpoint, ctx):
    bf16 = backbone.load_model(six_block_checkpoint, "cpu", "bf16")
    fp8 = backbone.load_model(six_block_checkpoint, "cpu", "bf16", backbone.ModelOptions(weights="fp8"))
    t16, t8 = bf16.transformer, fp8.transformer
    stored = dict(t8.named_parameters())
    halved = [n for n, p in t16.named_parameters() if n.startswith("transformer_blocks.")
              and stored[n].dtype == kernels.FP8]
    assert halved and all(stored[n].element_size() * 2 == p.element_size() for n, p in t16.named_parameters()
                          if n in halved)
    linear = re.compile(r"[._](to_q|to_k|to_v|to_out\.0|ff\.net\.0\.proj|ff\.net\.2)\.(weight|bias)$")
    assert all(linear.search(n) for n in halved)  # attention and feed-forward Linears of both streams, nothing else
    saved = sum(p.numel() for n, p in t16.named_parameters() if n in halved)  # one byte saved per element
    assert offload.tensor_bytes(t16) - offload.tensor_bytes(t8) == saved
    assert sum(offload.block_bytes(t8)) < 0.6 * sum(offload.block_bytes(t16))
    v16, a16 = one_forward(t16, ctx, torch.bfloat16)
    v8, a8 = one_forward(t8, ctx, torch.bfloat16)
    for x, ref in ((v8, v16), (a8, a16)):
        err = float((x.float() - ref.float()).norm() / ref.float().norm())
        assert 0 < err < FP8_TOLERANCE, err


def test_fp8_with_block_swap_equals_fp8_resident(six_block_checkpoint, ctx):
    fp8 = backbone.load_model(six_block_checkpoint, "cpu", "fp32", backbone.ModelOptions(weights="fp8"))
    ref = sample(fp8.transformer, ctx, steps=2)
    swap = BlockSwap(fp8.transformer, plan_of((2,)), "cpu").install()
    out = sample(fp8.transformer, ctx, steps=2)
    swap.remove()
    assert torch.equal(out.video, ref.video) and torch.equal(out.audio, ref.audio)


# --- attention kernel and compile ----------------------------------------------------------------------------------


def test_attention_setting(six_block_checkpoint, ctx, reference):
    model = fresh(six_block_checkpoint, attention="sdpa")
    assert model.attention_kernel == "sdpa"
    layers = [m for m in model.transformer.modules() if isinstance(m, kernels.Attention)]
    assert layers and all(isinstance(m.attention_function, kernels.PytorchAttention) for m in layers)
    assert torch.equal(sample(model.transformer, ctx, steps=2).video, reference.video)
    assert kernels.resolve_attention("auto", torch.device("cpu"))[0] == "sdpa"
    with pytest.raises(InputError, match=r"attention 'flash_attention_3' is not available here.*available: auto, sdpa"):
        fresh(six_block_checkpoint, attention="flash_attention_3")
    with pytest.raises(InputError, match="attention must be one of"):
        backbone.ModelOptions(attention="flash")


def test_flash_attention_3_falls_back_to_sdpa_for_masks_and_fp32():
    q = torch.randn(2, 5, 8)
    mask = torch.zeros(2, 5, 5)
    out = kernels.FlashAttention3OrSdpa()(q, q, q, 2, mask)
    assert torch.equal(out, kernels.PytorchAttention()(q, q, q, 2, mask))
    # fp32 without a mask: FA3 has no fp32 kernel (here it is not even installed, so reaching it would raise)
    assert torch.equal(kernels.FlashAttention3OrSdpa()(q, q, q, 2), kernels.PytorchAttention()(q, q, q, 2))


def test_compiled_blocks_with_block_swap_equal_eager(six_block_checkpoint, ctx, reference):
    """Per-block compile keeps the module tree (LoRA names, swap hooks) and runs the hooks eagerly around the compiled
    forward; backend 'eager' traces with dynamo without a C++ toolchain (the loader option uses inductor)."""
    torch._dynamo.reset()
    model = fresh(six_block_checkpoint)
    t = model.transformer
    names = [n for n, _ in t.named_parameters()]
    assert kernels.compile_blocks(t, backend="eager") == LAYERS and kernels.is_compiled(t)
    assert [n for n, _ in t.named_parameters()] == names
    swap = BlockSwap(t, plan_of((0, 2, 4)), "cpu").install()
    out = sample(t, ctx, steps=2)
    swap.remove()
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # traced whole, not eager
    kernels.uncompile_blocks(t)
    assert not kernels.is_compiled(t)
    torch._dynamo.reset()


def test_compile_option_compiles_each_block_lazily(six_block_checkpoint):
    model = fresh(six_block_checkpoint, compile=True)  # inductor; nothing compiles until a block runs
    blocks = model.transformer.transformer_blocks
    assert kernels.is_compiled(model.transformer)
    assert all(isinstance(b.__dict__["forward"], kernels._CompiledForward) for b in blocks)
    with kernels.eager_blocks(model.transformer):
        assert not kernels.is_compiled(model.transformer)
    assert kernels.is_compiled(model.transformer)


def test_model_options_are_checked():
    with pytest.raises(InputError, match="weights must be one of"):
        backbone.ModelOptions(weights="int4")
    with pytest.raises(InputError, match="offload_budget_gb must be"):
        backbone.ModelOptions(offload_budget_gb=-1)
    assert not backbone.ModelOptions().enabled() and backbone.ModelOptions(compile=True).enabled()


# --- the host and the nodes ----------------------------------------------------------------------------------------


@pytest.fixture
def fake_comfy(monkeypatch):
    """A stand-in comfy.model_management whose unload_all_models calls free_memory through the module, like
    ComfyUI's; host.is_hosted() sees it."""
    from tests.workflow_defs import PACK_PACKAGE, load_pack

    load_pack()
    host = importlib.import_module(f"{PACK_PACKAGE}.nodes.host")

    mm = types.ModuleType("comfy.model_management")
    calls = []
    source = (
        "def free_memory(memory_required, device, keep_loaded=[]):\n"
        "    calls.append(('free_memory', memory_required))\n"
        "def unload_all_models():\n"
        "    free_memory(1e30, 'cuda')\n"
        "def get_free_memory(device):\n"
        "    return 10 * 2**30\n"
        "def get_torch_device():\n"
        "    return 'cuda'\n"
        "def soft_empty_cache():\n"
        "    calls.append(('soft_empty_cache',))\n"
    )
    exec(source, mm.__dict__)  # noqa: S102 -- the functions' globals are the module's, as in ComfyUI
    mm.calls = calls
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    monkeypatch.setattr(host, "_free_callbacks", [])
    return host, mm


def test_host_free_reaches_our_models_but_our_own_requests_do_not(fake_comfy):
    host, mm = fake_comfy
    released = []
    host.on_host_free(lambda: released.append(1))
    mm.unload_all_models()  # POST /free {"unload_models": true} runs this in ComfyUI's main loop
    assert released == [1]
    mm.free_memory(2**30, "cuda")  # ComfyUI loading a model that fits in what is free: ours stay
    assert released == [1]
    mm.free_memory(20 * 2**30, "cuda")  # ... that does not fit: ours are asked to go
    assert released == [1, 1]
    host.free_host_memory(20 * 2**30, "cuda")  # the pack making room for itself never releases itself
    host.free_host_memory(None)
    assert released == [1, 1]
    first = mm.free_memory
    host.on_host_free(released.append)
    assert mm.free_memory is first  # wrapped once


def test_model_loader_node_options(tiny_models, monkeypatch):
    from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

    load_pack()

    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tiny_models["root"]))
    cls = pack_node_classes()["AVCModelLoader"]
    spec = cls.INPUT_TYPES()
    assert list(spec["required"]) == ["ckpt_name", "dtype", "device"]
    assert list(spec["optional"]) == ["weights", "offload_budget_gb", "compile", "attention"]
    for name, (_, opts) in spec["optional"].items():
        assert len(opts["tooltip"]) > 80, name
    assert spec["optional"]["offload_budget_gb"][1]["default"] == 0.0
    assert spec["optional"]["attention"][0] == list(kernels.ATTENTION)
    assert [w.split()[0] for w in spec["optional"]["weights"][0]] == list(kernels.WEIGHTS)
    ckpt = tiny.TINY_CHECKPOINT.format(version="ltx2")
    (plain,) = cls().load(ckpt, "fp32", "cpu")
    assert not plain.options.enabled()
    (model,) = cls().load(ckpt, "fp32", "cpu", "fp8 (e4m3)", 2.0, False, "sdpa")
    assert model.options == type(model.options)(weights="fp8", offload_budget_gb=2.0, attention="sdpa")
    assert model is not plain and kernels.FP8 in {p.dtype for p in model.transformer.parameters()}
    assert cls().load(ckpt, "fp32", "cpu", "fp8 (e4m3)", 2.0, False, "sdpa")[0] is model  # cached, not reloaded
    model.component("vocoder")
    api = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.api")
    api.release()  # what ComfyUI's free memory calls (host.install_core_host -> on_host_free)
    assert model.loaded() == ["transformer"]
    assert api.clear_models() >= 2


def test_text_encoder_visits_the_device_only_while_encoding(tiny_models, monkeypatch):
    """A visiting encoder (offload budget on a GPU) puts exactly its own weights, Gemma and the connectors, on the
    device through the residency's one way there, for the call only; the result equals the resident encoder's."""
    from avcontrol_core import text_encoder

    model = backbone.load_model(tiny_models["checkpoint_ltx2"], "cpu", "fp32")
    resident = text_encoder.load_prompt_encoder(tiny_models["gemma"], model.path, model.config, "cpu", "fp32")
    expected = resident.encode(["a kite", ""])
    calls = []

    @contextlib.contextmanager
    def on_device(module, device, what, extra_bytes=0, hints=()):
        calls.append(("enter", list(module), device, what, [h.setting for h in hints]))
        yield module
        calls.append(("exit",))

    monkeypatch.setattr(text_encoder.RESIDENCY, "on_device", on_device)
    visiting = resident.visiting("meta")
    got = visiting.encode(["a kite", ""])
    assert calls == [("enter", [resident.gemma.model, resident.processor], torch.device("meta"), "encoding the prompt",
                      ["text encoder device"]), ("exit",)]
    assert torch.equal(got.video_context, expected.video_context)
    assert torch.equal(got.audio_context, expected.audio_context)

