"""Parallel canvas invariants (AVControl): reference tokens at t = 0 on every step, strength 0 / weight 0 = no
reference, references stripped from the result, small-to-large positions, attention weights and ltx-core's mask layout.

Everything here runs the real tiny LTX-2 transformer on random reference latents (no VAE): the transformer's inputs
are recorded with a forward pre-hook, so each test checks what the model actually receives."""

from __future__ import annotations

import contextlib

import pytest
import torch
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer.modality import Modality

from avcontrol_core import latents, sampling
from avcontrol_core.guidance import Guidance, StreamGuidance
from avcontrol_core.items import Keyframe, ReferenceAudio, ReferenceVideo, with_weight
from avcontrol_core.patches import CrossModalWeightPatch
from avcontrol_core.weight import Curve, Weight
from tests.recorders import recorded

W, H, FRAMES, FPS = 64, 64, 17, 24.0  # video latent (3, 2, 2): 12 tokens; audio 18 tokens
F_LAT, H_LAT, W_LAT = 3, 2, 2
NV, NA = F_LAT * H_LAT * W_LAT, 18


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm())


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))




@contextlib.contextmanager
def cross_modal_off(transformer: torch.nn.Module):
    """Skip the audio<->video cross-attention in every block (to isolate what the self-attention weight controls)."""
    skip = PerturbationConfig([Perturbation(PerturbationType.SKIP_A2V_CROSS_ATTN, None),
                               Perturbation(PerturbationType.SKIP_V2A_CROSS_ATTN, None)])

    def hook(_module, args, kwargs):
        kwargs["perturbations"] = BatchedPerturbationConfig([skip] * kwargs["video"].latent.shape[0])
        return args, kwargs

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def as_weight(attention) -> Weight:
    """A float, a per-pixel-frame curve (F,) or a MASK (H, W) / (F, H, W) as a Weight."""
    if not isinstance(attention, torch.Tensor):
        return Weight(float(attention))
    if attention.ndim == 1:
        return Weight(curve=Curve(attention, rate=FPS))  # one value per pixel frame
    return Weight(mask=attention)


def video_ref(latent, *, downscale=1, frame_offset=None, strength=1.0, attention=1.0):
    """("video", item): an aligned reference video, or an image at pixel frame `frame_offset` (a Keyframe)."""
    if frame_offset is None:
        item, frames = ReferenceVideo(latent, downscale, 1, strength), torch.arange(1 + 8 * (latent.shape[2] - 1))
    else:
        item, frames = Keyframe(latent, frame_offset, strength, 1, downscale), torch.tensor([frame_offset])
    return "video", with_weight(item, as_weight(attention).video(frames, FPS, *latent.shape[2:]))


def audio_ref(latent, *, time_offset=0.0, strength=1.0, attention=1.0):
    if isinstance(attention, torch.Tensor):
        weight = Weight(curve=Curve(attention, rate=25.0))  # one value per audio latent frame
    else:
        weight = Weight(float(attention))
    times = latents.audio_positions(latents.AudioLatentShape.from_torch_shape(latent.shape))[0, 0, :, 0]
    return "audio", with_weight(ReferenceAudio(latent, time_offset, strength), weight.audio(times))


def run(model, ctx, refs=(), *, latent=None, sigmas=None, steps=2, seed=0, guidance=None, negative=None,
        patches=()):
    latent = latent if latent is not None else latents.empty_latent(W, H, FRAMES, FPS)
    sigmas = sigmas if sigmas is not None else sampling.schedule("ltx2", steps, latent.video[0, 0].numel())
    return sampling.sample(model.transformer, latent, ctx, negative, guidance or Guidance(), sigmas, seed,
                           causal_positions=True, dtype=model.dtype, patches=patches,
                           video_items=[i for k, i in refs if k == "video"],
                           audio_items=[i for k, i in refs if k == "audio"])


def tokens_of(z: torch.Tensor) -> torch.Tensor:
    """Patchified tokens (B, f*h*w, C) of a video latent, or (B, t, 8*16) of an audio latent, by hand."""
    if z.shape[1] == 128:
        return z.flatten(2).transpose(1, 2)
    return z.permute(0, 2, 1, 3).flatten(2)


@pytest.fixture(scope="module")
def ctx(tiny_model, make_context):
    return make_context(tiny_model, seed=1)


