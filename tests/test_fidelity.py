"""Numerics that must follow Lightricks' current LTX-2 source rather than the PyPI ltx-core 1.0.0 (see DESIGN.md):
fp32 RoPE positions, per-token audio<->video cross-attention modulation, causal positions from the config.

These run on the tiny fixtures, whose weights have spread (tiny.spread_init_); the last tests check that they do,
since degenerate weights (uniform attention, zero AdaLN tables) would let every bug here pass unseen."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import pytest
import torch
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer.attention import Attention
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor
from ltx_core.types import AudioLatentShape, VideoLatentShape
from safetensors.torch import load_file, save_file

from avcontrol_core import backbone, checkpoint, fidelity, latents, sampling
from avcontrol_core.conditioning import PromptPair
from avcontrol_core.guidance import Guidance, StreamGuidance
from avcontrol_core.pipeline import run_sampler


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm())


@contextlib.contextmanager
def captured_calls(module: torch.nn.Module):
    """Record the keyword arguments (video=, audio=, perturbations=) of every forward call."""
    calls: list[dict] = []
    handle = module.register_forward_pre_hook(lambda m, args, kwargs: calls.append(dict(kwargs)), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def forward(transformer, video: Modality, audio: Modality, perturbations=None):
    with torch.inference_mode():
        return transformer(video=video, audio=audio,
                           perturbations=perturbations or BatchedPerturbationConfig.empty(video.latent.shape[0]))


def sampler_inputs(model, make_context, latent, sigmas=(1.0, 0.0), guidance=None, negative=False, seed=0):
    """The Modality pair our sampler hands the transformer on its first step."""
    ctx = make_context(model, seed=1)
    neg = make_context(model, seed=2) if negative else None
    with captured_calls(model.transformer) as calls:
        sampling.sample(model.transformer, latent, ctx, neg, guidance or Guidance(), torch.tensor(sigmas), seed,
                        causal_positions=model.causal_temporal_positions, dtype=model.dtype)
    return calls[0]


def unaligned_transformer(model) -> torch.nn.Module:
    """The same weights with ltx-core 1.0.0's own argument preprocessors (no alignment installed)."""
    module = backbone.build_component(model.path, model.config, "transformer", "cpu", model.dtype)
    assert type(module.video_args_preprocessor) is MultiModalTransformerArgsPreprocessor
    return module


@pytest.fixture(scope="module", params=["ltx2", "ltx2.3"])
def model(request):
    return request.getfixturevalue("tiny_model" if request.param == "ltx2" else "tiny_model_23")


@pytest.fixture(scope="module")
def unaligned(model):
    return unaligned_transformer(model)


def test_loaded_model_is_aligned(tiny_model):
    tr = tiny_model.transformer
    for name in ("video_args_preprocessor", "audio_args_preprocessor"):
        pre = getattr(tr, name)
        assert isinstance(pre, fidelity.AlignedCrossModalPreprocessor)
        # it drives the model's own modules, not copies
        proj = tr.patchify_proj if name.startswith("video") else tr.audio_patchify_proj
        assert pre.simple_preprocessor.patchify_proj is proj
    before = tr.video_args_preprocessor
    fidelity.align_with_current_source(tr)
    assert tr.video_args_preprocessor is before  # idempotent


# --- (a) RoPE positions stay float32 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_bf16(tiny_models):
    return backbone.load_model(tiny_models["checkpoint_ltx2"], dtype="bf16")


