"""Schedules, the sampler loop (determinism, guidance passes, image-to-video, progress, interruption) and decoding."""

from __future__ import annotations

import math

import contextlib

import pytest
import torch

from avcontrol_core import decode, latents, sampling
from avcontrol_core.errors import InputError
from avcontrol_core.guidance import Guidance, StreamGuidance

W, H, FRAMES, FPS = 64, 64, 17, 24.0


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm())


@contextlib.contextmanager
def counted_forwards(module: torch.nn.Module):
    """Record the batch size (video, audio) of every transformer forward call."""
    calls: list[tuple[int, int]] = []

    def hook(_m, _args, kwargs):
        calls.append((kwargs["video"].latent.shape[0], kwargs["audio"].latent.shape[0]))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def run(model, ctx, *, latent=None, negative=None, guidance=None, steps=2, seed=0, **kw) -> latents.AVLatent:
    latent = latent if latent is not None else latents.empty_latent(W, H, FRAMES, FPS)
    sigmas = sampling.schedule("ltx2", steps, latent.video[0, 0].numel())
    return sampling.sample(model.transformer, latent, ctx, negative, guidance or Guidance(), sigmas, seed,
                           causal_positions=True, dtype=model.dtype, **kw)


@pytest.fixture(scope="module")
def ctx(tiny_model, make_context):
    return make_context(tiny_model, seed=1)


@pytest.fixture(scope="module")
def neg(tiny_model, make_context):
    return make_context(tiny_model, seed=2)


# --- schedules ----------------------------------------------------------------------------------------------------


def shifted_by_hand(steps: int, tokens: int) -> list[float]:
    """LTX-2's schedule from its definition, in float64: t_i = 1 - i/steps; shift mu linear in the token count through
    (1024, 0.95) and (4096, 2.05); sigma = e^mu / (e^mu + 1/t - 1); then stretched so the last non-zero sigma is
    0.1: sigma' = 1 - (1 - sigma) * 0.9 / (1 - sigma_last)."""
    mu = 0.95 + (tokens - 1024) * (2.05 - 0.95) / (4096 - 1024)
    raw = [math.exp(mu) / (math.exp(mu) + 1 / t - 1) if t > 0 else 0.0
           for t in (1 - i / steps for i in range(steps + 1))]
    last = raw[-2]
    return [1 - (1 - x) * 0.9 / (1 - last) if x > 0 else 0.0 for x in raw]


@pytest.mark.parametrize("steps, tokens", [(8, 24), (20, 1536), (30, 12288)])
def test_ltx2_tokens_schedule_matches_the_formula_for_the_clips_token_count(steps, tokens):
    ours = sampling.schedule("ltx2_tokens", steps, tokens)
    assert ours.shape == (steps + 1,) and ours.dtype == torch.float32
    assert ours.tolist() == pytest.approx(shifted_by_hand(steps, tokens), abs=2e-6)
    assert float(ours[0]) == 1.0 and float(ours[-1]) == 0.0 and torch.all(ours[1:] < ours[:-1])
    assert float(ours[-2]) == pytest.approx(0.1)  # stretched to the terminal value


@pytest.mark.parametrize("steps, tokens", [(8, 24), (30, 12288)])
def test_ltx2_schedule_shifts_for_4096_tokens_whatever_the_size(steps, tokens):
    """Lightricks' one- and two-stage pipelines call the scheduler without the latent: 4096 tokens, any size."""
    ours = sampling.schedule("ltx2", steps, tokens)
    assert ours.tolist() == pytest.approx(shifted_by_hand(steps, 4096), abs=2e-6)
    assert torch.equal(ours, sampling.schedule("ltx2", steps, 7))


def test_ltx2_tokens_schedule_shifts_with_token_count():
    small, large = sampling.schedule("ltx2_tokens", 10, 256), sampling.schedule("ltx2_tokens", 10, 8192)
    assert torch.all(large[1:-2] > small[1:-2])  # more tokens: more time spent at high noise
    assert float((large - small)[1:-2].min()) > 0.01


def test_one_step_schedule_is_finite(tiny_model, make_context):
    """ltx-core's stretch divides by zero for a single step; our schedule must stay usable."""
    assert sampling.schedule("ltx2", 1, 24).tolist() == pytest.approx([1.0, 0.0], abs=1e-7)
    assert sampling.schedule("ltx2_tokens", 1, 24).tolist() == pytest.approx([1.0, 0.0], abs=1e-7)
    out = run(tiny_model, make_context(tiny_model), steps=1)
    assert torch.isfinite(out.video).all() and torch.isfinite(out.audio).all()


