"""Turning a control signal into the media its reference canvas shows, for the modalities that need it.

These are the pack's conventions for LoRAs trained on them (a LoRA's own metadata and model card win):
inpaint / outpaint references show the known pixels with the region to generate filled with mid-grey; a
who-is-talking reference is the speaker mask as a white-on-black clip; an audio-intensity reference is noise whose
loudness follows the envelope, encoded by the audio VAE like any sound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InputError, require
from .inputs import frames_at

FILL = 0.5


def fit_mask(mask: torch.Tensor, frames: int, height: int, width: int, name: str = "mask") -> torch.Tensor:
    """A MASK [F or 1, H', W'] (or [H', W']) in 0..1 resized to [frames, height, width] (last frame repeats)."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise InputError(f"{name} must be a MASK [frames, height, width], got {tuple(mask.shape)}")
    mask = F.interpolate(mask.float()[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    idx = torch.arange(frames).clamp(max=mask.shape[0] - 1)
    return mask[idx].clamp(0, 1)


def fill_masked(frames: torch.Tensor, mask: torch.Tensor, value: float = FILL) -> torch.Tensor:
    """IMAGE frames with the masked region (mask 1 = to generate) replaced by `value`."""
    m = fit_mask(mask, frames.shape[0], frames.shape[1], frames.shape[2])[..., None]
    return frames * (1 - m) + value * m


def mask_to_frames(mask: torch.Tensor) -> torch.Tensor:
    """A MASK [F, H, W] as IMAGE frames [F, H, W, 3] (white where the mask is 1)."""
    if mask.ndim == 2:
        mask = mask[None]
    return mask.float().clamp(0, 1)[..., None].expand(*mask.shape, 3).contiguous()


def gate_mask(mask: torch.Tensor, activity: torch.Tensor, rate: float, fps: float) -> torch.Tensor:
    """Multiply each mask frame by the activity curve (sampled at `rate` per second) at that frame's time (its
    latest sample not after it, inputs.frames_at)."""
    if mask.ndim == 2:
        mask = mask[None]
    idx = frames_at(mask.shape[0], rate, fps, activity.numel())  # the curve's sample at each frame's time
    return mask * activity.float().flatten()[idx][:, None, None].clamp(0, 1)


def render_intensity(values: torch.Tensor, rate: float, seconds: float, sample_rate: int = 16000,
                     seed: int = 0) -> dict:
    """An AUDIO whose loudness follows `values` (>= 0, sampled at `rate` per second; normalised to peak 1):
    stereo white noise times the linearly interpolated envelope, `seconds` long."""
    values = torch.as_tensor(values).float().flatten()
    require(values.numel() >= 1 and bool((values >= 0).all()), "envelope", "non-negative values", "negative values")
    require(rate > 0, "envelope rate", "positive", rate)
    n = max(1, round(seconds * sample_rate))
    t = torch.arange(n) / sample_rate * rate
    lo = t.floor().long().clamp(max=values.numel() - 1)
    hi = (lo + 1).clamp(max=values.numel() - 1)
    frac = (t - t.floor()).clamp(0, 1)
    env = values[lo] * (1 - frac) + values[hi] * frac
    env = env / env.max().clamp(min=1e-8)
    noise = torch.randn(2, n, generator=torch.Generator().manual_seed(seed)) * 0.3
    return {"waveform": (noise * env).clamp(-1, 1)[None], "sample_rate": sample_rate}
