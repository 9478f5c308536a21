"""One protocol for everything that changes the transformer for one run.

A run patch is an object with `patch(transformer, run) -> context manager`: entering installs the change (a forward
hook, a swapped attribute, fused weights), leaving removes it, so the model the loaders cache for many graphs is
bitwise what it was, with no hook and no instance attribute left behind (`tests/test_patches.py` runs every
registered patch and checks exactly that). `apply_patches` enters a sequence in order and leaves it in reverse; the
sampler enters them around its loop, once its latent states (with the conditioning items appended) exist, so a patch
can read them from the `RunContext`.

Registered here: runtime / fused LoRAs, the cross-modal reference weight (the pack's extension, off by default) and a
per-run attention kernel. The mechanisms to come (bypass branches, MTV streams, CCL windows and context tokens)
register their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ContextManager, Protocol

import torch
from ltx_core.types import LatentState

REGISTRY: dict[str, type] = {}


@dataclass(frozen=True)
class RunContext:
    """What a patch may read about the run: both streams' latent states (targets first, then the conditioning items'
    tokens), the transformer's dtype and the device."""

    video: LatentState
    audio: LatentState
    dtype: torch.dtype
    device: torch.device


class RunPatch(Protocol):
    def patch(self, transformer: torch.nn.Module, run: RunContext) -> ContextManager[None]: ...


def register(cls: type) -> type:
    REGISTRY[cls.__name__] = cls
    return cls


@contextlib.contextmanager
def apply_patches(transformer: torch.nn.Module, run: RunContext, patches: Sequence[RunPatch]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p.patch(transformer, run))
        yield


@register
@dataclass(frozen=True)
class LoraPatch:
    """A LoRA stack for the run (lora.apply_loras: runtime hooks, or fused weights put back on exit)."""

    stack: object  # lora.LoraStack
    fuse: bool = False
    backup_device: torch.device | str | None = None

    def patch(self, transformer: torch.nn.Module, run: RunContext | None = None) -> ContextManager[None]:
        from .lora import apply_loras

        return apply_loras(transformer, self.stack, fuse=self.fuse, backup_device=self.backup_device)


@register
@dataclass(frozen=True)
class AttentionPatch:
    """Another attention kernel (a callable `(q, k, v, heads, mask=None)`) in every attention layer for the run."""

    kernel: Callable

    @contextlib.contextmanager
    def patch(self, transformer: torch.nn.Module, run: RunContext | None = None) -> Iterator[None]:
        from ltx_core.model.transformer.attention import Attention

        layers = [m for m in transformer.modules() if isinstance(m, Attention)]
        saved = [(m, "attention_function" in m.__dict__, m.__dict__.get("attention_function")) for m in layers]
        for m in layers:
            m.attention_function = self.kernel
        try:
            yield
        finally:
            for m, had, old in saved:
                if had:
                    m.attention_function = old
                else:
                    del m.attention_function


def key_bias(state: LatentState, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, 1, 1, T) additive bias over a stream's tokens as keys of the other stream's cross-attention: log of each
    token's attention weight as seen from a generated token (0 for the target, log w for references), or None when
    every weight is 1."""
    if state.attention_mask is None:
        return None
    weights = state.attention_mask[:, 0, :]  # row of the first generated token: 1 on targets, w on references
    finfo = torch.finfo(dtype)
    logs = torch.log(weights.clamp(min=finfo.tiny)).to(dtype)
    return torch.where(weights > 0, logs, torch.full((), finfo.min, dtype=dtype))[:, None, None, :]


@register
@dataclass(frozen=True)
class CrossModalWeightPatch:
    """The pack's extension (off by default; Lightricks' source weights self-attention only): a reference's attention
    weight also scales the other stream's audio<->video cross-attention to its tokens, so a weight near 0 silences a
    reference on both paths. Nothing is installed when every weight is 1."""

    def patch(self, transformer: torch.nn.Module, run: RunContext) -> ContextManager[None]:
        return cross_modal_weights(transformer, key_bias(run.video, run.dtype), key_bias(run.audio, run.dtype))


@contextlib.contextmanager
def cross_modal_weights(transformer: torch.nn.Module, video_keys: torch.Tensor | None,
                        audio_keys: torch.Tensor | None) -> Iterator[None]:
    """While active, the transformer's audio->video attention uses `audio_keys` as its mask and video->audio
    attention `video_keys` (each (B, 1, 1, T) and repeated to the forward's batch). Nothing is installed for None."""
    handles = []

    def hook_for(bias: torch.Tensor):
        def hook(_module, args, kwargs):
            batch = args[0].shape[0]
            kwargs["mask"] = bias.repeat(batch // bias.shape[0], 1, 1, 1).to(args[0].device)
            return args, kwargs

        return hook

    for block in getattr(transformer, "transformer_blocks", ()):
        if audio_keys is not None and hasattr(block, "audio_to_video_attn"):
            handles.append(block.audio_to_video_attn.register_forward_pre_hook(hook_for(audio_keys), with_kwargs=True))
        if video_keys is not None and hasattr(block, "video_to_audio_attn"):
            handles.append(block.video_to_audio_attn.register_forward_pre_hook(hook_for(video_keys), with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
