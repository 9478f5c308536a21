"""Speed and memory settings of the transformer: fp8 weight storage, the attention kernel, per-block torch.compile.

- fp8: ltx-core's own fp8 cast (`QuantizationPolicy.fp8_cast()`): the blocks' attention and feed-forward Linear
  weights and biases are stored as float8_e4m3fn (1 byte instead of 2) and every Linear upcasts its weight to the
  activation dtype for the matmul (`UPCAST_DURING_INFERENCE`). Plain PyTorch ops, so it runs on any device: half
  the bytes to hold or stream for those layers, a small upcast cost per layer, outputs within fp8 rounding.
- attention: ltx-core's kernels (PytorchAttention, XFormersAttention, FlashAttention3). "auto" takes FlashAttention 3
  on a Hopper GPU when installed, else xformers when installed, else SDPA (which picks its own flash /
  memory-efficient backend). FlashAttention 3 takes neither a mask nor fp32, so those calls (references with
  attention weights, fp32 models) fall back to SDPA.
- compile: each transformer block's forward through torch.compile (the module tree and its parameter names are
  unchanged, so LoRAs, block swap hooks and state dicts work as before). The first step of each new shape compiles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from ltx_core.model.transformer import attention as ltx_attention
from ltx_core.model.transformer.attention import Attention, FlashAttention3, PytorchAttention, XFormersAttention
from ltx_core.quantization import QuantizationPolicy

from .errors import InputError

WEIGHTS = ("default", "fp8", "fp8_scaled")  # fp8_scaled: fp8.py (per-tensor scales, fp8 matmul)
ATTENTION = ("auto", "sdpa", "xformers", "flash_attention_3")
FP8 = torch.float8_e4m3fn
_FP8_POLICY = QuantizationPolicy.fp8_cast()

# 48 blocks, each its own guard set (block index), times the shapes and guidance patterns of a session
# (older torch calls the first limit cache_size_limit)
_DYNAMO_LIMITS = {"recompile_limit": 512, "cache_size_limit": 512, "accumulated_recompile_limit": 4096}


def _dynamo_limits() -> dict:
    config = torch._dynamo.config
    limits = {k: v for k, v in _DYNAMO_LIMITS.items() if hasattr(config, k)}
    if "recompile_limit" in limits:
        limits.pop("cache_size_limit", None)  # a deprecated alias of it
    return limits


# ---------------------------------------------------------------------------------------------------------------
# fp8 weight storage
# ---------------------------------------------------------------------------------------------------------------


def fp8_storage(name: str, value: torch.Tensor) -> torch.Tensor:
    """The tensor as ltx-core's fp8 cast stores it: float8_e4m3fn for the blocks' Linear weights and biases, unchanged
    otherwise. `name` is the transformer's module key (transformer_blocks.N....)."""
    out = _FP8_POLICY.sd_ops.apply_to_key_value(name, value)
    if len(out) != 1 or out[0].new_key != name:
        raise RuntimeError(f"ltx-core's fp8 cast renamed or split {name!r}; this version is not supported")
    return out[0].new_value


def upcast_for_compute(transformer: torch.nn.Module) -> torch.nn.Module:
    """Make every Linear upcast its (fp8) weight and bias to the activation dtype (ltx-core's module op)."""
    for op in _FP8_POLICY.module_ops:
        if op.matcher(transformer):
            transformer = op.mutator(transformer)
    return transformer


