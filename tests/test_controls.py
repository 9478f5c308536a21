"""Controls -> conditioning items: fitting references to the target (refuse or resample), keyframe and audio placement,
the small-to-large factor from LoRA metadata or the node (conflicts refused), batches, and strength 0 = off.

Runs the real tiny LTX-2 model (fp32, CPU) and its VAEs; LoRA files are written into tmp_path with safetensors and
read by the real reader. The transformer's inputs are recorded with a forward pre-hook."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import save_file

from avcontrol_core import controls, latents, sampling
from avcontrol_core.conditioning import PromptPair
from avcontrol_core.controls import (AudioControl, ControlPlan, ImageControl, LoraControl, VideoControl,
                                     encode_controls, plan_controls)
from avcontrol_core.errors import InputError
from avcontrol_core.guidance import Guidance
from avcontrol_core.items import Keyframe, ReferenceAudio, ReferenceVideo
from avcontrol_core.lora import LoraStack, read_lora
from avcontrol_core.pipeline import run_sampler
from avcontrol_core.weight import Curve, Weight
from tests.recorders import recorded

W, H, FRAMES, FPS = 64, 64, 17, 24.0
NV, NA = 3 * 2 * 2, 18


def clip(n: int = FRAMES, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def numbered(n: int) -> torch.Tensor:
    """Frames whose every pixel holds the frame's index / 100, so a picked frame can be read back."""
    return (torch.arange(n, dtype=torch.float32) / 100).view(n, 1, 1, 1).expand(n, H, W, 3).clone()


def sound(seconds: float, rate: int = 16000, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"waveform": 0.3 * torch.randn(1, 2, round(seconds * rate), generator=g), "sample_rate": rate}


def Control(label, kind, media=None, *, attention=1.0, audio_placement="aligned", frame_index=0, source_fps=None,
            downscale=0, fit="resample", **common):
    """A typed control as a node makes it (kind -> class), the attention as a Weight."""
    if isinstance(attention, dict):
        weight = Weight(attention.get("scale", 1.0), Curve(attention["values"], attention["rate"]))
    elif isinstance(attention, torch.Tensor) and attention.ndim >= 2:
        weight = Weight(mask=attention)
    else:
        weight = Weight(float(attention))
    common.update(label=label, weight=weight)
    canvas = dict(downscale=downscale, fit=fit)
    if kind == "video":
        return VideoControl(frames=media, source_fps=source_fps, **canvas, **common)
    if kind == "image":
        return ImageControl(image=media, frame_index=frame_index, **canvas, **common)
    if kind == "audio":
        return AudioControl(audio=media, placement=audio_placement, fit=fit, **common)
    return LoraControl(**common)


def check_controls(stack, latent):
    return plan_controls(stack, latent)


def build_references(model, latent, stack):
    """The items of a stack, video then audio."""
    video, audio = encode_controls(plan_controls(stack, latent), model, latent)
    return (*video, *audio)


def inner(item):
    return getattr(item, "conditioning", item)


def weights(item):
    return getattr(item, "attention_mask", None)


def downscale_of(control):
    return control.factor(ControlPlan((), LoraStack()))


def write_lora(path, factor: str | None, seed: int = 0, temporal: str | None = None):
    """A one-module LoRA on the tiny transformer's first self-attention query, optionally declaring its factors."""
    g = torch.Generator().manual_seed(seed)
    key = "diffusion_model.transformer_blocks.0.attn1.to_q"
    tensors = {f"{key}.lora_A.weight": torch.randn(4, 64, generator=g) / 8,
               f"{key}.lora_B.weight": torch.randn(64, 4, generator=g) / 8}
    metadata = {} if factor is None else {"reference_downscale_factor": factor}
    if temporal is not None:
        metadata["reference_temporal_scale_factor"] = temporal
    save_file(tensors, str(path), metadata=metadata or None)
    return read_lora(path)