def test_bf16_model_reads_fp32_positions(tiny_model_bf16, tiny_model, make_context):
    """ltx-core 1.0.0's latent tools cast positions to the latent dtype; ours stay fp32. On a 5 s clip the bf16 cast
    moves the output of this 2-layer model by several percent, far above bf16's own rounding."""
    lat = latents.empty_latent(64, 64, 121, 24.0)
    call = sampler_inputs(tiny_model_bf16, make_context, lat)
    video, audio = call["video"], call["audio"]
    assert video.latent.dtype == torch.bfloat16 and audio.latent.dtype == torch.bfloat16
    assert video.positions.dtype == torch.float32 and audio.positions.dtype == torch.float32

    fresh_v = latents.video_positions(VideoLatentShape.from_torch_shape(lat.video.shape), 24.0, causal=True)
    fresh_a = latents.audio_positions(AudioLatentShape.from_torch_shape(lat.audio.shape))
    assert torch.equal(video.positions, fresh_v) and torch.equal(audio.positions, fresh_a)

    tr = tiny_model_bf16.transformer
    ours = forward(tr, video, audio)
    fp32_positions = forward(tr, replace(video, positions=fresh_v.float()), replace(audio, positions=fresh_a.float()))
    bf16_positions = forward(tr, replace(video, positions=fresh_v.to(torch.bfloat16)),
                             replace(audio, positions=fresh_a.to(torch.bfloat16)))
    for o, f, b in zip(ours, fp32_positions, bf16_positions):
        assert torch.equal(o, f)
        assert rel(b, o) > 0.02  # measured: video 0.050, audio 0.074

    # and the fp32 positions are the right ones: the same inputs through the fp32 model
    truth = forward(tiny_model.transformer, replace(video, latent=video.latent.float(), context=video.context.float()),
                    replace(audio, latent=audio.latent.float(), context=audio.context.float()))
    for o, b, t in zip(ours, bf16_positions, truth):
        assert rel(o, t) < 0.5 * rel(b, t)  # measured: ~0.008 (bf16 weights) vs ~0.05


# --- (b) audio<->video cross-attention modulation -------------------------------------------------------------


SIGMA_V, SIGMA_A = 0.7, 0.4


def mixed_timestep_inputs(model, make_context, seed: int = 0) -> tuple[Modality, Modality, int]:
    """Video: first latent frame at t=0 (image-to-video), the rest at SIGMA_V; audio at SIGMA_A everywhere.
    The streams' sigmas differ so that 'own timesteps' and 'other stream's sigma' are told apart."""
    lat = latents.empty_latent(64, 64, 17, 24.0)
    v_state, a_state = latents.video_state(lat, causal=True), latents.audio_state(lat)
    g = torch.Generator().manual_seed(seed)
    tv, ta = v_state.latent.shape[1], a_state.latent.shape[1]
    first = lat.video.shape[3] * lat.video.shape[4]  # tokens of latent frame 0
    t_video = torch.full((1, tv), SIGMA_V)
    t_video[:, :first] = 0.0
    ctx = make_context(model, seed=seed)
    video = Modality(latent=torch.randn(1, tv, 128, generator=g), sigma=torch.tensor([SIGMA_V]), timesteps=t_video,
                     positions=v_state.positions, context=ctx.video)
    audio = Modality(latent=torch.randn(1, ta, 128, generator=g), sigma=torch.tensor([SIGMA_A]),
                     timesteps=torch.full((1, ta), SIGMA_A), positions=a_state.positions, context=ctx.audio)
    return video, audio, first


def adaln(module, t: float) -> torch.Tensor:
    with torch.inference_mode():
        return module(torch.tensor([t]), hidden_dtype=torch.float32)[0][0]


