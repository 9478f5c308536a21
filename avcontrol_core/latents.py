"""The joint audio+video latent: shapes, validation, and the patchified states the transformer reads.

Video latents: 128 channels, 32x spatial and 8x temporal compression (frames = 8k+1, sides multiples of 32).
Audio latents: (B, 8, T, 16) at 25 latent frames per second. Positions are in seconds for both streams and stay
float32 (see fidelity.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, LatentState, SpatioTemporalScaleFactors, VideoLatentShape

from .errors import InputError, require

VIDEO_CHANNELS = 128
AUDIO_CHANNELS, AUDIO_MEL_BINS = 8, 16
AUDIO_LATENTS_PER_SECOND = 25.0
SCALE = SpatioTemporalScaleFactors.default()
FPS_RANGE = (1.0, 120.0)
MAX_SIDE = 4096
MAX_FRAMES = 8 * 128 + 1


def validate_size(width: int, height: int, frames: int, fps: float) -> None:
    """Refuse sizes the model cannot produce, naming the input (frames must be 8n+1, got 50)."""
    require(isinstance(width, int) and 32 <= width <= MAX_SIDE and width % 32 == 0,
            "width", f"a multiple of 32 between 32 and {MAX_SIDE}", width)
    require(isinstance(height, int) and 32 <= height <= MAX_SIDE and height % 32 == 0,
            "height", f"a multiple of 32 between 32 and {MAX_SIDE}", height)
    require(isinstance(frames, int) and 1 <= frames <= MAX_FRAMES and frames % 8 == 1,
            "frames", f"8n+1 (1, 9, 17, ..., 121, ... up to {MAX_FRAMES})", frames)
    require(FPS_RANGE[0] <= float(fps) <= FPS_RANGE[1], "fps", f"between {FPS_RANGE[0]:g} and {FPS_RANGE[1]:g}", fps)


@dataclass(frozen=True)
class AVLatent:
    """Video and audio latents of one clip plus how strongly each latent cell is to be denoised.

    video: (B, 128, f, h, w); audio: (B, 8, t, 16); video_mask: (B, 1, f, h, w); audio_mask: (B, 1, t, 1).
    A mask value of 1 means generate, 0 means keep the given latent (first-frame conditioning, references).
    """

    video: torch.Tensor
    audio: torch.Tensor
    video_mask: torch.Tensor
    audio_mask: torch.Tensor
    fps: float
    frames: int
    width: int
    height: int
    upscaled: bool = False  # stage two's input (upsampler.upscale_latent): to be refined, never re-noised
    conditioning: tuple = ()  # video conditioning items (items.FirstFrame) applied when sampling, before controls
    return_given_audio: bool = False  # the sampler returns this audio as it is (upsampler's "lightricks" mode)

    @property
    def batch(self) -> int:
        return self.video.shape[0]

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def replace(self, **changes) -> AVLatent:
        return replace(self, **changes)


def audio_latent_frames(seconds: float) -> int:
    return max(1, round(seconds * AUDIO_LATENTS_PER_SECOND))


def empty_latent(width: int, height: int, frames: int, fps: float, batch: int = 1) -> AVLatent:
    validate_size(width, height, frames, fps)
    require(isinstance(batch, int) and 1 <= batch <= 64, "batch_size", "an integer between 1 and 64", batch)
    f, h, w = (frames - 1) // SCALE.time + 1, height // SCALE.height, width // SCALE.width
    t = audio_latent_frames(frames / fps)
    return AVLatent(
        video=torch.zeros(batch, VIDEO_CHANNELS, f, h, w),
        audio=torch.zeros(batch, AUDIO_CHANNELS, t, AUDIO_MEL_BINS),
        video_mask=torch.ones(batch, 1, f, h, w),
        audio_mask=torch.ones(batch, 1, t, 1),
        fps=float(fps), frames=frames, width=width, height=height,
    )


VIDEO_PATCHIFIER = VideoLatentPatchifier(patch_size=1)
AUDIO_PATCHIFIER = AudioPatchifier(patch_size=1)


def video_tools(latent: AVLatent, causal: bool) -> VideoLatentTools:
    """ltx-core's latent tools of the clip's video stream (positions in seconds, causal first frame as configured)."""
    return VideoLatentTools(VIDEO_PATCHIFIER, VideoLatentShape.from_torch_shape(latent.video.shape), latent.fps,
                            SCALE, causal)


def audio_tools(latent: AVLatent) -> AudioLatentTools:
    return AudioLatentTools(AUDIO_PATCHIFIER, AudioLatentShape.from_torch_shape(latent.audio.shape))


def video_positions(shape: VideoLatentShape, fps: float, causal: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 3, tokens, 2) float32 [start, end) bounds: time in seconds, height and width in pixels."""
    coords = VIDEO_PATCHIFIER.get_patch_grid_bounds(output_shape=shape, device=device)
    pixels = get_pixel_coords(latent_coords=coords, scale_factors=SCALE, causal_fix=causal).float()
    pixels[:, 0] = pixels[:, 0] / fps
    return pixels


