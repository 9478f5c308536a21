"""Inpaint and outpaint masks over IMAGE batches (MASK: float [frames, height, width], 1 = generate here).

- ``box_mask``: a rectangle, optionally feathered and inverted.
- ``threshold_mask``: the pixels whose luminance (or a channel) is above a threshold, e.g. a green screen or a
  white matte; grown / shrunk and feathered.
- ``refine_mask``: grow (or shrink, negative) by whole pixels, then feather (a soft ramp) by pixels.
- ``outpaint``: pad the frames to a larger canvas (given pixels per side, or a target aspect), the mask marking
  the new area; the new area is filled (edge pixels, mirror, grey, black or white).
- ``fill_masked``: replace the masked area of frames (grey by default), the usual input of an inpaint control.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError, require
from ..control_media import fill_masked as blend_fill  # the one mask fill
from .frames import check_images, check_mask

CHANNELS = ("luminance", "red", "green", "blue", "max", "min")
FILLS = ("edge", "mirror", "grey", "black", "white")
ALIGN_X = ("center", "left", "right")
ALIGN_Y = ("center", "top", "bottom")
ASPECTS = ("none", "16:9", "9:16", "4:3", "3:4", "1:1", "21:9", "2.39:1", "3:2", "2:3")


def _feather(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Soften the edges of a [B, H, W] mask with a Gaussian of ``pixels`` / 2 sigma (the ramp is ~pixels wide)."""
    if pixels <= 0:
        return mask
    sigma = float(pixels) / 2.0
    radius = max(1, int(math.ceil(sigma * 3)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    m = mask[:, None]
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return m[:, 0].clamp(0, 1)


def refine_mask(mask: torch.Tensor, grow: int = 0, feather: float = 0.0) -> torch.Tensor:
    """Grow the mask by ``grow`` pixels (negative shrinks; square neighbourhood), then feather it."""
    mask = check_mask(mask)
    if grow:
        k = 2 * abs(int(grow)) + 1
        m = mask[:, None]
        if grow > 0:
            m = F.max_pool2d(m, k, stride=1, padding=abs(int(grow)))
        else:
            m = -F.max_pool2d(-m, k, stride=1, padding=abs(int(grow)))
        mask = m[:, 0]
    return _feather(mask, feather)


def box_mask(frames: int, height: int, width: int, x: int, y: int, box_width: int, box_height: int,
             feather: float = 0.0, invert: bool = False) -> torch.Tensor:
    """1 inside the box (x, y = top-left, pixels; clipped to the frame), 0 outside; [frames, height, width]."""
    require(box_width > 0 and box_height > 0, "box width and height", "above 0", (box_width, box_height))
    mask = torch.zeros(frames, height, width)
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(x) + int(box_width)), min(height, int(y) + int(box_height))
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box must overlap the {width}x{height} frame, got x={x}, y={y}, "
                         f"width={box_width}, height={box_height}")
    mask[:, y0:y1, x0:x1] = 1.0
    mask = _feather(mask, feather)
    return 1.0 - mask if invert else mask


def channel_of(images: torch.Tensor, channel: str) -> torch.Tensor:
    """One value per pixel: luminance (Rec. 709), a colour channel, or the max / min over channels."""
    images = check_images(images)
    require(channel in CHANNELS, "channel", f"one of {CHANNELS}", channel)
    if channel == "luminance":
        return images[..., 0] * 0.2126 + images[..., 1] * 0.7152 + images[..., 2] * 0.0722
    if channel == "max":
        return images.amax(-1)
    if channel == "min":
        return images.amin(-1)
    return images[..., ("red", "green", "blue").index(channel)]


def threshold_mask(images: torch.Tensor, threshold: float = 0.5, channel: str = "luminance", invert: bool = False,
                   grow: int = 0, feather: float = 0.0) -> torch.Tensor:
    """1 where ``channel`` is above ``threshold`` (0..1), per frame; then grown and feathered."""
    require(0.0 <= threshold <= 1.0, "threshold", "between 0 and 1", threshold)
    mask = (channel_of(images, channel) > threshold).float()
    if invert:
        mask = 1.0 - mask
    return refine_mask(mask, grow, feather)


def aspect_value(aspect: str) -> float:
    """'16:9' -> 1.777...; also accepts a plain number ('2.39')."""
    try:
        if ":" in aspect:
            a, b = aspect.split(":")
            value = float(a) / float(b)
        else:
            value = float(aspect)
    except (ValueError, ZeroDivisionError):
        value = 0.0
    if not value > 0 or not math.isfinite(value):
        raise InputError(f"target_aspect must look like '16:9' or a number above 0, got {aspect!r}")
    return value


