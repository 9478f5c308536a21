"""GPU speed and memory of the LTX-2 transformer at the real 19B configuration, random weights, in one run.

    .venv/bin/python bench/gpu_memory_speed.py                 # H100-class GPU: 19B, 768x512, 121 frames + audio
    .venv/bin/python bench/gpu_memory_speed.py --tiny          # any machine (CPU too): tiny config, small size

No checkpoint and no text encoder: the transformer is built from ltx-core's own defaults (LTXModel: 48 layers,
32 heads x 128, audio 32 x 64, cross-attention 4096 / 2048, Gemma-3 width 3840 captions) with random weights
drawn on the device, and the text context is random. Prints seconds per step, peak GPU memory and achieved
TFLOP/s for:

  official   ltx-core's X0Model + EulerDiffusionStep on the same Modality inputs (the official denoising loop)
  ours       our sampler (avcontrol_core.sampling.sample), everything resident, bf16
  +compile   (with --compile) ours with each block through torch.compile (inductor); compile time printed
  swap       ours with block swap under --budget-gb (24 GB), bf16
  fp8 compute  ours with weights "fp8_scaled": block Linears in e4m3 with per-tensor scales, multiplied in fp8 by
             torch._scaled_mm (needs CUDA with compute capability >= 8.9; skipped with the reason elsewhere). Goal at
             19B: <= 0.8x the "ours" step, final latent within 0.1 relative L2 of it (fp8 storage: 5.3e-2)
  fp8        ours with fp8 weight storage (ltx-core's fp8 cast), everything resident
  fp8+swap   ours with fp8 storage and block swap under --fp8-budget-gb

Guidance is off (one pass per step) in every row, so the rows compare the same work. TFLOP/s = FLOPs of one
transformer forward (counted by torch.utils.flop_counter on these inputs) / seconds per step, against the card's
dense bf16 peak (--peak-tflops to override the table).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_core.components.diffusion_steps import EulerDiffusionStep  # noqa: E402
from ltx_core.guidance.perturbations import BatchedPerturbationConfig  # noqa: E402
from ltx_core.model.transformer.modality import Modality  # noqa: E402
from ltx_core.model.transformer.model import LTXModel, X0Model  # noqa: E402
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator  # noqa: E402
from ltx_core.text_encoders.gemma.config import Gemma3TextConfig  # noqa: E402

from avcontrol_core import fp8, kernels, tiny  # noqa: E402
from avcontrol_core.fidelity import align_with_current_source  # noqa: E402
from avcontrol_core.guidance import Guidance  # noqa: E402
from avcontrol_core.latents import audio_state, empty_latent, unpatchify, video_state  # noqa: E402
from avcontrol_core.offload import BlockSwap, block_bytes, fixed_bytes, free_device_bytes, run_activation_bytes  # noqa: E402
from avcontrol_core.offload_plan import GIB, plan_block_swap  # noqa: E402
from avcontrol_core.sampling import Denoiser, TextContext, draw_noise, noised, sample, schedule  # noqa: E402

# dense bf16 tensor-core peak, TFLOP/s (vendor datasheets, without sparsity)
PEAK_BF16 = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "H20": 148.0, "A100": 312.0,
             "L40S": 362.1, "L4": 121.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2, "B200": 2250.0}
REAL_DIMS = ("num_attention_heads", "attention_head_dim", "cross_attention_dim", "audio_num_attention_heads",
             "audio_attention_head_dim", "audio_cross_attention_dim", "num_layers")


def real_config() -> dict:
    """The LTX-2 19B transformer config: ltx-core's LTXModel defaults for the dimensions, Gemma 3's width for the
    captions, the released checkpoints' fixed values (from the tiny config, which mirrors their metadata)."""
    config = tiny.tiny_config("ltx2")
    defaults = {k: p.default for k, p in inspect.signature(LTXModel.__init__).parameters.items()}
    config["transformer"].update({k: defaults[k] for k in REAL_DIMS})
    config["transformer"]["caption_channels"] = Gemma3TextConfig().hidden_size
    return config


def tiny_bench_config(layers: int) -> dict:
    config = tiny.tiny_config("ltx2")
    config["transformer"]["num_layers"] = layers
    return config


