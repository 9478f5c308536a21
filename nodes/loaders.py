"""Loader nodes: the LTX-2 checkpoint, the Gemma text encoder and the latent upsampler, from ComfyUI's model
folders."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from . import host
from .common import DEVICE_CHOICES, DTYPE_CHOICES, MODEL, TEXT_ENCODER, UPSCALER, category

# shown choice -> avcontrol_core.kernels.WEIGHTS
WEIGHT_VALUES = {"default": "default", "fp8 (e4m3)": "fp8", "fp8_scaled (fp8 matmul)": "fp8_scaled"}
WEIGHT_CHOICES = list(WEIGHT_VALUES)
ATTENTION_CHOICES = ["auto", "sdpa", "xformers", "flash_attention_3"]  # avcontrol_core.kernels.ATTENTION


class _LRU:
    """The last few loaded objects, so re-queuing a graph does not reload weights from disk. An evicted model gives
    back its device memory at once (ComfyUI may still hold the object in its output cache)."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key: tuple, build):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = build()
        self.items[key] = value
        while len(self.items) > self.size:
            _release(self.items.popitem(last=False)[1])
        return value


def _release(value) -> None:
    """Give back the device memory an AVModel or a step-scoped text encoder holds (they stay usable)."""
    for method in ("release_all", "release"):
        if callable(getattr(type(value), method, None)):
            getattr(value, method)()
            return


def release_cached_models() -> None:
    """What ComfyUI's "free memory" (POST /free, Unload Models, its own loads running short) calls, through
    host.on_host_free: every cached model gives back its device memory. The models stay cached and usable: a budgeted
    transformer waits in host memory, a resident one is rebuilt from its file on next use."""
    for value in list(_models.items.values()):
        _release(value)


_models = _LRU(2)  # an LTX-2 model and its text encoder are tens of GB: keep only the current pair
_loras = _LRU(16)  # LoRAs are small
_upscalers = _LRU(2)  # about 1 GB each (bf16), held in host memory


