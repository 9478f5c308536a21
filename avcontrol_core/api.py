"""The public API of the core: what a host (ComfyUI's nodes, the CLI, a script) calls. Nothing else is promised.

    from avcontrol_core import api

    model = api.load_model("ltx-2-19b-dev.safetensors")                  # cached: a second call is free
    encoder = api.load_text_encoder("gemma_3_12B_it.safetensors", model)
    prompts = api.encode_prompts(encoder, "a kite over a beach", "blurry")
    latent = api.empty_latent(768, 512, 121, 24.0)
    control = api.VideoControl(frames=depth, lora=api.load_lora("depth-ic-lora.safetensors"))
    out = api.sample(model, prompts, latent, api.Guidance(), steps=40, schedule_name="ltx2", seed=0,
                     controls=(control,))
    api.write_mp4(api.unique_output_path("output", "clip"), api.decode_video(model, out), 24.0,
                  api.decode_audio(model, out))

- load: `load_model`, `load_text_encoder`, `load_lora`, `load_upsampler`: one cache for all (residency.RESIDENCY),
  keyed by file (path, mtime, size) and settings; `release()` gives back the device memory, `unload(model)`
  forgets one, `clear_models()` all.
- encode prompts: `encode_prompts`. Make a control: `VideoControl`, `ImageControl`, `AudioControl`,
  `LoraControl` with a `Weight` / `Curve`. Sample: `sample` (with `Guidance`, `StreamGuidance`). Decode:
  `decode_video`, `decode_audio`. Upscale: `upscale`. Preprocess: the `*_frames`, masks, fit, audio features,
  speech and demixing functions below. Write media: `write_mp4`, `unique_output_path`.
- the host: `install_host(host)` (hosting.Host: progress, cancel, make room, model files, output folder);
  without one, hosting.StandaloneHost. Out of memory: `GPUMemoryError` with structured `hints`.

Importing this module is cheap: each name loads its module on first use (PEP 562), so the preprocessors' optional
packages are needed only by the preprocessors that use them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .hosting import Host, StandaloneHost, current as current_host, install as install_host  # noqa: F401

# public name -> (module under avcontrol_core, its name there)
_LAZY = {
    # errors and warnings
    "InputError": ("errors", "InputError"), "PackWarning": ("errors", "PackWarning"),
    "require": ("errors", "require"), "warn": ("errors", "warn"),
    "GPUMemoryError": ("residency", "GPUMemoryError"), "Hint": ("residency", "Hint"),
    # models
    "AVModel": ("backbone", "AVModel"), "ModelOptions": ("backbone", "ModelOptions"),
    "LoraStack": ("lora", "LoraStack"), "LoraFile": ("lora", "LoraFile"),
    # prompts, latents, controls, guidance, sampling
    "PromptPair": ("conditioning", "PromptPair"), "encode_first_frame": ("conditioning", "encode_first_frame"),
    "empty_latent": ("latents", "empty_latent"), "condition_first_frame": ("latents", "condition_first_frame"),
    "AVLatent": ("latents", "AVLatent"),
    "VideoControl": ("controls", "VideoControl"), "ImageControl": ("controls", "ImageControl"),
    "AudioControl": ("controls", "AudioControl"), "LoraControl": ("controls", "LoraControl"),
    "Weight": ("weight", "Weight"), "Curve": ("weight", "Curve"),
    "fill_region": ("control_media", "fill_masked"), "mask_to_frames": ("control_media", "mask_to_frames"),
    "gate_mask": ("control_media", "gate_mask"), "render_intensity": ("control_media", "render_intensity"),
    "Guidance": ("guidance", "Guidance"), "StreamGuidance": ("guidance", "StreamGuidance"),
    "parse_blocks": ("guidance", "parse_blocks"),
    "sample": ("pipeline", "run_sampler"), "step_count": ("sampling", "step_count"),
    "upscale": ("upsampler", "upscale_for_model"), "stage_one_size": ("upsampler", "stage_one_size"),
    "decode_video": ("decode", "decode_video"), "decode_audio": ("decode", "decode_audio"), "tiling": ("decode", "tiling"),
    # media in and out, and the one validator of each
    "check_images": ("inputs", "check_images"), "check_mask": ("inputs", "check_mask"),
    "check_audio": ("inputs", "check_audio"),
    "check_video_output": ("media", "check_images"), "check_audio_output": ("media", "check_audio"),
    "load_image": ("media", "load_image"), "write_mp4": ("media", "write_mp4"), "unique_output_path": ("media", "unique_output_path"),
    "output_prefix_problem": ("media", "output_prefix_problem"),
    # preprocessors: frames and masks
    "fit_clip": ("preprocess.fit", "fit_clip"), "plan_frames": ("preprocess.fit", "plan_frames"),
    "canny_frames": ("preprocess.edges", "canny_frames"), "soft_edge_frames": ("preprocess.edges", "soft_edge_frames"),
    "box_mask": ("preprocess.masks", "box_mask"), "threshold_mask": ("preprocess.masks", "threshold_mask"),
    "fill_masked": ("preprocess.masks", "fill_masked"), "aspect_padding": ("preprocess.masks", "aspect_padding"),
    "outpaint": ("preprocess.masks", "outpaint"), "ALIGN_X": ("preprocess.masks", "ALIGN_X"),
    "ALIGN_Y": ("preprocess.masks", "ALIGN_Y"), "ASPECTS": ("preprocess.masks", "ASPECTS"),
    "FILLS": ("preprocess.masks", "FILLS"),
    # preprocessors: models
    "require_file": ("preprocess.weights", "require_file"),
    "DEPTH_ANNOTATORS": ("preprocess.depth", "ANNOTATORS"), "DEPTH_MODELS": ("preprocess.depth", "DEPTH_MODELS"),
    "depth_choices": ("preprocess.depth", "choices"), "estimate_depth": ("preprocess.depth", "estimate_depth"),
    "load_depth_model": ("preprocess.depth", "load_depth_model"),
    "DWPOSE": ("preprocess.dwpose", "DWPOSE"), "DWPOSE_SOURCES": ("preprocess.dwpose", "SOURCES"),
    "dwpose_frames": ("preprocess.dwpose", "dwpose_frames"), "load_dwpose": ("preprocess.dwpose", "load_dwpose"),
    "POSE_ANNOTATORS": ("preprocess.pose", "ANNOTATORS"), "OPENPOSE_SOURCES": ("preprocess.pose", "OPENPOSE_SOURCES"),
    "OpenposeModels": ("preprocess.pose", "OpenposeModels"), "openpose_frames": ("preprocess.pose", "openpose_frames"),
    "mediapipe_frames": ("preprocess.pose", "mediapipe_frames"),
    # preprocessors: audio
    "curve_image": ("preprocess.audio_features", "curve_image"), "onsets": ("preprocess.audio_features", "onsets"),
    "intensity_envelope": ("preprocess.audio_features", "intensity_envelope"),
    "speech_activity": ("preprocess.speech", "speech_activity"),
    "speakers_from_segments": ("preprocess.speech", "speakers_from_segments"),
    "speakers_from_video": ("preprocess.speech", "speakers_from_video"),
    "format_segments": ("preprocess.speech", "format_segments"),
    "STEMS": ("preprocess.demix", "STEMS"), "DEMIX_MODEL_FOLDER": ("preprocess.demix", "MODEL_FOLDER"),
    "DEMIX_WHERE_TO_GET": ("preprocess.demix", "WHERE_TO_GET"), "load_separator": ("preprocess.demix", "load_separator"),
    "demix_demucs": ("preprocess.demix", "demix_demucs"), "demix_fallback": ("preprocess.demix", "demix_fallback"),
}

__all__ = sorted([*_LAZY, "Host", "StandaloneHost", "clear_models", "current_host", "encode_prompts", "install_host",
                  "load_lora", "load_model", "load_text_encoder", "load_upsampler", "release", "resolve_device", "unload"])


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"avcontrol_core.api has no {name!r} (the public names are api.__all__)")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__


# -- loading: one cache for every model ------------------------------------------------------------------------------


def resolve_device(name: str | Any = "auto"):
    """"auto": CUDA when available, else the CPU; "cuda" on a machine without one is refused, naming the input."""
    import torch

    from .errors import InputError

    if not isinstance(name, str):
        return torch.device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device must be 'auto' or 'cpu' on this machine (no CUDA device), got 'cuda'")
    return torch.device(name)


def load_model(path: str | Path, device: Any = "auto", dtype: Any = "auto", options: Any = None):
    """An LTX-2 / LTX-2.3 checkpoint (backbone.load_model), once per (file, device, dtype, options). Without an
    offload budget, room for the file is made on the device first (the residency parks the pack's other models and
    asks the host to unload its own)."""
    from . import backbone
    from .residency import RESIDENCY

    path, device = Path(path), resolve_device(device)
    options = options or backbone.ModelOptions()

    def build():
        if not options.offloads():  # with a budget the model loads into host memory; room is made when it runs
            RESIDENCY.make_room(path.stat().st_size, device)
        return backbone.load_model(path, device, dtype, options)

    return RESIDENCY.get("model", [path], build, str(dtype), str(device), options)


def load_text_encoder(path: str | Path, model, device: Any = "auto", dtype: Any = "auto"):
    """Gemma 3 bound to `model`'s text connectors, once per (files, device, dtype). With the model's offload budget
    on a GPU it waits in host memory and visits the GPU only while encoding (PromptEncoder.visiting)."""
    from .residency import RESIDENCY
    from .text_encoder import load_prompt_encoder

    path, device = Path(path), resolve_device(device)
    visiting = model.options.offloads() and device.type != "cpu"

    def build():
        if visiting:
            return load_prompt_encoder(path, model.path, model.config, "cpu", dtype).visiting(device)
        return load_prompt_encoder(path, model.path, model.config, device, dtype)

    return RESIDENCY.get("model", [path, model.path], build, "text encoder", str(dtype), str(device), visiting)


def load_lora(path: str | Path):
    """A LoRA file (lora.read_lora: every key layout the pack reads), once per file."""
    from .lora import read_lora
    from .residency import RESIDENCY

    return RESIDENCY.get("lora", [Path(path)], lambda: read_lora(path))


def load_upsampler(path: str | Path):
    """A spatial latent upsampler (upsampler.load_upsampler), once per file; host memory, on the device only while
    upscaling."""
    from .residency import RESIDENCY
    from .upsampler import load_upsampler as load

    return RESIDENCY.get("upsampler", [Path(path)], lambda: load(path))


def release() -> None:
    """Every cached model gives back its device memory (what the host's "free memory" calls)."""
    from .residency import RESIDENCY

    RESIDENCY.release()


def unload(value) -> bool:
    """Forget one cached model (e.g. the text encoder once the prompts are encoded); False if it was not cached."""
    from .residency import RESIDENCY

    return RESIDENCY.drop(value)


def clear_models() -> int:
    """Forget every cached model (device memory given back first); returns how many."""
    from .residency import RESIDENCY

    return RESIDENCY.clear()


def encode_prompts(encoder, positive: str, negative: str = ""):
    """The positive and negative prompts as one PromptPair (text_encoder.encode_prompt_pair)."""
    from .text_encoder import encode_prompt_pair

    return encode_prompt_pair(encoder, positive, negative)