@pytest.fixture
def loras(tmp_path):
    return {name: write_lora(tmp_path / f"{name}.safetensors", factor, seed=i)
            for i, (name, factor) in enumerate((("plain", None), ("half", "2"), ("half_b", "2.0"), ("quarter", "4")))}




@pytest.fixture
def no_encoding(monkeypatch):
    """Fail loudly if anything reaches a VAE encoder (checks must come first)."""

    def refuse(*_a, **_k):
        raise AssertionError("encoded before every check had run")

    monkeypatch.setattr(controls, "encode_frames", refuse)
    monkeypatch.setattr(controls, "encode_audio", refuse)


@pytest.fixture
def encoded_frames(monkeypatch):
    """Record what reaches the video encoder (frames, width, height) and return a random latent of the right size."""
    seen = []

    def fake(_model, frames, width, height):
        seen.append((frames.clone(), width, height))
        return torch.randn(1, 128, (frames.shape[0] - 1) // 8 + 1, height // 32, width // 32)

    monkeypatch.setattr(controls, "encode_frames", fake)
    return seen


@pytest.fixture(scope="module")
def target():
    return latents.empty_latent(W, H, FRAMES, FPS)


@pytest.fixture(scope="module")
def prompts(tiny_model, make_context):
    return PromptPair(make_context(tiny_model, seed=1), None)


def sample(model, prompts, latent, refs):
    sigmas = torch.tensor([1.0, 0.0])
    video = [r for r in refs if not isinstance(inner(r), ReferenceAudio)]
    audio = [r for r in refs if isinstance(inner(r), ReferenceAudio)]
    return sampling.sample(model.transformer, latent, prompts.positive, None, Guidance(), sigmas, 0,
                           causal_positions=True, dtype=model.dtype, video_items=video, audio_items=audio)


# --- encoding onto the target grid --------------------------------------------------------------------------------


def test_video_control_becomes_a_reference_on_the_target_grid(tiny_model, target):
    item, = build_references(tiny_model, target, (Control("depth", "video", clip(), strength=0.8, attention=0.5),))
    ref = inner(item)
    assert isinstance(ref, ReferenceVideo)
    assert ref.latent.shape == (1, 128, 3, 2, 2) and torch.isfinite(ref.latent).all()
    assert (ref.downscale_factor, ref.temporal_scale_factor, ref.strength) == (1, 1, 0.8)
    assert torch.equal(weights(item), torch.full((12,), 0.5))


# --- fit: refuse or resample ---------------------------------------------------------------------------------------

MISMATCHES = {
    "length": (dict(media=clip(13)), "reference has 13 frames, the clip 17"),
    "fps": (dict(media=clip(), source_fps=30.0), "reference is 30 fps, the clip 24 fps"),
    "size": (dict(media=clip(w=96)), "reference is 96x64, expected 64x64"),
    "downscaled size": (dict(media=clip(), downscale=2), "reference is 64x64, expected 32x32"),
}


@pytest.mark.parametrize("name", sorted(MISMATCHES))
def test_fit_error_refuses_a_mismatched_reference_before_encoding(tiny_model, target, no_encoding, name):
    changes, message = MISMATCHES[name]
    control = Control(f"pose ({name})", "video", fit="error", **changes)
    for check in (lambda: check_controls((control,), target), lambda: build_references(tiny_model, target, (control,))):
        with pytest.raises(InputError) as err:
            check()
        assert f"pose ({name})" in str(err.value) and message in str(err.value) and "resample" in str(err.value)


def test_fit_error_accepts_a_matching_reference(target, no_encoding):
    check_controls((Control("pose", "video", clip(), fit="error", source_fps=24.0),
                    Control("pose small", "video", clip(h=32, w=32), fit="error", downscale=2),
                    Control("face", "image", clip(1), fit="error", frame_index=16)), target)


def test_fit_error_refuses_audio_of_another_length_before_encoding(tiny_model, target, no_encoding):
    control = Control("sound", "audio", sound(1.0), fit="error")
    with pytest.raises(InputError, match=r"sound: reference audio lasts 1\.00 s, the clip 0\.71 s"):
        build_references(tiny_model, target, (control,))


def test_fit_resample_picks_source_frames_by_time(tiny_model, target, encoded_frames):
    """30 fps -> 24 fps: target frame i at i/24 s takes the source frame shown then, floor(i * 30 / 24)."""
    build_references(tiny_model, target, (Control("depth", "video", numbered(24), source_fps=30.0),))
    frames, width, height = encoded_frames[0]
    picked = [round(float(f[0, 0, 0]) * 100) for f in frames]
    assert picked == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18, 20]
    assert (width, height) == (W, H)


