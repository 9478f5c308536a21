"""Prompt encoding: positive and negative text to video and audio contexts."""

from __future__ import annotations

from .common import CONDITIONING, TEXT_ENCODER, category


class AVCPromptEncode:
    """Encodes the positive prompt and the negative prompt (used by text CFG) once, for both streams."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "From Load AVControl Text Encoder."}),
                "positive": ("STRING", {"multiline": True, "default": "", "tooltip":
                    "What to see and hear. Describe the scene, motion, and the sound (speech in quotes, ambience, "
                    "music). Must not be empty."}),
                "negative": ("STRING", {"multiline": True, "default": "worst quality, inconsistent motion, blurry, "
                    "jittery, distorted", "tooltip": "What to avoid; used when a cfg scale is not 1. May be empty "
                    "(then the unconditional pass uses the empty prompt)."}),
            }
        }

    RETURN_TYPES = (CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The positive and negative prompts, encoded for the video and audio streams; connect to the sampler.",)
    FUNCTION = "encode"
    CATEGORY = category("conditioning")
    DESCRIPTION = "Encode prompts with Gemma 3 and the checkpoint's text connectors."

    def encode(self, text_encoder, positive, negative):
        from ..avcontrol_core.api import encode_prompts

        return (encode_prompts(text_encoder, positive, negative),)
