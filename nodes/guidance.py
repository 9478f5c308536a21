"""Guidance settings per stream: text CFG, STG, cross-modal guidance and rescale, for video and for audio."""

from __future__ import annotations

from .common import GUIDANCE, category

# LTX-2's recommended settings for the full (non-distilled) model.
_STREAMS = {
    "video": {"cfg": 3.0, "stg": 1.0, "modality": 3.0, "rescale": 0.7},
    "audio": {"cfg": 7.0, "stg": 1.0, "modality": 3.0, "rescale": 0.7},
}


def _stream_inputs(stream: str) -> dict:
    d = _STREAMS[stream]
    return {
        f"{stream}_cfg": ("FLOAT", {"default": d["cfg"], "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
            f"Text CFG scale for the {stream}. 1 turns it off and skips the unconditional pass (faster)."}),
        f"{stream}_stg": ("FLOAT", {"default": d["stg"], "min": -100.0, "max": 100.0, "step": 0.1, "tooltip":
            f"Spatio-temporal guidance for the {stream}: contrast with a pass whose {stream} self-attention is "
            "skipped in stg_blocks. 0 turns it off."}),
        f"{stream}_modality_scale": ("FLOAT", {"default": d["modality"], "min": 0.0, "max": 100.0, "step": 0.1,
            "tooltip": f"Cross-modal guidance for the {stream}: contrast with a pass without audio<->video attention. "
            "Raises audio/video sync. 1 turns it off."}),
        f"{stream}_rescale": ("FLOAT", {"default": d["rescale"], "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
            f"Pull the guided {stream} prediction's std back toward the conditional one (0 = off, 1 = full); "
            "tames oversaturation at high scales."}),
    }


class AVCGuidance:
    """Separate guidance for the video and the audio stream."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_stream_inputs("video"),
                **_stream_inputs("audio"),
                "stg_blocks": ("STRING", {"default": "29", "tooltip":
                    "Transformer blocks whose self-attention STG skips, comma-separated (e.g. '29' or '10,20'). "
                    "Must be below the model's layer count (48 for LTX-2)."}),
            }
        }

    RETURN_TYPES = (GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Per-stream guidance (text CFG, STG, cross-modal) for the sampler's guidance input.",)
    FUNCTION = "build"
    CATEGORY = category("sampling")
    DESCRIPTION = "Guidance per stream. Passes whose scales make them a no-op are skipped."

    def build(self, stg_blocks, **scales):
        from ..avcontrol_core.api import Guidance, StreamGuidance, parse_blocks

        blocks = parse_blocks(stg_blocks)

        def stream(name: str) -> StreamGuidance:
            stg = scales[f"{name}_stg"]
            return StreamGuidance(
                cfg=scales[f"{name}_cfg"], stg=stg, stg_blocks=blocks if stg != 0 else (),
                modality=scales[f"{name}_modality_scale"], rescale=scales[f"{name}_rescale"],
            )

        return (Guidance(video=stream("video"), audio=stream("audio")),)
