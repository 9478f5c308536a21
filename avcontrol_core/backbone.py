"""Building the LTX-2 components (transformer, video VAE, audio VAE, vocoder) from one checkpoint, strictly.

ltx-core's own builder defaults to CUDA and loads with strict=False, so a missing key silently leaves meta tensors.
Here every component is built on the meta device, filled with `load_state_dict(strict=True, assign=True)` after an
explicit key comparison that names what is missing or unexpected, and placed on the device and dtype asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from ltx_core.model.audio_vae.model_configurator import (
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator

from . import checkpoint as ckpt
from .errors import InputError
from .fidelity import align_with_current_source

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# component -> (configurator, {checkpoint prefix: module prefix}, excluded checkpoint prefixes)
COMPONENTS = {
    "transformer": (LTXModelConfigurator, {ckpt.TRANSFORMER_PREFIX: ""}, ckpt.CONNECTOR_PREFIXES),
    "video_decoder": (VideoDecoderConfigurator, {"vae.decoder.": "", "vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "video_encoder": (VideoEncoderConfigurator, {"vae.encoder.": "", "vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "audio_decoder": (AudioDecoderConfigurator, {"audio_vae.decoder.": "", "audio_vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "audio_encoder": (AudioEncoderConfigurator, {"audio_vae.encoder.": "", "audio_vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "vocoder": (VocoderConfigurator, {"vocoder.": ""}, ()),
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def build_component(
    path: str | Path, config: dict, component: str, device: torch.device | str, dtype: torch.dtype
) -> torch.nn.Module:
    """Build one component from the checkpoint, refusing any key or shape mismatch."""
    configurator, prefixes, exclude = COMPONENTS[component]
    path = Path(path)
    with torch.device("meta"):
        module = configurator.from_config(config)
    expected = module.state_dict()
    tensors = ckpt.load_tensors(path, ckpt.prefix_renamer(prefixes, exclude), device=device)
    ckpt.check_keys(path.name, component, expected.keys(), tensors.keys())
    wrong = [f"{k} {tuple(t.shape)} vs {tuple(expected[k].shape)}" for k, t in tensors.items() if t.shape != expected[k].shape]
    if wrong:
        raise InputError(f"{path.name}: {component} tensor shapes do not match its config: {ckpt._short(wrong)}")
    for name, value in tensors.items():
        if value.is_floating_point() and _keeps_dtype(component, name):
            tensors[name] = value.float()
        elif value.is_floating_point():
            tensors[name] = value.to(dtype)
    module.load_state_dict(tensors, strict=True, assign=True)
    _materialize_buffers(module, device)
    return module.eval().requires_grad_(False)


def _keeps_dtype(component: str, name: str) -> bool:
    """Latent statistics stay fp32 so (de)normalisation is exact in every dtype."""
    return "per_channel_statistics" in name


def _materialize_buffers(module: torch.nn.Module, device: torch.device | str) -> None:
    """Non-persistent buffers are not in the checkpoint; rebuild any left on meta by re-running their owner's init."""
    left = [n for n, b in module.named_buffers() if b.is_meta] + [n for n, p in module.named_parameters() if p.is_meta]
    if left:
        raise InputError(f"model tensors left uninitialised after loading: {ckpt._short(left)}")


@dataclass
class AVModel:
    """An LTX-2 checkpoint and the components built from it, loaded lazily and cached.

    `device` and `dtype` are explicit; components are built on first use. `release(name)` drops one (e.g. the VAEs
    after decoding), so later offloading policies can plug in here.
    """

    path: Path
    config: dict
    version: str
    device: torch.device
    dtype: torch.dtype
    _cache: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)

    def component(self, name: str) -> torch.nn.Module:
        if name not in self._cache:
            module = build_component(self.path, self.config, name, self.device, self.dtype)
            if name == "transformer":
                module = align_with_current_source(module)
            self._cache[name] = module
        return self._cache[name]

    @property
    def transformer(self) -> torch.nn.Module:
        return self.component("transformer")

    @property
    def causal_temporal_positions(self) -> bool:
        return ckpt.causal_temporal_positions(self.config)

    def release(self, *names: str) -> None:
        for name in names or tuple(self._cache):
            self._cache.pop(name, None)

    def loaded(self) -> list[str]:
        return sorted(self._cache)


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "bf16") -> AVModel:
    """Open an LTX-2 / LTX-2.3 checkpoint: read and check its config now, build components on first use.

    The transformer is built (and its keys checked) immediately, so a wrong file fails here, not mid-run.
    """
    path = Path(path)
    config = ckpt.read_config(path)
    model = AVModel(
        path=path,
        config=config,
        version=ckpt.detect_version(config),
        device=torch.device(device),
        dtype=parse_dtype(dtype),
    )
    model.component("transformer")
    return model
