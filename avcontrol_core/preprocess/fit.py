"""Fit any clip to the LTX-2 grid: sides multiples of 32, frames 8n+1, an optional frame-rate change by time, and a
plain-words report of what was done, e.g.
``resized 1280x720 -> 768x448 (scaled to 796x448, cropped 14 px left/right), 50 frames -> 49 (dropped 1 at the end)``.

Size: ``crop`` scales to cover the target and crops the centre; ``pad`` scales to fit inside and pads the rest
(black; a mask gets 0 there); ``stretch`` scales each side on its own. A target side of 0 is derived from the source
(the other side's scale, or the source size), rounded to a multiple of 32: down for crop (never upscale to crop),
up for pad, to the nearest for stretch.

Time: with ``source_fps`` > 0 and different from ``target_fps``, output frame k shows what the source showed at
k / target_fps (the source frame floor(k * source_fps / target_fps)); the clip keeps its duration. Then at most
``max_frames`` (8n+1) are kept, and the count is made 8n+1: ``drop`` removes the last frames, ``repeat`` repeats the
last frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import InputError, require, warn
from ..inputs import frames_at
from .frames import Step, check_images, check_mask

GRID = 32
RESIZE_MODES = ("crop", "pad", "stretch")
FRAME_RULES = ("drop", "repeat")


@dataclass(frozen=True)
class Geometry:
    """How a height x width frame becomes target_height x target_width."""

    source: tuple[int, int]  # (width, height)
    target: tuple[int, int]
    scaled: tuple[int, int]  # size after scaling, before crop / pad
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    mode: str = "crop"

    def describe(self) -> str:
        (sw, sh), (tw, th), (cw, ch) = self.source, self.target, self.scaled
        if self.source == self.target:
            return f"kept {sw}x{sh}"
        details = []
        if self.mode == "stretch":
            details.append("stretched")
        elif self.scaled != self.source:
            details.append(f"scaled to {cw}x{ch}")
        if any(self.crop):
            details.append("cropped " + _sides(self.crop))
        if any(self.pad):
            details.append("padded " + _sides(self.pad))
        if self.scaled == self.source and self.mode != "stretch":  # only cropped or padded
            verb, details = ("cropped", [_sides(self.crop)]) if any(self.crop) else ("padded", [_sides(self.pad)])
        else:
            verb = "resized"
        return f"{verb} {sw}x{sh} -> {tw}x{th} ({', '.join(details)})"


def _sides(amounts: tuple[int, int, int, int]) -> str:
    """'14 px left/right', '3 px left, 4 px right', '8 px top/bottom', joined with 'and'."""
    left, right, top, bottom = amounts
    parts = []
    for a, b, first, second in ((left, right, "left", "right"), (top, bottom, "top", "bottom")):
        if a and a == b:
            parts.append(f"{a} px {first}/{second}")
        elif a or b:
            parts.append(", ".join(f"{v} px {n}" for v, n in ((a, first), (b, second)) if v))
    return " and ".join(parts)


@dataclass(frozen=True)
class Timing:
    """Which source frame each output frame shows, and the words for it."""

    indices: list[int] = field(default_factory=list)
    report: str = ""


def _to_grid(value: float, rounding: str) -> int:
    q = value / GRID
    n = {"down": math.floor(q + 1e-9), "up": math.ceil(q - 1e-9), "nearest": math.floor(q + 0.5)}[rounding]
    return max(1, n) * GRID


def target_size(source_width: int, source_height: int, width: int, height: int, mode: str) -> tuple[int, int]:
    """The target (width, height): given sides must be multiples of 32; a 0 side is derived (see the module)."""
    require(mode in RESIZE_MODES, "resize", f"one of {RESIZE_MODES}", mode)
    for name, value in (("width", width), ("height", height)):
        if value < 0 or value % GRID:
            raise InputError(f"{name} must be 0 (derive from the clip) or a multiple of 32, got {value}")
    rounding = {"crop": "down", "pad": "up", "stretch": "nearest"}[mode]
    if width and height:
        return width, height
    if width:
        return width, _to_grid(source_height * width / source_width, rounding)
    if height:
        return _to_grid(source_width * height / source_height, rounding), height
    return _to_grid(source_width, rounding), _to_grid(source_height, rounding)


def plan_geometry(source_width: int, source_height: int, width: int, height: int, mode: str = "crop") -> Geometry:
    """Scale, crop and pad that take a source frame to the target size (centred)."""
    tw, th = target_size(source_width, source_height, width, height, mode)
    if mode == "stretch":
        return Geometry((source_width, source_height), (tw, th), (tw, th), mode=mode)
    fit = max if mode == "crop" else min
    s = fit(tw / source_width, th / source_height)
    cw, ch = int(round(source_width * s)), int(round(source_height * s))
    cw, ch = (max(cw, tw), max(ch, th)) if mode == "crop" else (min(cw, tw), min(ch, th))
    dx, dy = abs(cw - tw), abs(ch - th)
    split = (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)
    if mode == "crop":
        return Geometry((source_width, source_height), (tw, th), (cw, ch), crop=split, mode=mode)
    return Geometry((source_width, source_height), (tw, th), (cw, ch), pad=split, mode=mode)


LARGE_OUTPUT_FRAMES = 257  # the longest clip the released pipelines make at 24 fps (about 10 s)
LARGE_OUTPUT_BYTES = 2 * 2**30


def plan_frames(count: int, source_fps: float = 0.0, target_fps: float = 24.0, max_frames: int = 0,
                rule: str = "drop") -> Timing:
    """The source frame shown by each output frame (see the module), and the words for it."""
    require(count >= 1, "frames", "at least 1", count)
    require(rule in FRAME_RULES, "frames_rule", f"one of {FRAME_RULES}", rule)
    require(target_fps > 0, "target_fps", "above 0", target_fps)
    require(source_fps >= 0, "source_fps", "0 (same as the target) or above", source_fps)
    if max_frames < 0 or (max_frames and max_frames % 8 != 1):
        raise InputError(f"max_frames must be 0 (no limit) or 8n+1 (9, 17, ..., 121), got {max_frames}")
    words = f"{count} frames"
    indices = list(range(count))
    if source_fps > 0 and abs(source_fps - target_fps) > 1e-9:
        n_out = max(1, math.ceil(count * target_fps / source_fps - 1e-9))
        indices = frames_at(n_out, source_fps, target_fps, count).tolist()
        seconds = count / source_fps
        words += f" at {source_fps:g} fps -> {n_out} at {target_fps:g} fps (resampled by time, {seconds:.2f} s)"
    steps = []
    if max_frames and len(indices) > max_frames:
        steps.append(f"{max_frames} (kept the first {max_frames}, max_frames)")
        indices = indices[:max_frames]
    n = len(indices)
    if n % 8 != 1:
        if rule == "drop":
            keep = (n - 1) // 8 * 8 + 1
            steps.append(f"{keep} (dropped {n - keep} at the end)")
            indices = indices[:keep]
        else:
            extra = 8 - (n - 1) % 8
            steps.append(f"{n + extra} (repeated the last frame {extra} time{'s' if extra > 1 else ''})")
            indices = indices + [indices[-1]] * extra
    if steps:
        words += " -> " + " -> ".join(steps)
    elif "resampled" not in words:
        words += " (already 8n+1)"
    return Timing(indices, words)


@dataclass(frozen=True)
class FitResult:
    images: torch.Tensor
    mask: torch.Tensor | None
    fps: float
    report: str
    geometry: Geometry
    timing: Timing


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, C, H, W] to (height, width): bicubic with antialiasing, clamped to 0..1."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def _apply(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """[N, C, H, W] through the geometry."""
    x = _resize(x, (g.scaled[1], g.scaled[0]))
    left, right, top, bottom = g.crop
    if any(g.crop):
        x = x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]
    if any(g.pad):
        x = F.pad(x, g.pad, mode="constant", value=0.0)
    return x


def fit_clip(images: torch.Tensor, width: int = 768, height: int = 512, resize: str = "crop",
             source_fps: float = 0.0, target_fps: float = 24.0, max_frames: int = 0, frames_rule: str = "drop",
             mask: torch.Tensor | None = None, step: Step | None = None, chunk: int = 8) -> FitResult:
    """The clip (and its mask, frame for frame, or one mask for all frames) on the model grid; see the module."""
    images = check_images(images)
    count, src_h, src_w = images.shape[:3]
    if mask is not None:
        mask = check_mask(mask)
        if tuple(mask.shape[-2:]) != (src_h, src_w):
            raise InputError(f"mask must be the frames' size {src_w}x{src_h}, got {mask.shape[-1]}x{mask.shape[-2]}")
        if mask.shape[0] not in (1, count):
            raise InputError(f"mask must have 1 frame or as many as the image ({count}), got {mask.shape[0]}")
    geometry = plan_geometry(src_w, src_h, width, height, resize)
    timing = plan_frames(count, source_fps, target_fps, max_frames, frames_rule)
    tw, th = geometry.target
    n_out = len(timing.indices)
    if source_fps == 0 and count > 1:
        warn(f"source_fps is 0, so the clip's {count} frames are taken as already {target_fps:g} fps; a clip made "
             f"at another rate plays faster or slower (a 10 fps clip {target_fps / 10:g}x as fast): set source_fps "
             f"to its rate (Get Video Components gives it)")
    nbytes = n_out * th * tw * 3 * 4
    if max_frames == 0 and (nbytes > LARGE_OUTPUT_BYTES or n_out > LARGE_OUTPUT_FRAMES):
        warn(f"Fit Clip makes {n_out} frames at {tw}x{th} ({nbytes / 2**30:.1f} GB as an IMAGE batch) because "
             f"max_frames is 0 (no limit); set max_frames (e.g. 121 or 257) to keep fewer")
    out = torch.empty(n_out, th, tw, 3)
    out_mask = torch.empty(len(timing.indices), th, tw) if mask is not None else None
    done: dict[int, int] = {}  # source index -> first output row holding it (repeated frames are copied)
    for start in range(0, len(timing.indices), chunk):
        rows = list(range(start, min(start + chunk, len(timing.indices))))
        fresh = [r for r in rows if timing.indices[r] not in done]
        if fresh:
            src = torch.tensor([timing.indices[r] for r in fresh])
            out[fresh] = _apply(images[src].permute(0, 3, 1, 2), geometry).permute(0, 2, 3, 1)
            if mask is not None:
                m = mask[src] if mask.shape[0] > 1 else mask.expand(len(fresh), -1, -1)
                out_mask[fresh] = _apply(m[:, None], geometry)[:, 0]
            for r in fresh:
                done.setdefault(timing.indices[r], r)
        for r in rows:
            if r not in fresh:
                out[r] = out[done[timing.indices[r]]]
                if out_mask is not None:
                    out_mask[r] = out_mask[done[timing.indices[r]]]
            if step is not None:
                step()
    report = f"{geometry.describe()}, {timing.report}"
    return FitResult(out, out_mask, float(target_fps), report, geometry, timing)
