"""The nodes run in-process on the tiny model, with ComfyUI's data types at the boundary; bad input fails early."""

from __future__ import annotations

import importlib
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file

from avcontrol_core.media import probe_mp4
from avcontrol_core.tiny import TINY_CHECKPOINT, TINY_GEMMA_DIR
from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

load_pack()
# the nodes raise the pack's own copy of the error type (the pack is imported as a package, as ComfyUI does)
InputError = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").InputError
CKPT = TINY_CHECKPOINT.format(version="ltx2")


@pytest.fixture()
def nodes(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tiny_models["root"]))
    monkeypatch.setenv("AVCONTROL_OUTPUT_DIR", str(tmp_path / "output"))
    return {name: cls() for name, cls in pack_node_classes().items()}


@pytest.fixture()
def loaded(nodes):
    (model,) = nodes["AVCModelLoader"].load(CKPT, "fp32", "cpu")
    (encoder,) = nodes["AVCTextEncoderLoader"].load(model, TINY_GEMMA_DIR, "fp32", "cpu")
    return model, encoder


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(width=64, height=64, frames=50, fps=24.0), "frames must be 8n+1"),
        (dict(width=100, height=64, frames=9, fps=24.0), "width must be a multiple of 32"),
        (dict(width=64, height=48, frames=9, fps=24.0), "height must be a multiple of 32"),
        (dict(width=64, height=64, frames=9, fps=0.5), "fps must be between 1 and 120"),
    ],
)
def test_empty_latent_refuses_bad_sizes(nodes, kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)) as err:
        nodes["AVCEmptyLatent"].create(**kwargs)
    bad = [v for k, v in kwargs.items() if k in message.split()[0]]
    assert str(bad[0]) in str(err.value)


def test_text_to_audio_video_through_the_nodes(nodes, loaded, tmp_path):
    model, encoder = loaded
    (cond,) = nodes["AVCPromptEncode"].encode(encoder, "a drum solo in a cave", "")
    (latent,) = nodes["AVCEmptyLatent"].create(64, 96, 17, 25.0)
    (guidance,) = nodes["AVCGuidance"].build(
        "1", video_cfg=3.0, video_stg=1.0, video_modality_scale=3.0, video_rescale=0.7,
        audio_cfg=7.0, audio_stg=1.0, audio_modality_scale=3.0, audio_rescale=0.7)
    (sampled,) = nodes["AVCSampler"].run(model, cond, latent, 7, 2, "ltx2", guidance=guidance)
    images, audio, fps = nodes["AVCDecode"].decode(model, sampled, False, 512, 64, 64)
    assert images.shape == (17, 96, 64, 3) and fps == 25.0
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert audio["waveform"].shape[:2] == (1, 2) and audio["sample_rate"] == 24000
    assert audio["waveform"].shape[-1] == round(17 / 25.0 * 24000)

    first = nodes["AVCSaveVideo"].save(images, fps, "runs/t2av", audio)
    second = nodes["AVCSaveVideo"].save(images, fps, "runs/t2av", audio)
    paths = [first["result"][0], second["result"][0]]
    assert paths[0] != paths[1]
    info = probe_mp4(paths[0])
    assert info["frames"] == 17 and info["fps"] == 25.0 and info["audio_codec"] == "aac"
    assert abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / 25.0
    assert first["ui"]["images"][0] == {"filename": "t2av_00001_.mp4", "subfolder": "runs", "type": "output"}


def test_image_to_video_keeps_the_first_frame(nodes, loaded):
    model, encoder = loaded
    (cond,) = nodes["AVCPromptEncode"].encode(encoder, "a face turns", "")
    (latent,) = nodes["AVCEmptyLatent"].create(64, 64, 9, 24.0)
    image = torch.rand(1, 80, 120, 3, generator=torch.Generator().manual_seed(0))
    (conditioned,) = nodes["AVCImageToVideo"].apply(model, latent, image, 1.0)
    (sampled,) = nodes["AVCSampler"].run(model, cond, conditioned, 0, 2, "ltx2")
    assert torch.equal(sampled.video[:, :, :1], conditioned.conditioning[0].latent)  # frame 0 kept exactly
    assert not torch.equal(sampled.video[:, :, 1:], conditioned.video[:, :, 1:])


