"""Two-stage inference: the latent upsampler file loads strictly, upscaling equals ltx-core's upsample_video with the
checkpoint's own statistics, stage two keeps stage one's sound exactly when asked, and bad inputs are refused first."""

from __future__ import annotations

import json

import pytest
import torch
from ltx_core.model.upsampler import upsample_video
from safetensors.torch import load_file, save_file

from avcontrol_core import latents, tiny
from avcontrol_core.conditioning import PromptPair
from avcontrol_core.errors import InputError
from avcontrol_core.guidance import Guidance
from avcontrol_core.pipeline import run_sampler
from avcontrol_core.upsampler import (load_upsampler, stage_one_size, upscale_for_model, upscale_latent,
                                      upscaled_side, video_statistics)


@pytest.fixture(scope="module")
def upsampler(tiny_models):
    return load_upsampler(tiny_models["upscaler"])


@pytest.fixture(scope="module")
def stage_one(tiny_model, make_context):
    """A sampled 64x64x9 latent (stage one's output)."""
    prompts = PromptPair(make_context(tiny_model, seed=3), None)
    latent = latents.empty_latent(64, 64, 9, 24.0)
    return run_sampler(tiny_model, prompts, latent, Guidance(), steps=2, schedule_name="ltx2", seed=5)


def test_the_file_loads_with_its_config_and_exact_keys(tiny_models, upsampler):
    stored = load_file(str(tiny_models["upscaler"]))
    assert set(upsampler.state_dict()) == set(stored)
    assert torch.equal(upsampler.final_conv.weight, stored["final_conv.weight"])
    assert upsampler.spatial_scale == 2.0 and upsampler.mid_channels == 32 and not upsampler.training


def test_wrong_files_are_refused_with_the_reason(tiny_models, tmp_path):
    with pytest.raises(InputError, match="is an LTX-2 model checkpoint, not a latent upsampler"):
        load_upsampler(tiny_models["checkpoint_ltx2"])
    temporal = tiny.write_tiny_upscaler(tmp_path / "temporal.safetensors",
                                        {**tiny.tiny_upscaler_config(), "spatial_upsample": False,
                                         "temporal_upsample": True})
    with pytest.raises(InputError, match="temporal latent upsampler: only spatial"):
        load_upsampler(temporal)
    state = load_file(str(tiny_models["upscaler"]))
    del state["final_conv.bias"]
    save_file(state, str(tmp_path / "cut.safetensors"), metadata={"config": json.dumps(tiny.tiny_upscaler_config())})
    with pytest.raises(InputError, match="1 missing keys: final_conv.bias"):
        load_upsampler(tmp_path / "cut.safetensors")
    save_file(state, str(tmp_path / "bare.safetensors"))
    with pytest.raises(InputError, match="no 'config' metadata"):
        load_upsampler(tmp_path / "bare.safetensors")


def test_statistics_are_the_vaes_own(tiny_models, tiny_model):
    stats = video_statistics(tiny_models["checkpoint_ltx2"])
    encoder = tiny_model.component("video_encoder").per_channel_statistics
    for name in ("mean-of-means", "std-of-means"):
        assert torch.equal(stats.get_buffer(name), encoder.get_buffer(name))


def test_upscale_equals_ltx_core_and_keeps_the_sound(tiny_models, tiny_model, upsampler, stage_one):
    out = upscale_latent(stage_one, upsampler, video_statistics(tiny_models["checkpoint_ltx2"]), audio="keep")
    with torch.inference_mode():
        expected = upsample_video(stage_one.video, tiny_model.component("video_encoder"), upsampler)
    assert out.video.shape == (1, 128, 2, 4, 4) and (out.width, out.height) == (128, 128)
    torch.testing.assert_close(out.video, expected, rtol=0, atol=1e-5)
    assert not torch.equal(out.video[..., ::2, ::2], stage_one.video)  # a learned upsample, not a copy
    assert torch.equal(out.video_mask, torch.ones(1, 1, 2, 4, 4))
    assert torch.equal(out.audio, stage_one.audio) and not out.audio_mask.any()
    assert (out.frames, out.fps) == (stage_one.frames, stage_one.fps)
    refine = upscale_latent(stage_one, upsampler, video_statistics(tiny_models["checkpoint_ltx2"]), audio="refine")
    assert refine.audio_mask.all() and torch.equal(refine.video, out.video)


