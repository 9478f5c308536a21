"""Every registered run patch, on the real tiny model: it changes the forward while active, and afterwards the model
is bitwise what it was (state dict, outputs), with no hook and no instance attribute left behind. A patch added to
the registry without an entry here fails the first test."""

from __future__ import annotations

import copy

import pytest
import torch
from ltx_core.model.transformer.attention import PytorchAttention

from avcontrol_core import latents, patches, sampling, tiny
from avcontrol_core.guidance import Guidance
from avcontrol_core.items import ReferenceAudio, ReferenceVideo, with_weight
from avcontrol_core.lora import LoraStack, read_lora

W, H, FRAMES, FPS = 64, 64, 17, 24.0


class ScaledAttention:
    """SDPA with the values halved: an attention kernel whose output visibly differs."""

    def __call__(self, q, k, v, heads, mask=None):
        return PytorchAttention()(q, k, 0.5 * v, heads, mask)


def factories(tmp_path):
    lora = read_lora(tiny.write_tiny_lora(tmp_path / "lora.safetensors", downscale=1))
    return {
        "LoraPatch": [patches.LoraPatch(LoraStack().add(lora, 1.0)), patches.LoraPatch(LoraStack().add(lora, 1.0),
                                                                                        fuse=True)],
        "AttentionPatch": [patches.AttentionPatch(ScaledAttention())],
        "CrossModalWeightPatch": [patches.CrossModalWeightPatch()],
    }


def test_every_registered_patch_is_covered(tmp_path):
    assert set(factories(tmp_path)) == set(patches.REGISTRY)


def snapshot(model: torch.nn.Module):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    attrs = {name: (sorted(m.__dict__), {k: id(v) for k, v in m.__dict__.items() if not k.startswith("_")})
             for name, m in model.named_modules()}
    return hooks, attrs


@pytest.fixture(scope="module")
def run_context(tiny_model):
    """Both streams with a weighted reference (so the cross-modal patch has something to install)."""
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    g = torch.Generator().manual_seed(0)
    video = with_weight(ReferenceVideo(torch.randn(1, 128, 3, 2, 2, generator=g)), torch.full((12,), 0.3))
    audio = with_weight(ReferenceAudio(torch.randn(1, 8, 18, 16, generator=g)), torch.full((18,), 0.3))
    v, a = sampling.initial_states(latent, True, torch.device("cpu"), (video,), (audio,))
    return latent, (video,), (audio,), patches.RunContext(v, a, torch.float32, torch.device("cpu"))


def forward(model, ctx, run_context, active=()):
    latent, video, audio, _ = run_context
    return sampling.sample(model.transformer, latent, ctx, None, Guidance(), torch.tensor([1.0, 0.5, 0.0]), 0,
                           causal_positions=True, dtype=torch.float32, video_items=video, audio_items=audio,
                           patches=active)


def test_each_patch_acts_and_leaves_the_model_exactly_as_it_was(tiny_model, make_context, run_context, tmp_path):
    model = tiny_model.transformer
    ctx = make_context(tiny_model, seed=3)
    before_state = copy.deepcopy(model.state_dict())
    before_hooks, before_attrs = snapshot(model)
    before = forward(tiny_model, ctx, run_context)
    for name, instances in factories(tmp_path).items():
        for patch in instances:
            during = forward(tiny_model, ctx, run_context, (patch,))
            assert not torch.equal(during.video, before.video) or not torch.equal(during.audio, before.audio), name
            after = forward(tiny_model, ctx, run_context)
            assert torch.equal(after.video, before.video) and torch.equal(after.audio, before.audio), name
            state = model.state_dict()
            assert all(torch.equal(state[k], v) for k, v in before_state.items()), name
            assert snapshot(model) == (before_hooks, before_attrs), name


def test_patches_compose_and_unwind_in_reverse(tiny_model, make_context, run_context, tmp_path):
    """All of them at once: the result differs from each alone, and leaving them restores the model."""
    model = tiny_model.transformer
    ctx = make_context(tiny_model, seed=3)
    before = forward(tiny_model, ctx, run_context)
    snap = snapshot(model)
    every = [p for ps in factories(tmp_path).values() for p in ps[:1]]
    together = forward(tiny_model, ctx, run_context, every)
    for p in every:
        alone = forward(tiny_model, ctx, run_context, (p,))
        assert not torch.equal(alone.video, together.video)
    assert snapshot(model) == snap
    after = forward(tiny_model, ctx, run_context)
    assert torch.equal(after.video, before.video) and torch.equal(after.audio, before.audio)


def test_a_patch_that_fails_inside_still_unwinds(tiny_model, run_context, tmp_path):
    model = tiny_model.transformer
    snap = snapshot(model)
    every = [p for ps in factories(tmp_path).values() for p in ps]
    with pytest.raises(RuntimeError, match="boom"):
        with patches.apply_patches(model, run_context[3], every):
            raise RuntimeError("boom")
    assert snapshot(model) == snap
