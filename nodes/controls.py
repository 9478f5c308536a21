"""One node per AVControl modality: thin presets over the same parallel-canvas machinery.

Each takes an optional control stack and returns it with one more control, so a graph stacks depth + reference
voice + audio intensity into one sampler. A preset fixes which reference kind it makes, its LoRA file hint and its
defaults; `media()` turns the node's inputs into what the reference shows.
"""

from __future__ import annotations

import math

from . import host
from .common import CONTROLS, CURVE, LORAS, category
from .loaders import cached_lora

NO_LORA = "none"
DOWNSCALES = ["from LoRA", "1", "2", "4"]


def _lora_choices() -> list[str]:
    return [NO_LORA, *host.list_models("loras")]


class _ControlNode:
    LABEL = "control"
    KIND = "video"  # video | image | audio | lora
    MEDIA = ("frames", "IMAGE", "Control frames, one per clip frame (resampled by time when fit is 'resample').")
    LORA_HINT = "the modality's IC-LoRA"
    PLACEMENT = "aligned"
    FUNCTION = "add"
    RETURN_TYPES = (CONTROLS,)
    RETURN_NAMES = ("controls",)
    OUTPUT_TOOLTIPS = ("The controls so far plus this one; chain more control nodes, then connect to the sampler's controls.",)
    CATEGORY = category("controls")

    @classmethod
    def extra_inputs(cls) -> dict:
        return {}

    @classmethod
    def INPUT_TYPES(cls):
        name, kind, tip = cls.MEDIA
        required = {name: (kind, {"tooltip": tip})} if name else {}
        required.update(cls.extra_inputs())
        required.update({
            "lora_name": (_lora_choices(), {"tooltip": f"LoRA from models/loras: {cls.LORA_HINT}. Its metadata "
                          "(reference_downscale_factor) is honoured. 'none': reference only."}),
            "lora_strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05, "tooltip":
                              "LoRA strength; changing it never reloads the model."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "Reference denoise strength: 1 keeps it clean (t=0 every step), lower lets it be noised "
                         "with the clip; 0 turns this control off entirely (LoRA included)."}),
            "attention": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                          "How strongly the clip attends to this reference (1 = fully; below 1 costs a dense "
                          "attention mask). Multiplied by attention_mask / attention_curve when given."}),
        })
        if cls.KIND in ("video", "image"):
            required["downscale"] = (DOWNSCALES, {"default": "from LoRA", "tooltip":
                "Reference canvas size: 1/2 or 1/4 of the clip's sides (small-to-large grid, faster for sparse "
                "controls); 'from LoRA' reads the LoRA's metadata. Must match how the LoRA was trained."})
        if cls.KIND != "lora":
            required["fit"] = (["resample", "error"], {"default": "resample", "tooltip":
                "resample: adapt size, length and frame rate to the clip; error: refuse any mismatch."})
        optional = {"controls": (CONTROLS, {"tooltip": "Controls to add this one to (chain control nodes)."})}
        if cls.KIND in ("video", "image"):
            optional["attention_mask"] = ("MASK", {"tooltip": "Spatial (or per-frame spatial) attention weight "
                                          "in 0..1 over the clip's canvas; white = full attention."})
        if cls.KIND in ("video", "audio"):
            optional["attention_curve"] = (CURVE, {"tooltip": "Attention weight over time (0..1), e.g. an "
                                           "envelope from the audio preprocessors."})
        if cls.KIND == "video":
            optional["source_fps"] = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001,
                                      "tooltip": "Frame rate of the control frames if it differs from the clip's "
                                      "(0 = same as the clip)."})
        return {"required": required, "optional": optional}

    def media(self, **inputs):
        return inputs.get(self.MEDIA[0])

    def kind(self, **inputs) -> str:
        return self.KIND

    def add(self, lora_name, lora_strength, strength, attention, downscale="from LoRA", fit="resample",
            controls=None, attention_mask=None, attention_curve=None, source_fps=0.0, frame_index=0, **inputs):
        from ..avcontrol_core import api

        for name, value in (("strength", strength), ("lora_strength", lora_strength)):  # NaN fails here, not later
            api.require(isinstance(value, (int, float)) and math.isfinite(value), f"{self.LABEL}: {name}",
                    "a finite number", value)
        kind = self.kind(**inputs)
        media = self.media(**inputs)
        common = dict(
            label=self.LABEL, strength=strength, weight=_weight(self.LABEL, attention, attention_mask, attention_curve),
            lora=None if lora_name == NO_LORA else cached_lora(host.resolve_model("loras", lora_name)),
            lora_strength=lora_strength,
        )
        canvas = dict(downscale=0 if downscale == "from LoRA" else int(downscale), fit=fit)
        make = {
            "video": lambda: api.VideoControl(frames=media, source_fps=source_fps or None, **canvas, **common),
            "image": lambda: api.ImageControl(image=media, frame_index=frame_index, **canvas, **common),
            "audio": lambda: api.AudioControl(audio=media, placement=self.PLACEMENT, fit=fit, **common),
            "lora": lambda: api.LoraControl(**common),
        }
        return ((*(controls or ()), make[kind]()),)


