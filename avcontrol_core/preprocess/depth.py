"""Depth maps: controlnet-aux MiDaS (DPT-Hybrid / DPT-Large) or ZoeDepth files, or any transformers depth model
folder (Depth Anything V1/V2, DPT, ZoeDepth-hf) through ``AutoModelForDepthEstimation``, all from local files.

Output: grey IMAGE frames, near = white, the size of the input. ``normalize="per clip"`` scales every frame with
the clip's range, so the brightness of a surface does not flicker from frame to frame; "per frame" stretches each
frame to 0..1 (what single-image preprocessors do).

Where the files go (kind = model folder) and where users get them: ``SOURCES`` and ``DEPTH_ANYTHING_SOURCE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from ..errors import InputError, require
from .frames import Step, check_images, to_uint8
from .weights import WeightSource, cached, on_device, require_file, require_folder_files, require_package

ANNOTATORS = "annotators"  # controlnet-aux single files (MiDaS, ZoeDepth, OpenPose)
DEPTH_MODELS = "depth_models"  # Hugging Face depth-estimation folders (transformers)

CONTROLNET_AUX = "controlnet-aux==0.0.10"
TRANSFORMERS = "transformers>=5.0"

SOURCES = {
    "dpt_hybrid-midas-501f0c75.pt": WeightSource("dpt_hybrid-midas-501f0c75.pt", "lllyasviel/Annotators"),
    "dpt_large-midas-2f21e586.pt": WeightSource(
        "dpt_large-midas-2f21e586.pt", "isl-org/MiDaS", "GitHub (release v3)"),
    "ZoeD_M12_N.pt": WeightSource("ZoeD_M12_N.pt", "lllyasviel/Annotators"),
    "ZoeD_M12_NK.pt": WeightSource("ZoeD_M12_NK.pt", "isl-org/ZoeDepth", "GitHub (release v1.0)"),
}
DEPTH_ANYTHING_FOLDER = "Depth-Anything-V2-Small-hf"
DEPTH_ANYTHING_SOURCE = WeightSource(
    f"the whole repository, as the folder {DEPTH_ANYTHING_FOLDER} (config.json, model.safetensors, "
    "preprocessor_config.json)", "depth-anything/Depth-Anything-V2-Small-hf",
    note="the -Base-hf / -Large-hf repositories and other transformers depth models work the same way")
# Offered in the node even before the files are there, so choosing one fails with where to get it.
DEFAULT_CHOICES = (DEPTH_ANYTHING_FOLDER, "dpt_hybrid-midas-501f0c75.pt", "ZoeD_M12_N.pt")

MODEL_FILE_ENDINGS = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# transformers depth models whose output is metric depth (far = large); the others predict relative inverse depth
METRIC_MODEL_TYPES = frozenset({"zoedepth", "depth_pro", "glpn", "prompt_depth_anything"})
NORMALIZE_CHOICES = ("per clip", "per frame")

Resolver = Callable[[str, str], Path]


def model_kind(name: str) -> str:
    """The model folder a depth choice lives in: single files in ``annotators``, folders in ``depth_models``."""
    return ANNOTATORS if name.lower().endswith(MODEL_FILE_ENDINGS) else DEPTH_MODELS


def annotator_type(name: str) -> tuple[str, str]:
    """(family, model_type) of a controlnet-aux depth file, from its name."""
    low = Path(name).name.lower()
    if "zoed" in low:
        return "zoe", "zoedepth_nk" if "_nk" in low else "zoedepth"
    if "dpt_large" in low:
        return "midas", "dpt_large"
    if "midas" in low or "dpt_hybrid" in low:
        return "midas", "dpt_hybrid"
    raise InputError(
        f"model must be a MiDaS (dpt_hybrid-midas-*.pt, dpt_large-midas-*.pt) or ZoeDepth (ZoeD_M12_N*.pt) file, "
        f"or a transformers depth folder, got {name!r}")


def is_depth_choice(name: str) -> bool:
    """Whether a file of the ``annotators`` folder is a depth model this module can load."""
    try:
        annotator_type(name)
    except InputError:
        return False
    return True


def choices(annotator_files: list[str], depth_folders: list[str]) -> list[str]:
    """The node's model list: depth folders, depth files among the annotators, and the defaults."""
    found = list(depth_folders) + [n for n in annotator_files if is_depth_choice(n)]
    return found + [d for d in DEFAULT_CHOICES if d not in found]


