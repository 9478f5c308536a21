"""Reading an LTX-2 checkpoint: one .safetensors file whose metadata key "config" holds the model config as JSON.

Key prefixes inside the file: `model.diffusion_model.*` (transformer and text connectors), `vae.*`, `audio_vae.*`,
`vocoder.*`, `text_embedding_projection.*`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import safetensors
import torch

from .errors import InputError

TRANSFORMER_PREFIX = "model.diffusion_model."
CONNECTOR_PREFIXES = (
    "model.diffusion_model.video_embeddings_connector.",
    "model.diffusion_model.audio_embeddings_connector.",
    "model.diffusion_model.embeddings_connector.",
)
REQUIRED_SECTIONS = ("transformer", "vae", "audio_vae", "vocoder")
# Statistics the released VAEs carry next to the two that (un)normalise latents (`vae.per_channel_statistics.channel`
# and `.mean-of-stds` in LTX-2's file; diffusers' converter drops them before its strict load, ltx-core's builder
# loads non-strict and never notices). No module reads them, so a strict load skips them instead of refusing the file.
UNUSED_STATISTICS = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds",
                     "per_channel_statistics.mean-of-stds_over_std-of-means", "per_channel_statistics.std-of-stds")
VERSIONS = ("ltx2", "ltx2.3")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"checkpoint file not found: {path}")
    if path.suffix.lower() != ".safetensors":
        raise InputError(
            f"checkpoint must be a .safetensors file (pickled .ckpt/.pt/.bin files are refused: "
            f"loading them can run code), got {path.name}"
        )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header metadata, or an InputError naming the file if it is not a readable safetensors file."""
    path = Path(path)
    _check_file(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt headers
        raise InputError(f"{path.name} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    _check_payload_size(path)
    if not keys:
        raise InputError(f"{path.name} holds no tensors")
    return meta


def _check_payload_size(path: Path) -> None:
    """A file cut short after its header still opens; compare the data length the header promises with the file."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    actual = path.stat().st_size - 8 - header_len
    if actual < end:
        raise InputError(f"{path.name} is truncated: its header promises {end} bytes of tensor data, found {actual}")


def read_config(path: str | Path) -> dict:
    """The model config stored in the checkpoint's metadata, checked to describe an LTX-2 audio+video model."""
    path = Path(path)
    meta = read_metadata(path)
    if "config" not in meta:
        raise InputError(
            f"{path.name} has no 'config' metadata: it is not an LTX-2 checkpoint "
            f"(expected the single-file LTX-2 / LTX-2.3 release, e.g. ltx-2-19b-dev.safetensors)"
        )
    config = json.loads(meta["config"])
    missing = [s for s in REQUIRED_SECTIONS if s not in config]
    if missing:
        raise InputError(
            f"{path.name} is not an LTX-2 audio+video checkpoint: its config lacks the sections {missing} "
            f"(a video-only LTX-Video checkpoint, or a component file?)"
        )
    # ltx-core 1.0.0 defaults a missing rope_type to "interleaved"; Lightricks' current source (and the released
    # checkpoints' training) use "split". Follow the current source.
    config["transformer"].setdefault("rope_type", "split")
    return config


def detect_version(config: dict) -> str:
    """'ltx2' for the LTX-2 19B layout, 'ltx2.3' for the LTX-2.3 22B layout (text projection before the connector,
    AdaLN-modulated text cross-attention)."""
    t = config["transformer"]
    if t.get("caption_proj_before_connector") or t.get("cross_attention_adaln"):
        return "ltx2.3"
    return "ltx2"


def causal_temporal_positions(config: dict) -> bool:
    """Whether the first latent frame covers one pixel frame. Released checkpoints set this to true, and Lightricks'
    pipelines position causally whatever the config says, so a config without the key is causal too."""
    return bool(config["transformer"].get("causal_temporal_positioning", True))


def load_tensors(
    path: str | Path,
    rename: Callable[[str], str | None],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors of the checkpoint whose `rename(key)` is not None, under that new name; floats cast to dtype."""
    out = {}
    with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            name = rename(key)
            if name is None:
                continue
            t = f.get_tensor(key)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[name] = t.to(device)
    return out


def prefix_renamer(prefixes: dict[str, str], exclude: Iterable[str] = ()) -> Callable[[str], str | None]:
    """Map keys starting with a prefix to the replacement + rest; keys under `exclude` and all others to None."""
    exclude = tuple(exclude)

    def rename(key: str) -> str | None:
        if exclude and key.startswith(exclude):
            return None
        for old, new in prefixes.items():
            if key.startswith(old):
                return new + key[len(old) :]
        return None

    return rename


def drop_unused_statistics(tensors: dict[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """`tensors` without the UNUSED_STATISTICS entries the module does not have (in place; returned for chaining)."""
    expected = set(expected)
    for name in [n for n in tensors if n.endswith(UNUSED_STATISTICS) and n not in expected]:
        del tensors[name]
    return tensors


def pop_fp8_scales(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pre-quantised fp8 files (ltx-core's scaled-mm layout, e.g. ltx-2-19b-dev-fp8.safetensors) store a Linear as an
    F8_E4M3 `.weight` with a per-tensor `.weight_scale` (weight = fp8 value * scale) and a static `.input_scale`.
    Removes both scale entries (in place) and returns {weight key: its scale}; a scale without an fp8 weight stays
    (and is refused as unexpected)."""
    scales = {}
    for key in [k for k in tensors if k.endswith(".weight_scale")]:
        weight = key.removesuffix("_scale")
        if weight in tensors and tensors[weight].dtype == torch.float8_e4m3fn:
            scales[weight] = tensors.pop(key)
            tensors.pop(key.removesuffix("weight_scale") + "input_scale", None)
    return scales


def check_keys(file_name: str, component: str, expected: Iterable[str], found: Iterable[str]) -> None:
    """Refuse a state dict whose keys differ from the model's, listing the differences."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_short(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_short(unexpected)}")
    raise InputError(
        f"{file_name}: the {component} weights do not match its config ({'; '.join(parts)}). "
        f"The file is damaged or belongs to another model version."
    )


def shape_mismatches(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> list[str]:
    """'key (file shape) vs (expected shape)' for every tensor whose shape differs from the module's."""
    return [f"{k} {tuple(t.shape)} vs {tuple(expected[k].shape)}" for k, t in tensors.items()
            if t.shape != expected[k].shape]


def check_state(file_name: str, component: str, expected: dict[str, torch.Tensor],
                tensors: dict[str, torch.Tensor]) -> None:
    """check_keys, then refuse tensors whose shapes differ from the module's config, listing them."""
    check_keys(file_name, component, expected.keys(), tensors.keys())
    wrong = shape_mismatches(expected, tensors)
    if wrong:
        raise InputError(f"{file_name}: {component} tensor shapes do not match its config: {_short(wrong)}")


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