def test_cross_modulation_uses_own_timesteps_and_other_sigma(model, unaligned, make_context):
    tr = model.transformer
    mult, av_mult = tr.timestep_scale_multiplier, tr.av_ca_timestep_scale_multiplier
    video, audio, first = mixed_timestep_inputs(model, make_context)
    with torch.inference_mode():
        v_args = tr.video_args_preprocessor.prepare(video, audio)
        a_args = tr.audio_args_preprocessor.prepare(audio, video)

    # video: scale/shift per token from its own timesteps (0 on frame 0, SIGMA_V elsewhere) ...
    video_ss = tr.av_ca_video_scale_shift_adaln_single
    at0, at_v = adaln(video_ss, 0.0), adaln(video_ss, SIGMA_V * mult)
    assert rel(at0, at_v) > 0.1  # the two modulations really differ
    expected = at_v.expand(video.latent.shape[1], -1).clone()
    expected[:first] = at0
    torch.testing.assert_close(v_args.cross_scale_shift_timestep, expected[None], rtol=1e-5, atol=1e-6)
    # ... and the gate from the audio stream's sigma
    gate_expected = adaln(tr.av_ca_a2v_gate_adaln_single, SIGMA_A * av_mult)
    assert rel(gate_expected, adaln(tr.av_ca_a2v_gate_adaln_single, SIGMA_V * av_mult)) > 0.1
    torch.testing.assert_close(v_args.cross_gate_timestep, gate_expected.view(1, 1, -1), rtol=1e-5, atol=1e-6)

    # audio: scale/shift from its own SIGMA_A, gate from the video stream's sigma
    a_ss = adaln(tr.av_ca_audio_scale_shift_adaln_single, SIGMA_A * mult)
    got = a_args.cross_scale_shift_timestep
    torch.testing.assert_close(got, a_ss.view(1, 1, -1).expand_as(got), rtol=1e-5, atol=1e-6)
    v2a_gate = adaln(tr.av_ca_v2a_gate_adaln_single, SIGMA_V * av_mult)
    torch.testing.assert_close(a_args.cross_gate_timestep, v2a_gate.view(1, 1, -1), rtol=1e-5, atol=1e-6)

    # ltx-core 1.0.0 modulated video with the audio sigma for every token (what the alignment corrects)
    with torch.inference_mode():
        old = unaligned.video_args_preprocessor.prepare(video, audio)
    torch.testing.assert_close(old.cross_scale_shift_timestep[0, 0],
                               adaln(tr.av_ca_video_scale_shift_adaln_single, SIGMA_A * mult), rtol=1e-5, atol=1e-6)
    # everything else the preprocessor prepares is unchanged
    same = ("x", "context", "timesteps", "embedded_timestep", "positional_embeddings", "cross_positional_embeddings")
    for name in same:
        a, b = getattr(v_args, name), getattr(old, name)
        if isinstance(a, tuple):
            assert all(torch.equal(x, y) for x, y in zip(a, b)), name
        else:
            assert torch.equal(a, b), name


def test_image_to_video_output_differs_from_ltx_core_1_0(model, unaligned, make_context):
    """In the sampler's image-to-video state (frame 0 at t=0) the corrected modulation changes both streams."""
    lat = latents.empty_latent(64, 64, 17, 24.0)
    image = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    call = sampler_inputs(model, make_context, latents.condition_first_frame(lat, image, 1.0), sigmas=(0.7, 0.0))
    video, audio = call["video"], call["audio"]
    assert float(video.timesteps[0, :4].abs().max()) == 0.0 and float(video.timesteps[0, 4:].min()) > 0.6
    new, old = forward(model.transformer, video, audio), forward(unaligned, video, audio)
    assert rel(new[0], old[0]) > 0.005  # measured: ltx2 0.015, ltx2.3 0.026
    assert rel(new[1], old[1]) > 0.005  # measured: ltx2 0.033, ltx2.3 0.061
    # the conditioned frame is where the modulation changed
    assert rel(new[0][:, :4], old[0][:, :4]) > rel(new[0][:, 4:], old[0][:, 4:])


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_shared_timestep_output_identical_to_ltx_core_1_0(model, unaligned, make_context, cfg):
    """Text-to-video: every token at the step's sigma -> bit-identical to the unpatched preprocessor
    (cfg=3 batches two passes, so the batched case is covered too)."""
    lat = latents.empty_latent(64, 64, 17, 24.0)
    guidance = Guidance(video=StreamGuidance(cfg=cfg), audio=StreamGuidance(cfg=cfg))
    call = sampler_inputs(model, make_context, lat, sigmas=(0.7, 0.0), guidance=guidance, negative=True)
    video, audio = call["video"], call["audio"]
    assert video.latent.shape[0] == (2 if cfg != 1 else 1)
    new = forward(model.transformer, video, audio, call["perturbations"])
    old = forward(unaligned, video, audio, call["perturbations"])
    assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])


# --- (c) causal temporal positions follow the checkpoint ------------------------------------------------------


@pytest.fixture(scope="module")
def non_causal_model(tiny_models, tmp_path_factory):
    src = tiny_models["checkpoint_ltx2"]
    config = checkpoint.read_config(src)
    config["transformer"]["causal_temporal_positioning"] = False
    dst = tmp_path_factory.mktemp("noncausal") / "tiny-noncausal.safetensors"
    save_file(load_file(str(src)), str(dst), metadata={"config": json.dumps(config)})
    return backbone.load_model(dst, dtype="fp32")


