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
                "schedule": (["ltx2", "ltx2_tokens", "distilled", "distilled_stage2"], {"default": "ltx2", "tooltip":
                    "ltx2: the full model's schedule as Lightricks' one- and two-stage pipelines use it (shifted "
                    "for 4096 tokens at any size). ltx2_tokens: shifted by this clip's own token count (the rule of "
                    "Lightricks' HQ pipeline; more steps at high noise for large clips). distilled: the distilled model's fixed "
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
                "cross_modal_weight": ("BOOLEAN", {"default": False, "tooltip":
                    "Off (Lightricks' behaviour): a control's attention weight below 1 scales how the clip's own "
                    "stream attends to it. On (this pack's extension): it also scales the other stream's "
                    "audio<->video attention to it, so a weight near 0 silences the reference on both paths."}),
            },
        }

    RETURN_TYPES = (LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised video + audio latent; connect to AVControl Decode, or to Latent Upscale for stage two.",)
    FUNCTION = "run"
    CATEGORY = category("sampling")
    DESCRIPTION = "Generate video and its sound together."

    def run(self, model, conditioning, latent, seed, steps, schedule, lora_mode="runtime", guidance=None,
            controls=None, loras=None, cross_modal_weight=False):
        from ..avcontrol_core.api import sample, step_count

        controls = tuple(controls or ())
        references = sum(1 for c in controls if c.encodes and not c.inert())
        # one bar: each reference's encoding, then each step (encoding a long reference on a CPU takes a while)
        bar = host.progress_bar(references + step_count(schedule, steps), desc="AVControl sampler")

        def tick(done, total):
            bar.update(1)
            host.check_interrupted()

        out = sample(
            model, conditioning, latent, guidance, steps=steps, schedule_name=schedule, seed=seed,
            controls=controls, loras=loras, fuse_loras=lora_mode == "fuse", cross_modal_weight=cross_modal_weight,
            on_step=tick, on_encode=tick, check_interrupted=host.check_interrupted,
        )
        return (out,)
