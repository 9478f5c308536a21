"""How strongly the generated tokens and a reference attend to each other: one `Weight` (a scalar, times an optional
curve over time, times an optional spatial mask) with one way to become per-token weights.

Every reference is a set of tokens with a time (its pixel frames or audio latent frames, in seconds) and, for video,
a place. The weight of a token is `value x curve(time) x mask(place)`, where

- the curve (`Curve`: values sampled at `rate` per second from t = 0, the clip's start; the audio preprocessors give
  25 values per second) is read at the nearest sample of each pixel frame's (or audio token's) own time, so the same
  curve means the same thing for a depth clip, a keyframe at frame 40 and a sound placed before the clip;
- the mask (a ComfyUI MASK, (H, W) or (F, H, W) pixel frames, any size) is area-resized to the reference's latent
  grid;
- a video latent frame averages the weights of the pixel frames it encodes (frame 0 is pixel frame 0, frame j the
  8 pixel frames before 8j + 1), so a per-frame weight fades in exactly where its frames are.

A weight of 1 on every token is "no mask" (plain attention, no dense mask), 0 on every token leaves the reference out
(exactly the run without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import InputError, require

LATENT_RATE = 25.0  # LTX-2 audio latents per second; the audio preprocessors' curves are sampled at this rate
TIME_SCALE = 8  # pixel frames per video latent frame (after the first)


@dataclass(frozen=True)
class Curve:
    """A value over time from the clip's start: `values` (T,) sampled at `rate` per second."""

    values: torch.Tensor
    rate: float = LATENT_RATE
    label: str = ""
    events: tuple[float, ...] = field(default=())  # times in seconds (onsets, segment bounds), when it has any

    def __post_init__(self) -> None:
        values = torch.as_tensor(self.values).float().flatten()
        object.__setattr__(self, "values", values)
        require(values.numel() >= 1, f"curve {self.label or ''}".strip(), "at least one value", "an empty curve")
        require(bool(torch.isfinite(values).all()), f"curve {self.label or ''}".strip(), "finite values",
                "NaN or inf")
        require(isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate > 0, "curve rate",
                "a positive number of values per second", self.rate)

    @property
    def seconds(self) -> float:
        return self.values.shape[0] / self.rate

    def at(self, times: torch.Tensor) -> torch.Tensor:
        """The nearest sample at each time (seconds); before the start the first, after the end the last value."""
        idx = (times.double() * self.rate).round().long().clamp(0, self.values.numel() - 1)
        return self.values[idx]

    def as_dict(self) -> dict:
        return {"values": self.values, "rate": float(self.rate), "label": self.label, "events": list(self.events)}

    @classmethod
    def of(cls, curve: Curve | dict) -> Curve:
        """A Curve, or the {"values", "rate"} dict form older graphs passed."""
        if isinstance(curve, Curve):
            return curve
        if isinstance(curve, dict) and "values" in curve and "rate" in curve:
            return cls(curve["values"], float(curve["rate"]), str(curve.get("label", "")),
                       tuple(curve.get("events", ())))
        raise InputError(f"curve must be an AVC_CURVE (values over time), got {type(curve).__name__}")


@dataclass(frozen=True)
class Weight:
    """value x curve(time) x mask(place), each in [0, 1]; see the module docstring."""

    value: float = 1.0
    curve: Curve | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.value, (int, float)) and math.isfinite(self.value) and 0.0 <= self.value <= 1.0,
                "attention", "a number between 0 and 1", self.value)
        if self.curve is not None:
            object.__setattr__(self, "curve", Curve.of(self.curve))
            values = self.curve.values
            require(bool(((values >= 0) & (values <= 1)).all()), "attention_curve", "values between 0 and 1",
                    f"values from {float(values.min()):g} to {float(values.max()):g}")
        if self.mask is not None:
            mask = torch.as_tensor(self.mask).float()
            if mask.ndim not in (2, 3) or mask.numel() == 0:
                raise InputError(f"attention_mask must be a MASK (H, W) or (frames, H, W), got {tuple(mask.shape)}")
            require(bool(torch.isfinite(mask).all() and ((mask >= 0) & (mask <= 1)).all()), "attention_mask",
                    "values between 0 and 1", "values outside (or NaN)")
            object.__setattr__(self, "mask", mask if mask.ndim == 3 else mask[None])

    def is_one(self) -> bool:
        return self.value == 1.0 and self.curve is None and self.mask is None

    def is_zero(self) -> bool:
        """0 on every token whatever the reference: left out entirely."""
        return (self.value == 0.0 or (self.curve is not None and bool((self.curve.values == 0).all()))
                or (self.mask is not None and bool((self.mask == 0).all())))

    def video(self, frames: torch.Tensor, fps: float, latent_frames: int, height: int,
              width: int) -> torch.Tensor | None:
        """Per-token weights (latent_frames * height * width,) of a video reference whose pixel frames are the clip's
        frames `frames` (indices; at frames / fps seconds), or None when every weight is 1. The curve is read at each
        frame's time, the mask at its frame (its last frame repeats), both pooled into latent frames."""
        if self.is_one():
            return None
        frames = torch.as_tensor(frames).long().flatten()
        count = frames.numel()
        per_frame = torch.full((count,), float(self.value))
        if self.curve is not None:
            per_frame = per_frame * self.curve.at(frames.double() / fps)
        grid = per_frame[:, None, None].expand(count, height, width)
        if self.mask is not None:
            spatial = F.interpolate(self.mask[:, None], size=(height, width), mode="area")[:, 0]
            grid = grid * spatial[frames.clamp(max=spatial.shape[0] - 1)]
        pooled = torch.einsum("jF,Fhw->jhw", frame_pooling(count, latent_frames), grid)
        return None if bool((pooled == 1).all()) else pooled.reshape(-1)

    def audio(self, times: torch.Tensor) -> torch.Tensor | None:
        """Per-token weights of an audio reference whose tokens start at `times` (seconds), or None when all are 1."""
        if self.mask is not None:
            raise InputError("attention_mask is spatial and applies to video or image controls, not to audio")
        if self.is_one():
            return None
        weights = torch.full((times.numel(),), float(self.value))
        if self.curve is not None:
            weights = weights * self.curve.at(times.flatten())
        return None if bool((weights == 1).all()) else weights

    def scaled(self, value: float) -> Weight:
        return Weight(self.value * value, self.curve, self.mask)


def frame_pooling(pixel_frames: int, latent_frames: int) -> torch.Tensor:
    """(latent_frames, pixel_frames) matrix averaging pixel frames into latent frames: latent frame 0 is pixel frame
    0, frame j the 8 pixel frames before 8j + 1 (a reference shorter than that repeats its last frame)."""
    pool = torch.zeros(latent_frames, pixel_frames)
    for j in range(latent_frames):
        lo, hi = (0, 1) if j == 0 else (1 + TIME_SCALE * (j - 1), 1 + TIME_SCALE * j)
        idx = torch.arange(lo, hi).clamp(max=pixel_frames - 1)
        pool[j].index_add_(0, idx, torch.full((len(idx),), 1.0 / len(idx)))
    return pool
