"""Edge maps with OpenCV, no weights: Canny (the hard edges canny controls are trained on) and soft edges
(Sobel gradient magnitude). White edges on black, the size of the input frames."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import require
from .frames import Step, map_frames
from .weights import require_package

OPENCV = "opencv-python-headless"


def _cv2():
    return require_package("cv2", OPENCV, "edge detection")


def _blur(cv2, frame: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(frame, (0, 0), sigmaX=float(sigma)) if sigma > 0 else frame


def canny(frame: np.ndarray, low: int = 100, high: int = 200, blur: float = 0.0, l2_gradient: bool = False,
          thickness: int = 1) -> np.ndarray:
    """Canny edges of a uint8 RGB frame (``cv2.Canny`` on the colour image, as controlnet-aux does): uint8 H x W,
    255 on edges. ``blur``: Gaussian sigma in pixels applied first (0: none); ``thickness``: edge width in px."""
    cv2 = _cv2()
    edges = cv2.Canny(_blur(cv2, frame, blur), int(low), int(high), L2gradient=bool(l2_gradient))
    if thickness > 1:
        edges = cv2.dilate(edges, np.ones((int(thickness), int(thickness)), np.uint8))
    return edges


def soft_edges(frame: np.ndarray, blur: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """Soft edges of a uint8 RGB frame: Sobel gradient magnitude of the luminance, scaled so the strongest edge
    is 255 (``gamma`` < 1 brightens faint edges). uint8 H x W."""
    cv2 = _cv2()
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    grey = _blur(cv2, grey, blur)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    peak = float(mag.max())
    if peak <= 1e-8:
        return np.zeros(grey.shape, np.uint8)
    return (np.power(mag / peak, float(gamma)) * 255.0).round().clip(0, 255).astype(np.uint8)


def canny_frames(images: torch.Tensor, low: int = 100, high: int = 200, blur: float = 0.0,
                 l2_gradient: bool = False, thickness: int = 1, step: Step | None = None) -> torch.Tensor:
    """Canny over an IMAGE batch (see ``canny``); an IMAGE batch of white-on-black edges."""
    require(0 <= low <= high, "low_threshold", f"between 0 and high_threshold ({high})", low)
    require(thickness >= 1, "thickness", "at least 1", thickness)
    require(blur >= 0, "blur", "0 or more", blur)
    return map_frames(images, lambda f: canny(f, low, high, blur, l2_gradient, thickness), step)


def soft_edge_frames(images: torch.Tensor, blur: float = 1.0, gamma: float = 1.0,
                     step: Step | None = None) -> torch.Tensor:
    """Soft edges over an IMAGE batch (see ``soft_edges``)."""
    require(gamma > 0, "gamma", "above 0", gamma)
    require(blur >= 0, "blur", "0 or more", blur)
    return map_frames(images, lambda f: soft_edges(f, blur, gamma), step)
