"""Loader nodes: the LTX-2 checkpoint and the Gemma text encoder, from ComfyUI's model folders."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from . import host
from .common import DEVICE_CHOICES, DTYPE_CHOICES, MODEL, TEXT_ENCODER, category

class _LRU:
    """The last few loaded objects, so re-queuing a graph does not reload weights from disk."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key: tuple, build):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = build()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


_models = _LRU(2)  # an LTX-2 model and its text encoder are tens of GB: keep only the current pair
_loras = _LRU(16)  # LoRAs are small


def clear_cache() -> None:
    _models.items.clear()
    _loras.items.clear()


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def cached_lora(path: Path):
    """A LoRA file read once per (path, mtime) and shared by every node that names it."""
    from ..avcontrol_core.lora import read_lora

    return _loras.get(_file_key(path), lambda: read_lora(path))


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
        return (_models.get(("model", _file_key(path), dtype, str(dev)), lambda: load_model(path, dev, dtype)),)


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
        return (_models.get(key, lambda: load_prompt_encoder(path, model.path, model.config, dev, dtype)),)