@torch.no_grad()
def build_transformer(config: dict, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config).to(dtype)  # cast on meta: never 2x the bytes on the GPU
    model = model.to_empty(device=device)
    tiny.random_init_(model, seed=0)
    model = align_with_current_source(model.eval().requires_grad_(False))
    name, kernel = kernels.resolve_attention("auto", device)
    kernels.set_attention(model, kernel)
    return model, name


def to_fp8(transformer: torch.nn.Module) -> torch.nn.Module:
    """ltx-core's fp8 cast applied in place: the blocks' Linear weights become float8_e4m3fn, Linears upcast."""
    for name, p in transformer.named_parameters():
        p.data = kernels.fp8_storage(name, p.data)
    return kernels.upcast_for_compute(transformer)


def fp8_compute_row(transformer: torch.nn.Module, device: torch.device, run) -> str | None:
    """Run `run()` with the blocks' fp8-cast Linears replaced by fp8.Fp8ScaledLinear (quantised from the bf16
    weights on the device), the bf16 originals parked on the host meanwhile and put back after. Returns why it was
    skipped, or None."""
    problem = fp8.capability_problem(device)
    if problem is not None:
        return f"needs a CUDA GPU with compute capability >= 8.9 and torch._scaled_mm; {problem}"
    names = sorted(n.removesuffix(".weight") for n, p in transformer.named_parameters()
                   if n.endswith(".weight") and p.dim() == 2 and kernels.fp8_storage(n, p.data[:1, :1]).dtype == kernels.FP8)
    originals = {n: transformer.get_submodule(n) for n in names}
    fallbacks = fp8.convert(transformer, names, torch.bfloat16)
    for layer in originals.values():
        layer.to("cpu")
    if fallbacks:
        print(f"  fp8 compute: {len(fallbacks)} of {len(names)} Linears dequantise ({fallbacks[0]}, ...)")
    try:
        run()
    finally:
        for name, layer in originals.items():
            parent, _, leaf = name.rpartition(".")
            setattr(transformer.get_submodule(parent), leaf, layer.to(device))
    return None


def bring_home(transformer: torch.nn.Module, device: torch.device) -> None:
    """Everything resident again after a block-swap row (and the packed host copies dropped)."""
    transformer.to(device)
    for block in transformer.transformer_blocks:
        block.__dict__.pop("_avc_packed", None)
    gc.collect()


def size(n: float) -> str:
    return f"{n / GIB:.2f} GB" if n >= GIB / 10 else f"{n / 2**20:.2f} MB"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


class StepClock:
    """Seconds per step, the first `warmup` steps left out."""

    def __init__(self, device: torch.device, warmup: int = 1):
        self.device, self.warmup, self.stamps = device, warmup, []

    def start(self) -> None:
        sync(self.device)
        self.stamps = [time.perf_counter()]

    def __call__(self, *_) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def per_step(self) -> float:
        steps = self.stamps[self.warmup:]
        return (steps[-1] - steps[0]) / (len(steps) - 1)


def ours(transformer, latent, ctx, sigmas, dtype, device, first_step: list | None = None):
    clock = StepClock(device)
    clock.start()
    out = sample(transformer, latent, ctx, None, Guidance(), sigmas, 0, causal_positions=True, dtype=dtype,
                 device=device, on_step=clock)
    if first_step is not None:
        first_step.append(clock.stamps[1] - clock.stamps[0])
    return clock.per_step(), out.video