@pytest.fixture(scope="module")
def refs():
    """One reference of every kind, with their latents: aligned video (depth-like), a keyframe image at frame 8,
    an aligned audio and an audio placed before the clip."""
    return {
        "video": randn(1, 128, F_LAT, H_LAT, W_LAT, seed=10),
        "image": randn(1, 128, 1, H_LAT, W_LAT, seed=11),
        "audio": randn(1, 8, NA, 16, seed=12),
        "voice": randn(1, 8, 10, 16, seed=13),
    }


@pytest.fixture(scope="module")
def base(tiny_model, ctx):
    return run(tiny_model, ctx)


# --- t = 0 on reference tokens, sigma on generated ones, every step ---------------------------------------------


def test_reference_tokens_carry_their_timestep_and_stay_clean_on_every_step(tiny_model, ctx, make_context, refs):
    """Strength 1: timestep exactly 0 and the clean tokens themselves on every step; strength s: (1 - s) * sigma.
    Generated tokens carry sigma. Checked on every pass of a CFG run (2 passes batched)."""
    items = (
        video_ref(refs["video"], strength=1.0),
        video_ref(refs["image"], frame_offset=8, strength=0.4),
        audio_ref(refs["audio"], strength=1.0),
        audio_ref(refs["voice"], time_offset=-1.0, strength=0.7),
    )
    sigmas = sampling.schedule("ltx2", 3, NV)
    guidance = Guidance(StreamGuidance(cfg=3.0), StreamGuidance(cfg=3.0))
    with recorded(tiny_model.transformer) as calls:
        out = run(tiny_model, ctx, items, sigmas=sigmas, guidance=guidance, negative=make_context(tiny_model, seed=2))
    assert len(calls) == 3
    rv, ri, ra, rb = NV, H_LAT * W_LAT, NA, 10
    clean_v, clean_a = tokens_of(refs["video"]), tokens_of(refs["audio"])
    for step, (video, audio) in enumerate(calls):
        sigma = sigmas[step : step + 1]  # float32, as the sampler uses it
        assert video.latent.shape == (2, NV + rv + ri, 128) and audio.latent.shape == (2, NA + ra + rb, 128)
        assert torch.equal(video.sigma, sigma.expand(2)) and torch.equal(audio.sigma, sigma.expand(2))
        for m, n, full, partial, s in ((video, NV, rv, ri, 0.4), (audio, NA, ra, rb, 0.7)):
            t = m.timesteps
            assert torch.equal(t[:, :n], sigma.expand(2, n))  # generated tokens: the current noise level
            assert bool((t[:, n : n + full] == 0).all())  # strength 1: exactly 0
            expected = torch.tensor(1.0 - s) * sigma
            assert torch.equal(t[:, n + full :], expected.expand(2, partial))  # strength s: (1 - s) * sigma
            assert float(expected) > 0
        # strength-1 tokens are the clean reference itself on every step, in both passes
        assert torch.equal(video.latent[:, NV : NV + rv], clean_v.expand(2, -1, -1))
        assert torch.equal(audio.latent[:, NA : NA + ra], clean_a.expand(2, -1, -1))
    # the partially kept reference moves (it is denoised from (1 - s) * sigma), the kept one does not
    assert not torch.equal(calls[0][0].latent[:, NV + rv :], calls[2][0].latent[:, NV + rv :])
    assert out.video.shape == (1, 128, F_LAT, H_LAT, W_LAT) and out.audio.shape == (1, 8, NA, 16)


def test_several_references_of_different_kinds_all_act(tiny_model, ctx, refs, base):
    """Video, keyframe image and audio references in one run; each one changes the result (leaving any one out
    gives a different clip), and the result always has the target's shapes."""
    items = (
        video_ref(refs["video"]),
        video_ref(refs["image"], frame_offset=16),
        audio_ref(refs["audio"]),
    )
    full = run(tiny_model, ctx, items)
    assert full.video.shape == base.video.shape and full.audio.shape == base.audio.shape
    for i in range(len(items)):
        partial = run(tiny_model, ctx, items[:i] + items[i + 1 :])
        assert rel(partial.video, full.video) > 1e-3 or rel(partial.audio, full.audio) > 1e-3, i
    assert rel(full.video, base.video) > 0.02 and rel(full.audio, base.audio) > 0.02