class DepthEstimator(Protocol):
    name: str
    low_percentile: float
    high_percentile: float

    def predict(self, frame: np.ndarray, resolution: int, device: torch.device) -> np.ndarray:
        """Nearness (larger = closer) of one uint8 RGB frame, float32 H' x W' at the model's resolution."""

    def module(self) -> torch.nn.Module: ...


class MidasDepth:
    """controlnet-aux MiDaS: the network of ``MidasDetector.from_pretrained(folder, filename=...)``; relative inverse
    depth, normalized over its full range."""

    low_percentile, high_percentile = 0.0, 100.0

    def __init__(self, path: Path, model_type: str):
        require_package("controlnet_aux", CONTROLNET_AUX, "MiDaS depth")
        from controlnet_aux.midas import MidasDetector

        self.name = path.name
        self.detector = MidasDetector.from_pretrained(str(path.parent), model_type=model_type, filename=path.name)
        self.detector.model.eval()

    def module(self) -> torch.nn.Module:
        return self.detector.model

    @torch.no_grad()
    def predict(self, frame: np.ndarray, resolution: int, device: torch.device) -> np.ndarray:
        from controlnet_aux.util import HWC3, resize_image

        image = resize_image(HWC3(frame), resolution)  # what MidasDetector does: short side, multiples of 64
        x = torch.from_numpy(image).float().to(device) / 127.5 - 1.0
        depth = self.detector.model(x.permute(2, 0, 1)[None])[0]
        return depth.float().cpu().numpy()


class ZoeDepth:
    """controlnet-aux ZoeDepth: metric depth, shown as nearness between its 15th and 98th percentile (the range
    ``ZoeDetector`` uses)."""

    low_percentile, high_percentile = 15.0, 98.0

    def __init__(self, path: Path, model_type: str):
        require_package("controlnet_aux", CONTROLNET_AUX, "ZoeDepth")
        from controlnet_aux.zoe import ZoeDetector

        self.name = path.name
        self.detector = ZoeDetector.from_pretrained(str(path.parent), model_type=model_type, filename=path.name)

    def module(self) -> torch.nn.Module:
        return self.detector.model

    @torch.no_grad()
    def predict(self, frame: np.ndarray, resolution: int, device: torch.device) -> np.ndarray:
        from controlnet_aux.util import HWC3, resize_image

        image = resize_image(HWC3(frame), resolution)
        x = torch.from_numpy(image).float().to(device) / 255.0
        depth = self.detector.model.infer(x.permute(2, 0, 1)[None])[0, 0]
        return -depth.float().cpu().numpy()


class TransformersDepth:
    """A transformers depth-estimation folder (config.json, weights, preprocessor_config.json), loaded with
    ``local_files_only=True``."""

    low_percentile, high_percentile = 0.0, 100.0

    def __init__(self, folder: Path):
        require_package("transformers", TRANSFORMERS, "Depth Anything")
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        require_folder_files(folder, DEPTH_MODELS, [("config.json",), ("model.safetensors", "pytorch_model.bin"),
                                                    ("preprocessor_config.json",)], DEPTH_ANYTHING_SOURCE.hint())
        self.name = folder.name
        self.model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self.metric = getattr(self.model.config, "model_type", "") in METRIC_MODEL_TYPES

    def module(self) -> torch.nn.Module:
        return self.model

    @torch.no_grad()
    def predict(self, frame: np.ndarray, resolution: int, device: torch.device) -> np.ndarray:
        kwargs = {}
        if resolution > 0 and hasattr(self.processor, "keep_aspect_ratio"):
            kwargs["size"] = {"height": int(resolution), "width": int(resolution)}  # short side, aspect kept
        inputs = self.processor(images=frame, return_tensors="pt", **kwargs)
        dtype = next(self.model.parameters()).dtype
        depth = self.model(pixel_values=inputs["pixel_values"].to(device, dtype)).predicted_depth[0]
        depth = depth.float().cpu().numpy()
        return -depth if self.metric else depth