def aspect_padding(height: int, width: int, aspect: str, align_x: str = "center",
                   align_y: str = "center") -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pixels that pad a height x width frame out to ``aspect`` (w / h); only one of
    the two directions grows, and nothing is cropped."""
    target = aspect_value(aspect)
    left = right = top = bottom = 0
    if width / height < target:
        extra = int(round(height * target)) - width
        left, right = _split(extra, align_x, ("left", "right"))
    elif width / height > target:
        extra = int(round(width / target)) - height
        top, bottom = _split(extra, align_y, ("top", "bottom"))
    return left, right, top, bottom


def _split(extra: int, align: str, sides: tuple[str, str]) -> tuple[int, int]:
    """Split ``extra`` pixels of padding between two sides: the image is kept at ``align`` (center: halves)."""
    extra = max(0, extra)
    if align == sides[0]:  # image kept at the left / top: all padding on the other side
        return 0, extra
    if align == sides[1]:
        return extra, 0
    return extra // 2, extra - extra // 2


def _fill_pad(images: torch.Tensor, left: int, right: int, top: int, bottom: int, fill: str) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2)
    pads = (left, right, top, bottom)
    if fill == "edge":
        x = F.pad(x, pads, mode="replicate")
    elif fill == "mirror":
        # reflect padding is limited to the side length - 1: repeat it until the canvas is reached
        while any(pads):
            step = (min(pads[0], x.shape[3] - 1), min(pads[1], x.shape[3] - 1),
                    min(pads[2], x.shape[2] - 1), min(pads[3], x.shape[2] - 1))
            if not any(step):
                x = F.pad(x, pads, mode="replicate")
                break
            x = F.pad(x, step, mode="reflect")
            pads = tuple(p - s for p, s in zip(pads, step))
    else:
        value = {"grey": 0.5, "black": 0.0, "white": 1.0}[fill]
        x = F.pad(x, pads, mode="constant", value=value)
    return x.permute(0, 2, 3, 1).contiguous()


def outpaint(images: torch.Tensor, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0,
             fill: str = "edge", feather: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded frames, mask) with the new area = 1. ``feather`` > 0 lets the mask ramp that many pixels into the
    original picture (a soft seam); the original pixels are never changed."""
    images = check_images(images)
    require(min(left, right, top, bottom) >= 0, "padding", "0 or more pixels per side", (left, right, top, bottom))
    require(fill in FILLS, "fill", f"one of {FILLS}", fill)
    frames, height, width = images.shape[:3]
    padded = _fill_pad(images, left, right, top, bottom, fill)
    mask = torch.ones(frames, height + top + bottom, width + left + right)
    mask[:, top:top + height, left:left + width] = 0.0
    if feather > 0 and (left or right or top or bottom):
        # distance (pixels) from each original pixel to the nearest padded side; a linear ramp over `feather`
        xs, ys = torch.arange(width, dtype=torch.float32), torch.arange(height, dtype=torch.float32)
        d = torch.full((height, width), float("inf"))
        for pad, dist in ((left, (xs + 1)[None, :]), (right, (width - xs)[None, :]),
                          (top, (ys + 1)[:, None]), (bottom, (height - ys)[:, None])):
            if pad:
                d = torch.minimum(d, dist.expand(height, width))
        ramp = (1.0 - d / (float(feather) + 1.0)).clamp(min=0.0)
        mask[:, top:top + height, left:left + width] = ramp
    return padded, mask


def fill_masked(images: torch.Tensor, mask: torch.Tensor, fill: str = "grey") -> torch.Tensor:
    """Frames with the masked area blended towards ``fill`` (grey / black / white) by the mask's value. A single
    mask frame applies to every frame; the mask must have the frames' size."""
    images = check_images(images)
    mask = check_mask(mask)
    require(fill in ("grey", "black", "white"), "fill", "grey, black or white", fill)
    if mask.shape[-2:] != images.shape[1:3]:
        raise InputError(f"mask must be the frames' size {images.shape[2]}x{images.shape[1]}, got "
                         f"{mask.shape[-1]}x{mask.shape[-2]}")
    if mask.shape[0] not in (1, images.shape[0]):
        raise InputError(f"mask must have 1 frame or as many as the image ({images.shape[0]}), got {mask.shape[0]}")
    return blend_fill(images, mask, {"grey": 0.5, "black": 0.0, "white": 1.0}[fill])
