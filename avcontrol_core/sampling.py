"""Sigma schedules and the flow-matching sampler loop over the joint audio+video latent.

Our own loop (ltx-pipelines' pipelines call torch.cuda.synchronize() unconditionally and cannot run on a CPU):
small functions over tensors, seeded noise drawn on the CPU so a seed means the same clip on any device, a progress
callback and an interruption check every step. Sampler state is kept in float32; the transformer runs in its dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.schedulers import MAX_SHIFT_ANCHOR, LTX2Scheduler
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer.modality import Modality
from ltx_core.types import LatentState
from ltx_core.utils import to_denoised

from .errors import InputError, require
from .guidance import Guidance
from .items import apply_items
from .latents import AVLatent, audio_state, audio_tools, unpatchify, video_state, video_tools
from .patches import RunContext, apply_patches

# Lightricks' distilled schedules (ltx-pipelines constants): 8 steps, and the 3-step refinement of stage two.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
DISTILLED_STAGE2_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)
SCHEDULES = ("ltx2", "ltx2_tokens", "distilled", "distilled_stage2")
REFINING = ("distilled_stage2",)  # start below sigma 1: they refine a given latent (stage two), not noise


@dataclass(frozen=True)
class TextContext:
    """Prompt embeddings as the transformer reads them: video (B, L, Dv) and audio (B, L, Da) contexts."""

    video: torch.Tensor
    audio: torch.Tensor


def schedule(kind: str, steps: int, video_tokens: int) -> torch.Tensor:
    """Sigmas from 1 (noise) to 0. 'ltx2': LTX-2's shifted, stretched schedule with `steps` steps, shifted for 4096
    tokens as Lightricks' one- and two-stage pipelines do whatever the size; 'ltx2_tokens': the same shifted by the
    clip's own `video_tokens` (the rule of Lightricks' HQ two-stage pipeline). 'distilled' / 'distilled_stage2': the
    fixed schedules of the distilled model (their step count is fixed)."""
    require(kind in SCHEDULES, "schedule", f"one of {SCHEDULES}", kind)
    if kind == "distilled":
        return torch.tensor(DISTILLED_SIGMAS)
    if kind == "distilled_stage2":
        return torch.tensor(DISTILLED_STAGE2_SIGMAS)
    require(isinstance(steps, int) and 1 <= steps <= 1000, "steps", "an integer between 1 and 1000", steps)
    # one step: nothing to stretch (ltx-core's stretch divides 0 by 0 and returns a NaN sigma)
    tokens = video_tokens if kind == "ltx2_tokens" else MAX_SHIFT_ANCHOR
    return LTX2Scheduler().execute(steps=steps, default_number_of_tokens=tokens, stretch=steps > 1)


def step_count(kind: str, steps: int) -> int:
    """How many sampler steps a schedule takes (the distilled ones are fixed)."""
    fixed = {"distilled": DISTILLED_SIGMAS, "distilled_stage2": DISTILLED_STAGE2_SIGMAS}
    return len(fixed[kind]) - 1 if kind in fixed else steps


def noised(state: LatentState, noise: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """The starting latent: lerp(clean, lerp(latent, noise, s), m), m the denoise mask and s the first sigma, with
    `latent` the state's latent before noise (the clip's own latent; placeholder zeros for appended references).
    Lightricks' current GaussianNoiser (ltx-core 1.0.0's `noise*m*s + clean*(1 - m*s)` differs where 0 < m < 1 and
    s < 1, i.e. stage two with an image or reference strength below 1; fidelity.DEVIATIONS)."""
    noise = noise.to(state.latent.device, torch.float32)
    latent = torch.lerp(state.latent.float(), noise, noise_scale)
    return torch.lerp(state.clean_latent.float(), latent, state.denoise_mask.float())


def draw_noise(states: tuple[LatentState, ...], targets: tuple[int, ...], generator: torch.Generator
               ) -> list[torch.Tensor]:
    """Noise for each stream's state: every stream's target tokens first, then the appended references', so adding a
    reference never changes the noise of the generated tokens (of either stream, at any batch size). Without
    references this is the same draw as one randn per stream (Lightricks' order)."""
    def draw(state: LatentState, lo: int, hi: int) -> torch.Tensor:
        b, _, c = state.latent.shape
        return torch.randn((b, hi - lo, c), generator=generator, dtype=torch.float32)

    heads = [draw(s, 0, n) for s, n in zip(states, targets)]
    tails = [draw(s, n, s.latent.shape[1]) if s.latent.shape[1] > n else None for s, n in zip(states, targets)]
    return [h if t is None else torch.cat([h, t], 1) for h, t in zip(heads, tails)]


def frozen(state: LatentState, targets: int) -> bool:
    """A stream held clean (every generated token's denoise mask 0: a given audio or video): its Modality sigma is 0,
    as in Lightricks' pipelines (it drives the other stream's cross-attention gate and, on LTX-2.3, its own prompt
    modulation)."""
    return bool((state.denoise_mask[:, :targets] == 0).all())


def _batched(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


class Denoiser:
    """One guided denoising evaluation of the transformer at a sigma: all passes batched into one forward."""

    def __init__(self, transformer: torch.nn.Module, guidance: Guidance, positive: TextContext,
                 negative: TextContext | None, batch: int, dtype: torch.dtype, device: torch.device):
        self.transformer, self.guidance, self.dtype = transformer, guidance, dtype
        self.passes = guidance.passes()
        if "uncond" in self.passes and negative is None:
            raise InputError("negative prompt is required when cfg is not 1 (text CFG needs an unconditional pass)")
        ctx = {"cond": positive, "uncond": negative, "perturbed": positive, "isolated": positive}
        self.video_context = torch.cat(
            [_batched(ctx[p].video, batch) for p in self.passes]).to(device=device, dtype=dtype)
        self.audio_context = torch.cat(
            [_batched(ctx[p].audio, batch) for p in self.passes]).to(device=device, dtype=dtype)
        self.perturbations = BatchedPerturbationConfig(
            [guidance.perturbation(p) for p in self.passes for _ in range(batch)])
        self._all_generated: dict[int, bool] = {}

    def _repeat(self, t: torch.Tensor) -> torch.Tensor:
        n = len(self.passes)
        return t if n == 1 else t.repeat(n, *([1] * (t.ndim - 1)))

    def _modality(self, x: torch.Tensor, state: LatentState, sigma: torch.Tensor, context: torch.Tensor,
                  held: bool = False) -> Modality:
        timesteps = (state.denoise_mask * sigma).squeeze(-1)
        mask = state.attention_mask
        return Modality(
            latent=self._repeat(x).to(self.dtype),
            sigma=(torch.zeros_like(sigma) if held else sigma).expand(x.shape[0] * len(self.passes)),
            timesteps=self._repeat(timesteps),
            positions=self._repeat(state.positions),
            context=context,
            attention_mask=None if mask is None else self._repeat(mask),
        )

    def _x0(self, x: torch.Tensor, velocity: torch.Tensor, modality: Modality, state: LatentState,
            stream: str) -> torch.Tensor:
        """Guided x0 = x - velocity * t (each token's own timestep; t = 0 keeps a token as it is, computed from the
        fp32 sampler state), then tokens with denoise mask < 1 pulled back toward their clean value."""
        x0 = to_denoised(self._repeat(x), velocity, modality.timesteps.unsqueeze(-1)).float()
        out = self.guidance.combine(stream, dict(zip(self.passes, x0.chunk(len(self.passes)))))
        key = id(state.denoise_mask)
        if key not in self._all_generated:  # asked once per state, not every step (a device sync on a GPU)
            self._all_generated[key] = bool((state.denoise_mask == 1).all())
        if self._all_generated[key]:
            return out
        return out * state.denoise_mask + state.clean_latent * (1 - state.denoise_mask)

    @torch.inference_mode()
    def __call__(self, xv: torch.Tensor, xa: torch.Tensor, v_state: LatentState, a_state: LatentState,
                 sigma: float, held: tuple[bool, bool] = (False, False)) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.tensor([sigma], dtype=torch.float32, device=xv.device)
        video = self._modality(xv, v_state, s, self.video_context, held[0])
        audio = self._modality(xa, a_state, s, self.audio_context, held[1])
        v_vel, a_vel = self.transformer(video=video, audio=audio, perturbations=self.perturbations)
        return self._x0(xv, v_vel, video, v_state, "video"), self._x0(xa, a_vel, audio, a_state, "audio")


def initial_states(latent: AVLatent, causal: bool, device: torch.device, video_items: Sequence = (),
                   audio_items: Sequence = ()) -> tuple[LatentState, LatentState]:
    """Both streams' states through ltx-core's latent tools: the clip's tokens, then its own conditioning (the first
    frame) and the run's items, in order (each appends after the ones before)."""
    v_tools, a_tools = video_tools(latent, causal), audio_tools(latent)
    v_state = apply_items(video_state(latent, causal, device), (*latent.conditioning, *video_items), v_tools)
    a_state = apply_items(audio_state(latent, device), tuple(audio_items), a_tools)
    return v_state, a_state


def sample(
    transformer: torch.nn.Module,
    latent: AVLatent,
    positive: TextContext,
    negative: TextContext | None,
    guidance: Guidance,
    sigmas: torch.Tensor,
    seed: int,
    *,
    causal_positions: bool,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    video_items: Sequence = (),
    audio_items: Sequence = (),
    patches: Sequence = (),
    on_step: Callable[[int, int], None] | None = None,
    check_interrupted: Callable[[], None] | None = None,
) -> AVLatent:
    """Denoise `latent` along `sigmas`; returns the clean latent (masks reset to ones).

    `video_items` / `audio_items` are ltx-core conditioning items (items.py) applied to each stream's state after the
    latent's own; the tokens they append join their stream's self-attention and are stripped from the result.
    `patches` (patches.RunPatch) change the transformer for the run and are undone after it. Deterministic for a given
    seed. `on_step(done, total)` runs after each step, `check_interrupted()` before it (it raises to cancel)."""
    require(sigmas.ndim == 1 and len(sigmas) >= 2, "sigmas", "a 1-D schedule with at least 2 values", tuple(sigmas.shape))
    require(0 <= seed < 2**64, "seed", "an integer in [0, 2^64)", seed)
    device = torch.device(device)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    n_video, n_audio = latent.video[0, 0].numel(), latent.audio.shape[2]
    v_state, a_state = initial_states(latent, causal_positions, device, video_items, audio_items)
    first = float(sigmas[0])
    noise_v, noise_a = draw_noise((v_state, a_state), (n_video, n_audio), generator)
    xv, xa = noised(v_state, noise_v, first), noised(a_state, noise_a, first)
    held = (frozen(v_state, n_video), frozen(a_state, n_audio))
    denoise = Denoiser(transformer, guidance, positive, negative, latent.batch, dtype, device)
    step = EulerDiffusionStep()
    sigmas = sigmas.float()
    total = len(sigmas) - 1
    with apply_patches(transformer, RunContext(v_state, a_state, dtype, device), patches):
        for i in range(total):
            if check_interrupted is not None:
                check_interrupted()
            v_x0, a_x0 = denoise(xv, xa, v_state, a_state, float(sigmas[i]), held)
            xv, xa = step.step(xv, v_x0, sigmas, i), step.step(xa, a_x0, sigmas, i)
            if on_step is not None:
                on_step(i + 1, total)
    return unpatchify(latent, xv[:, :n_video], xa[:, :n_audio])
