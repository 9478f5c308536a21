"""Controls as the graph builds them, turned into ltx-core conditioning items when the sampler runs.

A control is typed by what it shows: `VideoControl` (frames aligned with the clip: depth, pose, edges, a source
clip), `ImageControl` (one image at a pixel frame), `AudioControl` (a sound aligned with the clip or placed before
it), `LoraControl` (a LoRA alone, e.g. a camera-motion LoRA). Each carries its strength, one `Weight` and an optional
LoRA, checks itself against the target once (`plan_controls`, before any encoding) and becomes conditioning items
(`encode_controls`, through the model's VAEs): items.ReferenceVideo, items.Keyframe, items.ReferenceAudio, wrapped
by ltx-core's attention-strength wrapper when its weight is not 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ltx_core.types import AudioLatentShape

from .backbone import AVModel
from .conditioning import fit_image
from .errors import InputError, require
from .inputs import check_audio, check_images, frames_at
from .items import Keyframe, ReferenceAudio, ReferenceVideo, with_weight
from .latents import AUDIO_LATENTS_PER_SECOND, AVLatent, audio_positions
from .lora import LoraFile, LoraStack
from .weight import Weight

FITS = ("resample", "error")
AUDIO_PLACEMENTS = ("aligned", "before")
AUDIO_GAP_SECONDS = 0.04  # gap between a reference placed before the clip and the clip (as Lightricks' pipelines)
DOWNSCALES = (0, 1, 2, 4, 8)  # 0: from the LoRA's metadata


@dataclass(frozen=True)
class ControlPlan:
    """What a run's controls need, checked once: the active controls, the LoRA stack (the run's LoRAs, then each
    active control's), and the canvas factors the LoRAs declare (conflicts raised here)."""

    controls: tuple
    loras: LoraStack
    downscale: int = 1
    temporal_scale: int = 1


@dataclass(frozen=True, kw_only=True)
class _Control:
    """strength: the reference's denoise strength (1 = clean, t = 0 on every step; 0 = the control is off, LoRA
    included). weight: how strongly the generated tokens and the reference attend to each other (weight.Weight)."""

    label: str
    strength: float = 1.0
    weight: Weight = field(default_factory=Weight)
    lora: LoraFile | None = None
    lora_strength: float = 1.0
    encodes = False  # whether it has media to encode into reference tokens (one progress step each)

    def __post_init__(self) -> None:
        require(isinstance(self.strength, (int, float)) and 0.0 <= self.strength <= 1.0, f"{self.label}: strength",
                "a number between 0 and 1", self.strength)
        require(isinstance(self.weight, Weight), f"{self.label}: weight", "a Weight", type(self.weight).__name__)
        require(isinstance(self.lora_strength, (int, float)) and torch.isfinite(torch.tensor(self.lora_strength)),
                f"{self.label}: lora_strength", "a finite number", self.lora_strength)

    def inert(self) -> bool:
        """Strength 0 or a weight of 0 everywhere: left out entirely (exactly the run without it)."""
        return self.strength == 0.0 or self.weight.is_zero()

    def check(self, latent: AVLatent, plan: ControlPlan) -> None:
        """Every check that needs no model (raises InputError naming the control and the input)."""

    def items(self, model: AVModel, latent: AVLatent, plan: ControlPlan) -> tuple[tuple, tuple]:
        """(video items, audio items) of this control."""
        return (), ()


