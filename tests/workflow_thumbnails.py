"""Thumbnails for the Templates browser: ``workflows/NAME.jpg`` beside each ``workflows/NAME.json`` (ComfyUI serves
the folder and the frontend asks for NAME.jpg for every card).

Each card shows what the workflow does: the input on the left, the control the pack's own preprocessors make of it
on the right (edges, masks, padding, a pose skeleton drawn by the pack's renderer, an envelope or onsets curve), and
the workflow's name. Regenerate after adding a workflow:

    python -m tests.workflow_thumbnails            # writes workflows/NAME.jpg for every UI workflow
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
SIZE = (384, 256)  # width, height


def _photo(height: int, width: int) -> np.ndarray:
    from skimage import data, transform

    img = data.astronaut()[0:400, 50:450]
    return (transform.resize(img, (height, width), anti_aliasing=True) * 255).astype(np.uint8)


def _frames(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).float()[None] / 255.0


def _image(t: torch.Tensor) -> np.ndarray:
    return (t[0].clamp(0, 1).numpy() * 255).astype(np.uint8)


def _mask_on(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32)
    out[mask > 0.5] = 0.55 * out[mask > 0.5] + 0.45 * np.array([255, 80, 80])
    return out.astype(np.uint8)


def _curve(kind: str, height: int, width: int) -> np.ndarray:
    from avcontrol_core.preprocess.audio_features import curve_image

    t = np.arange(100) / 25.0
    if kind == "onsets":
        values = np.maximum(0, np.sin(2 * np.pi * 1.5 * t)) ** 12
    elif kind == "speech":
        values = ((t % 1.6) < 0.9).astype(float) * (0.6 + 0.4 * np.abs(np.sin(9 * t)))
    else:
        values = 0.5 + 0.4 * np.sin(2 * np.pi * 0.5 * t) * np.exp(-0.1 * t)
    return _image(curve_image([values], width=width, height=height, lo=0.0, hi=1.0))


def _pose(height: int, width: int) -> np.ndarray:
    from avcontrol_core.preprocess.pose import Person, draw_people

    body = np.array([[.5, .18], [.5, .32], [.38, .33], [.33, .5], [.3, .65], [.62, .33], [.67, .5], [.7, .65],
                     [.43, .62], [.42, .8], [.42, .97], [.57, .62], [.58, .8], [.58, .97], [.47, .15], [.53, .15],
                     [.44, .17], [.56, .17]])
    return draw_people([Person(body=body)], height, width)


def control_panel(name: str, img: np.ndarray) -> tuple[np.ndarray, str]:
    """The right-hand picture and its caption for workflow ``name``."""
    from PIL import Image

    from avcontrol_core.preprocess import edges, masks

    h, w = img.shape[:2]
    frames = _frames(img)
    if "canny" in name:
        return _image(edges.canny_frames(frames, 100, 200)), "canny edges"
    if "soft_edges" in name:
        return _image(edges.soft_edge_frames(frames, 1.0, 0.6)), "soft edges"
    if "threshold_inpainting" in name:
        return _mask_on(img, masks.threshold_mask(frames, 0.6)[0].numpy()), "threshold mask"
    if "inpainting" in name:
        box = masks.box_mask(1, h, w, w // 4, h // 3, w // 2, h // 3)[0].numpy()
        return _image(masks.fill_masked(frames, torch.from_numpy(box)[None], "grey")), "inpaint area"
    if "outpainting" in name:
        padded, _ = masks.outpaint(frames, w // 4, w // 4, 0, 0, "edge")
        small = torch.nn.functional.interpolate(padded.permute(0, 3, 1, 2), size=(h, w)).permute(0, 2, 3, 1)
        return _image(small), "outpaint"
    if "pose" in name:
        return _pose(h, w), "pose skeleton"
    if "depth" in name:  # drawn, not estimated (the estimators need weights): near is bright, as they draw it
        near = np.linspace(40, 230, h)[:, None, None] * np.ones((1, w, 3))
        return near.astype(np.uint8), "depth map"
    if "detailer" in name:
        low = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), scale_factor=0.125)
        return _image(torch.nn.functional.interpolate(low, size=(h, w)).permute(0, 2, 3, 1)), "low detail in"
    if "motion_track" in name:
        canvas = np.zeros_like(img)
        for k in range(6):
            ys = (np.linspace(0.2, 0.8, 30) * h).astype(int)
            xs = (np.clip(0.15 + 0.12 * k + 0.05 * np.sin(np.linspace(0, 3, 30)), 0, 0.95) * w).astype(int)
            canvas[ys, xs] = (80 + 30 * k, 200, 255 - 30 * k)
        return canvas, "point tracks"
    if "onsets" in name:
        return _curve("onsets", h, w), "onsets"
    if "talking" in name or "speech" in name or "voice" in name:
        return _curve("speech", h, w), "speech activity"
    if "audio_intensity" in name:
        return _curve("envelope", h, w), "intensity"
    if "camera" in name:  # the keyframe seen closer: a dolly-in
        crop = img[h // 6: h - h // 6, w // 6: w - w // 6]
        return np.asarray(Image.fromarray(crop).resize((w, h))), "keyframe + camera move"
    if "image_to" in name:
        return img, "first frame"
    return _curve("envelope", h, w), "prompt only"


def thumbnail(name: str):
    from PIL import Image, ImageDraw

    width, height = SIZE
    panel_h, panel_w = height - 56, (width - 24) // 2
    img = _photo(panel_h, panel_w)
    right, caption = control_panel(name, img)
    card = Image.new("RGB", SIZE, (24, 26, 32))
    card.paste(Image.fromarray(img), (8, 8))
    card.paste(Image.fromarray(np.ascontiguousarray(right)), (16 + panel_w, 8))
    draw = ImageDraw.Draw(card)
    draw.text((12, height - 44), name.replace("_", " "), fill=(235, 235, 240))
    draw.text((12, height - 24), f"{caption} -> LTX-2 video + audio", fill=(150, 190, 220))
    return card


def main(argv: list[str] | None = None) -> int:
    names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    for name in names:
        thumbnail(name).save(WORKFLOWS / f"{name}.jpg", quality=85)
    print(f"wrote {len(names)} thumbnails to {WORKFLOWS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
