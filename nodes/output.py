"""Output nodes: decode the latent to frames and sound, and save them as an mp4 that never overwrites another."""

from __future__ import annotations

from . import host
from .common import LATENT, MODEL, category


class AVCDecode:
    """Decodes video frames (IMAGE) and sound (AUDIO) from an audio+video latent."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The LTX-2 model whose video VAE, audio VAE and vocoder decode."}),
                "latent": (LATENT, {"tooltip": "From AVControl Sampler."}),
                "tiled": ("BOOLEAN", {"default": False, "tooltip":
                    "Decode the video in overlapping tiles: much less memory for large or long clips, "
                    "slightly slower, tiny seams possible."}),
                "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32, "tooltip":
                    "Tile side in pixels when tiled (multiple of 32, at least 64)."}),
                "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 32, "tooltip":
                    "Tile overlap in pixels when tiled (multiple of 32, smaller than tile_size)."}),
                "tile_frames": ("INT", {"default": 64, "min": 16, "max": 1024, "step": 8, "tooltip":
                    "Frames per temporal tile when tiled (multiple of 8, at least 16)."}),
            }
        }

    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("The decoded frames (IMAGE batch, 0..1).", "The decoded sound (AUDIO, the vocoder's rate), as long as the "
                       "video.", "The clip's frame rate; connect to Save Video.")
    FUNCTION = "decode"
    CATEGORY = category("output")
    DESCRIPTION = ("Latent to frames (IMAGE), sound (AUDIO, stereo at the vocoder's rate: 24 kHz for LTX-2) and the "
                   "clip's frame rate.")

    def decode(self, model, latent, tiled, tile_size, tile_overlap, tile_frames):
        from ..avcontrol_core.api import decode_audio, decode_video, tiling

        tiles = tiling(tile_size, tile_overlap, tile_frames, min(24, tile_frames - 8)) if tiled else None
        bar = host.progress_bar(2, "decoding video")
        images = decode_video(model, latent, tiles, check_interrupted=host.check_interrupted)
        bar.update(1)
        host.show_text("decoding sound")
        audio = decode_audio(model, latent)
        bar.update(1)
        return (images, audio, latent.fps)


class AVCSaveVideo:
    """Writes frames and sound to an mp4 (H.264 + AAC) in ComfyUI's output folder, never overwriting a file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to encode; sides must be even (H.264)."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.001,
                                  "tooltip": "Frame rate of the file; connect AVControl Decode's fps."}),
                "filename_prefix": ("STRING", {"default": "avcontrol/clip", "tooltip":
                    "Name prefix inside the output folder; may hold subfolders. A counter is appended, so "
                    "earlier files are never overwritten."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound to mux (AAC); trimmed or padded to the video's duration."}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Path of the written mp4 (a new file every run; earlier files are never overwritten).",)
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = category("output")
    DESCRIPTION = "Save an mp4 with sound; shows it in the UI."

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        """ComfyUI calls this when the prompt is queued: a bad prefix fails before anything runs, not after
        sampling (a linked prefix is checked when the node runs)."""
        from ..avcontrol_core.api import output_prefix_problem

        if filename_prefix is None:
            return True
        return output_prefix_problem(filename_prefix, host.output_directory()) or True

    def save(self, images, fps, filename_prefix, audio=None):
        from ..avcontrol_core.api import check_audio_output, check_video_output, unique_output_path, write_mp4

        check_video_output(images)
        if audio is not None:
            check_audio_output(audio)
        root = host.output_directory()
        path = unique_output_path(root, filename_prefix, ".mp4")
        try:
            write_mp4(path, images, fps, audio)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        rel = path.relative_to(root)
        subfolder = "" if rel.parent == type(rel)(".") else rel.parent.as_posix()
        entry = {"filename": rel.name, "subfolder": subfolder, "type": "output"}
        return {"ui": {"images": [entry], "animated": (True,)}, "result": (str(path),)}
