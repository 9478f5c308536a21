"""Cost of a canvas reference per sampler step: none, full size (k=1), 1/2 (k=2) and 1/4 (k=4) of the target's
size (AVControl's small-to-large grid), and an attention-weighted run (dense T x T mask) against weight 1 (plain
SDPA), measured in one run on the same model and inputs.

    .venv/bin/python bench/reference_downscale.py [--width 512 --height 512 --frames 49 --rounds 7]
    .venv/bin/python bench/reference_downscale.py --checkpoint ltx-2-19b-dev.safetensors --dtype bf16
    .venv/bin/python bench/reference_downscale.py --layers 8 --heads 32 --head-dim 128 --dtype bf16   # 19B widths

Runs the tiny model (random weights) unless --checkpoint is given; --layers/--heads/--head-dim build a random-weight
transformer of those dimensions directly on the device (audio stream: same heads, half the head width, as LTX-2 19B:
32 x 128 video, 32 x 64 audio, 48 layers), so no checkpoint is written. The reference is a random latent: the VAE is
not part of what is measured. Prints ms per step, tokens per stream, the k=4 / k=1 ratio (the paper reports 35-50%
faster at 4x), the weighted / unweighted ratio and the size of the dense mask, and peak memory per configuration
(CUDA: peak allocated; CPU: peak resident set above the level before the configuration, sampled every 2 ms).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avcontrol_core.backbone import load_model, parse_dtype  # noqa: E402
from avcontrol_core.items import ReferenceVideo, with_weight  # noqa: E402
from avcontrol_core.fidelity import align_with_current_source  # noqa: E402
from avcontrol_core.guidance import Guidance  # noqa: E402
from avcontrol_core.latents import empty_latent  # noqa: E402
from avcontrol_core.sampling import TextContext, sample, schedule  # noqa: E402
from avcontrol_core.tiny import random_init_, tiny_config, write_tiny_checkpoint  # noqa: E402


def context_dims(config: dict) -> tuple[int, int]:
    t = config["transformer"]
    if "caption_channels" in t and not t.get("caption_proj_before_connector"):
        return t["caption_channels"], t["caption_channels"]
    return (t["num_attention_heads"] * t["attention_head_dim"],
            t["audio_num_attention_heads"] * t["audio_attention_head_dim"])


def random_transformer(layers: int, heads: int, head_dim: int, device: torch.device, dtype: torch.dtype):
    """An LTX-2 (19B layout) transformer with the given widths and random weights, built on the device."""
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    config = tiny_config("ltx2")
    config["transformer"].update(
        num_layers=layers, num_attention_heads=heads, attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim, audio_num_attention_heads=heads,
        audio_attention_head_dim=head_dim // 2, audio_cross_attention_dim=heads * head_dim // 2,
    )
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config).to(dtype)  # cast on meta: never fp32 bytes on the device
    model = model.to_empty(device=device)
    with torch.no_grad():
        random_init_(model, seed=0)  # as tiny.spread_init_: unit-gain matrices, spread AdaLN and norms
    model = align_with_current_source(model.eval().requires_grad_(False))
    return model, config


class PeakMemory:
    """Peak memory of a block: CUDA peak allocated, or on the CPU the peak resident set above the starting level."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.start, self.top, self.running = self._rss(), self._rss(), True

        def poll():
            while self.running:
                self.top = max(self.top, self._rss())
                time.sleep(0.002)

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()
            self.peak = self.top - self.start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="an LTX-2 checkpoint (default: the tiny random-weight model)")
    p.add_argument("--layers", type=int, help="build a random transformer with this many layers (see --heads)")
    p.add_argument("--heads", type=int, default=32, help="attention heads of the random transformer")
    p.add_argument("--head-dim", type=int, default=128, help="video head width of the random transformer")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--steps", type=int, default=1, help="sampler steps per timed run")
    p.add_argument("--rounds", type=int, default=7,
                   help="timed runs per configuration, interleaved round-robin after a warm-up round; the fastest "
                        "counts (robust to other load on a shared machine)")
    p.add_argument("--weight", type=float, default=0.5, help="attention weight of the weighted runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32")
    args = p.parse_args()
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)

    if args.layers:
        transformer, config = random_transformer(args.layers, args.heads, args.head_dim, device, dtype)
        name, causal = f"random {args.layers} layers, {args.heads}x{args.head_dim} heads", True
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = args.checkpoint or write_tiny_checkpoint(Path(tmp) / "tiny.safetensors")
            model = load_model(ckpt, device, dtype)
        transformer, config, name = model.transformer, model.config, Path(str(ckpt)).name
        causal = model.causal_temporal_positions
    latent = empty_latent(args.width, args.height, args.frames, 24.0)
    f, h, w = latent.video.shape[2:]
    dv, da = context_dims(config)
    ctx = TextContext(torch.randn(1, 64, dv), torch.randn(1, 64, da))
    sigmas = schedule("ltx2", args.steps, f * h * w)

    def reference(k: int, weight: float = 1.0):
        item = ReferenceVideo(torch.randn(1, 128, f, h // k, w // k), downscale_factor=k)
        return with_weight(item, None if weight == 1.0 else torch.full((f * (h // k) * (w // k),), weight))

    def runner(refs: tuple):
        def run():
            sample(transformer, latent, ctx, None, Guidance(), sigmas, 0, causal_positions=causal, dtype=dtype,
                   device=device, video_items=refs)
            sync(device)
        return run

    weighted = f"k=1 weight {args.weight:g}"
    configs = {"no reference": (), "k=1 (full size)": (reference(1),), "k=2": (reference(2),),
               "k=4": (reference(4),), weighted: (reference(1, args.weight),),
               f"k=4 weight {args.weight:g}": (reference(4, args.weight),)}
    runs = {label: runner(refs) for label, refs in configs.items()}
    peaks = {}
    for label, run in runs.items():  # warm-up round, measuring peak memory
        with PeakMemory(device) as mem:
            run()
        peaks[label] = mem.peak
    times = dict.fromkeys(runs, math.inf)
    for _ in range(args.rounds):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            times[label] = min(times[label], (time.perf_counter() - start) / args.steps)

    n_video, n_audio = f * h * w, latent.audio.shape[2]
    print(f"model {name} on {device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} CPU threads; "
          f"target {args.width}x{args.height}x{args.frames}: {n_video} video + {n_audio} audio tokens; "
          f"{args.steps} step(s) per run, fastest of {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'configuration':<22}{'ref tokens':>11}{'video T':>9}{'ms/step':>11}{'vs none':>9}{'peak MB':>10}")
    for label, refs in configs.items():
        extra = sum(r.latent[0, 0].numel() for r in refs)
        print(f"{label:<22}{extra:>11}{n_video + extra:>9}{times[label] * 1e3:>11.1f}"
              f"{times[label] / times['no reference']:>9.2f}{peaks[label] / 2**20:>10.0f}")
    none, k1, k2, k4 = (times[k] for k in ("no reference", "k=1 (full size)", "k=2", "k=4"))
    print(f"k=4 / k=1 step time: {k4 / k1:.3f} ({(1 - k4 / k1) * 100:.0f}% faster; paper: 35-50% at 4x); "
          f"k=2 / k=1: {k2 / k1:.3f}; reference overhead (step minus no-reference step) k=4 / k=1: "
          f"{(k4 - none) / (k1 - none):.3f}")
    total = 2 * n_video
    print(f"weighted (weight {args.weight:g}, dense mask) / weight 1 (plain SDPA) at k=1: {times[weighted] / k1:.3f}; "
          f"dense mask {total}x{total} float32 = {total * total * 4 / 2**20:.1f} MB per pass, plus its additive bias "
          f"in the model dtype")
    print(f"peak RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
