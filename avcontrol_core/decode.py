"""Latents to media: video VAE to frames (optionally tiled for large frames), audio VAE + vocoder to a waveform.

Outputs use ComfyUI's data layout without importing it: frames float [F, H, W, 3] in 0..1, audio
{"waveform": float [B, C, T], "sample_rate": int} trimmed to the clip's duration.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from ltx_core.model.audio_vae.audio_vae import decode_audio as ltx_decode_audio
from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig

from .backbone import AVModel
from .errors import require
from .latents import AVLatent


def tiling(tile_pixels: int = 512, overlap_pixels: int = 64, tile_frames: int = 64, overlap_frames: int = 24) -> TilingConfig:
    """Tiles of `tile_pixels` (>= 64, multiple of 32) and `tile_frames` (>= 16, multiple of 8) with overlaps."""
    require(tile_pixels >= 64 and tile_pixels % 32 == 0, "tile_size", "a multiple of 32, at least 64", tile_pixels)
    require(0 <= overlap_pixels < tile_pixels and overlap_pixels % 32 == 0, "tile_overlap",
            "a multiple of 32 smaller than tile_size", overlap_pixels)
    require(tile_frames >= 16 and tile_frames % 8 == 0, "tile_frames", "a multiple of 8, at least 16", tile_frames)
    require(0 <= overlap_frames < tile_frames and overlap_frames % 8 == 0, "tile_frame_overlap",
            "a multiple of 8 smaller than tile_frames", overlap_frames)
    return TilingConfig(
        spatial_config=SpatialTilingConfig(tile_size_in_pixels=tile_pixels, tile_overlap_in_pixels=overlap_pixels),
        temporal_config=TemporalTilingConfig(tile_size_in_frames=tile_frames, tile_overlap_in_frames=overlap_frames),
    )


@torch.inference_mode()
def decode_video(
    model: AVModel, latent: AVLatent, tiles: TilingConfig | None = None, seed: int = 0,
    check_interrupted: Callable[[], None] | None = None,
) -> torch.Tensor:
    """All frames of every clip in the batch, concatenated: float [B*F, H, W, 3] in 0..1 on the CPU."""
    decoder = model.component("video_decoder")
    generator = torch.Generator(model.device).manual_seed(seed)
    out = []
    for b in range(latent.batch):
        z = latent.video[b : b + 1].to(device=model.device, dtype=model.dtype)
        chunks = decoder.tiled_decode(z, tiles, generator=generator) if tiles is not None else [decoder(z, generator=generator)]
        for chunk in chunks:
            if check_interrupted is not None:
                check_interrupted()
            frames = ((chunk.float() + 1.0) / 2.0).clamp(0.0, 1.0)
            out.append(rearrange(frames[0], "c f h w -> f h w c").cpu())
    return torch.cat(out)


@torch.inference_mode()
def decode_audio(model: AVModel, latent: AVLatent) -> dict:
    """The clip's sound as AUDIO: stereo at the vocoder's rate (24 kHz for LTX-2; LTX-2.3's VocoderWithBWE declares
    its own), exactly frames/fps seconds long."""
    decoder, vocoder = model.component("audio_decoder"), model.component("vocoder")
    waves = []
    for b in range(latent.batch):
        z = latent.audio[b : b + 1].to(device=model.device, dtype=model.dtype)
        audio = ltx_decode_audio(z, decoder, vocoder)
        waves.append(audio.waveform.float().cpu())
    rate = int(audio.sampling_rate)
    wave = torch.stack(waves)
    n = round(latent.seconds * rate)
    if wave.shape[-1] < n:
        wave = torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
    return {"waveform": wave[..., :n].contiguous(), "sample_rate": rate}