def test_fit_resample_holds_the_last_frame_of_a_short_source(tiny_model, target, encoded_frames):
    build_references(tiny_model, target, (Control("depth", "video", numbered(10)),))  # same fps, 10 of 17 frames
    picked = [round(float(f[0, 0, 0]) * 100) for f in encoded_frames[0][0]]
    assert picked == list(range(10)) + [9] * 7


def test_fit_resample_adapts_size_with_the_real_encoder(tiny_model, target):
    ref, = build_references(tiny_model, target, (Control("edges", "video", clip(25, h=48, w=80)),))
    assert ref.latent.shape == (1, 128, 3, 2, 2)


def test_lora_temporal_scale_factor_subsamples_the_reference_like_lightricks(tiny_model, prompts, tmp_path,
                                                                             encoded_frames):
    """A LoRA declaring reference_temporal_scale_factor 2: the reference keeps frame 0 and every 2nd frame after it
    (frames 0, 1, 3, ..., 15: 9 of 17), and its time bounds are its own (spacing 2/fps) shifted so its last patch
    ends with the clip's, the causal first patch clamped to [0, 1/fps) (by hand from the current source's rule)."""
    lora = write_lora(tmp_path / "t2.safetensors", None, temporal="2")
    target = latents.empty_latent(W, H, FRAMES, FPS)
    item, = build_references(tiny_model, target, (Control("depth", "video", numbered(FRAMES), lora=lora),))
    picked = [round(float(f[0, 0, 0]) * 100) for f in encoded_frames[0][0]]
    assert picked == [0, *range(1, FRAMES, 2)]
    ref = inner(item)
    assert ref.temporal_scale_factor == 2 and ref.latent.shape[2] == 2
    with recorded(tiny_model.transformer) as calls:
        sample(tiny_model, prompts, target, (item,))
    time = calls[0][0].positions[0, 0, NV:]  # (2 frames x 4 cells, 2)
    # own bounds in pixel frames: causal [0, 1), then [1, 9) ; / (fps / 2) ; minus (2 - 1) / fps ; clamp at 0
    by_hand = torch.tensor([[0.0, 1.0], [1.0, 9.0]]) * 2 / FPS - 1 / FPS
    torch.testing.assert_close(time, by_hand.clamp(min=0).repeat_interleave(4, 0), rtol=0, atol=1e-7)


# --- image and audio placement ----------------------------------------------------------------------------------------


def test_image_control_sits_at_its_frame_index(tiny_model, prompts, target):
    control = Control("face", "image", clip(1), frame_index=8,
                      attention={"values": [1.0, 1.0, 0.3, 1.0], "rate": 4.0})  # read at 8/24 s -> index 1.33 -> 1
    item, = build_references(tiny_model, target, (control,))
    ref = inner(item)
    assert isinstance(ref, Keyframe) and ref.keyframes.shape == (1, 128, 1, 2, 2) and ref.frame_idx == 8
    assert weights(item) is None
    with recorded(tiny_model.transformer) as calls:
        sample(tiny_model, prompts, target, (item,))
    time = calls[0][0].positions[0, 0, NV:]
    torch.testing.assert_close(time, torch.tensor([8 / FPS, 9 / FPS]).expand(4, 2), rtol=0, atol=1e-7)
    # a curve over time is read at the image's own time (8/24 s), not at the clip's start
    late = Control("face", "image", clip(1), frame_index=12, attention={"values": [1.0, 1.0, 0.3, 1.0], "rate": 4.0})
    item, = build_references(tiny_model, target, (late,))  # 12/24 s * 4 = index 2
    torch.testing.assert_close(weights(item), torch.full((4,), 0.3))