def test_causal_positions_follow_checkpoint_config(tiny_model, non_causal_model, make_context):
    assert tiny_model.causal_temporal_positions is True
    assert non_causal_model.causal_temporal_positions is False
    lat = latents.empty_latent(64, 64, 17, 24.0)
    prompts = PromptPair(positive=make_context(tiny_model, seed=1), negative=None)
    outs, first_frame = [], []
    for model in (tiny_model, non_causal_model):
        with captured_calls(model.transformer) as calls:
            outs.append(run_sampler(model, prompts, lat, None, steps=2, schedule_name="ltx2", seed=3))
        first_frame.append(calls[0]["video"].positions[0, 0, 0].tolist())
    assert first_frame[0] == pytest.approx([0.0, 1 / 24])  # causal: frame 0 covers one pixel frame
    assert first_frame[1] == pytest.approx([0.0, 8 / 24])
    assert rel(outs[0].video, outs[1].video) > 0.01
    assert rel(outs[0].audio, outs[1].audio) > 0.001


# --- the tiny weights exercise every path -----------------------------------------------------------------------


def test_norm_gains_and_adaln_tables_have_spread(model):
    tr = model.transformer
    gains = [(n, p) for n, p in tr.named_parameters() if n.endswith(("q_norm.weight", "k_norm.weight"))]
    assert len(gains) == 2 * 6 * len(tr.transformer_blocks)  # q and k gains of the 6 attentions per block
    for name, g in gains:
        assert 0.1 < float(g.std()) < 0.6, name
        assert abs(float(g.mean()) - 1.0) < 0.3, name  # around 1: neither all-1 nor collapsed to 0
        assert float((g.abs() < 0.05).float().mean()) < 0.2, name
    tables = [(n, p) for n, p in tr.named_parameters() if "scale_shift_table" in n]
    assert len(tables) >= 2 + 3 * len(tr.transformer_blocks)
    for name, table in tables:
        assert float(table.std()) > 0.1, name
    for name, module in tr.named_modules():
        if type(module).__name__ == "AdaLayerNormSingle":
            w = module.linear.weight
            assert 0.5 < float(w.std()) * w.shape[1] ** 0.5 < 2.0, name  # unit gain, not 0.02-scale
            assert float(module.linear.bias.std()) > 0.05, name


def test_attention_is_not_uniform(model):
    tokens = 64
    g = torch.Generator().manual_seed(0)
    attentions = [(n, m) for n, m in model.transformer.named_modules() if isinstance(m, Attention)]
    assert len(attentions) >= 6 * len(model.transformer.transformer_blocks)
    for name, attn in attentions:
        x = torch.randn(1, tokens, attn.to_q.in_features, generator=g)
        c = torch.randn(1, tokens, attn.to_k.in_features, generator=g)
        with torch.inference_mode():
            q, k = attn.q_norm(attn.to_q(x)), attn.k_norm(attn.to_k(c))
            d = q.shape[-1] // attn.heads
            q = q.view(1, tokens, attn.heads, d).transpose(1, 2)
            k = k.view(1, tokens, attn.heads, d).transpose(1, 2)
            probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        # uniform attention would give 1/64 = 0.016; measured ~0.1-0.12
        assert float(probs.max(-1).values.mean()) > 4 / tokens, name


def test_every_input_moves_the_output(model, make_context):
    """Timestep, frame rate (positions), prompt and each stream's effect on the other change the output."""
    video, audio, _ = mixed_timestep_inputs(model, make_context)
    tr = model.transformer
    base = forward(tr, video, audio)
    g = torch.Generator().manual_seed(9)
    slower = video.positions.clone()
    slower[:, 0] *= 24 / 30
    changes = {
        "timestep": (replace(video, timesteps=video.timesteps * 0.5, sigma=video.sigma * 0.5), audio, 0),
        "fps": (replace(video, positions=slower), audio, 0),
        "prompt": (replace(video, context=torch.randn(video.context.shape, generator=g)), audio, 0),
        "audio->video": (video, replace(audio, latent=torch.randn(audio.latent.shape, generator=g)), 0),
        "video->audio": (replace(video, latent=torch.randn(video.latent.shape, generator=g)), audio, 1),
    }
    for what, (v, a, stream) in changes.items():
        out = forward(tr, v, a)
        assert rel(out[stream], base[stream]) > 0.02, what  # measured 0.07 .. 0.6
