"""The whole path as plain functions: validate, schedule, sample, decode, write. Used by the nodes and the CLI."""

from __future__ import annotations

from collections.abc import Callable

from .backbone import AVModel
from .conditioning import PromptPair
from .controls import ControlStack, build_references, check_controls, lora_stack
from .errors import InputError
from .guidance import Guidance
from .latents import AVLatent
from .lora import LoraStack, apply_loras
from .offload import oom_guard, run_activation_bytes, sampling_hints
from .sampling import REFINING, SCHEDULES, sample, schedule


def run_sampler(
    model: AVModel,
    prompts: PromptPair,
    latent: AVLatent,
    guidance: Guidance | None,
    *,
    steps: int,
    schedule_name: str,
    seed: int,
    controls: ControlStack = (),
    loras: LoraStack | None = None,
    fuse_loras: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    check_interrupted: Callable[[], None] | None = None,
) -> AVLatent:
    """Check every input first (cheap), then encode the controls' references, apply the LoRA stack (the controls'
    LoRAs after `loras`) for the duration of the run, and denoise `latent`. Returns the clean latent.

    With an offload budget the transformer is placed by its block-swap plan first. Running out of GPU memory raises
    offload.GPUMemoryError naming the settings to lower, after the model released what it held on the GPU."""
    guidance = guidance or Guidance()
    if schedule_name not in SCHEDULES:
        raise InputError(f"schedule must be one of {SCHEDULES}, got {schedule_name!r}")
    guidance.check_blocks(int(model.config["transformer"]["num_layers"]))
    if "uncond" in guidance.passes() and prompts.negative is None:
        raise InputError("negative prompt is required when cfg is not 1 (text CFG needs an unconditional pass)")
    sigmas = schedule(schedule_name, steps, int(latent.video[0, 0].numel()))
    if schedule_name in REFINING and not bool((latent.video * latent.video_mask).any()):
        raise InputError(f"schedule '{schedule_name}' starts at sigma {float(sigmas[0]):g}: it refines a latent "
                         f"(stage two: connect AVControl Latent Upscale), but this latent is empty; use 'ltx2' or "
                         f"'distilled' to generate from noise")
    if schedule_name not in REFINING and latent.upscaled:
        raise InputError(f"schedule must be one of {REFINING} for an upscaled latent (stage two refines it), got "
                         f"{schedule_name!r}, which starts from pure noise and would discard stage one")
    stack = lora_stack(controls, loras)
    factor = stack.reference_downscale_factor  # two LoRAs of one run declaring different factors: an error
    check_controls(controls, latent, factor)
    size = f"sampling {latent.width}x{latent.height}x{latent.frames} with its audio"
    with oom_guard(model, size, lambda: sampling_hints(model.options, latent, fuse_loras, model.plan)):
        return _denoise(model, prompts, latent, guidance, sigmas, seed, controls, stack, factor, fuse_loras,
                        on_step, check_interrupted)


def _denoise(model, prompts, latent, guidance, sigmas, seed, controls, stack, factor, fuse_loras, on_step,
             check_interrupted) -> AVLatent:
    """The device work of a run in a frame of its own, below the out-of-memory guard: when it fails, the guard clears
    this frame and those under it (references, the placed transformer, activations) before freeing memory."""
    references = build_references(model, latent, controls, factor)
    rows = latent.batch * len(guidance.passes())
    transformer = model.transformer_for_run(run_activation_bytes(model.config, latent, rows, model.dtype, references))
    with apply_loras(transformer, stack, fuse=fuse_loras):
        return sample(
            transformer, latent, prompts.positive, prompts.negative, guidance, sigmas, seed,
            causal_positions=model.causal_temporal_positions, dtype=model.dtype, device=model.device,
            references=references, on_step=on_step, check_interrupted=check_interrupted,
        )
