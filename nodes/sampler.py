"""The sampler node: our flow-matching loop over the joint audio+video latent."""

from __future__ import annotations

from . import host
from .common import CONDITIONING, CONTROLS, GUIDANCE, LATENT, LORAS, MODEL, category


class AVCSampler:
    """Denoises an audio+video latent with per-stream guidance; progress bar and cancel work every step."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From Load AVControl Model."}),
                "conditioning": (CONDITIONING, {"tooltip": "From AVControl Prompt Encode."}),
                "latent": (LATENT, {"tooltip": "From Empty Audio+Video Latent or Image To Video; for stage two of "
                                    "two-stage inference, from Latent Upscale."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed; the same seed gives the same clip on any device."}),
                "steps": ("INT", {"default": 40, "min": 1, "max": 1000, "tooltip":
                    "Denoising steps for the 'ltx2' schedule (40 is LTX-2's default). Ignored by the fixed "
                    "distilled schedules (8 and 3 steps)."}),
                "schedule": (["ltx2", "distilled", "distilled_stage2"], {"default": "ltx2", "tooltip":
                    "ltx2: token-count-shifted schedule of the full model. distilled: the distilled model's fixed "
                    "8 steps (use guidance scales of 1). distilled_stage2: its 3-step refinement, stage two of "
                    "two-stage inference (starts at sigma 0.909 from an upscaled latent; add the distilled LoRA)."}),
                "lora_mode": (["runtime", "fuse"], {"default": "runtime", "tooltip":
                    "runtime: LoRAs are added on the fly (strengths change freely, a little slower per step). "
                    "fuse: merged into the weights for this run (faster steps; costs a copy of the touched "
                    "weights while sampling). The loaded model is unchanged afterwards either way."}),
            },
            "optional": {
                "guidance": (GUIDANCE, {"tooltip": "Per-stream guidance. Without it: no guidance (one pass per "
                                        "step), right for the distilled model."}),
                "controls": (CONTROLS, {"tooltip": "Control stack from AVControl control nodes: references on "
                                        "the parallel canvas and their LoRAs."}),
                "loras": (LORAS, {"tooltip": "Plain LoRAs (Load AVControl LoRA), e.g. the distilled LoRA."}),
            },
        }

    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "run"
    CATEGORY = category("sampling")
    DESCRIPTION = "Generate video and its sound together."

    def run(self, model, conditioning, latent, seed, steps, schedule, lora_mode="runtime", guidance=None,
            controls=None, loras=None):
        from ..avcontrol_core.pipeline import run_sampler
        from ..avcontrol_core.sampling import step_count

        bar = host.progress_bar(step_count(schedule, steps))
        out = run_sampler(
            model, conditioning, latent, guidance, steps=steps, schedule_name=schedule, seed=seed,
            controls=tuple(controls or ()), loras=loras, fuse_loras=lora_mode == "fuse", on_step=lambda done, total: bar.update(1), check_interrupted=host.check_interrupted,
        )
        return (out,)