def _weight(label, attention, mask, curve):
    """The node's attention inputs as one Weight; a curve beyond 0..1 (older graphs scaled it) is clipped, with a
    warning."""
    import torch

    from ..avcontrol_core.api import Curve, Weight, require, warn

    require(isinstance(attention, (int, float)) and math.isfinite(attention), f"{label}: attention",
            "a number between 0 and 1", attention)
    if curve is not None:
        curve = Curve.of(curve)
        if bool(((curve.values < 0) | (curve.values > 1)).any()):
            warn(f"{label}: attention_curve values outside 0..1 (from {float(curve.values.min()):g} to "
                 f"{float(curve.values.max()):g}) were clipped to 0..1")
            curve = Curve(curve.values.clamp(0, 1), curve.rate, curve.label, curve.events)
    return Weight(float(attention), curve, None if mask is None else torch.as_tensor(mask).float())


def _preset(name: str, label: str, doc: str, hint: str, base=_ControlNode, **attrs):
    return type(name, (base,), {"__doc__": doc, "LABEL": label, "LORA_HINT": hint, "DESCRIPTION": doc, **attrs})


AVCDepthControl = _preset("AVCDepthControl", "depth", "Depth maps steer the clip's 3-D structure.",
                          "ltx-2-19b-ic-lora-union-control-ref0.5 or ltx-2-19b-ic-lora-depth-control")
AVCPoseControl = _preset("AVCPoseControl", "pose", "Pose skeletons steer the people's motion.",
                         "ltx-2-19b-ic-lora-union-control-ref0.5 or ltx-2-19b-ic-lora-pose-control")
AVCCannyControl = _preset("AVCCannyControl", "canny", "Edge maps (canny, lines) steer the layout.",
                          "ltx-2-19b-ic-lora-union-control-ref0.5 or ltx-2-19b-ic-lora-canny-control")
AVCDetailerControl = _preset("AVCDetailerControl", "detailer", "A low-detail clip is re-rendered with detail.",
                             "ltx-2-19b-ic-lora-detailer")
AVCMotionTrackControl = _preset("AVCMotionTrackControl", "motion tracks",
                                "Rendered point tracks steer where things move.",
                                "ltx-2.3-22b-ic-lora-motion-track-control-ref0.5")


class AVCCameraControl(_ControlNode):
    """Camera trajectory: a source clip seen from another viewpoint (not pixel-aligned), or a camera-motion LoRA
    alone (e.g. ltx-2-19b-lora-camera-control-dolly-in) when no frames are given."""

    LABEL = "camera"
    DESCRIPTION = __doc__
    LORA_HINT = "a camera IC-LoRA, or a camera-motion LoRA (dolly, jib, static)"
    MEDIA = (None, None, None)

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["optional"]["frames"] = ("IMAGE", {"tooltip": "Source clip to re-film along a new trajectory; leave "
                                       "empty to use a camera-motion LoRA alone."})
        return types

    def kind(self, frames=None, **_):
        return "video" if frames is not None else "lora"

    def media(self, frames=None, **_):
        return frames


class _MaskedVideo(_ControlNode):
    @classmethod
    def extra_inputs(cls):
        return {"mask": ("MASK", {"tooltip": "Region to generate (white); known pixels stay black. One mask for "
                                  "all frames or one per frame."})}

    def media(self, frames, mask, **_):
        from ..avcontrol_core.api import fill_region

        return fill_region(frames, mask)


AVCInpaintControl = _preset("AVCInpaintControl", "inpaint", "Regenerate the masked region of a clip.",
                            "an in/outpainting IC-LoRA", base=_MaskedVideo)
AVCOutpaintControl = _preset("AVCOutpaintControl", "outpaint",
                             "Extend a clip beyond its borders: frames already padded to the new canvas, mask "
                             "white on the new area (see the outpaint mask preprocessor).",
                             "an in/outpainting IC-LoRA", base=_MaskedVideo)


class AVCWhoIsTalkingControl(_ControlNode):
    """Who is talking: per-speaker masks (white where the speaking person is) tell the clip who speaks when."""

    LABEL = "who is talking"
    DESCRIPTION = __doc__
    LORA_HINT = "a who-is-talking LoRA"
    MEDIA = ("speaker_mask", "MASK", "Mask frames of the person speaking (from the who-is-talking preprocessor).")

    @classmethod
    def extra_inputs(cls):
        return {"fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "tooltip":
                        "Frame rate of the mask frames (to read the activity curve at the right times)."})}

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["optional"]["activity"] = (CURVE, {"tooltip": "Speech activity of this speaker over time; gates the "
                                         "mask frame by frame."})
        return types

    def media(self, speaker_mask, fps, activity=None, **_):
        from ..avcontrol_core.api import Curve, gate_mask, mask_to_frames

        if activity is not None:
            activity = Curve.of(activity)  # a curve, or the dict form older graphs passed
            speaker_mask = gate_mask(speaker_mask, activity.values, activity.rate, fps)
        return mask_to_frames(speaker_mask)


