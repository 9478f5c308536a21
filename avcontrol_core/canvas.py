"""AVControl's parallel canvas: a reference joins its stream's self-attention as extra, clean tokens.

The generated tokens carry the current noise level; a reference's tokens carry timestep (1 - strength) * sigma, so
strength 1 keeps them at t = 0 on every step. They are appended after the target's tokens (video references to the
video stream, audio references to the audio stream) and stripped from the result. A reference canvas may be
smaller than the target (small-to-large grid): its spatial positions are scaled by the downscale factor so it
covers the same space. An attention weight (scalar, per-frame curve or spatial mask) scales how strongly the
generated tokens and the reference attend to each other; only when some weight differs from 1 is a dense mask
built (ltx-core's block layout), otherwise attention stays plain SDPA. The same weights also scale the other
stream's audio<->video cross-attention to the reference's tokens (ltx-core masks self-attention only), so a weight
near 0 silences a reference on both paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import contextlib

import torch
import torch.nn.functional as F
from ltx_core.conditioning.mask_utils import update_attention_mask
from ltx_core.types import AudioLatentShape, LatentState, VideoLatentShape

from .errors import InputError, require
from .latents import AUDIO_PATCHIFIER, SCALE, VIDEO_PATCHIFIER, audio_positions, video_positions


@dataclass(frozen=True)
class VideoReference:
    """Encoded reference video or image, (1 or B, 128, f, h, w), placed from pixel frame `frame_offset`.

    attention: a float, a per-frame curve (pixel frames of the reference, shape (F,)) or a spatial MASK in pixel
    space ((H, W) or (F, H, W), any size: it is area-resized to the reference's latent grid)."""

    latent: torch.Tensor
    downscale: int = 1
    frame_offset: int = 0
    strength: float = 1.0
    attention: float | torch.Tensor = 1.0
    label: str = "video reference"

    def __post_init__(self) -> None:
        require(self.latent.ndim == 5 and self.latent.shape[1] == 128, f"{self.label} latent",
                "shaped (B, 128, frames, height, width)", tuple(self.latent.shape))
        require(self.downscale in (1, 2, 4, 8), "downscale", "1, 2, 4 or 8", self.downscale)
        require(0.0 <= self.strength <= 1.0, "strength", "between 0 and 1", self.strength)
        require(self.frame_offset >= 0, "frame_index", "0 or more", self.frame_offset)


@dataclass(frozen=True)
class AudioReference:
    """Encoded reference audio (1 or B, 8, t, 16), placed `time_offset` seconds from the target's start.

    0 aligns it with the target (audio-to-audio, intensity); a negative offset puts it before the clip (a voice
    or timbre reference that should not be copied in time). attention: a float or a per-latent-frame curve (t,)."""

    latent: torch.Tensor
    time_offset: float = 0.0
    strength: float = 1.0
    attention: float | torch.Tensor = 1.0
    label: str = "audio reference"

    def __post_init__(self) -> None:
        require(self.latent.ndim == 4 and self.latent.shape[1] == 8 and self.latent.shape[3] == 16,
                f"{self.label} latent", "shaped (B, 8, frames, 16)", tuple(self.latent.shape))
        require(0.0 <= self.strength <= 1.0, "strength", "between 0 and 1", self.strength)


def is_inert(ref: VideoReference | AudioReference) -> bool:
    """A reference with strength 0 or attention weight 0 everywhere is left out: exactly the run without it."""
    weight = ref.attention
    zero_weight = float(weight) == 0.0 if not isinstance(weight, torch.Tensor) else bool((weight == 0).all())
    return ref.strength == 0.0 or zero_weight


def _frame_pooling(pixel_frames: int, latent_frames: int) -> torch.Tensor:
    """(f, F) matrix averaging pixel frames into latent frames: latent frame 0 is pixel frame 0, frame j the 8
    pixel frames before 8j + 1 (a curve shorter than the clip repeats its last value)."""
    pool = torch.zeros(latent_frames, pixel_frames)
    for j in range(latent_frames):
        lo, hi = (0, 1) if j == 0 else (1 + SCALE.time * (j - 1), 1 + SCALE.time * j)
        idx = torch.arange(lo, hi).clamp(max=pixel_frames - 1)
        pool[j].index_add_(0, idx, torch.full((len(idx),), 1.0 / len(idx)))
    return pool


def video_token_weights(ref: VideoReference) -> torch.Tensor | None:
    """Per-token attention weights (f*h*w,) in [0, 1], or None when every weight is 1."""
    f, h, w = ref.latent.shape[2:]
    weight = ref.attention
    if not isinstance(weight, torch.Tensor) or weight.ndim == 0:
        value = float(weight)
        require(0.0 <= value <= 1.0, "attention", "between 0 and 1", value)
        return None if value == 1.0 else torch.full((f * h * w,), value)
    weight = weight.float().cpu()
    if weight.ndim == 1:  # per pixel frame
        grid = (_frame_pooling(weight.shape[0], f) @ weight)[:, None, None].expand(f, h, w)
    elif weight.ndim in (2, 3):  # spatial mask (H, W) or (F, H, W)
        mask = weight if weight.ndim == 3 else weight[None]
        spatial = F.interpolate(mask[:, None], size=(h, w), mode="area")[:, 0]  # (F or 1, h, w)
        grid = torch.einsum("jF,Fhw->jhw", _frame_pooling(spatial.shape[0], f), spatial)
    else:
        raise InputError(f"attention must be a number, a per-frame curve (F,) or a mask (H, W) / (F, H, W), "
                         f"got shape {tuple(weight.shape)}")
    require(bool((grid >= 0).all() and (grid <= 1).all()), "attention", "weights between 0 and 1", "values outside")
    return None if bool((grid == 1).all()) else grid.reshape(-1)


def audio_token_weights(ref: AudioReference) -> torch.Tensor | None:
    t = ref.latent.shape[2]
    weight = ref.attention
    if not isinstance(weight, torch.Tensor) or weight.ndim == 0:
        value = float(weight)
        require(0.0 <= value <= 1.0, "attention", "between 0 and 1", value)
        return None if value == 1.0 else torch.full((t,), value)
    weight = weight.float().flatten().cpu()
    if weight.numel() != t:
        weight = F.interpolate(weight[None, None], size=t, mode="linear", align_corners=True)[0, 0]
    require(bool((weight >= 0).all() and (weight <= 1).all()), "attention", "weights between 0 and 1", "values outside")
    return None if bool((weight == 1).all()) else weight


def _append(state: LatentState, tokens: torch.Tensor, positions: torch.Tensor, strength: float,
            weights: torch.Tensor | None, num_target: int) -> LatentState:
    batch = state.latent.shape[0]
    tokens = tokens.to(state.latent).expand(batch, -1, -1)
    positions = positions.to(state.positions).expand(batch, *positions.shape[1:])
    mask = torch.full((batch, tokens.shape[1], 1), 1.0 - strength, device=tokens.device, dtype=torch.float32)
    attention = update_attention_mask(
        latent_state=state, attention_mask=weights, num_noisy_tokens=num_target, num_new_tokens=tokens.shape[1],
        batch_size=batch, device=tokens.device, dtype=torch.float32,
    )
    return LatentState(
        latent=torch.cat([state.latent, tokens], 1),
        denoise_mask=torch.cat([state.denoise_mask, mask], 1),
        positions=torch.cat([state.positions, positions], 2),
        clean_latent=torch.cat([state.clean_latent, tokens], 1),
        attention_mask=attention,
    )


def append_video_reference(state: LatentState, ref: VideoReference, fps: float, causal: bool,
                           num_target: int) -> LatentState:
    """Append a video/image reference's clean tokens with positions in the target's space (seconds, pixels)."""
    shape = VideoLatentShape.from_torch_shape(ref.latent.shape)._replace(batch=1)
    tokens = VIDEO_PATCHIFIER.patchify(ref.latent.float())
    positions = video_positions(shape, fps, causal and ref.frame_offset == 0, state.latent.device)
    positions[:, 0] += ref.frame_offset / fps
    positions[:, 1:] *= ref.downscale
    weights = video_token_weights(ref)
    return _append(state, tokens, positions, ref.strength, weights, num_target)


def append_audio_reference(state: LatentState, ref: AudioReference, num_target: int) -> LatentState:
    shape = AudioLatentShape.from_torch_shape(ref.latent.shape)._replace(batch=1)
    tokens = AUDIO_PATCHIFIER.patchify(ref.latent.float())
    positions = audio_positions(shape, state.latent.device) + ref.time_offset
    return _append(state, tokens, positions, ref.strength, audio_token_weights(ref), num_target)


def append_references(
    v_state: LatentState, a_state: LatentState, references: tuple, fps: float, causal: bool
) -> tuple[LatentState, LatentState]:
    """Append every active reference to its stream; inert ones (strength or weight 0) are left out."""
    n_video, n_audio = v_state.latent.shape[1], a_state.latent.shape[1]
    for ref in references:
        if is_inert(ref):
            continue
        if isinstance(ref, VideoReference):
            v_state = append_video_reference(v_state, ref, fps, causal, n_video)
        elif isinstance(ref, AudioReference):
            a_state = append_audio_reference(a_state, ref, n_audio)
        else:
            raise TypeError(f"not a reference: {type(ref).__name__}")
    return v_state, a_state


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


@contextlib.contextmanager
def cross_modal_weights(transformer: torch.nn.Module, video_keys: torch.Tensor | None,
                        audio_keys: torch.Tensor | None):
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
