"""Two-stage inference: the spatial latent upsampler between the stages.

Lightricks' two-stage pipeline (ltx-pipelines `ti2vid_two_stages`; MMControl's "two-stage progressive inference"):
stage one samples at half the target size with guidance; the video latent is un-normalised with the video VAE's
per-channel statistics, upsampled by ltx-core's LatentUpsampler (a small conv net, its own file) and normalised again;
stage two refines it with the distilled LoRA on the 'distilled_stage2' schedule, which starts at sigma 0.909 from the
upsampled latent instead of pure noise. The stage-two sampler re-encodes the controls at the new size.

Sound in stage two:
- "keep": stage one's audio is a given stream (denoise mask 0, Modality sigma 0, as Lightricks' pipelines hold a given
  sound, e.g. audio-to-video); the video refinement hears it clean and it is returned as it was.
- "refine": re-noised with the video from stage two's first sigma; stage two refines both and returns both.
- "lightricks": what Lightricks' ti2vid two-stage pipeline does: re-noised and refined with the video (so the video
  hears a sound being refined, as in "refine"), then stage one's audio returned, not the refined one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from ltx_core.model.upsampler import LatentUpsampler, LatentUpsamplerConfigurator
from ltx_core.model.upsampler.spatial_rational_resampler import SpatialRationalResampler
from ltx_core.model.video_vae.ops import PerChannelStatistics

from . import checkpoint as ckpt
from .errors import InputError, require
from .latents import SCALE, VIDEO_CHANNELS, AVLatent, validate_size
from .residency import RESIDENCY, Hint

AUDIO_MODES = ("keep", "refine", "lightricks")
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
    ckpt.check_state(path.name, "latent upsampler", expected, tensors)
    module.load_state_dict(tensors, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def video_statistics(checkpoint: str | Path) -> PerChannelStatistics:
    """The video VAE's per-channel latent statistics (fp32) from an LTX-2 checkpoint, without building the VAE."""
    with torch.device("meta"):
        stats = PerChannelStatistics(VIDEO_CHANNELS)
    wanted = {STATISTICS_PREFIX + name: name for name in stats.state_dict()}  # not the unused ones the file carries
    tensors = ckpt.load_tensors(checkpoint, wanted.get, dtype=torch.float32)
    ckpt.check_state(Path(checkpoint).name, "video latent statistics", stats.state_dict(), tensors)
    stats.load_state_dict(tensors, strict=True, assign=True)
    return stats


def upscaled_side(n: int, upsampler: LatentUpsampler) -> int:
    """A latent side of `n` after the upsampler: x2 pixel shuffle doubles it; the rational resamplers (LTX-2.3's x1.5)
    shuffle up by num and blur-downsample by den with stride, giving (n*num - 1) // den + 1."""
    resampler = getattr(upsampler, "upsampler", None)
    if isinstance(resampler, SpatialRationalResampler):
        return (n * resampler.num - 1) // resampler.den + 1
    return round(n * float(upsampler.spatial_scale))


def stage_one_size(width: int, height: int, upsampler: LatentUpsampler) -> tuple[int, int]:
    """(width, height) to sample stage one at so that the upsampler gives exactly `width` x `height`."""
    out = []
    for name, side in (("width", width), ("height", height)):
        target = side // SCALE.width
        n = max(1, round(target / float(upsampler.spatial_scale)))
        if side % SCALE.width or upscaled_side(n, upsampler) != target:
            scale = float(upsampler.spatial_scale)
            raise InputError(f"{name} must be a size this x{scale:g} upsampler reaches from a whole stage-one latent "
                             f"({name} / {scale:g} a multiple of 32; x2: multiples of 64), got {side}")
        out.append(n * SCALE.width)
    return out[0], out[1]


@torch.inference_mode()
def upscale_latent(latent: AVLatent, upsampler: LatentUpsampler, statistics: PerChannelStatistics, *,
                   audio: str = "keep", device: torch.device | str = "cpu",
                   dtype: torch.dtype | None = None) -> AVLatent:
    """Stage two's input: `latent`'s video upsampled in space (ltx-core's upsample_video: un-normalise, upsample,
    normalise; the statistics in fp32, the upsampler in `dtype` (default: its own) on `device` for the call only, the
    loaded one left as it was), to be denoised in full (mask 1); its sound kept clean (mask 0) or marked for
    refinement (mask 1) by `audio`. The result is marked `upscaled` (the sampler refines it, never re-noises it)."""
    require(audio in AUDIO_MODES, "audio", f"one of {AUDIO_MODES}", audio)
    if not bool(latent.video.any()):
        raise InputError("latent is empty (all zeros): upscale the latent that the stage-one sampler returns")
    height, width = (upscaled_side(n, upsampler) for n in latent.video.shape[3:])
    validate_size(width * SCALE.width, height * SCALE.height, latent.frames, latent.fps)  # before any work
    own = next(upsampler.parameters()).dtype
    device, dtype = torch.device(device), dtype or own
    # a copy when the dtype changes (the loaded upsampler is shared between runs), else the shared one; on the
    # device for this call only, through the residency (room made first; out of memory names the stage-one size)
    runner = copy.deepcopy(upsampler).to(dtype) if dtype != own else upsampler
    size = f"{latent.width}x{latent.height}x{latent.frames}"
    activations = latent.video.numel() * 4 * 4 * 2 * upsampler.mid_channels // VIDEO_CHANNELS
    hint = Hint("stage-one resolution or frames", size, "smaller")
    with RESIDENCY.on_device(runner, device, f"upscaling a {size} latent", activations, [hint]):
        x = statistics.un_normalize(latent.video.to(device, torch.float32))
        x = runner(x.to(dtype)).float()
        video = statistics.normalize(x).cpu()
    del runner, x
    b, _, f, h, w = video.shape
    keep = audio == "keep"
    return latent.replace(
        video=video, video_mask=torch.ones(b, 1, f, h, w),
        audio=latent.audio.clone(), audio_mask=torch.full_like(latent.audio_mask, 0.0 if keep else 1.0),
        width=w * SCALE.width, height=h * SCALE.height, upscaled=True, return_given_audio=audio == "lightricks",
    )


def upscale_for_model(model, latent: AVLatent, upsampler: LatentUpsampler, audio: str = "keep") -> AVLatent:
    """upscale_latent on the model's device and in its dtype, the model's transformer parked first (the residency
    then makes room for the upsampler and its activations); running out of memory raises GPUMemoryError naming the
    stage-one size, after the pack's models gave back what they held."""
    stats = video_statistics(model.path)
    if model.device.type != "cpu":
        model.park()
    return upscale_latent(latent, upsampler, stats, audio=audio, device=model.device, dtype=model.dtype)
