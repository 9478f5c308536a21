"""Per-step cost of our sampler loop against a bare ltx-core transformer forward, measured in one run.

    .venv/bin/python bench/sampler_overhead.py [--width 512 --height 320 --frames 49 --steps 10 --device cpu]

Prints seconds per step (fastest of --rounds interleaved rounds) of: (a) a bare `LTXModel.forward` on the same inputs, (b) a step of our loop with guidance off (the run's one-off setup, timed with a 1-step run, taken out),
(c) our loop with CFG + STG + cross-modal guidance on both streams; the ratio (b)/(a) (target <= 1.05), and peak RSS.
Runs on the tiny model (random weights) unless --checkpoint is given.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avcontrol_core.backbone import load_model  # noqa: E402
from avcontrol_core.guidance import Guidance, StreamGuidance  # noqa: E402
from avcontrol_core.latents import audio_state, empty_latent, video_state  # noqa: E402
from avcontrol_core.sampling import Denoiser, TextContext, sample, schedule  # noqa: E402
from avcontrol_core.tiny import write_tiny_checkpoint  # noqa: E402


def context_dims(config: dict) -> tuple[int, int]:
    t = config["transformer"]
    if "caption_channels" in t and not t.get("caption_proj_before_connector"):
        return t["caption_channels"], t["caption_channels"]
    return t["num_attention_heads"] * t["attention_head_dim"], t["audio_num_attention_heads"] * t["audio_attention_head_dim"]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the fastest of each is reported")
    args = p.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or write_tiny_checkpoint(Path(tmp) / "tiny.safetensors")
        model = load_model(ckpt, args.device, args.dtype)
    device, dtype = model.device, model.dtype
    latent = empty_latent(args.width, args.height, args.frames, 24.0)
    dv, da = context_dims(model.config)
    ctx = TextContext(torch.randn(1, 64, dv), torch.randn(1, 64, da))
    sigmas = schedule("ltx2", args.steps, int(latent.video[0, 0].numel()))
    causal = model.causal_temporal_positions

    # (a) bare forward: the transformer call alone, inputs prepared once
    v_state, a_state = video_state(latent, causal, device), audio_state(latent, device)
    denoise = Denoiser(model.transformer, Guidance(), ctx, None, 1, dtype, device)
    sigma = torch.tensor([0.5], device=device)
    video = denoise._modality(torch.randn_like(v_state.latent), v_state, sigma, denoise.video_context)
    audio = denoise._modality(torch.randn_like(a_state.latent), a_state, sigma, denoise.audio_context)

    def bare():
        with torch.inference_mode():
            model.transformer(video=video, audio=audio, perturbations=denoise.perturbations)

    def loop(guidance, schedule_):
        return lambda: sample(model.transformer, latent, ctx, ctx, guidance, schedule_, 0,
                              causal_positions=causal, dtype=dtype, device=device)

    one_step = sigmas[[0, -1]]

    def per_step(guidance) -> float:
        """A step's cost without the run's one-off setup: (run of N steps - run of 1 step) / (N - 1)."""
        return (timed(loop(guidance, sigmas), 1) - timed(loop(guidance, one_step), 1)) / (args.steps - 1)

    full = Guidance(StreamGuidance(cfg=3.0, stg=1.0, stg_blocks=(0,), modality=3.0),
                    StreamGuidance(cfg=7.0, stg=1.0, stg_blocks=(0,), modality=3.0))
    # interleaved rounds, fastest of each: a shared machine's load hits all three alike
    t_bare = t_off = t_on = float("inf")
    for _ in range(args.rounds):
        t_bare = min(t_bare, timed(bare, args.steps))
        t_off = min(t_off, per_step(Guidance()))
        t_on = min(t_on, per_step(full))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = v_state.latent.shape[1], a_state.latent.shape[1]
    print(f"model {Path(str(ckpt)).name} on {device} {dtype}; {args.width}x{args.height}x{args.frames}: "
          f"{tokens[0]} video + {tokens[1]} audio tokens, {args.steps} steps")
    print(f"bare ltx-core forward        {t_bare * 1e3:8.2f} ms/step")
    print(f"our loop, guidance off       {t_off * 1e3:8.2f} ms/step   overhead ratio {t_off / t_bare:.3f} (target <= 1.05)")
    print(f"our loop, cfg+stg+modality   {t_on * 1e3:8.2f} ms/step   ratio {t_on / t_bare:.3f} (4 passes batched)")
    print(f"peak RSS {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