def clear_cache() -> None:
    _models.items.clear()
    _loras.items.clear()
    _upscalers.items.clear()


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
                    "from models/checkpoints. Holds transformer, video VAE, audio VAE, vocoder and text connectors. "
                    "Pre-quantised fp8 files (e.g. ltx-2-19b-dev-fp8) are dequantised as they load (fp8 value x "
                    "its scale). With weights fp8 they are cast to 8 bits again without their scales, as ltx-core's "
                    "fp8 cast does: half the memory, a little more rounding than the file's own."}),
                "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip":
                    "Weight and compute precision. auto: bf16 on a CUDA GPU, fp32 on the CPU (a CPU runs bf16 "
                    "many times slower). bf16: the models' native precision (19B needs ~38 GB at bf16). fp32 "
                    "doubles memory; for the CPU or debugging."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip":
                    "Where the model runs. auto: ComfyUI's device (your GPU)."}),
            },
            # optional, so API-format workflows saved before these existed keep validating (ComfyUI refuses a
            # prompt that lacks a required input); the defaults are the behaviour from before
            "optional": {
                "weights": (WEIGHT_CHOICES, {"default": "default", "tooltip":
                    "default: weights in the dtype above. fp8 (e4m3): the transformer blocks' attention and "
                    "feed-forward weights stored in 8 bits and upcast per layer for compute (ltx-core's fp8 cast). "
                    "Saves: the 19B transformer drops from ~35 to ~18 GB, and block swap streams half the bytes. "
                    "Costs: an upcast per layer (measured on an H100, 19B at 768x512x121: 7-10% slower per step, "
                    "19 instead of 36 GB peak) and fp8 rounding (small changes in the output). fp8_scaled (fp8 "
                    "matmul): the same weights in 8 bits with a per-tensor scale (a pre-quantised file's own scales "
                    "are kept), multiplied in fp8 by torch._scaled_mm, each layer's input quantised on the fly. Aims "
                    "to be faster than bf16, not only smaller; needs a CUDA GPU with compute capability 8.9 or more "
                    "(RTX 40xx, H100/H200; refused otherwise, with what was found) and lora_mode runtime. Speed and "
                    "accuracy not yet measured on a GPU."}),
                "offload_budget_gb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                    "tooltip": "GPU memory the model may use while sampling, in GB. 0: everything stays on the GPU "
                    "(fastest; the 19B transformer needs ~35 GB at bf16 plus activations). Above 0: the transformer "
                    "blocks that do not fit stream from pinned host memory while the GPU computes (the GPU share is "
                    "picked from this budget and the free memory), and the text encoder, VAEs and vocoder are on "
                    "the GPU only for their step. Saves GPU memory (measured on an H100, 19B at 768x512x121: a "
                    "24 GB budget peaked at 22.7 GB and ran 2-6% slower than resident); costs host RAM (the whole "
                    "transformer) and speed when the copies outrun the compute (slow PCIe, small frames). Too small "
                    "for one block is refused with the minimum named."}),
                "compile": ("BOOLEAN", {"default": False, "tooltip":
                    "torch.compile each transformer block. Saves time per step (measured on an H100, 19B at "
                    "768x512x121: 0.36 instead of 0.43 s, 17% less); costs a compile on the first step of every new "
                    "size (90 s there) and needs a working Triton / C++ toolchain."}),
                "attention": (ATTENTION_CHOICES, {"default": "auto", "tooltip":
                    "Attention kernel. auto: the fastest installed (FlashAttention 3 on Hopper GPUs, else xformers, "
                    "else PyTorch SDPA). sdpa: PyTorch's own (always available). xformers / flash_attention_3: only "
                    "if that package is installed (an error says what is). Same results up to rounding."}),
            },
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The LTX-2 model (transformer now; VAEs and vocoder load on first use); connect to the sampler, decode and the "
                       "text encoder loader.",)
    FUNCTION = "load"
    CATEGORY = category("loaders")
    DESCRIPTION = "Load an LTX-2 audio+video checkpoint. Refuses files of other models, with the reason."

    def load(self, ckpt_name, dtype, device, weights="default", offload_budget_gb=0.0, compile=False,
             attention="auto"):
        from ..avcontrol_core.backbone import ModelOptions, load_model

        options = ModelOptions(weights=WEIGHT_VALUES.get(weights, weights),
                               offload_budget_gb=float(offload_budget_gb), compile=bool(compile), attention=attention)
        path = host.resolve_model("checkpoints", ckpt_name)
        dev = resolve_device(device)
        host.on_host_free(release_cached_models)
        if not options.offloads():  # with a budget the model loads into host memory; room is made when it runs
            host.free_host_memory(path.stat().st_size, dev)

        def build():
            model = load_model(path, dev, dtype, options)
            model.on_device_request = lambda nbytes: host.free_host_memory(nbytes, dev)
            return model

        return (_models.get(("model", _file_key(path), dtype, str(dev), options), build),)


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
                "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip":
                    "Gemma precision. auto: bf16 on a CUDA GPU, fp32 on the CPU. bf16 needs ~24 GB for the 12B "
                    "model; it is only used while encoding."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip": "Where Gemma runs while encoding."}),
            }
        }

    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("Gemma 3 bound to this checkpoint's text connectors; connect to AVControl Prompt Encode.",)
    FUNCTION = "load"
    CATEGORY = category("loaders")
    DESCRIPTION = "Load the Gemma 3 text encoder for LTX-2 prompts."

    def load(self, model, text_encoder, dtype, device):
        from ..avcontrol_core.text_encoder import load_prompt_encoder

        path = host.resolve_model("text_encoders", text_encoder)
        dev = resolve_device(device)
        step_scoped = model.options.offloads() and dev.type != "cpu"
        key = ("text", str(path.resolve()), _file_key(Path(model.path)), dtype, str(dev), step_scoped)
        if not step_scoped:
            return (_models.get(key, lambda: load_prompt_encoder(path, model.path, model.config, dev, dtype)),)
        return (_models.get(key, lambda: _step_scoped_encoder(model, path, dev, dtype)),)


def _step_scoped_encoder(model, path: Path, dev, dtype):
    """With an offload budget: Gemma waits in host memory and visits the GPU only while encoding, after the
    transformer was parked and ComfyUI asked to make room."""
    from ..avcontrol_core.offload import OnDeviceForStep, tensor_bytes
    from ..avcontrol_core.text_encoder import load_prompt_encoder

    encoder = load_prompt_encoder(path, model.path, model.config, "cpu", dtype)
    nbytes = tensor_bytes(encoder.gemma.model) + tensor_bytes(encoder.processor)

    def make_room(n: int) -> None:
        model.park()
        host.free_host_memory(n, dev)

    return OnDeviceForStep(encoder, dev, "encode", before=make_room, nbytes=nbytes)


class AVCLatentUpscalerLoader:
    """Loads a spatial latent upsampler for two-stage inference."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "upscaler_name": (host.list_models("latent_upscale_models"), {"tooltip":
                    "Spatial latent upsampler from models/latent_upscale_models, e.g. "
                    "ltx-2-spatial-upscaler-x2-1.0.safetensors (config in its metadata). It waits in host memory "
                    "and visits the GPU only while upscaling."}),
            }
        }

    RETURN_TYPES = (UPSCALER,)
    RETURN_NAMES = ("upscaler",)
    OUTPUT_TOOLTIPS = ("The spatial latent upsampler (x2); connect to AVControl Latent Upscale for stage two.",)
    FUNCTION = "load"
    CATEGORY = category("loaders")
    DESCRIPTION = "Load LTX-2's spatial latent upsampler (stage two of two-stage inference)."

    def load(self, upscaler_name):
        from ..avcontrol_core.upsampler import load_upsampler

        path = host.resolve_model("latent_upscale_models", upscaler_name)
        return (_upscalers.get(("upscaler", _file_key(path)), lambda: load_upsampler(path)),)
