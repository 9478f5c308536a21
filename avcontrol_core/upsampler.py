"""Two-stage inference: the spatial latent upsampler between the stages.

Lightricks' two-stage pipeline (ltx-pipelines `ti2vid_two_stages`; MMControl's "two-stage progressive inference"):
stage one samples at half the target size with guidance; the video latent is un-normalised with the video VAE's
per-channel statistics, upsampled by ltx-core's LatentUpsampler (a small conv net, its own file) and normalised again;
stage two refines it with the distilled LoRA on the 'distilled_stage2' schedule, which starts at sigma 0.909 from the
upsampled latent instead of pure noise. The stage-two sampler re-encodes the controls at the new size.

Sound: "keep" holds stage one's audio fixed through stage two (its tokens stay clean, at t=0, so the video refinement
hears the finished sound; the official pipeline also returns stage one's audio); "refine" re-noises it with the video
and lets stage two refine both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ltx_core.model.upsampler import LatentUpsampler, LatentUpsamplerConfigurator
from ltx_core.model.video_vae.ops import PerChannelStatistics

from . import checkpoint as ckpt
from .errors import InputError, require
from .latents import SCALE, VIDEO_CHANNELS, AVLatent, validate_size

AUDIO_MODES = ("keep", "refine")
STATISTICS_PREFIX = "vae.per_channel_statistics."


def load_upsampler(path: str | Path) -> LatentUpsampler:
    """A spatial latent upsampler file (.safetensors, its config in the metadata, as Lightricks ships
    ltx-2-spatial-upscaler-x2-1.0.safetensors), on the CPU in the file's dtype, refusing any key or shape mismatch."""
    path = Path(path)
    meta = ckpt.read_metadata(path)
    if "config" not in meta:
        raise InputError(f"{path.name} has no 'config' metadata: it is not an LTX-2 latent upsampler "
                         f"(expected e.g. ltx-2-spatial-upscaler-x2-1.0.safetensors)")
    config = json.loads(meta["config"])
    if "transformer" in config:
        raise InputError(f"{path.name} is an LTX-2 model checkpoint, not a latent upsampler: choose it in Load "
                         f"AVControl Model, and a spatial upscaler file (models/latent_upscale_models) here")
    if config.get("temporal_upsample") or not config.get("spatial_upsample", True):
        raise InputError(f"{path.name} is a temporal latent upsampler: only spatial upsamplers are supported "
                         f"(config spatial_upsample={config.get('spatial_upsample', True)}, "
                         f"temporal_upsample={config.get('temporal_upsample')})")
    channels = config.get("in_channels", 128)
    require(channels == VIDEO_CHANNELS, "upscaler", f"an upsampler of {VIDEO_CHANNELS}-channel LTX-2 latents",
            f"{path.name} with in_channels={channels}")
    with torch.device("meta"):
        module = LatentUpsamplerConfigurator.from_config(config)
    expected = module.state_dict()
    tensors = ckpt.load_tensors(path, lambda key: key)
    ckpt.check_keys(path.name, "latent upsampler", expected.keys(), tensors.keys())
    wrong = [f"{k} {tuple(t.shape)} vs {tuple(expected[k].shape)}" for k, t in tensors.items()
             if t.shape != expected[k].shape]
    if wrong:
        raise InputError(f"{path.name}: latent upsampler tensor shapes do not match its config: {ckpt._short(wrong)}")
    module.load_state_dict(tensors, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def video_statistics(checkpoint: str | Path) -> PerChannelStatistics:
    """The video VAE's per-channel latent statistics (fp32) from an LTX-2 checkpoint, without building the VAE."""
    with torch.device("meta"):
        stats = PerChannelStatistics(VIDEO_CHANNELS)
    wanted = {STATISTICS_PREFIX + name: name for name in stats.state_dict()}  # not the unused ones the file carries
    tensors = ckpt.load_tensors(checkpoint, wanted.get, dtype=torch.float32)
    ckpt.check_keys(Path(checkpoint).name, "video latent statistics", stats.state_dict().keys(), tensors.keys())
    stats.load_state_dict(tensors, strict=True, assign=True)
    return stats


@torch.inference_mode()
def upscale_latent(latent: AVLatent, upsampler: LatentUpsampler, statistics: PerChannelStatistics, *,
                   audio: str = "keep", device: torch.device | str = "cpu") -> AVLatent:
    """Stage two's input: `latent`'s video upsampled in space (ltx-core's upsample_video: un-normalise, upsample,
    normalise; the statistics in fp32, the upsampler in its own dtype, on `device` for the call only), to be denoised
    in full (mask 1); its sound kept clean (mask 0) or marked for refinement (mask 1) by `audio`."""
    require(audio in AUDIO_MODES, "audio", f"one of {AUDIO_MODES}", audio)
    if not bool(latent.video.any()):
        raise InputError("latent is empty (all zeros): upscale the latent that the stage-one sampler returns")
    scale = float(upsampler.spatial_scale)
    height, width = round(latent.video.shape[3] * scale), round(latent.video.shape[4] * scale)
    validate_size(width * SCALE.width, height * SCALE.height, latent.frames, latent.fps)  # before any work
    param = next(upsampler.parameters())
    home, dtype = param.device, param.dtype
    device = torch.device(device)
    try:
        upsampler.to(device)
        x = statistics.un_normalize(latent.video.to(device, torch.float32))
        x = upsampler(x.to(dtype)).float()
        video = statistics.normalize(x).cpu()
    finally:
        upsampler.to(home)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    b, _, f, h, w = video.shape
    keep = audio == "keep"
    return latent.replace(
        video=video, video_mask=torch.ones(b, 1, f, h, w),
        audio=latent.audio.clone(), audio_mask=torch.full_like(latent.audio_mask, 0.0 if keep else 1.0),
        width=w * SCALE.width, height=h * SCALE.height,
    )
