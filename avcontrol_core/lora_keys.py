"""The key layouts LTX-2 LoRA files ship in, mapped to module paths inside ltx-core's LTXModel.

A key is `<prefix><module path><suffix>`:

- prefix: `diffusion_model.` (ltx-trainer and ComfyUI, the official layout), `model.diffusion_model.` (the checkpoint's
  own prefix), `transformer.` (diffusers), `base_model.model.` (raw PEFT), none, or `lora_unet_` / `lycoris_` (kohya /
  LyCORIS: the module path with dots flattened to underscores, resolved against the model's module names later);
- module path: ltx-core's names (`transformer_blocks.3.attn1.to_q`); diffusers' names for the few top-level modules
  it renames (`proj_in`, `time_embed`, ...) are mapped back;
- suffix: the low-rank pair down (A, rank x in) / up (B, out x rank) as `lora_A.weight` / `lora_B.weight` (PEFT),
  `lora_A.default.weight` / `lora_B.default.weight` (PEFT adapter name kept), `lora_down.weight` / `lora_up.weight`
  (kohya), `lora_A` / `lora_B` (no `.weight`), `lora_linear_layer.down.weight` / `.up.weight` (old diffusers); and
  an optional `alpha` (scale alpha / rank; without it the scale is 1, as ltx-core and ltx-trainer assume).

Everything else (full-weight diffs, bias diffs, DoRA scales, text-encoder LoRAs) is not understood and is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "base_model.model.")
FLAT_PREFIXES = ("lora_unet_", "lycoris_")

# suffix -> role ("A" = down, "B" = up, "alpha"); longer suffixes are tried first
SUFFIXES = {
    ".lora_A.default.weight": "A",
    ".lora_B.default.weight": "B",
    ".lora_linear_layer.down.weight": "A",
    ".lora_linear_layer.up.weight": "B",
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_down.weight": "A",
    ".lora_up.weight": "B",
    ".lora_A": "A",
    ".lora_B": "B",
    ".alpha": "alpha",
}
_SUFFIX_ORDER = sorted(SUFFIXES, key=len, reverse=True)

# diffusers' LTX-2 transformer renames these top-level modules (scripts/convert_ltx2_to_diffusers.py); map them back
DIFFUSERS_TOP_LEVEL = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
    "prompt_adaln": "prompt_adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
}


@dataclass(frozen=True)
class ParsedKey:
    """One understood key: the module it belongs to, its role ('A', 'B', 'alpha'), and whether the module path is
    kohya-flattened (underscores for dots, resolved against the model's names by `resolve_module`)."""

    module: str
    role: str
    flat: bool = False


def parse_key(key: str) -> ParsedKey | None:
    """The module path and role of a LoRA key, or None when the key matches no known layout."""
    suffix = next((s for s in _SUFFIX_ORDER if key.endswith(s)), None)
    if suffix is None:
        return None
    body = key[: -len(suffix)]
    for prefix in FLAT_PREFIXES:
        if body.startswith(prefix):
            module = body[len(prefix) :]
            return ParsedKey(module, SUFFIXES[suffix], flat=True) if module else None
    for prefix in PREFIXES:
        if body.startswith(prefix):
            body = body[len(prefix) :]
            break
    if not body or body.startswith(("text_encoders.", "lora_te")):
        return None
    top, dot, rest = body.partition(".")
    return ParsedKey(DIFFUSERS_TOP_LEVEL.get(top, top) + dot + rest, SUFFIXES[suffix])


def flat_lookup(names: set[str] | list[str]) -> dict[str, str]:
    """{'transformer_blocks_0_attn1_to_q': 'transformer_blocks.0.attn1.to_q', ...} for kohya-style names."""
    return {name.replace(".", "_"): name for name in names}


def resolve_module(module: str, flat: bool, names: set[str], flat_names: dict[str, str]) -> str | None:
    """The model's module path for a LoRA module name, or None when the model has no such module."""
    if not flat:
        return module if module in names else None
    return flat_names.get(module)
