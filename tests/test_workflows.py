"""Every example workflow ships as a UI/API pair that agrees node for node, and its API twin runs in-process
through the node classes on the tiny model, writing an mp4 with sound of the asked length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avcontrol_core.media import load_audio, load_image, probe_mp4, read_mp4
from tests.workflow_format import check_pair, read_json
from tests.workflow_run import run_api_workflow
from tests.workflow_tiny import class_input_spec, same_version, tinify, write_inputs, write_preprocessor_models

ROOT = Path(__file__).resolve().parents[1]
API_WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*_api.json"))


class _CoreStandIn:
    """ComfyUI's core loaders cannot run outside ComfyUI; these read the same files from a folder into the same
    data layout (IMAGE [B, H, W, 3], AUDIO dict, VIDEO components). Inside a real ComfyUI (tests/integration) the
    core nodes themselves run."""

    folder: Path = Path(".")


class LoadImage(_CoreStandIn):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("STRING", {})}}

    RETURN_TYPES, FUNCTION = ("IMAGE", "MASK"), "load"

    def load(self, image):
        img = load_image(self.folder / image)
        return img, torch.zeros(img.shape[:3])  # no alpha channel: an empty mask, as LoadImage gives


class LoadAudio(_CoreStandIn):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("STRING", {})}}

    RETURN_TYPES, FUNCTION = ("AUDIO",), "load"

    def load(self, audio):
        return (load_audio(self.folder / audio),)


class LoadVideo(_CoreStandIn):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ("STRING", {})}}

    RETURN_TYPES, FUNCTION = ("VIDEO",), "load"

    def load(self, file):
        return (self.folder / file,)


class GetVideoComponents:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO", {})}}

    RETURN_TYPES, FUNCTION = ("IMAGE", "AUDIO", "FLOAT", "INT", "COMBO"), "split"

    def split(self, video):
        images, fps, audio = read_mp4(video)
        return images, audio, fps, 8, "bt709"


CORE = {c.__name__: c for c in (LoadImage, LoadAudio, LoadVideo, GetVideoComponents)}


def test_workflows_exist():
    names = {p.name for p in API_WORKFLOWS}
    assert {"text_to_audio_video_api.json", "image_to_audio_video_api.json", "depth_control_api.json",
            "pose_control_api.json", "inpainting_control_api.json", "audio_intensity_control_api.json",
            "depth_and_voice_control_api.json"} <= names


def test_each_workflow_runs_on_the_tiny_model_of_its_checkpoints_layout():
    offered = ["avcontrol-tiny-ltx2.3.safetensors", "avcontrol-tiny-ltx2.safetensors"]  # sorted, as hosts list them
    assert same_version("ltx-2-19b-dev.safetensors", offered) == "avcontrol-tiny-ltx2.safetensors"
    assert same_version("ltx-2.3-22b-dev.safetensors", offered) == "avcontrol-tiny-ltx2.3.safetensors"
    names = {read_json(p)[n]["inputs"]["ckpt_name"] for p in API_WORKFLOWS for n in read_json(p)
             if read_json(p)[n]["class_type"] == "AVCModelLoader"}
    assert {same_version(n, offered) for n in names} == set(offered)  # both layouts run end to end


def test_templates_are_the_ui_workflows_each_with_its_thumbnail():
    """ComfyUI lists every workflows/*.json as a template and asks for NAME.jpg per card: only UI workflows there
    (the API twins sit in workflows/api/, which it does not glob), each with a real JPEG."""
    from PIL import Image

    listed = sorted((ROOT / "workflows").glob("*.json"))
    assert [p.stem for p in listed] == sorted(p.name[: -len("_api.json")] for p in API_WORKFLOWS)
    for path in listed:
        assert "nodes" in read_json(path), f"{path.name} is not a UI workflow"
        with Image.open(path.with_suffix(".jpg")) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (384, 256), path.name


def test_every_example_loads_in_the_dtype_of_the_machine():
    """bf16 on a CPU without bf16 instructions took 360 s against 6 s in fp32: the examples leave it to 'auto'."""
    dtypes = {(p.name, node["class_type"]): node["inputs"]["dtype"] for p in API_WORKFLOWS
              for node in read_json(p).values() if "dtype" in node["inputs"]}
    assert len({c for _, c in dtypes}) == 2 and set(dtypes.values()) == {"auto"}, dtypes


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_and_api_twins_agree(api_path):
    assert check_pair(api_path) == []


def run_on_the_tiny_models(api_path, tiny_models, tmp_path, monkeypatch) -> tuple[dict, list]:
    """An API workflow shrunk to the tiny models and run in-process through the node classes: (the prompt that
    ran, the paths its Save Video nodes wrote)."""
    from tests.workflow_defs import pack_node_classes

    write_preprocessor_models(tiny_models["root"])
    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tiny_models["root"]))
    monkeypatch.setenv("AVCONTROL_OUTPUT_DIR", str(tmp_path / "out"))
    classes = {**pack_node_classes(), **CORE}
    _CoreStandIn.folder = tmp_path
    api = tinify(read_json(api_path), class_input_spec(classes))
    write_inputs(api, tmp_path)
    results = run_api_workflow(api, classes)
    return api, [out[0] for nid, out in results.items() if api[nid]["class_type"] == "AVCSaveVideo"]


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_api_workflow_runs_in_process(api_path, tiny_models, tmp_path, monkeypatch):
    api, saved = run_on_the_tiny_models(api_path, tiny_models, tmp_path, monkeypatch)
    assert len(saved) == 1
    latent = next(n["inputs"] for n in api.values() if n["class_type"] == "AVCEmptyLatent")
    info = probe_mp4(saved[0])
    assert info["frames"] == latent["frames"] and info["fps"] == pytest.approx(latent["fps"])
    scale = 2 ** sum(n["class_type"] == "AVCLatentUpscale" for n in api.values())  # the tiny upsampler is x2
    assert (info["width"], info["height"]) == (latent["width"] * scale, latent["height"] * scale)
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / latent["fps"]
