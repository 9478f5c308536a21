"""Command line: a prompt becomes an mp4 with synchronized sound, without ComfyUI.

    python -m avcontrol_core                       # built-in tiny model (random weights), prints the mp4 path
    python -m avcontrol_core --checkpoint ltx-2-19b-dev.safetensors --gemma gemma_3_12B_it.safetensors \
        --prompt "..." --width 768 --height 512 --frames 121 --steps 40 --dtype bf16
    python -m avcontrol_core ... --upscaler ltx-2-spatial-upscaler-x2-1.0.safetensors \
        --distilled-lora ltx-2-19b-distilled-lora-384.safetensors        # two-stage: half size, upscale, refine
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_PROMPT = "A red kite dances over a windy beach; waves crash and gulls call."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m avcontrol_core", description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="what to see and hear")
    p.add_argument("--negative", default="worst quality, blurry, distorted", help="what to avoid (text CFG)")
    p.add_argument("--checkpoint", help="LTX-2 .safetensors; default: the built-in tiny model")
    p.add_argument("--gemma", help="Gemma 3 folder or single file; default: the built-in tiny Gemma")
    p.add_argument("--width", type=int, default=256, help="multiple of 32")
    p.add_argument("--height", type=int, default=160, help="multiple of 32")
    p.add_argument("--frames", type=int, default=25, help="8n+1")
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--schedule", default="ltx2", choices=["ltx2", "distilled", "distilled_stage2"])
    p.add_argument("--cfg", type=float, default=3.0, help="video text CFG (audio uses --audio-cfg)")
    p.add_argument("--audio-cfg", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", help="first frame (image-to-video)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default=None, help="cpu or cuda; default: cuda when available")
    p.add_argument("--upscaler", help="two-stage inference: a spatial latent upsampler file ('tiny' with the built-in "
                   "model); stage one samples at half --width/--height, stage two refines the upscaled latent")
    p.add_argument("--distilled-lora", help="two-stage: the distilled LoRA applied in stage two")
    p.add_argument("--out", default="output", help="output folder")
    p.add_argument("--prefix", default="avcontrol/cli", help="file name prefix (a counter is appended)")
    return p


def _tiny_paths() -> dict[str, Path]:
    from .tiny import write_tiny_models

    root = Path(os.environ.get("AVCONTROL_CACHE", Path.home() / ".cache" / "avcontrol")) / "tiny-models"
    return write_tiny_models(root)


def main(argv: list[str] | None = None) -> Path:
    args = _parser().parse_args(argv)
    from . import api
    from .dtypes import auto_dtype

    api.empty_latent(args.width, args.height, args.frames, args.fps)  # validates before any loading
    if args.checkpoint and not args.gemma:
        raise SystemExit("--gemma is required with --checkpoint")
    if args.distilled_lora and not args.upscaler:
        raise SystemExit("--distilled-lora is stage two's LoRA: it needs --upscaler (two-stage inference)")
    if args.upscaler == "tiny" and args.checkpoint:
        raise SystemExit("--upscaler tiny goes with the built-in tiny model; with --checkpoint name the upsampler file")
    for flag in ("upscaler", "distilled_lora"):
        value = getattr(args, flag)
        if value and value != "tiny" and not Path(value).is_file():
            raise SystemExit(f"--{flag.replace('_', '-')}: file not found: {value}")
    tiny = None if args.checkpoint else _tiny_paths()
    stage_two = _load_stage_two(args, tiny) if args.upscaler else None  # the files checked before any sampling
    width, height = stage_two[2] if stage_two else (args.width, args.height)
    latent = api.empty_latent(width, height, args.frames, args.fps)
    device = api.resolve_device(args.device or "auto")
    dtype = auto_dtype(device) if args.dtype == "auto" else args.dtype
    ckpt, gemma = (Path(args.checkpoint), Path(args.gemma)) if args.checkpoint else (tiny["checkpoint_ltx2"],
                                                                                     tiny["gemma"])
    model = api.load_model(ckpt, device, dtype)
    encoder = api.load_text_encoder(gemma, model, device, dtype)
    prompts = api.encode_prompts(encoder, args.prompt, args.negative)
    api.unload(encoder)  # one run: Gemma's memory goes back before sampling
    del encoder
    image = None
    if args.image:
        image = api.load_image(args.image)
        latent = api.condition_first_frame(latent, api.encode_first_frame(model, image, latent.width, latent.height),
                                           1.0)
    guidance = api.Guidance(api.StreamGuidance(cfg=args.cfg), api.StreamGuidance(cfg=args.audio_cfg))
    out = _sample(model, prompts, latent, guidance, args.steps, args.schedule, args.seed, "sampling")
    if stage_two:
        out = _stage_two(model, prompts, out, stage_two, args.seed, image)
    model.release("transformer")
    frames, audio = api.decode_video(model, out), api.decode_audio(model, out)
    path = api.unique_output_path(args.out, args.prefix, ".mp4")
    api.write_mp4(path, frames, args.fps, audio)
    print(path.resolve())
    return path


def _sample(model, prompts, latent, guidance, steps: int, schedule: str, seed: int, desc: str, loras=None):
    """api.sample with the host's progress bar (a tqdm bar here) and its cancel check."""
    from . import api

    host = api.current_host()
    with host.progress(api.step_count(schedule, steps), desc) as bar:
        return api.sample(model, prompts, latent, guidance, steps=steps, schedule_name=schedule, seed=seed,
                          loras=loras, on_step=lambda done, total: bar.update(1),
                          check_interrupted=host.check_interrupted)


def _load_stage_two(args, tiny: dict | None):
    """(upsampler, distilled LoRA stack or None, stage one's (width, height)), read and checked before any sampling."""
    from . import api

    upsampler = api.load_upsampler(tiny["upscaler"] if args.upscaler == "tiny" else args.upscaler)
    try:
        size = api.stage_one_size(args.width, args.height, upsampler)
    except api.InputError as err:
        raise SystemExit(f"--{err}") from None
    loras = api.LoraStack().add(api.load_lora(args.distilled_lora), 1.0) if args.distilled_lora else None
    return upsampler, loras, size


def _stage_two(model, prompts, latent, stage_two, seed: int, image):
    """Upscale stage one's latent (its sound kept) and refine it on the 3-step distilled_stage2 schedule."""
    from . import api

    upsampler, loras, _ = stage_two
    up = api.upscale(model, latent, upsampler)
    if image is not None:
        up = api.condition_first_frame(up, api.encode_first_frame(model, image, up.width, up.height), 1.0)
    return _sample(model, prompts, up, None, 3, "distilled_stage2", seed, "stage two", loras=loras)


if __name__ == "__main__":
    main()