class AVCReferenceImageControl(_ControlNode):
    """Reference image: identity or a keyframe, placed at a frame index."""

    LABEL = "reference image"
    KIND = "image"
    DESCRIPTION = __doc__
    LORA_HINT = "an identity / reference-image LoRA (none: a plain keyframe)"
    MEDIA = ("image", "IMAGE", "The reference image (the first of the batch is used).")

    @classmethod
    def extra_inputs(cls):
        return {"frame_index": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip":
                                "Clip frame the image is placed at (0 = first frame); must be inside the clip."})}


class AVCAudioToAudioControl(_ControlNode):
    """Audio-to-audio: a source sound aligned with the clip, transformed by the LoRA (voice change, restyle)."""

    LABEL = "audio to audio"
    KIND = "audio"
    DESCRIPTION = __doc__
    LORA_HINT = "an audio-to-audio transform LoRA"
    MEDIA = ("audio", "AUDIO", "Source sound, aligned with the clip (trimmed or padded when fit is 'resample').")


class AVCReferenceVoiceControl(AVCAudioToAudioControl):
    """Reference voice: a voice sample placed before the clip, so its timbre is used but not its timing."""

    LABEL = "reference voice"
    DESCRIPTION = __doc__
    PLACEMENT = "before"
    LORA_HINT = "a voice / identity LoRA (e.g. ID-LoRA)"
    MEDIA = ("audio", "AUDIO", "A few seconds of the voice to speak with.")


class AVCAudioIntensityControl(_ControlNode):
    """Audio intensity: the sound's loudness follows an envelope over time."""

    LABEL = "audio intensity"
    KIND = "audio"
    DESCRIPTION = __doc__
    LORA_HINT = "an audio-intensity LoRA"
    MEDIA = ("envelope", CURVE, "Loudness over time from its start (e.g. the intensity envelope of a sound, 25 "
             "values/s); trimmed or padded to the clip when fit is 'resample'.")

    def media(self, envelope, **_):
        from ..avcontrol_core.api import Curve, render_intensity

        envelope = Curve.of(envelope)  # a curve, or the dict form older graphs passed
        return render_intensity(envelope.values, envelope.rate, envelope.seconds)


class AVCLoraLoader:
    """A plain LoRA in the stack (e.g. the distilled LoRA), applied at runtime without reloading the model."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora_name": (host.list_models("loras"), {"tooltip": "LoRA from models/loras (.safetensors)."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05, "tooltip":
                             "LoRA strength; 0 leaves it out."}),
            },
            "optional": {"loras": (LORAS, {"tooltip": "LoRAs to add this one to (chain loaders)."})},
        }

    RETURN_TYPES = (LORAS,)
    RETURN_NAMES = ("loras",)
    OUTPUT_TOOLTIPS = ("The LoRAs so far plus this one; connect to the sampler's loras (or chain more loaders).",)
    FUNCTION = "add"
    CATEGORY = category("loaders")
    DESCRIPTION = __doc__

    def add(self, lora_name, strength, loras=None):
        from ..avcontrol_core.api import LoraStack

        return ((loras or LoraStack()).add(cached_lora(host.resolve_model("loras", lora_name)), strength),)


CONTROL_NODES = {
    "AVCDepthControl": (AVCDepthControl, "AVControl Depth"),
    "AVCPoseControl": (AVCPoseControl, "AVControl Pose"),
    "AVCCannyControl": (AVCCannyControl, "AVControl Canny / Edges"),
    "AVCInpaintControl": (AVCInpaintControl, "AVControl Inpaint"),
    "AVCOutpaintControl": (AVCOutpaintControl, "AVControl Outpaint"),
    "AVCDetailerControl": (AVCDetailerControl, "AVControl Detailer"),
    "AVCCameraControl": (AVCCameraControl, "AVControl Camera Trajectory"),
    "AVCMotionTrackControl": (AVCMotionTrackControl, "AVControl Motion Tracks"),
    "AVCAudioIntensityControl": (AVCAudioIntensityControl, "AVControl Audio Intensity"),
    "AVCWhoIsTalkingControl": (AVCWhoIsTalkingControl, "AVControl Who Is Talking"),
    "AVCAudioToAudioControl": (AVCAudioToAudioControl, "AVControl Audio To Audio"),
    "AVCReferenceVoiceControl": (AVCReferenceVoiceControl, "AVControl Reference Voice"),
    "AVCReferenceImageControl": (AVCReferenceImageControl, "AVControl Reference Image (identity / keyframe)"),
    "AVCLoraLoader": (AVCLoraLoader, "Load AVControl LoRA"),
}
