"""The conditioning items a run applies to its latent states: ltx-core's own protocol (`apply_to(state, tools)`),
its classes where they already do what Lightricks' current source does, subclasses where ltx-core 1.0.0 lags it.

- `FirstFrame(VideoConditionByLatentIndex)`: image-to-video, as the current source has it: the clean latent of
  frame 0 and its denoise mask 1 - strength; the noisy latent keeps what it was (1.0.0 overwrites it too, which
  matters on a schedule that starts below 1 with a strength below 1).
- `ReferenceVideo(VideoConditionByReferenceLatent)`: the current source's IC-LoRA reference: placeholder zeros as its
  noisy latent, a temporal scale factor (a reference at 1/S of the clip's frame rate, from the LoRA's metadata
  `reference_temporal_scale_factor`), spatial positions scaled by the downscale factor.
- `Keyframe(VideoConditionByKeyframeIndex)`: the current source's keyframe: a one-pixel-frame image at frame k spans
  [k, k + 1) / fps, not the VAE's 8 frames; placeholder zeros. Ours also takes a downscale factor (a reference image
  at 1/2 or 1/4 size for a LoRA trained so), 1 being ltx-core's.
- `ReferenceAudio`: the audio-side reference (the current source has `AudioConditionByReferenceLatent`, 1.0.0 has
  none): the reference's tokens with their own positions in seconds, shifted by `time_offset`.
- `with_weight(item, weights)`: ltx-core's `ConditioningItemAttentionStrengthWrapper` around any of them.

Every item takes a batch-1 latent and repeats it to the state's batch (ltx-core's items require equal batches).
"""

from __future__ import annotations

import torch
from ltx_core.components.patchifiers import get_pixel_coords
from ltx_core.conditioning.mask_utils import update_attention_mask
from ltx_core.conditioning.types.attention_strength_wrapper import ConditioningItemAttentionStrengthWrapper
from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
from ltx_core.conditioning.types.reference_video_cond import VideoConditionByReferenceLatent
from ltx_core.types import AudioLatentShape, LatentState, VideoLatentShape



class FirstFrame(VideoConditionByLatentIndex):
    """An image latent (B, 128, 1, h, w) as latent frame `latent_idx` (0: image-to-video)."""

    def apply_to(self, latent_state: LatentState, latent_tools) -> LatentState:
        tokens = latent_tools.patchifier.patchify(_batched(self.latent, latent_state))
        start = latent_tools.patchifier.get_token_count(latent_tools.target_shape._replace(frames=self.latent_idx))
        state = latent_state.clone()
        state.clean_latent[:, start:start + tokens.shape[1]] = tokens
        state.denoise_mask[:, start:start + tokens.shape[1]] = 1.0 - self.strength
        return state


def _batched(latent: torch.Tensor, state: LatentState) -> torch.Tensor:
    batch = state.latent.shape[0]
    latent = latent.to(device=state.latent.device, dtype=torch.float32)
    return latent if latent.shape[0] == batch else latent.expand(batch, *latent.shape[1:])


def _append(state: LatentState, tools, tokens: torch.Tensor, positions: torch.Tensor,
            strength: float) -> LatentState:
    """Append clean `tokens` (placeholder zeros as their noisy latent) with denoise mask 1 - strength."""
    batch, count = tokens.shape[:2]
    mask = torch.full((batch, count, 1), 1.0 - strength, device=tokens.device, dtype=torch.float32)
    attention = update_attention_mask(
        latent_state=state, attention_mask=None, num_noisy_tokens=tools.target_shape.token_count(),
        num_new_tokens=count, batch_size=batch, device=tokens.device, dtype=torch.float32,
    )
    positions = positions.to(device=tokens.device, dtype=torch.float32).expand(batch, *positions.shape[1:])
    return LatentState(
        latent=torch.cat([state.latent, torch.zeros_like(tokens)], 1),
        denoise_mask=torch.cat([state.denoise_mask, mask], 1),
        positions=torch.cat([state.positions, positions], 2),
        clean_latent=torch.cat([state.clean_latent, tokens], 1),
        attention_mask=attention,
    )


