"""Bring ltx-core 1.0.0 (PyPI) in line with Lightricks' current LTX-2 source where the two differ numerically.

1. RoPE positions stay float32 whatever the latent dtype (1.0.0's latent tools cast them to bf16, which alone moves
   a bf16 output by ~14%). The sampler builds positions in fp32; this preprocessor also upcasts defensively.
2. Audio<->video cross-attention AdaLN: scale/shift come from each stream's own per-token timesteps and the gate
   from the other stream's sigma (its maximum timestep). 1.0.0 uses the other stream's sigma for both, which is
   wrong whenever tokens carry different timesteps (image-to-video, every reference at t=0).

Also, for speed only (bit-identical): the [0, 1] self-attention weight mask becomes its additive log bias with one
`torch.where` instead of 1.0.0's boolean indexing, which built int64 indices for every entry of the dense mask on
every forward (most of a weighted reference run's time and memory).

Installed per model instance (no installed file is edited): `align_with_current_source(model)`.
"""

from __future__ import annotations

# Every place the pack's numbers differ from ltx-core 1.0.0's own primitives, and why. "current source": what
# Lightricks' LTX-2 (ltx-core 1.2.0) does, which 1.0.0 lags; "pack": our own choice, with what equals the official.
DEVIATIONS = {
    "rope_fp32": "current source: RoPE positions stay float32 (1.0.0 casts them to the latent dtype) - this module",
    "cross_modal_adaln": "current source: cross-attention scale/shift from each stream's own per-token timesteps, "
                         "the gate from the other stream's sigma - this module",
    "noiser": "current source: starting latent lerp(clean, lerp(latent, noise, s), m) (1.0.0: noise*m*s + "
              "clean*(1-m*s)); differs only where 0 < m < 1 and s < 1 - sampling.noised",
    "first_frame": "current source: the image-to-video item sets the clean latent and mask, not the noisy latent - "
                   "items.FirstFrame",
    "keyframe_one_frame": "current source: a one-pixel-frame keyframe at frame k spans [k, k+1)/fps (1.0.0: k+8) - "
                          "items.Keyframe",
    "reference_temporal_scale": "current source: a LoRA's reference_temporal_scale_factor S subsamples the reference "
                                "(frame 0, every S-th) and spaces its positions by S/fps - items.ReferenceVideo",
    "held_stream_sigma": "current source: a stream held clean (all target masks 0) has Modality sigma 0 - "
                         "sampling.frozen",
    "audio_reference": "current source has AudioConditionByReferenceLatent, 1.0.0 none - items.ReferenceAudio",
    "noise_order": "pack: target tokens' noise is drawn before the references' so adding a reference never changes "
                   "the generated tokens' noise; without references it is the official single draw - "
                   "sampling.draw_noise",
    "keyframe_downscale": "pack: a keyframe may sit on a 1/k canvas (positions scaled by k); k = 1 is the official "
                          "item - items.Keyframe",
    "cross_modal_weight": "pack, off by default: a reference weight also biases the other stream's cross-attention "
                          "- patches.CrossModalWeightPatch",
    "mask_bias": "speed only, bit-identical: the [0, 1] mask becomes its log bias with one torch.where - this module",
}

from dataclasses import replace

import torch
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor, TransformerArgs


class AlignedCrossModalPreprocessor(MultiModalTransformerArgsPreprocessor):
    """MultiModalTransformerArgsPreprocessor with the current source's cross-attention timesteps and fp32 RoPE."""

    @classmethod
    def wrap(cls, original: MultiModalTransformerArgsPreprocessor) -> AlignedCrossModalPreprocessor:
        aligned = cls.__new__(cls)
        aligned.__dict__.update(original.__dict__)
        return aligned

    def prepare(self, modality: Modality, cross_modality: Modality | None = None) -> TransformerArgs:
        modality = replace(modality, positions=modality.positions.float())
        args = self.simple_preprocessor.prepare(modality)
        if cross_modality is None:
            return args
        batch = args.x.shape[0]
        cross_sigma = cross_modality.sigma.reshape(-1).float()
        if cross_sigma.numel() not in (1, batch):
            raise ValueError(f"cross-modality sigma must have 1 or {batch} entries, got {cross_sigma.numel()}")
        cross_pe = self.simple_preprocessor._prepare_positional_embeddings(
            positions=modality.positions[:, 0:1, :],
            inner_dim=self.audio_cross_attention_dim,
            max_pos=[self.cross_pe_max_pos],
            use_middle_indices_grid=True,
            num_attention_heads=self.simple_preprocessor.num_attention_heads,
            x_dtype=modality.latent.dtype,
        )
        multiplier = self.simple_preprocessor.timestep_scale_multiplier
        dtype = modality.latent.dtype
        own_t = modality.timesteps * multiplier
        if own_t.ndim == 2 and bool((own_t == own_t[:, :1]).all()):
            own_t = own_t[:, :1]  # one timestep per sample: embed it once, bit-identical to ltx-core 1.0.0's (B, 1)
        scale_shift, _ = self.cross_scale_shift_adaln(own_t.flatten(), hidden_dtype=dtype)
        scale_shift = scale_shift.view(batch, -1, scale_shift.shape[-1])
        gate_t = (cross_sigma * self.av_ca_timestep_scale_multiplier).expand(batch)
        gate, _ = self.cross_gate_adaln(gate_t, hidden_dtype=dtype)
        gate = gate.view(batch, -1, gate.shape[-1])
        return replace(
            args, cross_positional_embeddings=cross_pe, cross_scale_shift_timestep=scale_shift, cross_gate_timestep=gate
        )


def self_attention_bias(attention_mask: torch.Tensor | None, x_dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T, T) weights in [0, 1] -> (B, 1, T, T) additive bias: log(w), and the dtype's minimum where w = 0."""
    if attention_mask is None:
        return None
    finfo = torch.finfo(x_dtype)
    logs = torch.log(attention_mask.clamp(min=finfo.tiny)).to(x_dtype)
    return torch.where(attention_mask > 0, logs, torch.full((), finfo.min, dtype=x_dtype)).unsqueeze(1)


def align_with_current_source(model: torch.nn.Module) -> torch.nn.Module:
    """Swap the audio/video argument preprocessors of an ltx-core LTXModel for the aligned ones (idempotent)."""
    for name in ("video_args_preprocessor", "audio_args_preprocessor"):
        pre = getattr(model, name, None)
        if isinstance(pre, MultiModalTransformerArgsPreprocessor) and not isinstance(pre, AlignedCrossModalPreprocessor):
            setattr(model, name, AlignedCrossModalPreprocessor.wrap(pre))
        pre = getattr(model, name, None)
        if pre is not None:
            pre.simple_preprocessor._prepare_self_attention_mask = self_attention_bias
    return model