def test_distilled_schedules_are_fixed():
    assert sampling.schedule("distilled", 3, 10).tolist() == pytest.approx(
        [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0])
    assert sampling.schedule("distilled_stage2", 30, 99999).tolist() == pytest.approx([0.909375, 0.725, 0.421875, 0.0])
    assert sampling.step_count("distilled", 30) == 8
    assert sampling.step_count("distilled_stage2", 30) == 3
    assert sampling.step_count("ltx2", 30) == 30


def test_schedule_inputs_checked():
    with pytest.raises(InputError, match="schedule must be one of"):
        sampling.schedule("karras", 10, 100)
    with pytest.raises(InputError, match="steps must be"):
        sampling.schedule("ltx2", 0, 100)


# --- determinism --------------------------------------------------------------------------------------------------


def test_same_seed_same_output_different_seed_different(tiny_model, ctx):
    a, b, c = run(tiny_model, ctx, seed=7), run(tiny_model, ctx, seed=7), run(tiny_model, ctx, seed=8)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert rel(a.video, c.video) > 0.1 and rel(a.audio, c.audio) > 0.1
    assert a.video.shape == (1, 128, 3, 2, 2) and a.audio.shape == (1, 8, 18, 16)
    assert torch.all(a.video_mask == 1) and torch.isfinite(a.video).all() and torch.isfinite(a.audio).all()


def test_seeds_are_per_clip_not_per_batch_position(tiny_model, make_context):
    """Batch 2 with one prompt: the two clips differ (noise drawn for the whole batch)."""
    ctx = make_context(tiny_model, seed=1)
    out = run(tiny_model, ctx, latent=latents.empty_latent(W, H, FRAMES, FPS, batch=2))
    assert out.video.shape[0] == 2
    assert rel(out.video[0], out.video[1]) > 0.1


def test_denoising_uses_the_prompt(tiny_model, ctx, neg):
    assert rel(run(tiny_model, ctx).video, run(tiny_model, neg).video) > 0.01


def test_ltx23_layout_samples(tiny_model_23, make_context):
    ctx = make_context(tiny_model_23, seed=1)
    a, b = run(tiny_model_23, ctx, seed=1), run(tiny_model_23, ctx, seed=1)
    assert torch.equal(a.video, b.video) and torch.isfinite(a.video).all()


# --- guidance -----------------------------------------------------------------------------------------------------


def test_no_op_guidance_runs_one_pass(tiny_model, ctx, neg):
    noop = Guidance(video=StreamGuidance(cfg=1.0, stg=0.0, stg_blocks=(1,), modality=1.0),
                    audio=StreamGuidance(cfg=1.0, stg=0.0, modality=1.0))
    latent = latents.empty_latent(W, H, FRAMES, FPS, batch=2)
    with counted_forwards(tiny_model.transformer) as calls:
        out = run(tiny_model, ctx, latent=latent, negative=neg, guidance=noop, steps=3)
    assert calls == [(2, 2)] * 3  # one forward of batch B per step
    plain = run(tiny_model, ctx, latent=latent, guidance=Guidance(), steps=3)
    assert torch.equal(out.video, plain.video) and torch.equal(out.audio, plain.audio)  # and no negative needed


@pytest.mark.parametrize("guidance, passes", [
    (Guidance(video=StreamGuidance(cfg=3.0)), 2),
    (Guidance(audio=StreamGuidance(cfg=2.0)), 2),
    (Guidance(video=StreamGuidance(cfg=3.0, stg=1.0, stg_blocks=(1,))), 3),
    (Guidance(video=StreamGuidance(cfg=3.0, stg=1.0, stg_blocks=(1,), modality=2.0),
              audio=StreamGuidance(modality=3.0)), 4),
])
def test_guidance_passes_are_batched(tiny_model, ctx, neg, guidance, passes):
    latent = latents.empty_latent(W, H, FRAMES, FPS, batch=2)
    with counted_forwards(tiny_model.transformer) as calls:
        run(tiny_model, ctx, latent=latent, negative=neg, guidance=guidance, steps=2)
    assert calls == [(2 * passes, 2 * passes)] * 2  # all passes in one forward per step