class ReferenceVideo(VideoConditionByReferenceLatent):
    """A reference video latent (1 or B, 128, f, h, w) on the parallel canvas (ltx-core's IC-LoRA reference as the
    current source has it)."""

    def __init__(self, latent: torch.Tensor, downscale_factor: int = 1, temporal_scale_factor: int = 1,
                 strength: float = 1.0):
        super().__init__(latent, downscale_factor=downscale_factor, strength=strength)
        self.temporal_scale_factor = temporal_scale_factor

    def apply_to(self, latent_state: LatentState, latent_tools) -> LatentState:
        latent = _batched(self.latent, latent_state)
        tokens = latent_tools.patchifier.patchify(latent)
        coords = latent_tools.patchifier.get_patch_grid_bounds(
            output_shape=VideoLatentShape.from_torch_shape(latent.shape), device=latent.device)
        positions = get_pixel_coords(coords, latent_tools.scale_factors, causal_fix=latent_tools.causal_fix).float()
        scale = self.temporal_scale_factor
        positions[:, 0] /= latent_tools.fps / scale  # the reference's own frame spacing
        if scale != 1:  # its last patch ends with the target's; the causal first patch clamped back to [0, 1/fps)
            frame = latent_state.positions[:, 0, 0:1, 1:2].float()
            positions[:, 0] = (positions[:, 0] - (scale - 1) * frame).clamp(min=0)
        positions[:, 1:] *= self.downscale_factor
        return _append(latent_state, latent_tools, tokens, positions, self.strength)


class Keyframe(VideoConditionByKeyframeIndex):
    """An image (or short clip) latent (1 or B, 128, f, h, w) placed at pixel frame `frame_idx` (the current
    source's keyframe: a one-pixel-frame latent spans [k, k + 1) / fps)."""

    def __init__(self, keyframes: torch.Tensor, frame_idx: int, strength: float, num_pixel_frames: int = 1,
                 downscale_factor: int = 1):
        super().__init__(keyframes, frame_idx, strength)
        self.num_pixel_frames = num_pixel_frames
        self.downscale_factor = downscale_factor

    def apply_to(self, latent_state: LatentState, latent_tools) -> LatentState:
        latent = _batched(self.keyframes, latent_state)
        tokens = latent_tools.patchifier.patchify(latent)
        coords = latent_tools.patchifier.get_patch_grid_bounds(
            output_shape=VideoLatentShape.from_torch_shape(latent.shape), device=latent.device)
        causal = latent_tools.causal_fix if self.frame_idx == 0 else False
        positions = get_pixel_coords(coords, latent_tools.scale_factors, causal_fix=causal).float()
        positions[:, 0] += self.frame_idx
        if self.num_pixel_frames == 1:
            positions[:, 0, ..., 1:] = positions[:, 0, ..., :1] + 1
        positions[:, 0] /= latent_tools.fps
        positions[:, 1:] *= self.downscale_factor
        return _append(latent_state, latent_tools, tokens, positions, self.strength)


class ReferenceAudio:
    """A reference audio latent (1 or B, 8, t, 16) in the audio stream's self-attention, its tokens at their own
    times plus `time_offset` seconds (0: aligned with the clip; negative: before it)."""

    def __init__(self, latent: torch.Tensor, time_offset: float = 0.0, strength: float = 1.0):
        self.latent = latent
        self.time_offset = time_offset
        self.strength = strength

    def apply_to(self, latent_state: LatentState, latent_tools) -> LatentState:
        latent = _batched(self.latent, latent_state)
        tokens = latent_tools.patchifier.patchify(latent)
        positions = latent_tools.patchifier.get_patch_grid_bounds(
            output_shape=AudioLatentShape.from_torch_shape(latent.shape), device=latent.device).float()
        return _append(latent_state, latent_tools, tokens, positions + self.time_offset, self.strength)


def with_weight(item, weights: torch.Tensor | None):
    """`item` whose tokens attend to / are attended by the generated tokens with per-token `weights` (None: 1)."""
    return item if weights is None else ConditioningItemAttentionStrengthWrapper(item, attention_mask=weights)


def apply_items(state: LatentState, items, tools) -> LatentState:
    """Apply conditioning items in order (each appending tokens after the ones before)."""
    for item in items:
        state = item.apply_to(state, tools)
    return state
