"""Loader nodes: the LTX-2 checkpoint and the Gemma text encoder, from ComfyUI's model folders."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from . import host
from .common import DEVICE_CHOICES, DTYPE_CHOICES, MODEL, TEXT_ENCODER, category

_CACHE_SIZE = 2
_cache: OrderedDict[tuple, object] = OrderedDict()


def _cached(key: tuple, build):
    """Keep the last few loaded models, so re-queuing a graph does not reload weights from disk."""
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    value = build()
    _cache[key] = value
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return value


def clear_cache() -> None:
    _cache.clear()


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return host.torch_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'auto' or 'cpu' on this machine (no CUDA device), got 'cuda'")
    return torch.device(name)


class AVCModelLoader:
    """Loads an LTX-2 (19B) or LTX-2.3 (22B) checkpoint: transformer now, VAEs and vocoder when first used."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (host.list_models("checkpoints"), {
                    "tooltip": "Single-file LTX-2 / LTX-2.3 checkpoint (.safetensors with its config in the metadata), "
                    "from models/checkpoints. Holds transformer, video VAE, audio VAE, vocoder and text connectors."}),
                "dtype": (DTYPE_CHOICES, {"default": "bf16", "tooltip":
                    "Weight and compute precision. bf16: the models' native precision (19B needs ~38 GB at bf16). "
                    "fp32 doubles memory; use it on CPU or for debugging."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip":
                    "Where the model runs. auto: ComfyUI's device (your GPU)."}),
            }
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = category("loaders")
    DESCRIPTION = "Load an LTX-2 audio+video checkpoint. Refuses files of other models, with the reason."

    def load(self, ckpt_name, dtype, device):
        from ..avcontrol_core.backbone import load_model

        path = host.resolve_model("checkpoints", ckpt_name)
        dev = resolve_device(device)
        host.free_host_memory(path.stat().st_size, dev)
        return (_cached(("model", _file_key(path), dtype, str(dev)), lambda: load_model(path, dev, dtype)),)


class AVCTextEncoderLoader:
    """Loads Gemma 3 and binds it to the checkpoint's text connectors."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The LTX-2 model whose text connectors turn Gemma features into "
                                  "video and audio prompt contexts."}),
                "text_encoder": (host.list_models("text_encoders"), {"tooltip":
                    "Gemma 3 12B from models/text_encoders: the single file ComfyUI uses "
                    "(gemma_3_12B_it.safetensors, tokenizer inside) or a Hugging Face folder "
                    "(config.json, weights, tokenizer)."}),
                "dtype": (DTYPE_CHOICES, {"default": "bf16", "tooltip":
                    "Gemma precision. bf16 needs ~24 GB for the 12B model; it is only used while encoding."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip": "Where Gemma runs while encoding."}),
            }
        }

    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"
    CATEGORY = category("loaders")
    DESCRIPTION = "Load the Gemma 3 text encoder for LTX-2 prompts."

    def load(self, model, text_encoder, dtype, device):
        from ..avcontrol_core.text_encoder import load_prompt_encoder

        path = host.resolve_model("text_encoders", text_encoder)
        dev = resolve_device(device)
        key = ("text", str(path.resolve()), _file_key(Path(model.path)), dtype, str(dev))
        return (_cached(key, lambda: load_prompt_encoder(path, model.path, model.config, dev, dtype)),)