def test_model_loader_caches_and_refuses_other_files(nodes, tiny_models):
    loader = nodes["AVCModelLoader"]
    assert loader.load(CKPT, "fp32", "cpu")[0] is loader.load(CKPT, "fp32", "cpu")[0]
    other = tiny_models["root"] / "checkpoints" / "not-ltx.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(InputError, match="not an LTX-2 checkpoint"):
        loader.load("not-ltx.safetensors", "fp32", "cpu")
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        loader.load("missing.safetensors", "fp32", "cpu")


def test_prompt_and_gemma_errors_name_the_input(nodes, loaded, tiny_models):
    model, encoder = loaded
    with pytest.raises(InputError, match="positive prompt"):
        nodes["AVCPromptEncode"].encode(encoder, "   ", "blurry")
    broken = tiny_models["root"] / "text_encoders" / "gemma-without-tokenizer"
    shutil.copytree(tiny_models["gemma"], broken, dirs_exist_ok=True)
    for f in broken.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(InputError, match="tokenizer") as err:
        nodes["AVCTextEncoderLoader"].load(model, "gemma-without-tokenizer", "fp32", "cpu")
    assert "gemma-without-tokenizer" in str(err.value)


def test_sampler_checks_guidance_before_running(nodes, loaded):
    model, encoder = loaded
    (cond,) = nodes["AVCPromptEncode"].encode(encoder, "rain", "")
    (latent,) = nodes["AVCEmptyLatent"].create(64, 64, 9, 24.0)
    (guidance,) = nodes["AVCGuidance"].build(
        "29", video_cfg=3.0, video_stg=1.0, video_modality_scale=1.0, video_rescale=0.0,
        audio_cfg=1.0, audio_stg=0.0, audio_modality_scale=1.0, audio_rescale=0.0)
    with pytest.raises(InputError, match=re.escape("stg_blocks must be block indices below the model's 2 layers")):
        nodes["AVCSampler"].run(model, cond, latent, 0, 2, "ltx2", guidance=guidance)


def test_save_refuses_odd_frames_without_leaving_a_file(nodes, tmp_path):
    images = torch.rand(3, 33, 64, 3)
    with pytest.raises(ValueError, match="images"):
        nodes["AVCSaveVideo"].save(images, 24.0, "odd")
    assert not list((tmp_path / "output").rglob("*.mp4"))


@pytest.mark.parametrize("name", ["strength", "lora_strength", "attention"])
def test_a_control_node_refuses_nan_naming_the_input(nodes, name):
    """NaN reaches a FLOAT input over the API (the browser's widgets cannot hold it): refused at the control node,
    before any frames are checked or a LoRA is read, naming the control and the input."""
    values = dict(lora_name="none", lora_strength=1.0, strength=1.0, attention=1.0) | {name: float("nan")}
    frames = torch.rand(9, 64, 64, 3)
    with pytest.raises(InputError, match=rf"depth: {name} must be"):
        nodes["AVCDepthControl"].add(frames=frames, **values)
    for value in (1.0, 0.5):  # the same call with a number goes through
        (controls,) = nodes["AVCDepthControl"].add(frames=frames, **(values | {name: value}))
        assert len(controls) == 1


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/abs/clip", "", "   "])
def test_save_checks_the_prefix_when_queued(nodes, prefix, tmp_path):
    """ComfyUI calls VALIDATE_INPUTS before running anything: a bad prefix fails there, not after sampling."""
    save = type(nodes["AVCSaveVideo"])
    problem = save.VALIDATE_INPUTS(filename_prefix=prefix)
    assert isinstance(problem, str) and problem.startswith("filename_prefix must"), problem
    assert repr(prefix) in problem
    assert save.VALIDATE_INPUTS(filename_prefix="avcontrol/clip") is True
    assert save.VALIDATE_INPUTS() is True  # linked: checked when the node runs
    assert not (tmp_path / "output").exists()  # checking creates nothing
