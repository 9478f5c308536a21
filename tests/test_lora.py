"""Runtime LoRA stack: key layouts, runtime == fused, strength / zero invariants, non-destructive patching, refusals.

LoRA files are written on the fly into tmp_path in each supported key layout, targeting real modules of the tiny
LTX-2 transformer (square and non-square Linear layers, video, audio and audio->video paths)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from avcontrol_core import backbone, latents, sampling
from avcontrol_core.errors import InputError, PackWarning
from avcontrol_core.guidance import Guidance
from avcontrol_core.lora import LoraStack, apply_loras, lora_targets, plan, read_lora
from avcontrol_core.lora_keys import parse_key

W, H, FRAMES, FPS = 64, 64, 17, 24.0
RANK = 4
PER_BLOCK = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj",
             "audio_attn1.to_q", "audio_attn1.to_out.0", "audio_to_video_attn.to_q", "audio_to_video_attn.to_out.0")
TARGETS = ("patchify_proj",) + tuple(f"transformer_blocks.{b}.{m}" for b in (0, 1) for m in PER_BLOCK)

# layout name -> (key of one tensor given module path and role 'A' / 'B' / 'alpha')
DIFFUSERS_NAMES = {"patchify_proj": "proj_in"}
LAYOUTS = {
    "ltx_core": lambda m, r: f"diffusion_model.{m}.lora_{r}.weight" if r != "alpha" else None,
    "checkpoint_prefix": lambda m, r: f"model.diffusion_model.{m}.lora_{r}.weight" if r != "alpha" else None,
    "diffusers": lambda m, r: f"transformer.{_diffusers(m)}.lora_{r}.weight" if r != "alpha" else None,
    "bare_kohya_suffix": lambda m, r: f"{m}.{ {'A': 'lora_down.weight', 'B': 'lora_up.weight', 'alpha': 'alpha'}[r]}",
    "peft_default": lambda m, r: f"diffusion_model.{m}.lora_{r}.default.weight" if r != "alpha" else None,
    "peft_raw": lambda m, r: f"base_model.model.{m}.lora_{r}.weight" if r != "alpha" else None,
}


def _diffusers(module: str) -> str:
    top, dot, rest = module.partition(".")
    return DIFFUSERS_NAMES.get(top, top) + dot + rest


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm())


def lora_tensors(transformer, targets=TARGETS, rank=RANK, seed=0, b_gain=1.0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (A, B) per module, sized from the real layers; B scaled so the LoRA clearly moves the outputs."""
    g = torch.Generator().manual_seed(seed)
    layers = dict(transformer.named_modules())
    out = {}
    for name in targets:
        o, i = layers[name].weight.shape
        a = torch.randn(rank, i, generator=g) / i**0.5
        b = torch.randn(o, rank, generator=g) * (0.1 * b_gain / rank**0.5)
        out[name] = (a, b)
    return out


def write_lora(path: Path, tensors: dict, layout: str = "ltx_core", alpha: float | None = None,
               metadata: dict | None = None, extra: dict | None = None, dtype=torch.float32) -> Path:
    key = LAYOUTS[layout]
    sd = {}
    for module, (a, b) in tensors.items():
        sd[key(module, "A")] = a.to(dtype).contiguous()
        sd[key(module, "B")] = b.to(dtype).contiguous()
        if alpha is not None:
            alpha_key = key(module, "alpha")
            assert alpha_key is not None, f"layout {layout} has no alpha key"
            sd[alpha_key] = torch.tensor(float(alpha))
    sd.update(extra or {})
    save_file(sd, str(path), metadata=metadata)
    return path