def stores_fp8(module: torch.nn.Module) -> bool:
    """Whether any parameter is float8_e4m3fn (weights "fp8" or "fp8_scaled")."""
    return any(p.dtype == FP8 for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------------
# attention kernel
# ---------------------------------------------------------------------------------------------------------------


class FlashAttention3OrSdpa:
    """FlashAttention 3 for unmasked half-precision calls; PyTorch SDPA when a mask is given or the dtype is fp32
    (FA3 supports neither)."""

    def __call__(self, q, k, v, heads, mask=None):
        if mask is not None or q.dtype not in (torch.float16, torch.bfloat16):
            return PytorchAttention()(q, k, v, heads, mask)
        return FlashAttention3()(q, k, v, heads, mask)

    def __repr__(self) -> str:
        return "FlashAttention3OrSdpa()"


def available_attention(device: torch.device) -> tuple[str, ...]:
    """The attention settings that can run on `device` in this environment ('auto' and 'sdpa' always)."""
    names = ["auto", "sdpa"]
    if device.type == "cuda" and ltx_attention.memory_efficient_attention is not None:
        names.append("xformers")
    if device.type == "cuda" and ltx_attention.flash_attn_interface is not None:
        names.append("flash_attention_3")
    return tuple(names)


def resolve_attention(name: str, device: torch.device) -> tuple[str, Callable]:
    """(the kernel's name, the callable to install) for a setting; 'auto' picks the fastest available."""
    if name not in ATTENTION:
        raise InputError(f"attention must be one of {ATTENTION}, got {name!r}")
    device = torch.device(device)
    have = available_attention(device)
    if name != "auto" and name not in have:
        raise InputError(f"attention {name!r} is not available here (needs its package and a CUDA device); "
                         f"available: {', '.join(have)}")
    if name == "auto":
        hopper = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9
        if "flash_attention_3" in have and hopper:
            name = "flash_attention_3"
        elif "xformers" in have:
            name = "xformers"
        else:
            name = "sdpa"
    # plain callables, not ltx-core's AttentionFunction enum members: torch.compile cannot trace an enum's __call__
    # (one graph break per attention layer)
    kernel = {"sdpa": PytorchAttention(), "xformers": XFormersAttention(),
              "flash_attention_3": FlashAttention3OrSdpa()}[name]
    return name, kernel


def set_attention(transformer: torch.nn.Module, kernel: Callable) -> int:
    """Install `kernel` in every attention layer; returns how many layers."""
    layers = [m for m in transformer.modules() if isinstance(m, Attention)]
    for layer in layers:
        layer.attention_function = kernel
    return len(layers)


# ---------------------------------------------------------------------------------------------------------------
# per-block torch.compile
# ---------------------------------------------------------------------------------------------------------------


class _CompiledForward:
    """A block's forward through torch.compile, with recompile limits sized for 48 blocks while it runs."""

    def __init__(self, forward: Callable, backend: str, mode: str | None):
        self.eager = forward
        self.compiled = torch.compile(forward, backend=backend, mode=mode, dynamic=None)

    def __call__(self, *args, **kwargs):
        with torch._dynamo.config.patch(**_dynamo_limits()):
            return self.compiled(*args, **kwargs)


def compile_blocks(transformer: torch.nn.Module, backend: str = "inductor", mode: str | None = None) -> int:
    """Compile each block's forward in place (idempotent); block hooks (block swap, LoRA) stay eager around it.
    Returns the number of blocks compiled."""
    blocks = transformer.transformer_blocks
    for block in blocks:
        if not isinstance(block.__dict__.get("forward"), _CompiledForward):
            block.forward = _CompiledForward(block.forward, backend, mode)
    return len(blocks)


def uncompile_blocks(transformer: torch.nn.Module) -> None:
    for block in transformer.transformer_blocks:
        if isinstance(block.__dict__.get("forward"), _CompiledForward):
            del block.forward


def is_compiled(transformer: torch.nn.Module) -> bool:
    return any(isinstance(b.__dict__.get("forward"), _CompiledForward) for b in transformer.transformer_blocks)


@contextlib.contextmanager
def eager_blocks(transformer: torch.nn.Module):
    """Run the blocks eagerly for the duration (e.g. a reference forward in a test or bench)."""
    saved = {i: b.__dict__.get("forward") for i, b in enumerate(transformer.transformer_blocks)}
    uncompile_blocks(transformer)
    try:
        yield transformer
    finally:
        for i, block in enumerate(transformer.transformer_blocks):
            if isinstance(saved[i], _CompiledForward):
                block.forward = saved[i]