def test_cfg_combines_conditional_and_unconditional(tiny_model, ctx, neg):
    """pred = c + (cfg - 1)(c - u), with c and u from separate unguided evaluations."""
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    v_state, a_state = latents.video_state(latent, True), latents.audio_state(latent)
    g = torch.Generator().manual_seed(0)
    xv, xa = torch.randn(v_state.latent.shape, generator=g), torch.randn(a_state.latent.shape, generator=g)

    def denoise(guidance, positive, negative):
        d = sampling.Denoiser(tiny_model.transformer, guidance, positive, negative, 1, torch.float32,
                              torch.device("cpu"))
        return d(xv, xa, v_state, a_state, 0.6)

    cond, uncond = denoise(Guidance(), ctx, None), denoise(Guidance(), neg, None)
    guided = denoise(Guidance(video=StreamGuidance(cfg=4.0), audio=StreamGuidance(cfg=2.0)), ctx, neg)
    torch.testing.assert_close(guided[0], cond[0] + 3.0 * (cond[0] - uncond[0]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(guided[1], cond[1] + 1.0 * (cond[1] - uncond[1]), rtol=1e-4, atol=1e-4)
    assert rel(guided[0], cond[0]) > 0.05


def test_stg_and_modality_guidance_change_the_output(tiny_model, ctx):
    base = run(tiny_model, ctx)
    stg = run(tiny_model, ctx, guidance=Guidance(video=StreamGuidance(stg=1.0, stg_blocks=(0,))))
    mod = run(tiny_model, ctx, guidance=Guidance(audio=StreamGuidance(modality=3.0)))
    assert rel(stg.video, base.video) > 0.01
    assert rel(mod.audio, base.audio) > 0.01


def test_cfg_without_negative_prompt_is_refused(tiny_model, ctx):
    with counted_forwards(tiny_model.transformer) as calls:
        with pytest.raises(InputError, match="negative prompt is required"):
            run(tiny_model, ctx, guidance=Guidance(video=StreamGuidance(cfg=3.0)))
    assert calls == []  # refused before any transformer work


def test_stg_without_blocks_is_refused():
    with pytest.raises(InputError, match="stg_blocks"):
        StreamGuidance(stg=1.0)
    with pytest.raises(InputError, match="stg_blocks"):
        Guidance(video=StreamGuidance(stg=1.0, stg_blocks=(5,))).check_blocks(2)
    with pytest.raises(InputError, match="cfg"):
        StreamGuidance(cfg=-1.0)


# --- image-to-video -----------------------------------------------------------------------------------------------


def test_first_frame_strength_1_is_kept_exactly(tiny_model, ctx):
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    image = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    out = run(tiny_model, ctx, latent=latents.condition_first_frame(latent, image, 1.0), steps=4)
    assert torch.equal(out.video[:, :, :1], image)
    free = run(tiny_model, ctx, latent=latent, steps=4)
    assert rel(out.video[:, :, 1:], free.video[:, :, 1:]) > 0.01  # the rest is generated, and sees the image


def test_first_frame_strength_0_equals_unconditioned(tiny_model, ctx):
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    image = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    out = run(tiny_model, ctx, latent=latents.condition_first_frame(latent, image, 0.0), steps=4)
    free = run(tiny_model, ctx, latent=latent, steps=4)
    assert torch.equal(out.video, free.video) and torch.equal(out.audio, free.audio)


def test_partial_strength_moves_toward_the_image(tiny_model, ctx):
    latent = latents.empty_latent(W, H, FRAMES, FPS)
    image = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    dist = [float((run(tiny_model, ctx, latent=latents.condition_first_frame(latent, image, s), steps=4)
                   .video[:, :, :1] - image).norm()) for s in (0.0, 0.5, 0.9)]
    assert dist[0] > dist[1] > dist[2] > 0


# --- progress and interruption ------------------------------------------------------------------------------------


def test_progress_called_once_per_step(tiny_model, ctx):
    seen = []
    run(tiny_model, ctx, steps=5, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]


class Interrupted(Exception):
    pass


def test_interruption_stops_the_loop(tiny_model, ctx):
    checks, progress = [], []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise Interrupted

    with counted_forwards(tiny_model.transformer) as calls:
        with pytest.raises(Interrupted):
            run(tiny_model, ctx, steps=6, check_interrupted=check, on_step=lambda d, t: progress.append(d))
    assert len(calls) == 2 and progress == [1, 2]  # checked before each step; step 3 never ran


# --- decoding -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled(tiny_model, ctx):
    return run(tiny_model, ctx, steps=2)


def test_video_decode_shape_and_range(tiny_model, sampled):
    frames = decode.decode_video(tiny_model, sampled)
    assert frames.shape == (FRAMES, H, W, 3) and frames.dtype == torch.float32
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0
    assert float(frames.std()) > 0.05  # not a constant image
    assert rel(frames[0], frames[-1]) > 0.01  # frames differ over time


def test_video_decode_batch(tiny_model, ctx):
    out = run(tiny_model, ctx, latent=latents.empty_latent(W, H, 9, FPS, batch=2), steps=1)
    frames = decode.decode_video(tiny_model, out)
    assert frames.shape == (2 * 9, H, W, 3)
    assert rel(frames[:9], frames[9:]) > 0.01


def test_ltx23_vocoder_with_bandwidth_extension_decodes_at_its_own_rate(tiny_model_23, make_context):
    """LTX-2.3's vocoder layout (nested vocoder + bwe config, ltx-core's VocoderWithBWE): loads strictly and the sound
    comes out at the rate its config declares, frames/fps seconds long, stereo."""
    vocoder = tiny_model_23.component("vocoder")
    rate = tiny_model_23.config["vocoder"]["bwe"]["output_sampling_rate"]
    assert type(vocoder).__name__ == "VocoderWithBWE" and rate == 48000
    out = run(tiny_model_23, make_context(tiny_model_23, seed=1), latent=latents.empty_latent(W, H, 17, 24.0),
              steps=1)
    audio = decode.decode_audio(tiny_model_23, out)
    assert audio["sample_rate"] == rate and audio["waveform"].shape == (1, 2, round(17 / 24.0 * rate))
    wave = audio["waveform"]
    assert torch.isfinite(wave).all() and float(wave.abs().max()) <= 1.0 and float(wave.std()) > 1e-4


@pytest.mark.parametrize("frames, fps", [(17, 24.0), (33, 25.0), (9, 30.0)])
def test_audio_decode_length(tiny_model, ctx, frames, fps):
    out = run(tiny_model, ctx, latent=latents.empty_latent(W, H, frames, fps), steps=1)
    audio = decode.decode_audio(tiny_model, out)
    wave = audio["waveform"]
    assert audio["sample_rate"] == 24000
    assert wave.shape == (1, 2, round(frames / fps * 24000))
    assert torch.isfinite(wave).all() and float(wave.abs().max()) <= 1.0 and float(wave.std()) > 1e-4


def _random_video_latent(width, height, frames):
    lat = latents.empty_latent(width, height, frames, FPS)
    return lat.replace(video=torch.randn(lat.video.shape, generator=torch.Generator().manual_seed(0)))


def test_single_tile_equals_untiled(tiny_model):
    lat = _random_video_latent(128, 96, 17)
    untiled = decode.decode_video(tiny_model, lat)
    one_tile = decode.decode_video(tiny_model, lat, decode.tiling(512, 64, 64, 24))
    assert torch.equal(one_tile, untiled)


def test_spatial_tiles_agree_with_untiled(tiny_model):
    """512 px wide in 256 px tiles overlapping by 128 (tiles at 0, 128, 256). Measured on the random tiny VAE:
    mean abs error 0.014, max 0.27 (in 0..1), all of it within the decoder's receptive field (~3 latents) of a
    tile seam; the outer 80 px, farther from every seam, agree to 1e-6."""
    lat = _random_video_latent(512, 64, 9)
    untiled = decode.decode_video(tiny_model, lat)
    tiled = decode.decode_video(tiny_model, lat, decode.tiling(256, 128, 64, 24))
    assert tiled.shape == untiled.shape == (9, 64, 512, 3)
    err = (tiled - untiled).abs()
    assert float(err.mean()) < 0.03
    torch.testing.assert_close(tiled[:, :, :80], untiled[:, :, :80], rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled[:, :, -80:], untiled[:, :, -80:], rtol=0, atol=1e-5)
    assert float(err[:, :, 128:384].mean()) > 1e-3  # the seams are really there (tiling took place)


def test_temporal_tiles_agree_with_untiled(tiny_model):
    """97 frames in 48-frame tiles overlapping by 24. Measured: mean abs error 0.032; the first and last frames,
    farthest from the seam, within 1e-3 and 2e-3 (the tiny VAE's temporal receptive field spans several latents)."""
    lat = _random_video_latent(64, 64, 97)
    untiled = decode.decode_video(tiny_model, lat)
    tiled = decode.decode_video(tiny_model, lat, decode.tiling(512, 64, 48, 24))
    assert tiled.shape == untiled.shape == (97, 64, 64, 3)
    err = (tiled - untiled).abs().amax(dim=(1, 2, 3))
    assert float((tiled - untiled).abs().mean()) < 0.05
    assert float(err[0]) < 0.01 and float(err[-1]) < 0.01
    assert float(err[40:56].min()) > 0.05  # the seam region is where they differ


def test_tiling_inputs_checked():
    with pytest.raises(InputError, match="tile_size"):
        decode.tiling(100)
    with pytest.raises(InputError, match="tile_overlap"):
        decode.tiling(256, 256)
    with pytest.raises(InputError, match="tile_frames"):
        decode.tiling(256, 64, 12)