def audio_positions(shape: AudioLatentShape, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 1, tokens, 2) float32 [start, end) bounds in seconds."""
    return AUDIO_PATCHIFIER.get_patch_grid_bounds(output_shape=shape, device=device).float()


def _state(tools, latent: torch.Tensor, mask: torch.Tensor, device) -> LatentState:
    """ltx-core's initial state of one stream from `latent` (float32, so its positions stay float32: 1.0.0 casts
    them to the state's dtype), with the latent's own denoise mask."""
    state = tools.create_initial_state(device, torch.float32, latent.float().to(device))
    return replace(state, denoise_mask=tools.patchifier.patchify(mask.float().to(device)))


def video_state(latent: AVLatent, causal: bool, device: torch.device | str = "cpu") -> LatentState:
    """The patchified video state: tokens (B, f*h*w, 128) in fp32, per-token mask and positions; the latent's own
    conditioning items (first frame) are not applied here (see sampling)."""
    return _state(video_tools(latent, causal), latent.video, latent.video_mask, device)


def audio_state(latent: AVLatent, device: torch.device | str = "cpu") -> LatentState:
    return _state(audio_tools(latent), latent.audio, latent.audio_mask, device)


def unpatchify(latent: AVLatent, video_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> AVLatent:
    """Put sampled tokens back into the latent's shapes; the result is fully generated (masks all ones)."""
    v_shape = VideoLatentShape.from_torch_shape(latent.video.shape)
    a_shape = AudioLatentShape.from_torch_shape(latent.audio.shape)
    if latent.return_given_audio:
        audio_tokens = AUDIO_PATCHIFIER.patchify(latent.audio.float().to(audio_tokens.device))
    video = VIDEO_PATCHIFIER.unpatchify(video_tokens, output_shape=v_shape).float().cpu()
    audio = AUDIO_PATCHIFIER.unpatchify(audio_tokens, output_shape=a_shape).float().cpu()
    return latent.replace(
        video=video, audio=audio,
        video_mask=torch.ones_like(latent.video_mask), audio_mask=torch.ones_like(latent.audio_mask), upscaled=False,
        conditioning=(), return_given_audio=False,
    )


def condition_first_frame(latent: AVLatent, encoded: torch.Tensor, strength: float) -> AVLatent:
    """Image-to-video: an encoded image (B or 1, 128, 1, h, w) as latent frame 0 with the given strength, as
    ltx-core's VideoConditionByLatentIndex (applied when sampling: its clean latent and denoise mask 1 - strength;
    the noisy latent keeps what it was). strength 0 leaves the latent as it was; a later image replaces an earlier.
    """
    from .items import FirstFrame

    require(0.0 <= strength <= 1.0, "strength", "between 0 and 1", strength)
    expected = (VIDEO_CHANNELS, 1, *latent.video.shape[3:])
    if tuple(encoded.shape[1:]) != expected:
        raise InputError(f"image latent must have shape (B, {expected}), got {tuple(encoded.shape)}")
    if strength == 0.0:
        return latent
    image = encoded.float().expand(latent.batch, -1, -1, -1, -1).contiguous()
    kept = tuple(c for c in latent.conditioning if not (isinstance(c, FirstFrame) and c.latent_idx == 0))
    return latent.replace(conditioning=(*kept, FirstFrame(image, strength, 0)))