@dataclass(frozen=True, kw_only=True)
class LoraControl(_Control):
    """A LoRA alone: no reference tokens."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.lora is not None, f"{self.label}: lora", "a LoRA file when no reference media is given", None)


@dataclass(frozen=True, kw_only=True)
class _CanvasControl(_Control):
    """A visual reference on the canvas: downscale 1, 2, 4 (0 = its LoRA's metadata, else the run's); fit
    'resample' adapts size / length / frame rate to the target, 'error' refuses any mismatch."""

    downscale: int = 0
    fit: str = "resample"
    encodes = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.fit in FITS, f"{self.label}: fit", f"one of {FITS}", self.fit)
        require(self.downscale in DOWNSCALES, f"{self.label}: downscale", "0 (from the LoRA), 1, 2, 4 or 8",
                self.downscale)

    def factor(self, plan: ControlPlan) -> int:
        """The canvas factor: the node's, unless 0 (then its LoRA's, else the run's); a node factor that
        contradicts its LoRA is an error."""
        declared = self.lora.reference_downscale_factor if self.lora is not None else None
        if self.downscale == 0:
            return declared if declared not in (None, 1) else plan.downscale
        if declared not in (None, 1) and declared != self.downscale:
            raise InputError(f"{self.label}: downscale {self.downscale} conflicts with its LoRA {self.lora.name}, "
                             f"trained with reference_downscale_factor {declared}")
        return self.downscale

    def _check_canvas(self, latent: AVLatent, plan: ControlPlan, media: torch.Tensor) -> int:
        k = self.factor(plan)
        if latent.width % (32 * k) or latent.height % (32 * k):
            raise InputError(f"{self.label}: downscale {k} needs a target size divisible by {32 * k}, "
                             f"got {latent.width}x{latent.height}")
        fh, fw = media.shape[1], media.shape[2]
        w, h = latent.width // k, latent.height // k
        if self.fit == "error" and (fw, fh) != (w, h):
            raise InputError(f"{self.label}: reference is {fw}x{fh}, expected {w}x{h} (the clip's "
                             f"{latent.width}x{latent.height} / downscale {k}; set fit to 'resample')")
        return k


@dataclass(frozen=True, kw_only=True)
class VideoControl(_CanvasControl):
    """Frames [F, H, W, 3] aligned in time with the clip, at `source_fps` (None: the clip's)."""

    frames: torch.Tensor
    source_fps: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "frames", check_images(self.frames, f"{self.label}: frames"))
        if self.source_fps is not None:
            require(self.source_fps > 0, f"{self.label}: source_fps", "a positive frame rate", self.source_fps)

    def check(self, latent: AVLatent, plan: ControlPlan) -> None:
        self._check_canvas(latent, plan, self.frames)
        if self.fit == "error":
            if self.frames.shape[0] != latent.frames:
                raise InputError(f"{self.label}: reference has {self.frames.shape[0]} frames, the clip "
                                 f"{latent.frames} (set fit to 'resample' to adapt it)")
            if self.source_fps is not None and abs(self.source_fps - latent.fps) > 1e-3:
                raise InputError(f"{self.label}: reference is {self.source_fps:g} fps, the clip {latent.fps:g} fps "
                                 f"(set fit to 'resample' to adapt it)")

    def temporal_scale(self, plan: ControlPlan) -> int:
        declared = self.lora.reference_temporal_scale_factor if self.lora is not None else 1
        return declared if declared != 1 else plan.temporal_scale

    def items(self, model: AVModel, latent: AVLatent, plan: ControlPlan) -> tuple[tuple, tuple]:
        k, scale = self.factor(plan), self.temporal_scale(plan)
        frames = resample_frames(self.frames, latent.frames, self.source_fps, latent.fps)
        # Lightricks' temporal subsampling for a LoRA trained on 1/S of the frame rate: frame 0, then every S-th
        kept = torch.tensor([0, *range(1, latent.frames, scale)])
        z = encode_frames(model, frames[kept], latent.width // k, latent.height // k)
        weights = self.weight.video(kept, latent.fps, *z.shape[2:])
        return (with_weight(ReferenceVideo(z, k, scale, self.strength), weights),), ()


@dataclass(frozen=True, kw_only=True)
class ImageControl(_CanvasControl):
    """One image [1, H, W, 3] at pixel frame `frame_index` of the clip."""

    image: torch.Tensor
    frame_index: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "image", check_images(self.image, f"{self.label}: image"))
        require(isinstance(self.frame_index, int) and self.frame_index >= 0, f"{self.label}: frame_index",
                "0 or more", self.frame_index)

    def check(self, latent: AVLatent, plan: ControlPlan) -> None:
        self._check_canvas(latent, plan, self.image)
        require(self.frame_index < latent.frames, f"{self.label}: frame_index", f"between 0 and {latent.frames - 1}",
                self.frame_index)

    def items(self, model: AVModel, latent: AVLatent, plan: ControlPlan) -> tuple[tuple, tuple]:
        k = self.factor(plan)
        z = encode_frames(model, self.image[:1], latent.width // k, latent.height // k)
        weights = self.weight.video(torch.tensor([self.frame_index]), latent.fps, *z.shape[2:])
        item = Keyframe(z, self.frame_index, self.strength, num_pixel_frames=1, downscale_factor=k)
        return (with_weight(item, weights),), ()


@dataclass(frozen=True, kw_only=True)
class AudioControl(_Control):
    """An AUDIO dict; placement 'aligned' (trimmed / padded to the clip, at its times) or 'before' (placed before
    the clip, its timbre used, not its timing). A weight curve is read at the reference's own times."""

    audio: dict
    placement: str = "aligned"
    fit: str = "resample"
    encodes = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_audio(self.audio, f"{self.label}: audio")
        require(self.placement in AUDIO_PLACEMENTS, f"{self.label}: placement", f"one of {AUDIO_PLACEMENTS}",
                self.placement)
        require(self.fit in FITS, f"{self.label}: fit", f"one of {FITS}", self.fit)
        if self.weight.mask is not None:
            raise InputError(f"{self.label}: attention_mask is spatial and applies to video or image controls, "
                             f"not to audio")

    def check(self, latent: AVLatent, plan: ControlPlan) -> None:
        if self.placement == "aligned" and self.fit == "error":
            have = self.audio["waveform"].shape[-1] / self.audio["sample_rate"]
            if abs(have - latent.seconds) > 1 / AUDIO_LATENTS_PER_SECOND:
                raise InputError(f"{self.label}: reference audio lasts {have:.2f} s, the clip "
                                 f"{latent.seconds:.2f} s (set fit to 'resample' to trim or pad it)")

    def items(self, model: AVModel, latent: AVLatent, plan: ControlPlan) -> tuple[tuple, tuple]:
        aligned = self.placement == "aligned"
        z = encode_audio(model, self.audio, latent.seconds if aligned else None)
        if aligned:
            z = _fit_audio_latent(z, latent.audio.shape[2])
        # 'before': shifted so its last token's end bound lies AUDIO_GAP_SECONDS before 0
        offset = 0.0 if aligned else -_audio_end(z) - AUDIO_GAP_SECONDS
        own_times = audio_positions(AudioLatentShape.from_torch_shape(z.shape))[0, 0, :, 0]
        weights = self.weight.audio(own_times)
        return (), (with_weight(ReferenceAudio(z, offset, self.strength), weights),)


Control = _Control  # the protocol every control follows
ControlStack = tuple


def plan_controls(controls: Sequence, latent: AVLatent, loras: LoraStack | None = None) -> ControlPlan:
    """Check every control against the target (cheap, before any encoding): the LoRA stack once (the run's LoRAs,
    then each active control's), the factors it declares (two different ones are an error), each control's own
    checks."""
    active = tuple(c for c in controls if not c.inert())
    stack = loras or LoraStack()
    for c in active:
        if c.lora is not None:
            stack = stack.add(c.lora, c.lora_strength)
    plan = ControlPlan(active, stack, stack.reference_downscale_factor, stack.reference_temporal_scale_factor)
    for c in active:
        c.check(latent, plan)
    return plan


def encode_controls(plan: ControlPlan, model: AVModel, latent: AVLatent,
                    on_progress: Callable[[int, int], None] | None = None) -> tuple[tuple, tuple]:
    """(video items, audio items) of the plan's controls, in order; `on_progress(done, total)` after each."""
    video, audio = [], []
    for i, c in enumerate(plan.controls):
        v, a = c.items(model, latent, plan)
        video.extend(v)
        audio.extend(a)
        if on_progress is not None:
            on_progress(i + 1, len(plan.controls))
    return tuple(video), tuple(audio)


def resample_frames(frames: torch.Tensor, count: int, source_fps: float | None, target_fps: float) -> torch.Tensor:
    """Pick frames by time (nearest earlier frame) so the clip spans `count` target frames."""
    return frames[frames_at(count, source_fps or target_fps, target_fps, frames.shape[0])]


@torch.inference_mode()
def encode_frames(model: AVModel, frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    pixels = torch.stack([fit_image(f, width, height) for f in frames], 1) * 2.0 - 1.0  # [3, F, H, W]
    encoder = model.component("video_encoder")
    return encoder(pixels[None].to(device=model.device, dtype=model.dtype)).float().cpu()


@torch.inference_mode()
def encode_audio(model: AVModel, audio: dict, seconds: float | None) -> torch.Tensor:
    from ltx_core.model.audio_vae.audio_vae import encode_audio as ltx_encode_audio
    from ltx_core.types import Audio

    wave, rate = check_audio(audio, "reference audio")
    wave = wave[:1]
    if wave.shape[1] == 1:
        wave = wave.expand(-1, 2, -1)
    if seconds is not None:
        n = round(seconds * rate)
        wave = F.pad(wave, (0, max(0, n - wave.shape[-1])))[..., :n]
    encoder = model.component("audio_encoder")
    return ltx_encode_audio(Audio(waveform=wave.to(model.device), sampling_rate=rate), encoder).float().cpu()


def _audio_end(z: torch.Tensor) -> float:
    """End bound (seconds) of the last token of an audio latent placed at 0 (causal bounds end 0.03 s before
    frames / 25)."""
    return float(audio_positions(AudioLatentShape.from_torch_shape(z.shape))[0, 0, -1, 1])


def _fit_audio_latent(z: torch.Tensor, frames: int) -> torch.Tensor:
    """The encoder's latent length may differ from the target's by a frame (causal padding): trim or repeat."""
    if z.shape[2] >= frames:
        return z[:, :, :frames]
    return torch.cat([z, z[:, :, -1:].expand(-1, -1, frames - z.shape[2], -1)], 2)