def load_depth_model(name: str, resolve: Resolver) -> DepthEstimator:
    """The estimator for a node choice (see ``choices``), loaded once per file (cached until ``weights.clear()``)."""
    kind = model_kind(name)
    if kind == DEPTH_MODELS:
        folder = require_file(DEPTH_MODELS, name, DEPTH_ANYTHING_SOURCE.hint(), resolve=resolve)
        return cached([folder], lambda: TransformersDepth(folder), "transformers-depth")
    family, model_type = annotator_type(name)
    source = SOURCES.get(Path(name).name) or SOURCES[
        "ZoeD_M12_N.pt" if family == "zoe" else "dpt_hybrid-midas-501f0c75.pt"]
    path = require_file(ANNOTATORS, name, source.hint(), resolve=resolve)
    build = (lambda: ZoeDepth(path, model_type)) if family == "zoe" else (lambda: MidasDepth(path, model_type))
    return cached([path], build, family, model_type)


def _resize(depth: np.ndarray, height: int, width: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    if t.shape[-2:] != (height, width):
        t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return t[0, 0]


def _normalize(maps: torch.Tensor, low_pct: float, high_pct: float) -> torch.Tensor:
    flat = maps.flatten().double()
    if flat.numel() > 4_000_000:  # percentiles of a long clip from an even sample
        flat = flat[:: flat.numel() // 4_000_000 + 1]
    lo = torch.quantile(flat, low_pct / 100.0) if low_pct > 0 else flat.min()
    hi = torch.quantile(flat, high_pct / 100.0) if high_pct < 100 else flat.max()
    span = float(hi - lo)
    if span <= 1e-12:
        return torch.zeros_like(maps)
    return ((maps - float(lo)) / span).clamp(0, 1)


def estimate_depth(estimator: DepthEstimator, images: torch.Tensor, resolution: int = 512,
                   normalize: str = "per clip", device: torch.device | str = "cpu",
                   step: Step | None = None) -> torch.Tensor:
    """Depth of every frame of an IMAGE batch as grey IMAGE frames (near = white), the input's size."""
    images = check_images(images)
    require(normalize in NORMALIZE_CHOICES, "normalize", f"one of {NORMALIZE_CHOICES}", normalize)
    require(resolution >= 64, "resolution", "at least 64", resolution)
    device = torch.device(device)
    frames, height, width = images.shape[:3]
    maps = torch.empty(frames, height, width, dtype=torch.float32)
    with on_device(estimator.module(), device, "estimating depth"):
        for i in range(frames):
            raw = estimator.predict(to_uint8(images[i]), resolution, device)
            if not np.isfinite(raw).all():
                raise InputError(f"depth model {estimator.name!r} returned NaN or infinite values for frame {i}: "
                                 "the file is damaged or not the model its name says")
            maps[i] = _resize(raw, height, width)
            if normalize == "per frame":
                maps[i] = _normalize(maps[i], estimator.low_percentile, estimator.high_percentile)
            if step is not None:
                step()
    if normalize == "per clip":
        maps = _normalize(maps, estimator.low_percentile, estimator.high_percentile)
    # 8-bit levels, like every depth control image the models were trained on
    maps = (maps * 255.0).round() / 255.0
    return maps[..., None].expand(-1, -1, -1, 3).contiguous()
