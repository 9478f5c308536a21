"""Shrinking the example workflows (written for the real models) to the tiny test models, shared by the
in-process workflow tests and the tests inside a real ComfyUI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.workflow_run import is_link

# small sizes, 2 steps, and an STG block the 2-layer tiny transformer has
INPUT_NODES = {"LoadImage": "image", "LoadVideo": "file", "LoadAudio": "audio"}
TINY_OVERRIDES = {"width": 64, "height": 64, "frames": 9, "steps": 2, "stg_blocks": "1",
                  # class-qualified: only that node's input
                  "AVCMaskFromBox.x": 16, "AVCMaskFromBox.y": 16,  # the box inside the 64x64 frame
                  "AVCDepthMap.model": "avcontrol-tiny-depth-anything"}


def combo_options(spec: dict, name: str) -> list | None:
    """The choices of a COMBO input in an INPUT_TYPES / object_info input spec, else None."""
    entry = spec.get(name)
    if entry and isinstance(entry[0], list):
        return entry[0]
    if entry and entry[0] == "COMBO":
        return (entry[1] if len(entry) > 1 else {}).get("options")
    return None


def tinify(api: dict, input_spec: Callable[[str], dict], overrides: dict | None = None) -> dict:
    """A copy of `api` with TINY_OVERRIDES on literal inputs, and every model name the host does not offer
    switched to the offered choice with 'tiny' in its name. `input_spec(class_type)` returns the node's
    required + optional inputs (from INPUT_TYPES or /object_info)."""
    overrides = {**TINY_OVERRIDES, **(overrides or {})}
    api = json.loads(json.dumps(api))
    for node_id, node in api.items():
        if node["class_type"] in INPUT_NODES:  # their files are written by write_inputs
            continue
        spec = input_spec(node["class_type"])
        for name, value in list(node["inputs"].items()):
            if is_link(value):
                continue
            qualified = f"{node['class_type']}.{name}"
            if qualified in overrides or name in overrides:
                node["inputs"][name] = overrides.get(qualified, overrides.get(name))
                continue
            options = combo_options(spec, name)
            if options and value not in options:
                tiny = [o for o in options if "tiny" in str(o)]
                assert tiny, f"node {node_id} input {name!r}: {value!r} not offered and no tiny model in {options[:10]}"
                node["inputs"][name] = same_version(str(value), tiny)
    return api


def same_version(name: str, tiny: list) -> Any:
    """The tiny model of the layout a real file name names (LTX-2.3 for 'ltx-2.3-...', else LTX-2), else the first."""
    version = "ltx2.3" if re.search(r"ltx-?2\.3", name, re.IGNORECASE) else "ltx2"
    return next((o for o in tiny if str(o).endswith(f"-{version}.safetensors")), tiny[0])


def class_input_spec(node_classes: dict[str, Any]) -> Callable[[str], dict]:
    def spec(class_type: str) -> dict:
        types = node_classes[class_type].INPUT_TYPES()
        return {**(types.get("required") or {}), **(types.get("optional") or {})}

    return spec



def write_inputs(api: dict, folder, size: tuple[int, int] = (96, 80), frames: int = 12, fps: float = 24.0) -> list:
    """Real media files for the Load* core nodes of a workflow, written with real codecs into `folder`
    (ComfyUI's input directory): a PNG, an mp4 with a moving square and a tone, a wav with a rising tone."""
    import math
    from pathlib import Path

    import torch

    from avcontrol_core.media import write_mp4, write_image, write_audio

    folder = Path(folder)
    written = []
    w, h = size
    for node in api.values():
        key = INPUT_NODES.get(node["class_type"])
        name = node["inputs"].get(key) if key else None
        if not isinstance(name, str) or (folder / name).exists():
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        t = torch.arange(frames)[:, None, None]
        y, x = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        square = ((x - 4 * t - 10).abs() < 12) & ((y - h // 2).abs() < 12)
        clip = torch.stack([square.float(), (x / w).expand(frames, h, w), (y / h).expand(frames, h, w)], -1)
        seconds = frames / fps
        n = round(seconds * 16000)
        tone = torch.sin(2 * math.pi * torch.linspace(220, 660, n).cumsum(0) / 16000) * torch.linspace(0.1, 0.8, n)
        audio = {"waveform": tone[None, None].float(), "sample_rate": 16000}
        if node["class_type"] == "LoadImage":
            write_image(target, clip[0])
        elif node["class_type"] == "LoadVideo":
            write_mp4(target, clip, fps, audio)
        else:
            write_audio(target, audio)
        written.append(target)
    return written


def write_preprocessor_models(root) -> None:
    """Random / crafted preprocessor files under their real names (Depth Anything, DWPose ONNX pair, OpenPose
    annotators) so the example workflows' model choices resolve in the test models folder."""
    from pathlib import Path

    from avcontrol_core.tiny import TINY_DEPTH_DIR, write_tiny_depth_anything
    from tests.preprocess_fixtures import write_dwpose, write_openpose

    root = Path(root)
    if not (root / "depth_models" / TINY_DEPTH_DIR / "config.json").exists():
        write_tiny_depth_anything(root / "depth_models" / TINY_DEPTH_DIR)
    if not (root / "dwpose" / "dw-ll_ucoco_384.onnx").exists():
        write_dwpose(root / "dwpose")
    if not (root / "annotators" / "body_pose_model.pth").exists():
        (root / "annotators").mkdir(parents=True, exist_ok=True)
        write_openpose(root / "annotators")
