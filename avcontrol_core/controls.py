"""Controls as the graph builds them: media + settings + an optional LoRA, stacked; turned into canvas references
(encoded by the model's VAEs) and a LoRA stack when the sampler runs.

Every check that needs no model runs first (`check_controls`), so a mismatched reference fails before any encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from ltx_core.types import AudioLatentShape

from .backbone import AVModel
from .canvas import AudioReference, VideoReference
from .conditioning import check_image, fit_image
from .errors import InputError, require
from .latents import AUDIO_LATENTS_PER_SECOND, AVLatent, audio_positions
from .lora import LoraFile, LoraStack

KINDS = ("video", "image", "audio", "lora")
FITS = ("resample", "error")
AUDIO_PLACEMENTS = ("aligned", "before")
AUDIO_GAP_SECONDS = 0.04  # gap between a reference placed before the clip and the clip (as Lightricks' pipelines)


@dataclass(frozen=True)
class Control:
    """One control: which reference it makes and how strongly it acts.

    kind 'video': frames [F, H, W, 3] aligned in time with the clip (depth, pose, edges, a source video...);
    'image': one image [1, H, W, 3] placed at `frame_index`; 'audio': an AUDIO dict; 'lora': no reference, only
    the LoRA (e.g. Lightricks' camera-motion LoRAs).
    strength: the reference's denoise strength (1 = clean, t = 0 on every step; 0 = left out).
    attention: weight between generated tokens and the reference: float, per-frame curve (F,), MASK, or a curve
    over time {"values": (T,), "rate": per second, "scale": float} read at the reference's own times.
    downscale: reference canvas factor (1, 2, 4); 0 = take it from the LoRA's metadata (else 1).
    fit: 'resample' adapts size / length / frame rate to the target, 'error' refuses any mismatch.
    """

    label: str
    kind: str
    media: torch.Tensor | dict | None
    strength: float = 1.0
    attention: float | torch.Tensor | dict = 1.0
    downscale: int = 0
    frame_index: int = 0
    audio_placement: str = "aligned"
    source_fps: float | None = None
    fit: str = "resample"
    lora: LoraFile | None = None
    lora_strength: float = 1.0

    def __post_init__(self) -> None:
        require(self.kind in KINDS, f"{self.label}: kind", f"one of {KINDS}", self.kind)
        require(self.fit in FITS, f"{self.label}: fit", f"one of {FITS}", self.fit)
        require(self.audio_placement in AUDIO_PLACEMENTS, f"{self.label}: placement", f"one of {AUDIO_PLACEMENTS}",
                self.audio_placement)
        require(self.downscale in (0, 1, 2, 4, 8), f"{self.label}: downscale", "0 (from the LoRA), 1, 2, 4 or 8",
                self.downscale)
        require(0.0 <= self.strength <= 1.0, f"{self.label}: strength", "between 0 and 1", self.strength)
        if self.kind == "lora":
            require(self.lora is not None, f"{self.label}: lora", "a LoRA file when no reference media is given",
                    None)
        elif self.kind == "audio":
            if not isinstance(self.media, dict) or "waveform" not in self.media:
                raise InputError(f"{self.label}: audio must be an AUDIO input, got {type(self.media).__name__}")
        else:
            check_image(self.media, f"{self.label}: frames")


    def inert(self) -> bool:
        """Strength 0 or an attention weight of 0 everywhere: left out entirely (exactly the run without it)."""
        w = self.attention
        if isinstance(w, dict):
            return self.strength == 0.0 or w.get("scale", 1.0) == 0.0 or bool((torch.as_tensor(w["values"]) == 0).all())
        return self.strength == 0.0 or (bool((w == 0).all()) if isinstance(w, torch.Tensor) else float(w) == 0.0)


ControlStack = tuple[Control, ...]


def lora_stack(controls: ControlStack, base: LoraStack | None = None) -> LoraStack:
    """`base` plus each active control's LoRA (a control at strength 0 is off entirely, LoRA included)."""
    stack = base or LoraStack()
    for c in controls:
        if c.lora is not None and not c.inert():
            stack = stack.add(c.lora, c.lora_strength)
    return stack


def downscale_of(control: Control, default: int = 1) -> int:
    """The control's canvas factor: the node's, unless 0 (then its LoRA's, else the run's `default`, the factor
    declared by the run's other LoRAs); a node factor that contradicts its LoRA is an error."""
    declared = control.lora.reference_downscale_factor if control.lora is not None else None
    if control.downscale == 0:
        return declared or default
    if declared not in (None, 1) and declared != control.downscale:
        raise InputError(f"{control.label}: downscale {control.downscale} conflicts with its LoRA "
                         f"{control.lora.name}, trained with reference_downscale_factor {declared}")
    return control.downscale


def _resample_frames(frames: torch.Tensor, count: int, source_fps: float | None, target_fps: float) -> torch.Tensor:
    """Pick frames by time (nearest earlier frame) so the clip spans `count` target frames."""
    fps_in = source_fps or target_fps
    times = torch.arange(count) / target_fps
    idx = (times * fps_in + 1e-6).floor().long().clamp(max=frames.shape[0] - 1)
    return frames[idx]


def check_controls(controls: ControlStack, latent: AVLatent, default_downscale: int = 1) -> None:
    """Cheap checks of every control against the target, before any encoding."""
    lora_stack(controls).reference_downscale_factor  # noqa: B018 - conflicting LoRA factors
    for c in controls:
        if c.kind in ("audio", "lora"):
            continue
        k = downscale_of(c, default_downscale)
        w, h = latent.width // k, latent.height // k
        if latent.width % (32 * k) or latent.height % (32 * k):
            raise InputError(f"{c.label}: downscale {k} needs a target size divisible by {32 * k}, "
                             f"got {latent.width}x{latent.height}")
        frames, fh, fw = c.media.shape[0], c.media.shape[1], c.media.shape[2]
        if c.kind == "image":
            require(0 <= c.frame_index < latent.frames, f"{c.label}: frame_index",
                    f"between 0 and {latent.frames - 1}", c.frame_index)
        if c.fit == "error":
            if c.kind == "video" and frames != latent.frames:
                raise InputError(f"{c.label}: reference has {frames} frames, the clip {latent.frames} "
                                 f"(set fit to 'resample' to adapt it)")
            if c.source_fps is not None and abs(c.source_fps - latent.fps) > 1e-3:
                raise InputError(f"{c.label}: reference is {c.source_fps:g} fps, the clip {latent.fps:g} fps "
                                 f"(set fit to 'resample' to adapt it)")
            if (fw, fh) != (w, h):
                raise InputError(f"{c.label}: reference is {fw}x{fh}, expected {w}x{h} (the clip's "
                                 f"{latent.width}x{latent.height} / downscale {k}; set fit to 'resample')")


@torch.inference_mode()
def _encode_frames(model: AVModel, frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    pixels = torch.stack([fit_image(f, width, height) for f in frames], 1) * 2.0 - 1.0  # [3, F, H, W]
    encoder = model.component("video_encoder")
    return encoder(pixels[None].to(device=model.device, dtype=model.dtype)).float().cpu()


@torch.inference_mode()
def _encode_audio(model: AVModel, audio: dict, seconds: float | None) -> torch.Tensor:
    from ltx_core.model.audio_vae.audio_vae import encode_audio
    from ltx_core.types import Audio

    wave = torch.as_tensor(audio["waveform"]).float()[:1]
    rate = int(audio["sample_rate"])
    if wave.shape[1] == 1:
        wave = wave.expand(-1, 2, -1)
    if seconds is not None:
        n = round(seconds * rate)
        wave = F.pad(wave, (0, max(0, n - wave.shape[-1])))[..., :n]
    encoder = model.component("audio_encoder")
    return encode_audio(Audio(waveform=wave.to(model.device), sampling_rate=rate), encoder).float().cpu()


def build_references(model: AVModel, latent: AVLatent, controls: ControlStack, default_downscale: int = 1) -> tuple:
    """Encode every control into a canvas reference, adapting it to the target as its `fit` says."""
    check_controls(controls, latent, default_downscale)
    refs = []
    for c in controls:
        if c.inert() or c.kind == "lora":
            continue
        if c.kind == "audio":
            seconds = latent.seconds if c.audio_placement == "aligned" else None
            have = c.media["waveform"].shape[-1] / c.media["sample_rate"]
            if seconds is not None and c.fit == "error" and abs(have - seconds) > 1 / AUDIO_LATENTS_PER_SECOND:
                raise InputError(f"{c.label}: reference audio lasts {have:.2f} s, the clip {seconds:.2f} s "
                                 f"(set fit to 'resample' to trim or pad it)")
            z = _encode_audio(model, c.media, seconds)
            if seconds is not None:
                z = _fit_audio_latent(z, latent.audio.shape[2])
            # 'before': shift the reference so its last token's end bound lies AUDIO_GAP_SECONDS before 0
            offset = 0.0 if seconds is not None else -_audio_end(z) - AUDIO_GAP_SECONDS
            refs.append(AudioReference(z, offset, c.strength, _attention(c, z.shape[2], AUDIO_LATENTS_PER_SECOND),
                                       c.label))
            continue
        k = downscale_of(c, default_downscale)
        frames = c.media
        if c.kind == "video":
            frames = _resample_frames(frames, latent.frames, c.source_fps, latent.fps)
        z = _encode_frames(model, frames[:1] if c.kind == "image" else frames, latent.width // k, latent.height // k)
        if c.kind == "image":  # one frame: a curve over time is read at the image's own time
            attention = _attention(c, 1, latent.fps, start=c.frame_index / latent.fps)
        else:
            attention = _attention(c, latent.frames, latent.fps)
        refs.append(VideoReference(z, k, c.frame_index if c.kind == "image" else 0, c.strength, attention, c.label))
    return tuple(refs)


def _attention(control: Control, count: int, rate: float, start: float = 0.0) -> float | torch.Tensor:
    """The control's attention weight; a curve over time is read at `count` times spaced 1/`rate` s from `start`."""
    w = control.attention
    if not isinstance(w, dict):
        return w
    values = torch.as_tensor(w["values"]).float().flatten()
    idx = ((start + torch.arange(count) / rate) * float(w["rate"])).round().long().clamp(0, values.numel() - 1)
    return (values[idx] * float(w.get("scale", 1.0))).clamp(0, 1)


def _audio_end(z: torch.Tensor) -> float:
    """End bound (seconds) of the last token of an audio latent placed at 0 (causal bounds end 0.03 s before
    frames / 25)."""
    return float(audio_positions(AudioLatentShape.from_torch_shape(z.shape))[0, 0, -1, 1])


def _fit_audio_latent(z: torch.Tensor, frames: int) -> torch.Tensor:
    """The encoder's latent length may differ from the target's by a frame (causal padding): trim or repeat."""
    if z.shape[2] >= frames:
        return z[:, :, :frames]
    return torch.cat([z, z[:, :, -1:].expand(-1, -1, frames - z.shape[2], -1)], 2)
