"""The one validator for each kind of media a user gives the pack, and the one resampler for each axis.

Controls, preprocessors and the writers all call these, so a frame, a mask or a sound is accepted or refused the
same way everywhere, with an error that names the input, what was expected and what was given.

- `check_images(images, name)`: IMAGE float [F, H, W, 3] in 0..1 (1 channel is repeated, 4 drops alpha).
- `check_mask(mask, name)`: MASK float [F, H, W] (a single [H, W] mask becomes one frame).
- `check_audio(audio, name)`: AUDIO {"waveform": [B, C, T], "sample_rate"} as float32 CPU [B, C, T] and the rate.
- `resample_audio(wave, sr, target)`: along the last axis (torchaudio's windowed sinc); identity at equal rates.
- `frames_at(count, source_rate, target_rate, available)`: for each of `count` frames at `target_rate`, the index
  of the source sample shown at its time (the latest one not after it), held at the last one available.
"""

from __future__ import annotations

import math

import torch

from .errors import InputError

__all__ = ["check_audio", "check_images", "check_mask", "frames_at", "resample_audio"]

MIN_SAMPLE_RATE = 1000


def _shape(x) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def check_images(images: torch.Tensor, name: str = "image") -> torch.Tensor:
    """``images`` as float [F, H, W, 3]; InputError for anything that is not an IMAGE batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name} must be an IMAGE batch [frames, height, width, 3], got {_shape(images)}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise InputError(f"{name} must hold at least one non-empty frame, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"{name} must be a float IMAGE in 0..1, got {images.dtype}")
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    return images.float()


def check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``mask`` as float [F, H, W] (a single [H, W] mask becomes one frame)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or 0 in mask.shape:
        raise InputError(f"{name} must be a MASK [frames, height, width], got {_shape(mask)}")
    return (mask[None] if mask.ndim == 2 else mask).float()


def check_audio(audio, name: str = "audio") -> tuple[torch.Tensor, int]:
    """Validate ComfyUI AUDIO ({"waveform": [B, C, T], "sample_rate"}); return float32 CPU [B, C, T] (NaN -> 0)
    and the rate."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"{name} must be an AUDIO dict with 'waveform' and 'sample_rate', got {type(audio).__name__}")
    wave = torch.as_tensor(audio["waveform"])
    if wave.ndim == 2:
        wave = wave[None]
    if wave.ndim != 3 or wave.shape[0] < 1 or wave.shape[1] < 1:
        raise InputError(f"{name} waveform must be [batch, channels, samples], got {tuple(wave.shape)}")
    if wave.shape[-1] < 1:
        raise InputError(f"{name} must hold at least one sample, got 0")
    sr = int(audio["sample_rate"])
    if sr < MIN_SAMPLE_RATE:
        raise InputError(f"{name} sample_rate must be at least {MIN_SAMPLE_RATE} Hz, got {sr}")
    return torch.nan_to_num(wave.detach().float().cpu()), sr


def resample_audio(wave: torch.Tensor, sr: int, target: int) -> torch.Tensor:
    """Resample along the last axis from ``sr`` to ``target`` Hz (torchaudio's windowed sinc); identity if equal."""
    if int(sr) == int(target):
        return wave
    import torchaudio.functional as AF

    return AF.resample(wave.contiguous(), int(sr), int(target))


def frames_at(count: int, source_rate: float, target_rate: float, available: int) -> torch.Tensor:
    """The source index shown at each of `count` target frames: floor(k * source_rate / target_rate) (a tolerance
    of 1e-6 keeps exact ratios exact), held at `available - 1` past the source's end. Int64 [count]."""
    if available < 1:
        raise InputError(f"a source to resample must hold at least one frame, got {available}")
    step = float(source_rate) / float(target_rate)
    idx = [min(available - 1, math.floor(k * step + 1e-6)) for k in range(int(count))]
    return torch.tensor(idx, dtype=torch.long)