@torch.inference_mode()
def official(transformer, latent, ctx, sigmas, dtype, device):
    """ltx-core's denoising loop: X0Model turns velocity into the denoised latent with each token's timestep, and
    EulerDiffusionStep advances the sample; the same states, noise and context as ours."""
    x0_model, stepper = X0Model(transformer), EulerDiffusionStep()
    v_state, a_state = video_state(latent, True, device), audio_state(latent, device)
    generator = torch.Generator("cpu").manual_seed(0)
    noise_v, noise_a = draw_noise((v_state, a_state), (v_state.latent.shape[1], a_state.latent.shape[1]), generator)
    xv = noised(v_state, noise_v, float(sigmas[0]))
    xa = noised(a_state, noise_a, float(sigmas[0]))
    vctx, actx = ctx.video.to(device, dtype), ctx.audio.to(device, dtype)
    sigmas_dev = sigmas.to(device)
    none = BatchedPerturbationConfig.empty(1)
    clock = StepClock(device)
    clock.start()
    for i in range(len(sigmas) - 1):
        s = sigmas_dev[i:i + 1]

        def modality(x, state, context):
            return Modality(latent=x.to(dtype), sigma=s, timesteps=state.denoise_mask * s,  # (B, T, 1) as ltx-pipelines
                            positions=state.positions, context=context)

        dv, da = x0_model(video=modality(xv, v_state, vctx), audio=modality(xa, a_state, actx), perturbations=none)
        xv, xa = stepper.step(xv, dv, sigmas_dev, i), stepper.step(xa, da, sigmas_dev, i)
        clock()
    return clock.per_step(), unpatchify(latent, xv, xa).video