def test_image_frame_index_outside_the_clip_is_refused(target, no_encoding):
    with pytest.raises(InputError, match="face: frame_index must be between 0 and 16, got 17"):
        check_controls((Control("face", "image", clip(1), frame_index=17),), target)


def test_aligned_audio_reference_has_the_target_audio_positions(tiny_model, prompts, target):
    ref, = build_references(tiny_model, target, (Control("song", "audio", sound(FRAMES / FPS)),))
    assert isinstance(ref, ReferenceAudio) and ref.time_offset == 0.0 and ref.latent.shape == (1, 8, NA, 16)
    with recorded(tiny_model.transformer) as calls:
        sample(tiny_model, prompts, target, (ref,))
    pos = calls[0][1].positions[0, 0]
    assert pos.shape == (2 * NA, 2) and torch.equal(pos[NA:], pos[:NA])


def test_audio_reference_before_the_clip_ends_0_04_s_before_it(tiny_model, prompts, target):
    """'before': the reference keeps its own spacing and its last token's end bound lies 0.04 s before 0 (as
    Lightricks' pipelines place a reference voice); a 1 s voice on a 0.7 s clip is fine (length is free)."""
    ref, = build_references(tiny_model, target, (Control("voice", "audio", sound(1.0), audio_placement="before",
                                                          fit="error"),))
    with recorded(tiny_model.transformer) as calls:
        sample(tiny_model, prompts, target, (ref,))
    pos = calls[0][1].positions[0, 0]
    own = pos[NA:]
    assert own.shape[0] == ref.latent.shape[2] >= 25
    assert float(own[-1, 1]) == pytest.approx(-0.04, abs=1e-6)
    assert bool((own < 0).all())
    alone = latents.audio_positions(latents.AudioLatentShape.from_torch_shape(ref.latent.shape))[0, 0]
    torch.testing.assert_close(own - own[-1, 1], alone - alone[-1, 1], rtol=0, atol=1e-5)


# --- small-to-large factor: LoRA metadata, node, conflicts ----------------------------------------------------------


def test_lora_metadata_gives_the_factor_unless_the_node_sets_it(loras):
    media = clip()
    assert downscale_of(Control("a", "video", media)) == 1
    assert downscale_of(Control("a", "video", media, lora=loras["plain"])) == 1
    assert downscale_of(Control("a", "video", media, lora=loras["half"])) == 2
    assert downscale_of(Control("a", "video", media, lora=loras["half"], downscale=2)) == 2
    assert downscale_of(Control("a", "video", media, lora=loras["plain"], downscale=4)) == 4
    assert downscale_of(Control("a", "video", media, downscale=4)) == 4


def test_node_downscale_contradicting_its_lora_is_refused(loras, target, no_encoding):
    control = Control("pose", "video", clip(), lora=loras["half"], downscale=4)
    with pytest.raises(InputError, match=r"pose: downscale 4 conflicts with its LoRA half\.safetensors, trained with "
                                         r"reference_downscale_factor 2"):
        check_controls((control,), target)


