"""Guidance settings per stream and the extra transformer passes they need.

pred = c + (cfg-1)(c - u_text) + stg (c - u_perturbed) + (modality-1)(c - u_isolated), then optional std rescale
(ltx-core's MultiModalGuider), one guider per stream. A pass whose scales make it a no-op for both streams is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
from ltx_core.guidance.perturbations import Perturbation, PerturbationConfig, PerturbationType

from .errors import require


@dataclass(frozen=True)
class StreamGuidance:
    """Guidance of one stream. cfg: text CFG scale (1 = off). stg: spatio-temporal guidance scale (0 = off), applied
    by skipping self-attention in `stg_blocks`. modality: cross-modal guidance (1 = off), contrasting with a pass whose
    audio<->video attention is skipped. rescale: 0..1 blend toward the conditional prediction's std."""

    cfg: float = 1.0
    stg: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    modality: float = 1.0
    rescale: float = 0.0

    def __post_init__(self) -> None:
        require(0.0 <= self.cfg <= 100.0, "cfg", "between 0 and 100", self.cfg)
        require(-100.0 <= self.stg <= 100.0, "stg", "between -100 and 100", self.stg)
        require(0.0 <= self.modality <= 100.0, "modality_scale", "between 0 and 100", self.modality)
        require(0.0 <= self.rescale <= 1.0, "rescale", "between 0 and 1", self.rescale)
        require(all(isinstance(b, int) and b >= 0 for b in self.stg_blocks), "stg_blocks",
                "non-negative block indices", self.stg_blocks)
        require(math.isclose(self.stg, 0.0) or bool(self.stg_blocks), "stg_blocks",
                "at least one block index when stg is not 0", self.stg_blocks)

    def needs_uncond(self) -> bool:
        return not math.isclose(self.cfg, 1.0)

    def needs_perturbed(self) -> bool:
        return not math.isclose(self.stg, 0.0)

    def needs_isolated(self) -> bool:
        return not math.isclose(self.modality, 1.0)

    def enabled(self) -> bool:
        return self.needs_uncond() or self.needs_perturbed() or self.needs_isolated() or self.rescale != 0.0

    def guider(self) -> MultiModalGuider:
        return MultiModalGuider(
            MultiModalGuiderParams(
                cfg_scale=self.cfg,
                stg_scale=self.stg,
                stg_blocks=list(self.stg_blocks),
                rescale_scale=self.rescale,
                modality_scale=self.modality,
            )
        )


@dataclass(frozen=True)
class Guidance:
    video: StreamGuidance = field(default_factory=StreamGuidance)
    audio: StreamGuidance = field(default_factory=StreamGuidance)

    def enabled(self) -> bool:
        return self.video.enabled() or self.audio.enabled()

    def check_blocks(self, num_layers: int) -> None:
        """STG block indices must exist in the model."""
        for s in (self.video, self.audio):
            require(all(b < num_layers for b in s.stg_blocks), "stg_blocks",
                    f"block indices below the model's {num_layers} layers", s.stg_blocks)

    def passes(self) -> tuple[str, ...]:
        """Which transformer passes a step runs, always starting with the conditional one."""
        out = ["cond"]
        if self.video.needs_uncond() or self.audio.needs_uncond():
            out.append("uncond")
        if self.video.needs_perturbed() or self.audio.needs_perturbed():
            out.append("perturbed")
        if self.video.needs_isolated() or self.audio.needs_isolated():
            out.append("isolated")
        return tuple(out)

    def perturbation(self, pass_name: str) -> PerturbationConfig:
        if pass_name == "perturbed":
            items = []
            if self.video.needs_perturbed():
                items.append(Perturbation(PerturbationType.SKIP_VIDEO_SELF_ATTN, list(self.video.stg_blocks)))
            if self.audio.needs_perturbed():
                items.append(Perturbation(PerturbationType.SKIP_AUDIO_SELF_ATTN, list(self.audio.stg_blocks)))
            return PerturbationConfig(items)
        if pass_name == "isolated":
            return PerturbationConfig(
                [Perturbation(PerturbationType.SKIP_A2V_CROSS_ATTN, None),
                 Perturbation(PerturbationType.SKIP_V2A_CROSS_ATTN, None)]
            )
        return PerturbationConfig.empty()

    def combine(self, stream: str, preds: dict[str, torch.Tensor]) -> torch.Tensor:
        """Combine the per-pass denoised predictions of one stream ('video' or 'audio')."""
        settings = self.video if stream == "video" else self.audio
        cond = preds["cond"]
        if not settings.enabled():
            return cond
        return settings.guider().calculate(
            cond,
            preds.get("uncond", 0.0) if settings.needs_uncond() else 0.0,
            preds.get("perturbed", 0.0) if settings.needs_perturbed() else 0.0,
            preds.get("isolated", 0.0) if settings.needs_isolated() else 0.0,
        )


def parse_blocks(text: str, num_layers: int | None = None) -> tuple[int, ...]:
    """'28' or '10, 20,28' -> (10, 20, 28); checked against the model's layer count when given."""
    text = (text or "").strip()
    if not text:
        return ()
    try:
        blocks = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise require(False, "stg_blocks", "comma-separated block indices such as '28' or '10,20'", text) from None
    if num_layers is not None:
        require(all(0 <= b < num_layers for b in blocks), "stg_blocks", f"indices below {num_layers}", text)
    return blocks
