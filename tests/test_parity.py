"""Parity with Lightricks' current LTX-2 source (ltx-core 1.2.0) where ltx-core 1.0.0 lags it, and equality with
ltx-core 1.0.0's own primitives where it does not. Expected values are computed by hand from the rule each path
follows (read from the current source, not copied), or by ltx-core 1.0.0's own classes; fp32, the real tiny model."""

from __future__ import annotations

import pytest
import torch
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.types import LatentState

from avcontrol_core import checkpoint, latents, sampling, upsampler
from avcontrol_core.fidelity import DEVIATIONS
from avcontrol_core.guidance import Guidance
from avcontrol_core.items import FirstFrame
from tests.recorders import recorded

W, H, FRAMES, FPS = 64, 64, 17, 24.0
NV, NA = 12, 18


def state(latent, clean, mask) -> LatentState:
    n = latent.shape[1]
    return LatentState(latent=latent, denoise_mask=mask, positions=torch.zeros(1, 1, n, 2), clean_latent=clean)


def test_starting_latent_is_lerp_of_lerp_by_hand():
    """Current source: x = clean + m * ((latent + s * (noise - latent)) - clean) per token, with `latent` the
    pre-noise latent (placeholder zeros for a reference) and m its denoise mask; checked where 0 < m < 1, s < 1."""
    g = torch.Generator().manual_seed(0)
    latent, clean, noise = (torch.randn(1, 5, 3, generator=g) for _ in range(3))
    latent[:, 3:] = 0.0  # reference placeholders
    mask = torch.tensor([1.0, 0.0, 0.25, 0.6, 1.0]).view(1, 5, 1)
    s = 0.909375
    got = sampling.noised(state(latent, clean, mask), noise, s)
    for i in range(5):
        m = float(mask[0, i])
        by_hand = clean[0, i] + m * ((latent[0, i] + s * (noise[0, i] - latent[0, i])) - clean[0, i])
        torch.testing.assert_close(got[0, i], by_hand, rtol=0, atol=1e-6)


def test_starting_latent_equals_ltx_core_1_0_noiser_where_no_deviation_is_intended():
    """Masks of 0 or 1 on a latent equal to its clean latent (every run without partial strengths): the same as
    ltx-core 1.0.0's GaussianNoiser, bitwise, for the same noise draw; with a partial mask at s < 1 the two differ,
    which is the listed deviation."""
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(1, 6, 4, generator=g)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0]).view(1, 6, 1)
    for s in (1.0, 0.725):
        noiser = GaussianNoiser(torch.Generator().manual_seed(5))
        official = noiser(state(clean.clone(), clean, mask), s).latent
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(sampling.noised(state(clean.clone(), clean, mask), noise, s), official,
                                   rtol=0, atol=1e-6)
    partial = torch.full((1, 6, 1), 0.5)
    noiser = GaussianNoiser(torch.Generator().manual_seed(5))
    old = noiser(state(torch.zeros_like(clean), clean, partial), 0.725).latent
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    new = sampling.noised(state(torch.zeros_like(clean), clean, partial), noise, 0.725)
    assert float((old - new).abs().max()) > 1e-3
    assert "noiser" in DEVIATIONS


def test_first_frame_keeps_the_noisy_latent_it_had(tiny_model, make_context):
    """Stage two with an image at strength 0.5: the first frame's starting latent is lerp(image, lerp(stage one's
    latent, noise, s), 0.5) (ltx-core 1.0.0's item overwrote the noisy latent with the image)."""
    g = torch.Generator().manual_seed(2)
    lat = latents.empty_latent(W, H, FRAMES, FPS)
    stage_one = lat.replace(video=torch.randn(lat.video.shape, generator=g), upscaled=True)
    image = torch.randn(1, 128, 1, 2, 2, generator=g)
    cond = latents.condition_first_frame(stage_one, image, 0.5)
    sigmas = torch.tensor([0.909375, 0.0])
    with recorded(tiny_model.transformer) as calls:
        sampling.sample(tiny_model.transformer, cond, make_context(tiny_model), None, Guidance(), sigmas, 4,
                        causal_positions=True, dtype=torch.float32)
    noise = torch.randn(1, NV, 128, generator=torch.Generator().manual_seed(4))
    first = latents.VIDEO_PATCHIFIER.patchify(stage_one.video)[:, :4]
    img = latents.VIDEO_PATCHIFIER.patchify(image)
    by_hand = img + 0.5 * ((first + 0.909375 * (noise[:, :4] - first)) - img)
    torch.testing.assert_close(calls[0][0].latent[:, :4], by_hand, rtol=0, atol=1e-6)
    assert isinstance(cond.conditioning[0], FirstFrame)


def test_a_stream_held_clean_carries_sigma_zero(tiny_model, make_context):
    """Stage two with its audio kept: every audio target token at mask 0 gives the audio Modality sigma 0 (it gates
    the video's audio->video attention and, on LTX-2.3, modulates its prompt); the video keeps the step's sigma.
    Refined audio carries the step's sigma."""
    g = torch.Generator().manual_seed(3)
    lat = latents.empty_latent(W, H, FRAMES, FPS)
    given = lat.replace(video=torch.randn(lat.video.shape, generator=g), audio=torch.randn(lat.audio.shape, generator=g),
                        audio_mask=torch.zeros_like(lat.audio_mask), upscaled=True)
    sigmas = torch.tensor([0.909375, 0.725, 0.0])
    for mask, expected in ((0.0, 0.0), (1.0, None)):
        run = given.replace(audio_mask=torch.full_like(lat.audio_mask, mask))
        with recorded(tiny_model.transformer) as calls:
            out = sampling.sample(tiny_model.transformer, run, make_context(tiny_model), None, Guidance(), sigmas, 0,
                                  causal_positions=True, dtype=torch.float32)
        for step, (video, audio) in enumerate(calls):
            assert float(video.sigma[0]) == pytest.approx(float(sigmas[step]))
            assert float(audio.sigma[0]) == pytest.approx(float(sigmas[step]) if expected is None else expected)
        if mask == 0.0:
            assert torch.equal(out.audio, given.audio)  # held exactly


def test_lightricks_audio_mode_refines_with_the_video_and_returns_stage_ones_sound(tiny_model, make_context):
    g = torch.Generator().manual_seed(6)
    lat = latents.empty_latent(W, H, FRAMES, FPS)
    stage_one = lat.replace(video=torch.randn(lat.video.shape, generator=g), audio=torch.randn(lat.audio.shape,
                                                                                              generator=g))
    refine = stage_one.replace(upscaled=True)
    official = refine.replace(return_given_audio=True)
    sigmas = torch.tensor([0.909375, 0.0])
    ctx = make_context(tiny_model)
    a = sampling.sample(tiny_model.transformer, refine, ctx, None, Guidance(), sigmas, 0, causal_positions=True,
                        dtype=torch.float32)
    b = sampling.sample(tiny_model.transformer, official, ctx, None, Guidance(), sigmas, 0, causal_positions=True,
                        dtype=torch.float32)
    assert torch.equal(a.video, b.video)  # the same refinement (the video heard the sound being refined)
    assert torch.equal(b.audio, stage_one.audio) and not torch.equal(a.audio, stage_one.audio)
    assert "lightricks" in upsampler.AUDIO_MODES


def test_a_config_without_the_causal_key_is_causal():
    assert checkpoint.causal_temporal_positions({"transformer": {}}) is True
    assert checkpoint.causal_temporal_positions({"transformer": {"causal_temporal_positioning": False}}) is False