def test_two_loras_declaring_different_factors_are_refused_before_encoding(tiny_model, prompts, loras, target,
                                                                          no_encoding):
    stack = (Control("pose", "video", clip(), lora=loras["half"]),
             Control("depth", "video", clip(), lora=loras["quarter"]))
    with pytest.raises(InputError, match=r"conflicting reference_downscale_factor.*half\.safetensors=2.*"
                                         r"quarter\.safetensors=4"):
        check_controls(stack, target)
    with pytest.raises(InputError, match="conflicting reference_downscale_factor"):
        run_sampler(tiny_model, prompts, target, None, steps=1, schedule_name="ltx2", seed=0, controls=stack)
    # the same factor written two ways is no conflict; a LoRA without the key declares nothing
    check_controls((Control("a", "video", clip(h=32, w=32), lora=loras["half"]),
                    Control("b", "video", clip(h=32, w=32), lora=loras["half_b"]),
                    Control("c", "video", clip(), lora=loras["plain"], downscale=1)), target)


@pytest.mark.parametrize("size, k", [((96, 64), 2), ((64, 64), 4), ((128, 96), 4)])
def test_downscale_that_does_not_divide_the_target_is_refused_naming_the_control(size, k, no_encoding):
    latent = latents.empty_latent(*size, FRAMES, FPS)
    with pytest.raises(InputError) as err:
        check_controls((Control("camera path", "video", clip(), downscale=k),), latent)
    assert str(err.value).startswith(f"camera path: downscale {k} needs a target size divisible by {32 * k}")


def test_lora_factor_shapes_the_canvas_in_a_full_run(tiny_model, prompts, loras):
    """run_sampler end to end: a control whose LoRA declares 2 (node on 'from LoRA') is encoded at half size, joins
    with 4x fewer tokens and positions covering the whole 128x128 target."""
    latent = latents.empty_latent(128, 128, FRAMES, FPS)
    n = 3 * 4 * 4
    with recorded(tiny_model.transformer) as calls:
        out = run_sampler(tiny_model, prompts, latent, None, steps=1, schedule_name="ltx2", seed=0,
                          controls=(Control("pose", "video", clip(), lora=loras["half"]),))
    video = calls[0][0]
    assert video.latent.shape[1] == n + n // 4
    ref = video.positions[0, :, n:]
    assert float(ref[1].max()) == float(ref[2].max()) == 128.0 and float(ref[1:, :, 1].min()) == 64.0
    assert out.video.shape == latent.video.shape


# --- off means off; batches -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("off", [dict(strength=0.0), dict(attention=0.0), dict(attention=torch.zeros(H, W)),
                                 dict(attention={"values": [1.0], "rate": 1.0, "scale": 0.0})])
def test_a_control_that_is_off_changes_nothing_lora_included(tiny_model, prompts, loras, target, no_encoding, off):
    plain = run_sampler(tiny_model, prompts, target, None, steps=2, schedule_name="ltx2", seed=3)
    control = Control("depth", "video", clip(), lora=loras["plain"], **off)
    out = run_sampler(tiny_model, prompts, target, None, steps=2, schedule_name="ltx2", seed=3, controls=(control,))
    assert torch.equal(out.video, plain.video) and torch.equal(out.audio, plain.audio)


def test_batch_of_two_clips_shares_the_references(tiny_model, prompts, make_context):
    latent = latents.empty_latent(W, H, FRAMES, FPS, batch=2)
    prompts2 = PromptPair(make_context(tiny_model, batch=2, seed=5), None)
    stack = (Control("depth", "video", clip()), Control("song", "audio", sound(FRAMES / FPS)))
    with recorded(tiny_model.transformer) as calls:
        out = run_sampler(tiny_model, prompts2, latent, None, steps=1, schedule_name="ltx2", seed=0, controls=stack)
    video, audio = calls[0]
    assert video.latent.shape == (2, 2 * NV, 128) and audio.latent.shape == (2, 2 * NA, 128)
    assert torch.equal(video.latent[0, NV:], video.latent[1, NV:])
    assert torch.equal(audio.latent[0, NA:], audio.latent[1, NA:])
    assert out.video.shape == (2, 128, 3, 2, 2) and out.audio.shape == (2, 8, NA, 16)
    assert not torch.equal(out.video[0], out.video[1])  # two clips, not one copied