# --- stripping, and the generated part is the transformer on the concatenated state --------------------------------


def test_result_is_the_generated_part_of_the_transformer_on_the_concatenated_state(tiny_model, ctx, refs):
    """Re-run two Euler steps by hand: target noise + clean reference tokens concatenated, positions concatenated
    (an aligned reference has the target's own positions), timesteps sigma / 0. The sampler's result must equal the
    generated part of that, with the target's shapes."""
    items = (video_ref(refs["video"]), audio_ref(refs["audio"]))
    sigmas = torch.tensor([1.0, 0.6, 0.0])
    out = run(tiny_model, ctx, items, sigmas=sigmas, seed=7)
    assert out.video.shape == (1, 128, F_LAT, H_LAT, W_LAT) and out.audio.shape == (1, 8, NA, 16)

    latent = latents.empty_latent(W, H, FRAMES, FPS)
    v_pos = latents.video_state(latent, True).positions
    a_pos = latents.audio_state(latent).positions
    g = torch.Generator().manual_seed(7)
    xv = torch.cat([torch.randn(1, NV, 128, generator=g), tokens_of(refs["video"])], 1)  # sigma 1: pure noise
    xa = torch.cat([torch.randn(1, NA, 128, generator=g), tokens_of(refs["audio"])], 1)
    for sigma, nxt in ((1.0, 0.6), (0.6, 0.0)):
        tv = torch.cat([torch.full((1, NV), sigma), torch.zeros(1, NV)], 1)
        ta = torch.cat([torch.full((1, NA), sigma), torch.zeros(1, NA)], 1)
        s = torch.tensor([sigma])
        video = Modality(latent=xv, sigma=s, timesteps=tv, positions=torch.cat([v_pos, v_pos], 2), context=ctx.video)
        audio = Modality(latent=xa, sigma=s, timesteps=ta, positions=torch.cat([a_pos, a_pos], 2), context=ctx.audio)
        with torch.inference_mode():
            vel_v, vel_a = tiny_model.transformer(video=video, audio=audio, perturbations=None)
        x0v, x0a = xv - vel_v * tv[..., None], xa - vel_a * ta[..., None]
        xv, xa = xv + (xv - x0v) / sigma * (nxt - sigma), xa + (xa - x0a) / sigma * (nxt - sigma)
    assert torch.equal(xv[:, NV:], tokens_of(refs["video"]))  # the reference never moved
    expected_v = xv[:, :NV].transpose(1, 2).reshape(1, 128, F_LAT, H_LAT, W_LAT)
    expected_a = xa[:, :NA].reshape(1, NA, 8, 16).permute(0, 2, 1, 3)
    torch.testing.assert_close(out.video, expected_v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.audio, expected_a, rtol=1e-5, atol=1e-5)


