"""ComfyUI nodes of the pack: thin wrappers over avcontrol_core, one module per family."""

from .controls import CONTROL_NODES
from .guidance import AVCGuidance
from .latent import AVCEmptyLatent, AVCImageToVideo
from .loaders import AVCModelLoader, AVCTextEncoderLoader
from .output import AVCDecode, AVCSaveVideo
from .prompt import AVCPromptEncode
from .sampler import AVCSampler

_NODES = {
    "AVCModelLoader": (AVCModelLoader, "Load AVControl Model (LTX-2)"),
    "AVCTextEncoderLoader": (AVCTextEncoderLoader, "Load AVControl Text Encoder (Gemma 3)"),
    "AVCPromptEncode": (AVCPromptEncode, "AVControl Prompt Encode"),
    "AVCEmptyLatent": (AVCEmptyLatent, "Empty Audio+Video Latent"),
    "AVCImageToVideo": (AVCImageToVideo, "AVControl Image To Video"),
    "AVCGuidance": (AVCGuidance, "AVControl Guidance (per stream)"),
    "AVCSampler": (AVCSampler, "AVControl Sampler"),
    "AVCDecode": (AVCDecode, "AVControl Decode (video + audio)"),
    "AVCSaveVideo": (AVCSaveVideo, "AVControl Save Video (mp4 + audio)"),
    **CONTROL_NODES,
}

NODE_CLASS_MAPPINGS = {name: cls for name, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {name: title for name, (_, title) in _NODES.items()}