def forward_flops(transformer, latent, ctx, dtype, device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    v_state, a_state = video_state(latent, True, device), audio_state(latent, device)
    d = Denoiser(transformer, Guidance(), ctx, None, 1, dtype, device)
    s = torch.tensor([0.5], device=device)
    video = d._modality(torch.randn_like(v_state.latent), v_state, s, d.video_context)
    audio = d._modality(torch.randn_like(a_state.latent), a_state, s, d.audio_context)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        transformer(video=video, audio=audio, perturbations=d.perturbations)
    return counter.get_total_flops()


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, "CPU"
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key in name:
            return PEAK_BF16[key], name
    return None, name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny config and size: a check that runs anywhere")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=4, help="timed steps per row (one more runs first, untimed)")
    p.add_argument("--budget-gb", type=float, help="block swap budget, bf16 row (default 24; --tiny: half the blocks)")
    p.add_argument("--fp8-budget-gb", type=float, help="block swap budget, fp8 row (default 12; --tiny: half)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not in the table")
    p.add_argument("--compile", action="store_true", help="add a row with per-block torch.compile (inductor)")
    args = p.parse_args()
    device = torch.device(args.device)
    width, height, frames = (args.width or (64 if args.tiny else 768), args.height or (64 if args.tiny else 512),
                             args.frames or (17 if args.tiny else 121))
    dtype = torch.bfloat16
    config = tiny_bench_config(6) if args.tiny else real_config()
    latent = empty_latent(width, height, frames, args.fps)
    t = config["transformer"]
    g = torch.Generator().manual_seed(1)
    caption = t.get("caption_channels")
    ctx = TextContext(torch.randn(1, 1024 if not args.tiny else 64, caption, generator=g),
                      torch.randn(1, 1024 if not args.tiny else 64, caption, generator=g))
    sigmas = schedule("ltx2", args.steps + 1, int(latent.video[0, 0].numel()))

    transformer, attention = build_transformer(config, device, dtype)
    blocks, fixed = block_bytes(transformer), fixed_bytes(transformer)
    act = run_activation_bytes(config, latent, 1, dtype)
    tokens = (int(latent.video[0, 0].numel()), int(latent.audio.shape[2]))
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"attention {attention}")
    print(f"transformer {sum(p.numel() for p in transformer.parameters()) / 1e9:.4g}B params, {len(blocks)} blocks of "
          f"{size(blocks[0])} + {size(fixed)} fixed (bf16); {width}x{height}x{frames} @ {args.fps:g} fps "
          f"= {tokens[0]} video + {tokens[1]} audio tokens; activation estimate {size(act)}")
    flops = forward_flops(transformer, latent, ctx, dtype, device)
    peak_tf, card = peak_tflops(device, args.peak_tflops)
    print(f"one forward: {flops / 1e12:.4g} TFLOP; bf16 peak {'%.0f TFLOP/s (%s)' % (peak_tf, card) if peak_tf else 'unknown (' + card + ')'}")

    def half_budget(bytes_per_block: list[int]) -> float:
        return (fixed + act + (len(bytes_per_block) // 2 + 2) * max(bytes_per_block)) / GIB

    rows = []

    def row(name: str, fn, plan=None):
        reset_peak(device)
        seconds, out = fn()
        rows.append((name, seconds, peak(device), plan, out.float().cpu()))
        memory = f"{rows[-1][2] / GIB:.2f} GB peak" if rows[-1][2] is not None else "peak n/a"
        print(f"  {name}: {seconds:.4f} s/step, {memory}", flush=True)  # kept if a later row runs out of time

    row("official", lambda: official(transformer, latent, ctx, sigmas, dtype, device))
    row("ours", lambda: ours(transformer, latent, ctx, sigmas, dtype, device))
    if args.compile:  # per-block inductor compile: the first (untimed) step compiles, the rest run compiled
        first = []
        kernels.compile_blocks(transformer)
        row("ours+compile", lambda: ours(transformer, latent, ctx, sigmas, dtype, device, first))
        kernels.uncompile_blocks(transformer)
        print(f"  compile: first step {first[0]:.1f} s (compiling) against {rows[-1][1]:.4f} s/step after")

    budget = args.budget_gb or (half_budget(blocks) if args.tiny else 24.0)
    plan = plan_block_swap(blocks, fixed, int(budget * GIB), free_device_bytes(device) + sum(blocks) + fixed, act)
    swap = BlockSwap(transformer, plan, device).install()
    row(f"swap {budget:.4g} GB", lambda: ours(transformer, latent, ctx, sigmas, dtype, device), plan)
    swap.remove()
    bring_home(transformer, device)

    skipped = fp8_compute_row(transformer, device,
                              lambda: row("fp8 compute", lambda: ours(transformer, latent, ctx, sigmas, dtype, device)))
    if skipped:
        print(f"  fp8 compute: skipped, {skipped}")

    transformer = to_fp8(transformer)
    blocks8 = block_bytes(transformer)
    row("fp8", lambda: ours(transformer, latent, ctx, sigmas, dtype, device))
    budget8 = args.fp8_budget_gb or (half_budget(blocks8) if args.tiny else 12.0)
    plan8 = plan_block_swap(blocks8, fixed, int(budget8 * GIB), free_device_bytes(device) + sum(blocks8) + fixed, act)
    swap = BlockSwap(transformer, plan8, device).install()
    row(f"fp8+swap {budget8:.4g} GB", lambda: ours(transformer, latent, ctx, sigmas, dtype, device), plan8)
    swap.remove()

    official_s, reference = rows[0][1], rows[1][4]
    print(f"\n{'row':<22}{'s/step':>9}{'vs official':>13}{'peak GPU GB':>13}{'TFLOP/s':>10}{'% of peak':>11}"
          f"{'rel diff':>10}  placement")
    for name, seconds, memory, plan, out in rows:
        diff = f"{float((out - reference).norm() / reference.norm()):.1e}"
        tflops = flops / seconds / 1e12
        share = f"{100 * tflops / peak_tf:.1f}" if peak_tf else "n/a"
        mem = f"{memory / GIB:.2f}" if memory is not None else "n/a"
        where = plan.describe() if plan is not None else "all resident"
        print(f"{name:<22}{seconds:>9.4f}{seconds / official_s:>13.3f}{mem:>13}{tflops:>10.4g}{share:>11}"
              f"{diff:>10}  {where}")
    by_name = {r[0]: r for r in rows}
    if "fp8 compute" in by_name:
        c, b = by_name["fp8 compute"], by_name["ours"]
        print(f"\nfp8 compute / ours step time: {c[1] / b[1]:.3f} (goal <= 0.8 at 19B), final latent rel diff "
              f"{float((c[4] - b[4]).norm() / b[4].norm()):.1e} (bound 0.1)")
    elif skipped:
        print(f"\nfp8 compute: not run ({skipped})")
    print("\nrel diff: relative L2 distance of the final video latent to 'ours' (same seed; official differs by its "
          "bf16 rounding of the denoised latent, fp8 by weight rounding; swap must be 0)")
    if device.type != "cuda":
        print("CPU run: peak GPU memory and % of peak are not measured; the figures that matter need a GPU.")


if __name__ == "__main__":
    main()