# --- small-to-large grid -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4])
def test_downscaled_reference_has_k2_fewer_tokens_covering_the_same_pixels(tiny_model, ctx, k):
    """Target 256x128 (latent 8x4): a k-times smaller reference canvas has k^2 fewer tokens; its spatial bounds are
    the full-size reference's scaled by k (cell (i, j) covers pixels [32k i, 32k (i+1)) x [32k j, 32k (j+1))), so
    both cover exactly [0, 128) x [0, 256); its time bounds are the full-size reference's."""
    latent = latents.empty_latent(256, 128, 9, FPS)
    n = 2 * 4 * 8
    full = video_ref(randn(1, 128, 2, 4, 8, seed=3))
    small = video_ref(randn(1, 128, 2, 4 // k, 8 // k, seed=4), downscale=k)
    sigmas = torch.tensor([1.0, 0.0])
    with recorded(tiny_model.transformer) as calls:
        run(tiny_model, ctx, (full,), latent=latent, sigmas=sigmas)
        run(tiny_model, ctx, (small,), latent=latent, sigmas=sigmas)
    p_full = calls[0][0].positions[0, :, n:]  # (3, n, 2)
    p_small = calls[1][0].positions[0, :, n:]
    assert p_full.shape[1] == n and p_small.shape[1] == n // k**2
    # by hand: token order is (frame, row, column)
    f, rows, cols = torch.meshgrid(torch.arange(2), torch.arange(4 // k), torch.arange(8 // k), indexing="ij")
    cell = 32.0 * k
    assert torch.equal(p_small[1], torch.stack([rows.flatten() * cell, (rows.flatten() + 1) * cell], -1))
    assert torch.equal(p_small[2], torch.stack([cols.flatten() * cell, (cols.flatten() + 1) * cell], -1))
    for axis, extent in ((1, 128.0), (2, 256.0)):
        for p in (p_full, p_small):
            assert float(p[axis].min()) == 0.0 and float(p[axis].max()) == extent
    time_full = {tuple(t.tolist()) for t in p_full[0]}
    time_small = {tuple(t.tolist()) for t in p_small[0]}
    frames = {tuple(t.tolist()) for t in torch.tensor([[0.0, 1.0], [1.0, 9.0]]) / FPS}  # causal first frame, then 8
    assert time_small == time_full == frames


# --- image reference placement --------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_index", [0, 8, 16])
def test_image_reference_sits_at_its_frame_index(tiny_model, ctx, refs, frame_index):
    """A keyframe at pixel frame k spans [k, k + 1) / fps (one pixel frame, as Lightricks' current source narrows
    it; 1.0.0 gave [k, k + 8) for k > 0); its spatial bounds are the target's first latent frame's."""
    with recorded(tiny_model.transformer) as calls:
        run(tiny_model, ctx, (video_ref(refs["image"], frame_offset=frame_index),),
            sigmas=torch.tensor([1.0, 0.0]))
    pos = calls[0][0].positions[0]
    ref, first_frame = pos[:, NV:], pos[:, : H_LAT * W_LAT]
    end = frame_index + 1.0  # one pixel frame: [k, k + 1) / fps (Lightricks' current keyframe), not the VAE's 8
    torch.testing.assert_close(ref[0], torch.tensor([frame_index / FPS, end / FPS]).expand(H_LAT * W_LAT, 2),
                               rtol=0, atol=1e-7)
    assert torch.equal(ref[1:], first_frame[1:])


# --- attention weights ------------------------------------------------------------------------------------------------


def weights_of(item) -> torch.Tensor:
    """The per-token weights an item carries (ltx-core's wrapper), or None for plain attention."""
    return getattr(item, "attention_mask", None)


def test_per_frame_curve_gives_hand_computed_token_weights():
    """Latent frame 0 is pixel frame 0; latent frame j averages pixel frames 8j-7 .. 8j; tokens are (frame, row,
    column)."""
    curve = torch.linspace(0.0, 1.0, FRAMES)
    _, item = video_ref(randn(1, 128, F_LAT, H_LAT, W_LAT, seed=0), attention=curve)
    per_frame = torch.stack([curve[0], curve[1:9].mean(), curve[9:17].mean()])
    expected = per_frame.repeat_interleave(H_LAT * W_LAT)
    torch.testing.assert_close(weights_of(item), expected)


def test_curve_is_read_at_each_frame_time_whatever_its_rate():
    """A 25-per-second curve read for a 24 fps clip: pixel frame i takes the sample nearest i / 24 s (round(i*25/24)),
    and a keyframe at frame 12 reads the curve at 0.5 s, not at its start."""
    values = torch.arange(30, dtype=torch.float32) / 30
    weight = Weight(curve=Curve(values, rate=25.0))
    w = weight.video(torch.arange(17), FPS, F_LAT, 1, 1)
    idx = [round(i * 25 / 24) for i in range(17)]
    by_hand = torch.tensor([values[idx[0]], values[idx[1:9]].mean(), values[idx[9:17]].mean()])
    torch.testing.assert_close(w, by_hand)
    assert float(weight.video(torch.tensor([12]), FPS, 1, 1, 1)) == pytest.approx(float(values[round(12.5)]))


def test_spatial_mask_gives_hand_computed_token_weights():
    """A pixel MASK is area-averaged onto the reference's latent grid: left half 1, right half 0.25 of a 64x64 mask
    on a 2x2 grid gives columns (1, 0.25); a per-frame (F, H, W) mask is also pooled over time like a curve."""
    mask = torch.ones(H, W)
    mask[:, W // 2 :] = 0.25
    mask[: H // 4, : W // 2] = 0.5  # top-left latent cell: mean of 1/2 at 0.5 and 1/2 at 1 = 0.75
    _, item = video_ref(randn(1, 128, F_LAT, H_LAT, W_LAT, seed=0), attention=mask)
    grid = torch.tensor([[0.75, 0.25], [1.0, 0.25]])
    torch.testing.assert_close(weights_of(item), grid.flatten().repeat(F_LAT))

    frames = torch.ones(FRAMES, H, W)
    frames[9:, :, : W // 2] = 0.0  # pixel frames 9..16 (latent frame 2), left half
    frames[0] = 0.5  # latent frame 0 alone
    _, item = video_ref(randn(1, 128, F_LAT, H_LAT, W_LAT, seed=0), attention=frames)
    expected = torch.tensor([[0.5] * 4, [1.0] * 4, [0.0, 1.0, 0.0, 1.0]]).flatten()
    torch.testing.assert_close(weights_of(item), expected)


def test_audio_curve_gives_hand_computed_token_weights():
    """Audio token i starts at i / 25 s (causal bounds shifted back by 0.03 s, clamped at 0): a 25-per-second curve
    is read at round(25 * start)."""
    z = randn(1, 8, NA, 16, seed=0)
    curve = torch.rand(NA, generator=torch.Generator().manual_seed(0))
    starts = latents.audio_positions(latents.AudioLatentShape.from_torch_shape(z.shape))[0, 0, :, 0]
    idx = (starts.double() * 25).round().long().clamp(0, NA - 1)
    assert torch.equal(weights_of(audio_ref(z, attention=curve)[1]), curve[idx])
    assert idx.tolist()[:1] == [0] and idx.tolist()[-1] in (NA - 2, NA - 1)
    assert weights_of(audio_ref(z, attention=0.3)[1]).tolist() == [pytest.approx(0.3)] * NA


ONES = {
    "scalar": 1.0,
    "curve": torch.ones(FRAMES),
    "mask": torch.ones(H, W),
    "frame mask": torch.ones(FRAMES, H, W),
}


@pytest.mark.parametrize("name", sorted(ONES))
def test_all_ones_weight_builds_no_mask(tiny_model, ctx, refs, name):
    """Weight 1 everywhere (in any form) keeps attention plain SDPA: no (T, T) mask reaches the transformer, and the
    result is bit-identical to the scalar-1 run."""
    items = (video_ref(refs["video"], attention=ONES[name]), audio_ref(refs["audio"]))
    with recorded(tiny_model.transformer) as calls:
        out = run(tiny_model, ctx, items)
    assert all(v.attention_mask is None and a.attention_mask is None for v, a in calls)
    plain = run(tiny_model, ctx, (video_ref(refs["video"]), audio_ref(refs["audio"])))
    assert torch.equal(out.video, plain.video) and torch.equal(out.audio, plain.audio)


def test_weight_builds_ltx_core_block_mask(tiny_model, ctx, make_context, refs):
    """A weight-1 reference then a curve-weighted one: the (B, T, T) mask has ltx-core's block layout: target <->
    target 1, target <-> reference 1 (weight-1) and w (weighted; rows and columns), each reference with itself 1,
    reference <-> other reference 0. Repeated for each pass of a CFG run. The audio stream, all weights 1, has none."""
    curve = torch.linspace(0.2, 0.9, FRAMES)
    weighted = video_ref(refs["video"], attention=curve)
    items = (video_ref(refs["image"], frame_offset=8), weighted, audio_ref(refs["audio"]))
    guidance = Guidance(StreamGuidance(cfg=2.0), StreamGuidance())
    with recorded(tiny_model.transformer) as calls:
        run(tiny_model, ctx, items, guidance=guidance, negative=make_context(tiny_model, seed=2))
    r1, r2 = H_LAT * W_LAT, NV
    total = NV + r1 + r2
    w = weights_of(weighted[1])
    for video, audio in calls:
        assert audio.attention_mask is None
        mask = video.attention_mask
        assert mask.shape == (2, total, total)
        a, b = NV, NV + r1  # block starts: image reference, weighted reference
        for m in mask:
            assert bool((m[:a, :a] == 1).all())
            assert bool((m[:a, a:b] == 1).all()) and bool((m[a:b, :a] == 1).all())
            assert torch.equal(m[:a, b:], w.expand(NV, r2)) and torch.equal(m[b:, :a], w[:, None].expand(r2, NV))
            assert bool((m[a:b, a:b] == 1).all()) and bool((m[b:, b:] == 1).all())
            assert bool((m[a:b, b:] == 0).all()) and bool((m[b:, a:b] == 0).all())


def test_attention_weight_is_continuous_at_zero(tiny_model, ctx, refs):
    """With the cross-modal attention out of the way, a reference at weight 1e-6 is within ~1e-6 of the run without
    it (the other stream bit-identical: a reference never changes the noise of the generated tokens), while weight 1
    clearly differs; the weighted run (0.5) lies in between."""
    with cross_modal_off(tiny_model.transformer):
        base = run(tiny_model, ctx)
        for ref, stream, other in ((lambda w: video_ref(refs["video"], attention=w), "video", "audio"),
                                   (lambda w: audio_ref(refs["audio"], attention=w), "audio", "video")):
            tiny, half, one = (run(tiny_model, ctx, (ref(w),)) for w in (1e-6, 0.5, 1.0))
            d_tiny, d_half, d_one = (rel(getattr(o, stream), getattr(base, stream)) for o in (tiny, half, one))
            assert d_tiny < 1e-5 and d_one > 0.05 and d_tiny < d_half < d_one, (stream, d_tiny, d_half, d_one)
            assert torch.equal(getattr(tiny, other), getattr(base, other))


def test_cross_modal_weight_option_also_silences_the_cross_modal_path(tiny_model, ctx, refs, base):
    """With the pack's CrossModalWeightPatch the weight also scales the other stream's audio<->video attention to the
    reference's tokens: near 0 the other stream is as without the reference, at 1 it is not. Without it (the
    default, Lightricks' behaviour) the cross-modal path still sees the reference at full weight."""
    for ref in (video_ref(refs["video"], attention=1e-6), audio_ref(refs["audio"], attention=1e-6)):
        out = run(tiny_model, ctx, (ref,), patches=(CrossModalWeightPatch(),))
        assert rel(out.audio, base.audio) < 1e-3 and rel(out.video, base.video) < 1e-3
        official = run(tiny_model, ctx, (ref,))
        assert rel(official.audio, base.audio) > 1e-3 or rel(official.video, base.video) > 1e-3
    full = run(tiny_model, ctx, (video_ref(refs["video"]),))
    assert rel(full.audio, base.audio) > 0.02


# --- batches --------------------------------------------------------------------------------------------------------


def test_batch_of_two_clips_shares_references(tiny_model, ctx, refs):
    """One reference (batch 1) serves every clip of a batch: both clips receive the same clean tokens, positions and
    timesteps, both are changed by it, and each clip's target noise is the one it has without references."""
    latent = latents.empty_latent(W, H, FRAMES, FPS, batch=2)
    items = (video_ref(refs["video"], attention=0.5), audio_ref(refs["audio"]))
    with recorded(tiny_model.transformer) as calls:
        out = run(tiny_model, ctx, items, latent=latent)
        plain = run(tiny_model, ctx, latent=latent)
    video, audio = calls[0]
    assert video.latent.shape == (2, 2 * NV, 128) and audio.latent.shape == (2, 2 * NA, 128)
    assert torch.equal(video.latent[0, NV:], video.latent[1, NV:])
    assert torch.equal(video.latent[0, NV:], tokens_of(refs["video"])[0])
    assert torch.equal(audio.latent[0, NA:], audio.latent[1, NA:])
    assert torch.equal(video.positions[0], video.positions[1]) and torch.equal(video.timesteps[0], video.timesteps[1])
    assert video.attention_mask.shape == (2, 2 * NV, 2 * NV)
    assert torch.equal(video.attention_mask[0], video.attention_mask[1])
    no_ref_video, no_ref_audio = calls[2]  # first step of the run without references
    assert torch.equal(video.latent[:, :NV], no_ref_video.latent)
    assert torch.equal(audio.latent[:, :NA], no_ref_audio.latent)
    assert out.video.shape == (2, 128, F_LAT, H_LAT, W_LAT)
    for clip in (0, 1):
        assert rel(out.video[clip], plain.video[clip]) > 0.02 and rel(out.audio[clip], plain.audio[clip]) > 0.02