def velocities(transformer, model, ctx, seed=0, sigma=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One transformer evaluation on seeded noise; at sigma 1 the x0 prediction is noise - velocity."""
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    v_state, a_state = latents.video_state(latent, True), latents.audio_state(latent)
    g = torch.Generator().manual_seed(seed)
    noise_v = torch.randn(v_state.latent.shape, generator=g)
    xv, xa = sampling.noised(v_state, noise_v, 1.0), sampling.noised(a_state, torch.randn(a_state.latent.shape, generator=g), 1.0)
    denoise = sampling.Denoiser(transformer, Guidance(), ctx, None, 1, model.dtype, torch.device("cpu"))
    v_x0, a_x0 = denoise(xv, xa, v_state, a_state, sigma)
    return (xv - v_x0) / sigma, (xa - a_x0) / sigma


def sample2(transformer, model, ctx) -> latents.AVLatent:
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    sigmas = sampling.schedule("ltx2", 2, latent.video[0, 0].numel())
    return sampling.sample(transformer, latent, ctx, None, Guidance(), sigmas, 0, causal_positions=True,
                           dtype=model.dtype)


def snapshot(transformer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in transformer.state_dict().items()}


def identities(transformer) -> dict[str, tuple[torch.nn.Parameter, int]]:
    return {n: (p, p.data_ptr()) for n, p in transformer.named_parameters()}


def assert_untouched(transformer, before: dict[str, torch.Tensor], ids: dict) -> None:
    after = transformer.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    # the very same Parameter objects over the very same storage: restored by reference, not copied back
    assert all(p is ids[n][0] and p.data_ptr() == ids[n][1] for n, p in transformer.named_parameters())
    assert not any(m._forward_hooks for m in transformer.modules())


@pytest.fixture(scope="module")
def tf(tiny_model):
    return tiny_model.transformer


@pytest.fixture(scope="module")
def ctx(tiny_model, make_context):
    return make_context(tiny_model, seed=1)


@pytest.fixture(scope="module")
def base(tf, tiny_model, ctx):
    return velocities(tf, tiny_model, ctx)


@pytest.fixture(scope="module")
def lora_path(tmp_path_factory, tf):
    return write_lora(tmp_path_factory.mktemp("lora") / "style.safetensors", lora_tensors(tf))


# --- reading: key layouts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_to_the_same_modules(tmp_path, tf, layout):
    tensors = lora_tensors(tf)
    alpha = RANK if LAYOUTS[layout]("x", "alpha") else None
    lora = read_lora(write_lora(tmp_path / f"{layout}.safetensors", tensors, layout, alpha=alpha))
    assert set(lora.modules) == set(TARGETS)
    assert lora.unknown_keys == ()
    for name, (a, b) in tensors.items():
        w = lora.modules[name]
        assert torch.equal(w.down, a) and torch.equal(w.up, b) and w.rank == RANK and w.scale == 1.0


def test_kohya_flat_names_resolve_against_the_model(tmp_path, tf):
    tensors = lora_tensors(tf)
    sd = {}
    for module, (a, b) in tensors.items():
        flat = "lora_unet_" + module.replace(".", "_")
        sd |= {f"{flat}.lora_down.weight": a, f"{flat}.lora_up.weight": b, f"{flat}.alpha": torch.tensor(8.0)}
    save_file(sd, str(tmp_path / "kohya.safetensors"))
    kohya = read_lora(tmp_path / "kohya.safetensors")
    dotted = read_lora(write_lora(tmp_path / "dotted.safetensors", tensors, "bare_kohya_suffix", alpha=8.0))
    kp, _ = plan(tf, LoraStack().add(kohya))
    dp, _ = plan(tf, LoraStack().add(dotted))
    assert set(kp) == set(dp) == set(TARGETS)
    for name in TARGETS:
        (kw, kc, _), (dw, dc, _) = kp[name][0], dp[name][0]
        assert torch.equal(kw.down, dw.down) and torch.equal(kw.up, dw.up) and kc == dc == 2.0  # alpha 8 / rank 4


def test_parse_key_examples():
    p = parse_key("diffusion_model.transformer_blocks.3.attn1.to_q.lora_A.weight")
    assert (p.module, p.role, p.flat) == ("transformer_blocks.3.attn1.to_q", "A", False)
    assert parse_key("transformer.time_embed.linear.lora_B.weight").module == "adaln_single.linear"
    assert parse_key("transformer.audio_proj_in.lora_B.weight").module == "audio_patchify_proj"
    assert parse_key("diffusion_model.transformer_blocks.0.attn1.to_q.diff_b") is None
    assert parse_key("text_encoders.gemma.layers.0.q_proj.lora_A.weight") is None
    assert parse_key("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight") is None


def test_reference_downscale_factor_from_metadata(tmp_path, tf):
    tensors = lora_tensors(tf, TARGETS[:2])
    plain = read_lora(write_lora(tmp_path / "plain.safetensors", tensors))
    ic = read_lora(write_lora(tmp_path / "ic.safetensors", tensors, metadata={"reference_downscale_factor": "2"}))
    assert plain.reference_downscale_factor == 1 and ic.reference_downscale_factor == 2
    assert ic.metadata["reference_downscale_factor"] == "2"
    assert LoraStack().add(plain).add(ic).reference_downscale_factor == 2
    other = read_lora(write_lora(tmp_path / "ic4.safetensors", tensors, metadata={"reference_downscale_factor": "4"}))
    with pytest.raises(InputError, match="conflicting"):
        LoraStack().add(ic).add(other).reference_downscale_factor  # noqa: B018
    assert LoraStack().add(ic).add(other, 0.0).reference_downscale_factor == 2  # a disabled LoRA does not count
    with pytest.raises(InputError, match="bad.safetensors.*positive integer"):
        read_lora(write_lora(tmp_path / "bad.safetensors", tensors, metadata={"reference_downscale_factor": "x"}))


def test_pickled_and_missing_files_are_refused(tmp_path, lora_path):
    for name in ("style.ckpt", "style.pt", "style.bin"):
        (tmp_path / name).write_bytes(lora_path.read_bytes())
        with pytest.raises(InputError, match=r"\.safetensors") as err:
            read_lora(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(InputError, match="not found"):
        read_lora(tmp_path / "nope.safetensors")


def test_a_file_without_lora_weights_is_refused(tmp_path):
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.weight": torch.zeros(4, 4)},
              str(tmp_path / "full.safetensors"))
    with pytest.raises(InputError, match="full.safetensors holds no LoRA weights"):
        read_lora(tmp_path / "full.safetensors")


# --- runtime == fused -------------------------------------------------------------------------------------------


def test_runtime_equals_fused_fp32(tf, tiny_model, ctx, base, lora_path):
    stack = LoraStack().add(read_lora(lora_path), 0.8)
    with apply_loras(tf, stack) as report:
        runtime = velocities(tf, tiny_model, ctx)
    with apply_loras(tf, stack, fuse=True):
        fused = velocities(tf, tiny_model, ctx)
    assert report.applied == {"style.safetensors": len(TARGETS)} and report.clean
    for r, f, b in zip(runtime, fused, base):
        assert rel(r, b) > 1e-2  # the LoRA really changes the output
        torch.testing.assert_close(r, f, atol=1e-5, rtol=1e-5)
    print(f"\nfp32 runtime vs fused: max abs {max(float((r - f).abs().max()) for r, f in zip(runtime, fused)):.2e}, "
          f"LoRA effect rel {rel(runtime[0], base[0]):.3f} (video) {rel(runtime[1], base[1]):.3f} (audio)")


def test_runtime_equals_fused_through_the_sampler(tf, tiny_model, ctx, lora_path):
    stack = LoraStack().add(read_lora(lora_path), 1.0)
    plain = sample2(tf, tiny_model, ctx)
    with apply_loras(tf, stack):
        runtime = sample2(tf, tiny_model, ctx)
    with apply_loras(tf, stack, fuse=True):
        fused = sample2(tf, tiny_model, ctx)
    assert rel(runtime.video, plain.video) > 1e-3
    torch.testing.assert_close(runtime.video, fused.video, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runtime.audio, fused.audio, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_model_bf16(tiny_models):
    return backbone.load_model(tiny_models["checkpoint_ltx2"], device="cpu", dtype="bf16")


def test_runtime_equals_fused_bf16(tiny_model_bf16, tiny_model, ctx, lora_path, tmp_path):
    tf16 = tiny_model_bf16.transformer
    lora16 = read_lora(write_lora(tmp_path / "bf16.safetensors", {
        k: (w.down, w.up) for k, w in read_lora(lora_path).modules.items()}, dtype=torch.bfloat16))
    stack = LoraStack().add(lora16, 0.8)
    with apply_loras(tf16, stack):
        runtime = velocities(tf16, tiny_model_bf16, ctx)
    with apply_loras(tf16, stack, fuse=True):
        fused = velocities(tf16, tiny_model_bf16, ctx)
    with apply_loras(tiny_model.transformer, stack):  # the same bf16 LoRA on the fp32 model: the reference
        ref = velocities(tiny_model.transformer, tiny_model, ctx)
    base16 = velocities(tf16, tiny_model_bf16, ctx)
    errs = {name: (rel(r, f), rel(r, x), rel(f, x), rel(r, b))
            for name, r, f, x, b in zip(("video", "audio"), runtime, fused, ref, base16)}
    print("\nbf16 rel. errors (runtime-fused, runtime-fp32ref, fused-fp32ref, LoRA effect): "
          + "; ".join(f"{n} " + " ".join(f"{e:.4f}" for e in v) for n, v in errs.items()))
    for rf, rx, fx, effect in errs.values():
        assert rf < 0.02  # within bf16 tolerance: a few ulps of bf16 (2^-8 = 0.0039) compounded over 2 blocks
        assert rf < 3 * max(rx, fx) + 1e-3  # no further from each other than bf16 is from fp32
        assert effect > 5 * rf  # the LoRA's effect is far above the runtime/fused difference


# --- invariants ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fuse", [False, True])
def test_zero_b_equals_no_lora_exactly(tmp_path, tf, tiny_model, ctx, base, fuse):
    tensors = {k: (a, torch.zeros_like(b)) for k, (a, b) in lora_tensors(tf).items()}
    stack = LoraStack().add(read_lora(write_lora(tmp_path / "zero.safetensors", tensors)), 1.0)
    with apply_loras(tf, stack, fuse=fuse):
        out = velocities(tf, tiny_model, ctx)
    assert all(torch.equal(o, b) for o, b in zip(out, base))


@pytest.mark.parametrize("fuse", [False, True])
def test_strength_zero_equals_no_lora_exactly(tf, tiny_model, ctx, base, lora_path, fuse):
    ids = identities(tf)
    stack = LoraStack().add(read_lora(lora_path), 0.0)
    assert not stack.enabled() and len(stack) == 1
    with apply_loras(tf, stack, fuse=fuse) as report:
        assert not any(m._forward_hooks for m in tf.modules())
        assert all(p.data_ptr() == ids[n][1] for n, p in tf.named_parameters())
        out = velocities(tf, tiny_model, ctx)
    assert report.applied == {}
    assert all(torch.equal(o, b) for o, b in zip(out, base))


@pytest.mark.parametrize("fuse", [False, True])
def test_strength_two_equals_b_doubled_in_the_file(tmp_path, tf, tiny_model, ctx, fuse):
    tensors = lora_tensors(tf, seed=3)
    single = read_lora(write_lora(tmp_path / "single.safetensors", tensors))
    doubled = read_lora(write_lora(tmp_path / "doubled.safetensors", {k: (a, 2 * b) for k, (a, b) in tensors.items()}))
    with apply_loras(tf, LoraStack().add(single, 2.0), fuse=fuse):
        twice = velocities(tf, tiny_model, ctx)
    with apply_loras(tf, LoraStack().add(doubled, 1.0), fuse=fuse):
        stored = velocities(tf, tiny_model, ctx)
    assert all(torch.equal(t, s) for t, s in zip(twice, stored))


def test_alpha_scales_like_strength(tmp_path, tf, tiny_model, ctx):
    tensors = lora_tensors(tf, seed=4)
    halved = read_lora(write_lora(tmp_path / "alpha.safetensors", tensors, "bare_kohya_suffix", alpha=RANK / 2))
    assert all(w.scale == 0.5 for w in halved.modules.values())
    plain = read_lora(write_lora(tmp_path / "plain.safetensors", tensors))
    with apply_loras(tf, LoraStack().add(halved, 1.0)):
        by_alpha = velocities(tf, tiny_model, ctx)
    with apply_loras(tf, LoraStack().add(plain, 0.5)):
        by_strength = velocities(tf, tiny_model, ctx)
    assert all(torch.equal(a, s) for a, s in zip(by_alpha, by_strength))


@pytest.mark.parametrize("fuse", [False, True])
def test_two_loras_add(tmp_path, tf, tiny_model, ctx, base, fuse):
    """Two LoRAs (overlapping on some modules) equal one file holding both, ranks concatenated."""
    t1 = lora_tensors(tf, TARGETS[:12], seed=5)
    t2 = lora_tensors(tf, TARGETS[6:], rank=2, seed=6)
    both = {}
    for name in TARGETS:
        pairs = [(a, s * b) for t, s in ((t1, 0.7), (t2, -1.5)) if name in t for a, b in [t[name]]]
        both[name] = (torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs], dim=1))
    stack = LoraStack().add(read_lora(write_lora(tmp_path / "one.safetensors", t1)), 0.7)
    stack = stack.add(read_lora(write_lora(tmp_path / "two.safetensors", t2)), -1.5)
    combined = LoraStack().add(read_lora(write_lora(tmp_path / "both.safetensors", both)), 1.0)
    with apply_loras(tf, stack, fuse=fuse) as report:
        stacked = velocities(tf, tiny_model, ctx)
    with apply_loras(tf, combined, fuse=fuse):
        by_hand = velocities(tf, tiny_model, ctx)
    assert report.applied == {"one.safetensors": 12, "two.safetensors": len(TARGETS) - 6}
    for s, h, b in zip(stacked, by_hand, base):
        torch.testing.assert_close(s, h, atol=1e-5, rtol=1e-5)
        assert rel(s, b) > 1e-2


def test_stacks_are_immutable_and_compose(lora_path):
    lora = read_lora(lora_path)
    empty = LoraStack()
    one = empty.add(lora, 0.5)
    two = one.add(lora, 1.0)
    assert len(empty) == 0 and len(one) == 1 and len(two) == 2 and not empty.enabled()
    assert [s for _, s in two.entries] == [0.5, 1.0]
    with pytest.raises(InputError, match="strength"):
        one.add(lora, float("nan"))


@pytest.mark.parametrize("fuse, backup", [(False, None), (True, None), (True, "cpu")])
def test_model_is_bit_identical_after_exit(tf, tiny_model, ctx, base, lora_path, fuse, backup):
    before, ids = snapshot(tf), identities(tf)
    q, q2 = "transformer_blocks.0.attn1.to_q.weight", "transformer_blocks.0.attn2.to_q.weight"
    with apply_loras(tf, LoraStack().add(read_lora(lora_path), 1.3), fuse=fuse, backup_device=backup):
        changed = velocities(tf, tiny_model, ctx)
        weights = dict(tf.named_parameters())
        assert weights[q] is ids[q][0]  # fused or not, the Parameter objects stay the model's own
        assert (weights[q].data_ptr() != ids[q][1]) == fuse  # fused: new data on touched layers only
        assert weights[q2].data_ptr() == ids[q2][1]
        assert bool(tf.transformer_blocks[0].attn1.to_q._forward_hooks) != fuse
    assert rel(changed[0], base[0]) > 1e-2
    assert_untouched(tf, before, ids)
    assert all(torch.equal(o, b) for o, b in zip(velocities(tf, tiny_model, ctx), base))


@pytest.mark.parametrize("fuse", [False, True])
def test_model_is_restored_when_the_block_raises(tf, lora_path, fuse):
    before, ids = snapshot(tf), identities(tf)
    with pytest.raises(RuntimeError, match="cancelled"):
        with apply_loras(tf, LoraStack().add(read_lora(lora_path)), fuse=fuse):
            raise RuntimeError("cancelled")
    assert_untouched(tf, before, ids)


# --- reports and refusals -----------------------------------------------------------------------------------------


def test_unknown_keys_and_unmatched_modules_are_reported(tmp_path, tf, tiny_model, ctx, base):
    tensors = lora_tensors(tf, TARGETS[:4])
    extra = {
        "diffusion_model.transformer_blocks.0.attn1.to_q.diff_b": torch.zeros(64),
        "diffusion_model.transformer_blocks.0.attn1.to_q.dora_scale": torch.ones(1, 64),
        "text_encoders.gemma.layers.0.q_proj.lora_A.weight": torch.zeros(4, 8),
        "diffusion_model.transformer_blocks.1.attn2.to_k.lora_A.weight": torch.zeros(4, 64),  # half a pair
        "diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight": torch.zeros(4, 64),  # no block 7 here
        "diffusion_model.transformer_blocks.7.attn1.to_q.lora_B.weight": torch.zeros(64, 4),
    }
    lora = read_lora(write_lora(tmp_path / "odd.safetensors", tensors, extra=extra))
    assert set(lora.unknown_keys) == set(list(extra)[:4])
    with pytest.warns(PackWarning) as shown, apply_loras(tf, LoraStack().add(lora)) as report:
        out = velocities(tf, tiny_model, ctx)
    said = [str(w.message) for w in shown if issubclass(w.category, PackWarning)]
    assert any("1 of its 5 modules are not in this model" in m and "other layout" in m for m in said), said
    assert any("4 keys were not understood" in m for m in said), said
    assert report.applied == {"odd.safetensors": 4} and not report.clean
    assert set(report.unknown_keys["odd.safetensors"]) == set(list(extra)[:4])
    assert report.unmatched_modules["odd.safetensors"] == ("transformer_blocks.7.attn1.to_q",)
    assert "transformer_blocks.7.attn1.to_q" in report.summary() and "diff_b" in report.summary()
    assert rel(out[0], base[0]) > 1e-3  # the understood part is applied


def test_wrong_shape_is_refused_naming_file_module_and_shapes(tmp_path, tf):
    before, ids = snapshot(tf), identities(tf)
    tensors = lora_tensors(tf)
    tensors["transformer_blocks.0.attn1.to_q"] = (torch.zeros(RANK, 48), torch.zeros(64, RANK))
    good = read_lora(write_lora(tmp_path / "good.safetensors", lora_tensors(tf, TARGETS[:3])))
    bad = read_lora(write_lora(tmp_path / "other_version.safetensors", tensors))
    for fuse in (False, True):
        with pytest.raises(InputError) as err:
            with apply_loras(tf, LoraStack().add(good).add(bad), fuse=fuse):
                pass
        msg = str(err.value)
        for part in ("other_version.safetensors", "transformer_blocks.0.attn1.to_q", "(64, 64)", "(4, 48)",
                     "another model version"):
            assert part in msg, msg
        assert_untouched(tf, before, ids)  # refused before anything was patched, even the good LoRA


def test_a_lora_for_another_model_is_refused(tmp_path, tf):
    sd = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, 64),
          "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(192, 4)}
    save_file(sd, str(tmp_path / "flux.safetensors"))
    with pytest.raises(InputError, match="flux.safetensors: none of its 1 modules exist"):
        with apply_loras(tf, LoraStack().add(read_lora(tmp_path / "flux.safetensors"))):
            pass


def test_lora_targets_are_the_linear_layers(tf):
    targets = lora_targets(tf)
    assert set(TARGETS) <= targets
    assert "transformer_blocks.0.attn1.q_norm" not in targets
    assert all(isinstance(tf.get_submodule(n), torch.nn.Linear) for n in targets)


# --- speed --------------------------------------------------------------------------------------------------------


def test_runtime_vs_fused_step_time(tf, tiny_model, ctx, lora_path):
    """Measured and printed, not asserted. The hooks add two small matmuls per touched layer (19 here). Timed as CPU
    time of one thread (wall-clock on a shared machine swings by 2x), modes interleaved, best of several rounds."""
    stack = LoraStack().add(read_lora(lora_path), 1.0)
    modes = {"plain": None, "runtime": False, "fused": True}
    best = dict.fromkeys(modes, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(5):
            for name, fuse in modes.items():
                with contextlib.ExitStack() as patched:
                    if fuse is not None:
                        patched.enter_context(apply_loras(tf, stack, fuse=fuse))
                    velocities(tf, tiny_model, ctx)  # warm-up
                    t = time.thread_time()
                    for _ in range(3):
                        velocities(tf, tiny_model, ctx)
                    best[name] = min(best[name], (time.thread_time() - t) / 3)
    finally:
        torch.set_num_threads(threads)
    print("\nstep CPU time on the tiny model, 1 thread (best of 5): "
          + ", ".join(f"{n} {v * 1e3:.1f} ms" for n, v in best.items())
          + f"; runtime/fused {best['runtime'] / best['fused']:.2f}, fused/plain {best['fused'] / best['plain']:.2f}")
    assert all(0 < v < float("inf") for v in best.values())


# --- the absolute oracle: W + strength * alpha / rank * B @ A, computed here by hand -------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("fuse", [False, True], ids=["runtime", "fused"])
def test_each_layout_applies_w_plus_strength_alpha_over_rank_b_a(tmp_path, tf, layout, fuse):
    """Every Linear a LoRA names computes x @ (W + s * alpha/rank * B @ A)^T + bias, with the weight of the file
    layout read; a flipped sign, a lost alpha or a swapped A / B turns this red (the runtime hook and the fusion
    are checked each against the hand-computed layer, not against each other)."""
    targets = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.audio_to_video_attn.to_out.0", "patchify_proj")
    tensors = lora_tensors(tf, targets, seed=3, b_gain=4.0)
    alpha = 2.0 if LAYOUTS[layout]("x", "alpha") else None  # kohya files carry alpha; the others mean alpha = rank
    scale = (alpha if alpha is not None else RANK) / RANK
    strength = 0.7
    lora = read_lora(write_lora(tmp_path / f"{layout}.safetensors", tensors, layout, alpha=alpha))
    layers = dict(tf.named_modules())
    x = {n: torch.randn(5, layers[n].in_features, generator=torch.Generator().manual_seed(7)) for n in targets}
    expected = {}
    for name, (a, b) in tensors.items():
        w = layers[name].weight.detach().double() + strength * scale * (b.double() @ a.double())
        bias = layers[name].bias.detach().double() if layers[name].bias is not None else 0.0
        expected[name] = x[name].double() @ w.T + bias
    with apply_loras(tf, LoraStack().add(lora, strength), fuse=fuse), torch.no_grad():
        for name in targets:
            got = layers[name](x[name]).double()
            assert (got - expected[name]).abs().max() < 1e-5 * (1 + expected[name].abs().max()), (layout, name)
    with torch.no_grad():  # and gone after the block
        plain = layers[targets[0]](x[targets[0]]).double()
    assert (plain - expected[targets[0]]).abs().max() > 1e-3