def test_stage_two_refines_the_video_and_keeps_stage_ones_sound_exactly(tiny_models, tiny_model, make_context,
                                                                         upsampler, stage_one):
    prompts = PromptPair(make_context(tiny_model, seed=3), None)
    stats = video_statistics(tiny_models["checkpoint_ltx2"])

    def stage_two(audio: str, seed: int = 9):
        up = upscale_latent(stage_one, upsampler, stats, audio=audio)
        return up, run_sampler(tiny_model, prompts, up, Guidance(), steps=3, schedule_name="distilled_stage2",
                               seed=seed)

    up, kept = stage_two("keep")
    assert kept.video.shape == up.video.shape and (kept.width, kept.height) == (128, 128)
    assert torch.equal(kept.audio, stage_one.audio)  # clean tokens at t=0 on every step: bit-identical
    assert kept.audio_mask.all()  # the result is a finished latent
    # starting at sigma 0.909 from the upscaled latent, not from noise: the result stays nearer its input than a
    # refinement of a different input does
    other = up.replace(video=torch.randn_like(up.video))
    far = run_sampler(tiny_model, prompts, other, Guidance(), steps=3, schedule_name="distilled_stage2", seed=9)
    assert (kept.video - up.video).norm() < (far.video - up.video).norm()
    _, refined = stage_two("refine")
    assert not torch.equal(refined.audio, stage_one.audio)


def test_bad_inputs_are_refused_before_any_work(tiny_models, tiny_model, make_context, upsampler, stage_one):
    stats = video_statistics(tiny_models["checkpoint_ltx2"])
    empty = latents.empty_latent(64, 64, 9, 24.0)
    with pytest.raises(InputError, match="latent is empty"):
        upscale_latent(empty, upsampler, stats)
    with pytest.raises(InputError, match="audio must be one of"):
        upscale_latent(stage_one, upsampler, stats, audio="drop")
    wide = latents.empty_latent(2080, 32, 1, 24.0)
    wide = wide.replace(video=torch.ones_like(wide.video))
    with pytest.raises(InputError, match="width must be a multiple of 32 between 32 and 4096, got 4160"):
        upscale_latent(wide, upsampler, stats)
    prompts = PromptPair(make_context(tiny_model), None)
    with pytest.raises(InputError, match="schedule 'distilled_stage2' starts at sigma 0.909375: it refines a latent"):
        run_sampler(tiny_model, prompts, empty, Guidance(), steps=3, schedule_name="distilled_stage2", seed=0)


def test_the_rational_x1_5_resampler_sizes_are_predicted_exactly(tmp_path):
    """LTX-2.3 ships x1.5 upsamplers (shuffle up by 3, blur-downsample by 2): odd sides do not scale by exactly 1.5."""
    path = tiny.write_tiny_upscaler(tmp_path / "x1.5.safetensors",
                                    {**tiny.tiny_upscaler_config(), "rational_resampler": True, "spatial_scale": 1.5})
    up = load_upsampler(path)
    for n in (2, 3, 4, 7):
        with torch.inference_mode():
            out = up(torch.randn(1, 128, 1, n, n))
        assert out.shape[-1] == upscaled_side(n, up) == (3 * n - 1) // 2 + 1
    assert stage_one_size(96, 192, up) == (64, 128)
    with pytest.raises(InputError, match="width must be a size this x1.5 upsampler reaches .* got 80"):
        stage_one_size(80, 96, up)


def test_upscale_runs_in_the_models_dtype_on_a_copy_and_marks_the_latent(tiny_models, tiny_model, upsampler,
                                                                         stage_one):
    before = {n: p.clone() for n, p in upsampler.state_dict().items()}
    stats = video_statistics(tiny_models["checkpoint_ltx2"])
    bf16 = upscale_latent(stage_one, upsampler, stats, dtype=torch.bfloat16)
    fp32 = upscale_latent(stage_one, upsampler, stats)
    assert 0 < float((bf16.video - fp32.video).norm() / fp32.video.norm()) < 0.05  # it did run in bf16
    assert all(torch.equal(p, before[n]) and p.dtype == torch.float32 for n, p in upsampler.state_dict().items())
    assert bf16.upscaled and fp32.upscaled and not stage_one.upscaled
    via_model = upscale_for_model(tiny_model, stage_one, upsampler)  # the model's device and dtype (fp32, CPU)
    assert torch.equal(via_model.video, fp32.video)


def test_an_upscaled_latent_is_never_re_noised(tiny_models, tiny_model, make_context, upsampler, stage_one):
    up = upscale_latent(stage_one, upsampler, video_statistics(tiny_models["checkpoint_ltx2"]))
    prompts = PromptPair(make_context(tiny_model), None)
    for schedule in ("ltx2", "distilled"):
        with pytest.raises(InputError, match=f"schedule must be one of .*distilled_stage2.* got '{schedule}'"):
            run_sampler(tiny_model, prompts, up, Guidance(), steps=2, schedule_name=schedule, seed=0)
    refined = run_sampler(tiny_model, prompts, up, Guidance(), steps=3, schedule_name="distilled_stage2", seed=0)
    assert not refined.upscaled  # a finished latent again
