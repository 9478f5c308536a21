"""ComfyUI nodes of the pack: thin wrappers over avcontrol_core, one module per family."""

import functools

from . import host

from .controls import CONTROL_NODES
from .guidance import AVCGuidance
from .latent import AVCEmptyLatent, AVCImageToVideo, AVCLatentUpscale
from .loaders import AVCLatentUpscalerLoader, AVCModelLoader, AVCTextEncoderLoader
from .output import AVCDecode, AVCSaveVideo
from .preprocess_audio import (AVCAudioDemix, AVCAudioEnvelope, AVCAudioOnsets, AVCSelectSpeaker, AVCSpeechActivity,
                               AVCWhoIsTalking)
from .preprocess_visual import (AVCCannyEdges, AVCDepthMap, AVCDWPose, AVCFillMasked, AVCFitClip, AVCMaskFromBox,
                                AVCMaskFromThreshold, AVCMediaPipePose, AVCOpenpose, AVCOutpaintPad, AVCSoftEdges)
from .prompt import AVCPromptEncode
from .sampler import AVCSampler

_NODES = {
    "AVCModelLoader": (AVCModelLoader, "Load AVControl Model (LTX-2)"),
    "AVCTextEncoderLoader": (AVCTextEncoderLoader, "Load AVControl Text Encoder (Gemma 3)"),
    "AVCPromptEncode": (AVCPromptEncode, "AVControl Prompt Encode"),
    "AVCEmptyLatent": (AVCEmptyLatent, "Empty Audio+Video Latent"),
    "AVCImageToVideo": (AVCImageToVideo, "AVControl Image To Video"),
    "AVCLatentUpscalerLoader": (AVCLatentUpscalerLoader, "Load AVControl Latent Upscaler (two-stage)"),
    "AVCLatentUpscale": (AVCLatentUpscale, "AVControl Latent Upscale (two-stage)"),
    "AVCGuidance": (AVCGuidance, "AVControl Guidance (per stream)"),
    "AVCSampler": (AVCSampler, "AVControl Sampler"),
    "AVCDecode": (AVCDecode, "AVControl Decode (video + audio)"),
    "AVCSaveVideo": (AVCSaveVideo, "AVControl Save Video (mp4 + audio)"),
    "AVCAudioDemix": (AVCAudioDemix, "AVControl Demix Audio (speech / effects / music)"),
    "AVCAudioEnvelope": (AVCAudioEnvelope, "AVControl Audio Intensity Envelope (25/s)"),
    "AVCAudioOnsets": (AVCAudioOnsets, "AVControl Audio Onsets"),
    "AVCSpeechActivity": (AVCSpeechActivity, "AVControl Speech Activity (silero-vad)"),
    "AVCWhoIsTalking": (AVCWhoIsTalking, "AVControl Who Is Talking"),
    "AVCSelectSpeaker": (AVCSelectSpeaker, "AVControl Select Speaker"),
    "AVCCannyEdges": (AVCCannyEdges, "AVControl Canny Edges"),
    "AVCSoftEdges": (AVCSoftEdges, "AVControl Soft Edges (Sobel)"),
    "AVCDepthMap": (AVCDepthMap, "AVControl Depth Map (Depth Anything / MiDaS / ZoeDepth)"),
    "AVCDWPose": (AVCDWPose, "AVControl Pose: DWPose (ONNX)"),
    "AVCOpenpose": (AVCOpenpose, "AVControl Pose: OpenPose"),
    "AVCMediaPipePose": (AVCMediaPipePose, "AVControl Pose: MediaPipe (CPU; one person, or max_people by face)"),
    "AVCMaskFromBox": (AVCMaskFromBox, "AVControl Mask From Box"),
    "AVCMaskFromThreshold": (AVCMaskFromThreshold, "AVControl Mask From Threshold"),
    "AVCOutpaintPad": (AVCOutpaintPad, "AVControl Outpaint Pad (frames + mask)"),
    "AVCFillMasked": (AVCFillMasked, "AVControl Inpaint Fill Masked Area"),
    "AVCFitClip": (AVCFitClip, "AVControl Fit Clip To Grid (32 px, 8n+1 frames)"),
    **CONTROL_NODES,
}

NODE_CLASS_MAPPINGS = {name: cls for name, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {name: title for name, (_, title) in _NODES.items()}


# where a user changes each setting a GPUMemoryError hint names (residency.Hint.setting)
SETTING_PLACES = {
    "offload_budget_gb": "Load AVControl Model: offload_budget_gb",
    "weights": "Load AVControl Model: weights",
    "compile": "Load AVControl Model: compile",
    "lora_mode": "AVControl Sampler: lora_mode",
    "resolution or frames": "Empty Audio+Video Latent: width, height or frames",
    "stage-one resolution or frames": "Empty Audio+Video Latent (stage one): width, height or frames",
    "text encoder device": "Load AVControl Text Encoder: device",
    "device": "this node's device",
}


def memory_message(title: str, err) -> str:
    """A GPUMemoryError in the graph's words: the node, what it was doing, and where each setting to lower is."""
    lower = "; or ".join(f"{SETTING_PLACES.get(h.setting, h.setting)} (now {h.value}; {h.change})" for h in err.hints)
    return (f"{title} ran out of GPU memory while {err.what}. Lower {lower}. Everything the pack held on the GPU "
            f"was released, so the next run starts clean. ({err.detail})")


def _wrap(cls, title: str) -> None:
    """The node's function shows the PackWarnings its work raised, on the node and as a toast (host.show_warning),
    and words an out-of-memory error from the core with the graph's names (memory_message)."""
    function = getattr(cls, cls.FUNCTION)
    if getattr(function, "reports_warnings", False):
        return

    @functools.wraps(function)
    def run(self, *args, **kwargs):
        with host.reporting_warnings(title):
            try:
                return function(self, *args, **kwargs)
            except Exception as err:
                from ..avcontrol_core.api import GPUMemoryError  # torch is loaded once anything ran

                if not isinstance(err, GPUMemoryError):
                    raise
                raise GPUMemoryError(err.what, err.hints, err.detail, message=memory_message(title, err)) from None

    run.reports_warnings = True
    setattr(cls, cls.FUNCTION, run)


host.install_core_host()
for _name, (_cls, _title) in _NODES.items():
    _wrap(_cls, _title)
