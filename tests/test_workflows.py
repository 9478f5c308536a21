"""Every example workflow ships as a UI/API pair that agrees node for node, and its API twin runs in-process
through the node classes on the tiny model, writing an mp4 with sound of the asked length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avcontrol_core.media import load_image, probe_mp4
from tests.workflow_format import check_pair, read_json, run_api_workflow
from tests.workflow_tiny import class_input_spec, tinify

ROOT = Path(__file__).resolve().parents[1]
API_WORKFLOWS = sorted((ROOT / "workflows").glob("*_api.json"))


class LoadImageFromInput:
    """ComfyUI's core LoadImage cannot run outside ComfyUI; this reads the same file into the same IMAGE layout
    ([1, H, W, 3] float 0..1) from a folder. Inside a real ComfyUI (tests/integration) the core node runs."""

    folder: Path

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("STRING", {})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load"

    def load(self, image):
        img = load_image(self.folder / image)
        return img, torch.zeros(img.shape[:3])  # no alpha channel: an empty mask, as LoadImage gives


def test_workflows_exist():
    names = {p.name for p in API_WORKFLOWS}
    assert {"text_to_audio_video_api.json", "image_to_audio_video_api.json"} <= names


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_and_api_twins_agree(api_path):
    assert check_pair(api_path) == []


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_api_workflow_runs_in_process(api_path, tiny_models, tmp_path, monkeypatch):
    import av
    import numpy as np

    from tests.workflow_format import pack_node_classes

    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tiny_models["root"]))
    monkeypatch.setenv("AVCONTROL_OUTPUT_DIR", str(tmp_path / "out"))
    classes = {**pack_node_classes(), "LoadImage": LoadImageFromInput}
    LoadImageFromInput.folder = tmp_path
    api = tinify(read_json(api_path), class_input_spec(classes))
    for node in api.values():
        if node["class_type"] == "LoadImage":  # a real PNG through a real codec
            rgb = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            with av.open(str(tmp_path / node["inputs"]["image"]), "w", format="image2") as out:
                stream = out.add_stream("png")
                stream.width, stream.height, stream.pix_fmt = 96, 80, "rgb24"
                for packet in stream.encode(frame):
                    out.mux(packet)
                out.mux(stream.encode())
    results = run_api_workflow(api, classes)
    saved = [out[0] for nid, out in results.items() if api[nid]["class_type"] == "AVCSaveVideo"]
    assert len(saved) == 1
    latent = next(n["inputs"] for n in api.values() if n["class_type"] == "AVCEmptyLatent")
    info = probe_mp4(saved[0])
    assert info["frames"] == latent["frames"] and info["fps"] == pytest.approx(latent["fps"])
    assert (info["width"], info["height"]) == (latent["width"], latent["height"])
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / latent["fps"]
