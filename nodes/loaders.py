"""Loader nodes: the LTX-2 checkpoint, the Gemma text encoder and the latent upsampler, from ComfyUI's model
folders."""

from __future__ import annotations

from pathlib import Path

from . import host
from .common import DEVICE_CHOICES, DTYPE_CHOICES, MODEL, TEXT_ENCODER, UPSCALER, category

# shown choice -> avcontrol_core.kernels.WEIGHTS
WEIGHT_VALUES = {"default": "default", "fp8 (e4m3)": "fp8", "fp8_scaled (fp8 matmul)": "fp8_scaled"}
WEIGHT_CHOICES = list(WEIGHT_VALUES)
ATTENTION_CHOICES = ["auto", "sdpa", "xformers", "flash_attention_3"]  # avcontrol_core.kernels.ATTENTION


def cached_lora(path: Path):
    """A LoRA file read once per (path, mtime) and shared by every node that names it (the core's one cache)."""
    from ..avcontrol_core.api import load_lora

    return load_lora(path)


def resolve_device(name: str):
    """The node's device choice: "auto" is ComfyUI's device; "cuda" without one is refused, naming the input."""
    from ..avcontrol_core.api import resolve_device as core_device

    return host.torch_device() if name == "auto" else core_device(name)


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
        from ..avcontrol_core.api import ModelOptions, load_model

        options = ModelOptions(weights=WEIGHT_VALUES.get(weights, weights),
                               offload_budget_gb=float(offload_budget_gb), compile=bool(compile), attention=attention)
        return (load_model(host.resolve_model("checkpoints", ckpt_name), resolve_device(device), dtype, options),)


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
        from ..avcontrol_core.api import load_text_encoder

        return (load_text_encoder(host.resolve_model("text_encoders", text_encoder), model, resolve_device(device),
                                  dtype),)


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
        from ..avcontrol_core.api import load_upsampler

        return (load_upsampler(host.resolve_model("latent_upscale_models", upscaler_name)),)
