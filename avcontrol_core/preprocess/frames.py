"""ComfyUI IMAGE batches <-> the uint8 RGB frames OpenCV-style preprocessors work on, and the per-frame loop.

IMAGE is float [B, H, W, C] in 0..1 (C = 3; 1 or 4 are accepted: grey is repeated, alpha dropped); MASK is
float [B, H, W] in 0..1.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..inputs import check_images, check_mask  # noqa: F401 -- the one validator, re-exported

Step = Callable[[], None]


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """One IMAGE frame [H, W, 3] (0..1) as a contiguous uint8 RGB array."""
    arr = (frame.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(arr)


def from_uint8(frame: np.ndarray) -> torch.Tensor:
    """A uint8 frame (H x W grey, or H x W x 3 RGB) as an IMAGE frame [H, W, 3] float in 0..1."""
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(frame[:, :, :3])).float() / 255.0


def map_frames(images: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray], step: Step | None = None) -> torch.Tensor:
    """Apply ``fn`` (uint8 RGB frame -> uint8 frame of the same size) to every frame; ``step()`` after each
    (the nodes' progress bar and cancel check). Returns an IMAGE batch."""
    images = check_images(images)
    out = torch.empty(images.shape[:3] + (3,), dtype=torch.float32)
    for i in range(images.shape[0]):
        result = fn(to_uint8(images[i]))
        out[i] = from_uint8(result)
        if step is not None:
            step()
    return out
