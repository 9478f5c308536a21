"""Names shared by the pack's nodes: the category prefix and our own data types."""

CATEGORY = "AVControl"

MODEL = "AVC_MODEL"  # avcontrol_core.backbone.AVModel
TEXT_ENCODER = "AVC_TEXT_ENCODER"  # the Gemma prompt encoder bound to a checkpoint's text connectors
CONDITIONING = "AVC_CONDITIONING"  # avcontrol_core.conditioning.PromptPair (positive + negative contexts)
LATENT = "AVC_LATENT"  # avcontrol_core.latents.AVLatent
GUIDANCE = "AVC_GUIDANCE"  # avcontrol_core.guidance.Guidance
CONTROLS = "AVC_CONTROLS"  # tuple of avcontrol_core.controls.Control
LORAS = "AVC_LORAS"  # avcontrol_core.lora.LoraStack
UPSCALER = "AVC_LATENT_UPSCALER"  # ltx_core LatentUpsampler (stage two of two-stage inference)
CURVE = "AVC_CURVE"  # {"values": float tensor (T,), "rate": values per second, "label": str}

DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32"]  # avcontrol_core.dtypes.CHOICES
DEVICE_CHOICES = ["auto", "cuda", "cpu"]


def category(sub: str) -> str:
    return f"{CATEGORY}/{sub}"
