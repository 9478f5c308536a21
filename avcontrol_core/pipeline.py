"""The whole path as plain functions: validate, schedule, sample, decode, write. Used by the nodes and the CLI."""

from __future__ import annotations

from collections.abc import Callable

import torch
from ltx_core.conditioning.types.attention_strength_wrapper import ConditioningItemAttentionStrengthWrapper

from .backbone import AVModel
from .conditioning import PromptPair
from .controls import ControlPlan, encode_controls, plan_controls
from .errors import InputError
from .guidance import Guidance
from .latents import AVLatent
from .lora import LoraStack
from .offload import activation_bytes, sampling_hints
from .residency import memory_guard
from .patches import CrossModalWeightPatch, LoraPatch
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
    controls: tuple = (),
    loras: LoraStack | None = None,
    fuse_loras: bool = False,
    cross_modal_weight: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    on_encode: Callable[[int, int], None] | None = None,
    check_interrupted: Callable[[], None] | None = None,
) -> AVLatent:
    """Check every input first (cheap; the controls once, in plan_controls), then encode the controls into
    conditioning items (`on_encode(done, total)` after each), apply the LoRA stack (the controls' LoRAs after `loras`)
    for the duration of the run, and denoise `latent`. Returns the clean latent. `cross_modal_weight`: the pack's
    extension (patches.CrossModalWeightPatch); off, a reference weight acts as in Lightricks' source.

    With an offload budget the transformer is placed by its block-swap plan first. Running out of GPU memory raises
    residency.GPUMemoryError naming the settings to lower, after the model released what it held on the GPU."""
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
    plan = plan_controls(controls, latent, loras)
    size = f"sampling {latent.width}x{latent.height}x{latent.frames} with its audio"
    with memory_guard(size, lambda: sampling_hints(model.options, latent, fuse_loras, model.plan), model):
        return _denoise(model, prompts, latent, guidance, sigmas, seed, plan, fuse_loras, cross_modal_weight,
                        on_step, on_encode, check_interrupted)


def _denoise(model, prompts, latent, guidance, sigmas, seed, plan: ControlPlan, fuse_loras, cross_modal_weight,
             on_step, on_encode, check_interrupted) -> AVLatent:
    """The device work of a run in a frame of its own, below the out-of-memory guard: when it fails, the guard clears
    this frame and those under it (references, the placed transformer, activations) before freeing memory."""
    video_items, audio_items = encode_controls(plan, model, latent, on_encode)
    rows = latent.batch * len(guidance.passes())
    video = latent.video[0, 0].numel() + sum(_tokens(i) for i in video_items)
    audio = latent.audio.shape[2] + sum(_tokens(i) for i in audio_items)
    dense = any(isinstance(i, ConditioningItemAttentionStrengthWrapper) for i in (*video_items, *audio_items))
    size = torch.empty((), dtype=model.dtype).element_size()
    transformer = model.transformer_for_run(
        activation_bytes(model.config["transformer"], video, audio, rows, size, dense_mask=dense))
    patches = [LoraPatch(plan.loras, fuse=fuse_loras)]
    if cross_modal_weight:
        patches.append(CrossModalWeightPatch())
    return sample(
        transformer, latent, prompts.positive, prompts.negative, guidance, sigmas, seed,
        causal_positions=model.causal_temporal_positions, dtype=model.dtype, device=model.device,
        video_items=video_items, audio_items=audio_items, patches=patches, on_step=on_step,
        check_interrupted=check_interrupted,
    )


def _tokens(item) -> int:
    """How many tokens an item appends (its latent's grid; a wrapper's inner item)."""
    item = getattr(item, "conditioning", item)
    latent = getattr(item, "latent", None)
    latent = getattr(item, "keyframes", None) if latent is None else latent
    if latent is None:
        return 0
    return int(latent[0, 0].numel()) if latent.ndim == 5 else int(latent.shape[2])
