"""Latent nodes: an empty audio+video latent, first-frame (image-to-video) conditioning, and the spatial upscale
between the two stages of two-stage inference."""

from __future__ import annotations

from .common import LATENT, MODEL, UPSCALER, category


class AVCEmptyLatent:
    """An empty latent for a clip and its sound: the size, length and frame rate of what will be generated."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 768, "min": 32, "max": 4096, "step": 32,
                                  "tooltip": "Video width in pixels; a multiple of 32."}),
                "height": ("INT", {"default": 512, "min": 32, "max": 4096, "step": 32,
                                   "tooltip": "Video height in pixels; a multiple of 32."}),
                "frames": ("INT", {"default": 121, "min": 1, "max": 1025, "step": 8,
                                   "tooltip": "Number of frames; must be 8n+1 (9, 17, ..., 121). "
                                   "The sound lasts frames / fps seconds."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.001,
                                  "tooltip": "Frame rate, 1 to 120. Positions are in seconds, so it sets the "
                                  "clip's duration and audio/video alignment."}),
            }
        }

    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("An empty (noise-ready) video + audio latent of this size, length and frame rate; connect to the sampler.",)
    FUNCTION = "create"
    CATEGORY = category("latent")
    DESCRIPTION = "Empty joint audio+video latent (video 32x/8x compressed, audio 25 latents per second)."

    def create(self, width, height, frames, fps):
        from ..avcontrol_core.api import empty_latent

        return (empty_latent(width, height, frames, fps),)


class AVCImageToVideo:
    """Conditions the first frame on an image (image-to-video)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The LTX-2 model; its video VAE encodes the image."}),
                "latent": (LATENT, {"tooltip": "The latent to condition (from Empty Audio+Video Latent)."}),
                "image": ("IMAGE", {"tooltip": "The first frame. Its first image is used; it is resized and "
                                    "center-cropped to the latent's width and height."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "1 keeps the image exactly as the first frame; lower values let "
                                       "the model change it; 0 ignores it."}),
            }
        }

    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent with the first frame set as a condition (kept at the given strength); connect to the sampler.",)
    FUNCTION = "apply"
    CATEGORY = category("latent")
    DESCRIPTION = "Image-to-video: put an image at frame 0 of the latent."

    def apply(self, model, latent, image, strength):
        from ..avcontrol_core.api import condition_first_frame, encode_first_frame

        encoded = encode_first_frame(model, image, latent.width, latent.height)
        return (condition_first_frame(latent, encoded, strength),)


class AVCLatentUpscale:
    """Two-stage inference: upscales stage one's video latent for the stage-two sampler."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The LTX-2 model: its video VAE's latent statistics frame the "
                                  "upsampler's input and output; the upsampler runs on its device, in its dtype."}),
                "upscaler": (UPSCALER, {"tooltip": "From Load AVControl Latent Upscaler."}),
                "latent": (LATENT, {"tooltip": "Stage one's result (the first sampler's output), generated at "
                                    "half the final width and height."}),
                "audio": (["keep", "refine", "lightricks"], {"default": "keep", "tooltip":
                    "keep: stage one's sound is final and held clean as a given stream (sigma 0, as Lightricks' "
                    "pipelines hold a given sound); stage two refines the video while hearing it finished. "
                    "refine: stage two re-noises the sound with the video and refines and returns both. "
                    "lightricks: exactly Lightricks' ti2vid two-stage pipeline: re-noised and refined with the "
                    "video, then stage one's sound returned unchanged."}),
            }
        }

    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent at twice the width and height, ready for stage two (a sampler on the distilled stage-two "
                       "schedule).",)
    FUNCTION = "upscale"
    CATEGORY = category("latent")
    DESCRIPTION = ("Upscale a sampled latent in space (x2 with LTX-2's upsampler). Then sample it again with the "
                   "distilled LoRA and the 'distilled_stage2' schedule, which refines it instead of starting from "
                   "noise; controls and image-to-video are re-applied at the new size.")

    def upscale(self, model, upscaler, latent, audio):
        from ..avcontrol_core.api import upscale

        return (upscale(model, latent, upscaler, audio),)
