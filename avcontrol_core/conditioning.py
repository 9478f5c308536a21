"""Conditioning inputs of a run: the prompt pair, and images encoded to latents for first-frame conditioning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .backbone import AVModel
from .inputs import check_images
from .sampling import TextContext


@dataclass(frozen=True)
class PromptPair:
    """Encoded positive prompt and, when given, negative prompt (needed for text CFG)."""

    positive: TextContext
    negative: TextContext | None
    positive_text: str = ""
    negative_text: str = ""


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [H, W, 3] to cover width x height keeping aspect, then center-crop; returns [3, height, width]."""
    x = image.permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = max(width / w, height / h)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[0, :, top : top + height, left : left + width].clamp(0, 1)


@torch.inference_mode()
def encode_first_frame(model: AVModel, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The first image of an IMAGE batch as a one-frame video latent (1, 128, 1, height/32, width/32)."""
    image = check_images(image)
    pixels = fit_image(image[0], width, height) * 2.0 - 1.0
    encoder = model.component("video_encoder")
    x = pixels[None, :, None].to(device=model.device, dtype=model.dtype)
    return encoder(x).float().cpu()
