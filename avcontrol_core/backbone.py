"""Building the LTX-2 components (transformer, video VAE, audio VAE, vocoder) from one checkpoint, strictly.

ltx-core's own builder defaults to CUDA and loads with strict=False, so a missing key silently leaves meta tensors.
Here every component is built on the meta device, filled with `load_state_dict(strict=True, assign=True)` after an
explicit key comparison that names what is missing or unexpected, and placed on the device and dtype asked for.
"""

from __future__ import annotations

import math
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
from . import fp8 as fp8_compute
from . import kernels
from .errors import InputError, warn
from .fidelity import align_with_current_source
from .dtypes import parse_dtype
from .offload import BlockSwap, block_bytes, fixed_bytes, free_device_bytes
from .offload_plan import GIB, Plan, plan_block_swap
from .residency import RESIDENCY, empty_cache


# component -> (configurator, {checkpoint prefix: module prefix}, excluded checkpoint prefixes)
COMPONENTS = {
    "transformer": (LTXModelConfigurator, {ckpt.TRANSFORMER_PREFIX: ""}, ckpt.CONNECTOR_PREFIXES),
    "video_decoder": (VideoDecoderConfigurator, {"vae.decoder.": "", "vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "video_encoder": (VideoEncoderConfigurator, {"vae.encoder.": "", "vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "audio_decoder": (AudioDecoderConfigurator, {"audio_vae.decoder.": "", "audio_vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "audio_encoder": (AudioEncoderConfigurator, {"audio_vae.encoder.": "", "audio_vae.per_channel_statistics.": "per_channel_statistics."}, ()),
    "vocoder": (VocoderConfigurator, {"vocoder.": ""}, ()),
}



def build_component(
    path: str | Path, config: dict, component: str, device: torch.device | str, dtype: torch.dtype,
    weights: str = "default",
) -> torch.nn.Module:
    """Build one component from the checkpoint, refusing any key or shape mismatch.

    weights="fp8" (transformer only): the blocks' Linear weights stored as fp8 and upcast per layer for compute
    (ltx-core's fp8 cast); tensors are converted on the host before they reach `device`. A pre-quantised fp8 file
    (scaled fp8 weights) is dequantised per tensor (fp8 value x its scale) into `dtype`, or into that fp8 storage.
    weights="fp8_scaled" (transformer only, fp8.py): the same Linears quantised per tensor (scale amax / 448) and
    kept with their scale, multiplying in fp8; a pre-quantised file's weights and scales are kept as they are."""
    configurator, prefixes, exclude = COMPONENTS[component]
    path = Path(path)
    fp8 = weights == "fp8" and component == "transformer"
    scaled = weights == "fp8_scaled" and component == "transformer"
    with torch.device("meta"):
        module = configurator.from_config(config)
    expected = module.state_dict()
    on_host = fp8 or scaled
    tensors = ckpt.load_tensors(path, ckpt.prefix_renamer(prefixes, exclude), device="cpu" if on_host else device)
    scales = ckpt.pop_fp8_scales(tensors)  # a pre-quantised fp8 file: dequantised below, one tensor at a time
    ckpt.drop_unused_statistics(tensors, expected)
    ckpt.check_state(path.name, component, expected, tensors)
    kept_scales = {}  # fp8_scaled: {Linear module path: its fp32 scale}
    for name, value in tensors.items():
        if scaled and _fp8_compute_target(name, value, scales):
            q, scale = (value, scales[name].float()) if name in scales else fp8_compute.quantise(value.float())
            tensors[name] = q.contiguous().to(device)
            kept_scales[name.removesuffix(".weight")] = scale.reshape(()).to(device)
            continue
        if name in scales:
            value = value.float() * scales[name].to(value.device, torch.float32)
        if value.is_floating_point() and _keeps_dtype(component, name):
            tensors[name] = value.float()
        elif value.is_floating_point():
            tensors[name] = value.to(dtype)
        if fp8:
            tensors[name] = kernels.fp8_storage(name, tensors[name]).to(device)
        elif scaled:
            tensors[name] = tensors[name].to(device)
    module.load_state_dict(tensors, strict=True, assign=True)
    _materialize_buffers(module, device)
    if fp8:
        module = kernels.upcast_for_compute(module)
    if scaled:
        fallbacks = fp8_compute.convert(module, sorted(kept_scales), dtype, kept_scales)
        if fallbacks:
            warn(f"weights fp8_scaled: {len(fallbacks)} of {len(kept_scales)} Linears keep fp8 storage but "
                 f"dequantise for a {dtype} matmul, torch._scaled_mm cannot take their shape: "
                 f"{ckpt._short(fallbacks)}")
    return module.eval().requires_grad_(False)


def _fp8_compute_target(name: str, value: torch.Tensor, file_scales: dict) -> bool:
    """A Linear weight that fp8_scaled multiplies in fp8: one ltx-core's fp8 cast stores in 8 bits (the blocks'
    attention and feed-forward), or one the file itself ships as scaled fp8."""
    if name in file_scales:
        return True
    return (name.endswith(".weight") and value.is_floating_point() and value.dim() == 2
            and kernels.fp8_storage(name, value[:1, :1]).dtype == kernels.FP8)


def _keeps_dtype(component: str, name: str) -> bool:
    """Latent statistics stay fp32 so (de)normalisation is exact in every dtype."""
    return "per_channel_statistics" in name


def _materialize_buffers(module: torch.nn.Module, device: torch.device | str) -> None:
    """Non-persistent buffers are not in the checkpoint; rebuild any left on meta by re-running their owner's init."""
    left = [n for n, b in module.named_buffers() if b.is_meta] + [n for n, p in module.named_parameters() if p.is_meta]
    if left:
        raise InputError(f"model tensors left uninitialised after loading: {ckpt._short(left)}")


@dataclass(frozen=True)
class ModelOptions:
    """How the transformer is stored and run; the defaults are plain bf16/fp16/fp32, everything resident.

    weights: "default" (the model dtype), "fp8" (blocks' Linear weights stored as float8_e4m3fn, upcast per layer) or
    "fp8_scaled" (the same weights in fp8 with per-tensor scales, multiplied in fp8 by torch._scaled_mm: CUDA with
    compute capability >= 8.9 only).
    offload_budget_gb: 0 keeps everything resident on the device; > 0 caps what the model holds on the GPU while
    sampling (block swap streams the transformer blocks that do not fit from host memory), and loads the text
    encoder, VAEs and vocoder only for their step.
    compile: torch.compile each transformer block. attention: "auto" or a kernel name (kernels.ATTENTION)."""

    weights: str = "default"
    offload_budget_gb: float = 0.0
    compile: bool = False
    attention: str = "auto"

    def __post_init__(self) -> None:
        if self.weights not in kernels.WEIGHTS:
            raise InputError(f"weights must be one of {kernels.WEIGHTS}, got {self.weights!r}")
        budget = self.offload_budget_gb
        if not isinstance(budget, (int, float)) or not math.isfinite(budget) or not 0 <= budget <= 4096:
            raise InputError(f"offload_budget_gb must be a number of GB between 0 and 4096 (0: no offloading), "
                             f"got {budget!r}")
        if self.attention not in kernels.ATTENTION:
            raise InputError(f"attention must be one of {kernels.ATTENTION}, got {self.attention!r}")

    @property
    def budget_bytes(self) -> int:
        return int(self.offload_budget_gb * GIB)

    def offloads(self) -> bool:
        return self.offload_budget_gb > 0

    def enabled(self) -> bool:
        return self != ModelOptions()


STEP_COMPONENTS = tuple(name for name in COMPONENTS if name != "transformer")


@dataclass
class AVModel:
    """An LTX-2 checkpoint and the components built from it, loaded lazily and cached.

    `device` and `dtype` are explicit; components are built on first use. `release(name)` drops one.
    With an offload budget (`options.offload_budget_gb` > 0) the transformer lives in host memory and
    `transformer_for_run()` places it by a block-swap plan; VAEs and vocoder are loaded one at a time for their step
    (loading one parks the transformer and drops the others; placing the transformer drops them all).
    `release_all()` gives back everything held on the device (the host's "free memory" calls it, through the
    residency). Before the transformer claims device memory the residency makes room (other models go home, the
    host unloads its own)."""

    path: Path
    config: dict
    version: str
    device: torch.device
    dtype: torch.dtype
    options: ModelOptions = field(default_factory=ModelOptions)
    _cache: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)
    _swap: BlockSwap | None = field(default=None, repr=False)
    attention_kernel: str = field(default="", repr=False)

    def component(self, name: str) -> torch.nn.Module:
        if name not in self._cache:
            offloads = self.options.offloads()
            if offloads and name != "transformer":
                self.park()
                self._drop(STEP_COMPONENTS)
            home = "cpu" if offloads and name == "transformer" else self.device
            weights = self.options.weights if name == "transformer" else "default"
            module = build_component(self.path, self.config, name, home, self.dtype, weights)
            if name == "transformer":
                module = self._prepare_transformer(module)
            self._cache[name] = module
        return self._cache[name]

    def _prepare_transformer(self, module: torch.nn.Module) -> torch.nn.Module:
        module = align_with_current_source(module)
        self.attention_kernel, kernel = kernels.resolve_attention(self.options.attention, self.device)
        kernels.set_attention(module, kernel)
        if self.options.compile:
            kernels.compile_blocks(module)
        return module

    @property
    def transformer(self) -> torch.nn.Module:
        return self.component("transformer")

    @property
    def causal_temporal_positions(self) -> bool:
        return ckpt.causal_temporal_positions(self.config)

    @property
    def plan(self) -> Plan | None:
        """The block-swap plan in place, if any."""
        return self._swap.plan if self._swap is not None else None

    def transformer_for_run(self, activation_bytes: int) -> torch.nn.Module:
        """The transformer ready to run on the device: as built without a budget; with one, placed by the block-swap
        plan for min(budget, free memory) and `activation_bytes` (kept when the plan is unchanged)."""
        transformer = self.transformer
        if not self.options.offloads():
            return transformer
        self._drop(STEP_COMPONENTS)
        blocks, fixed = block_bytes(transformer), fixed_bytes(transformer)
        held = self._swap.device_bytes() if self._swap is not None else 0
        RESIDENCY.make_room(min(self.options.budget_bytes, fixed + sum(blocks) + activation_bytes) - held,
                            self.device, keep=self)
        free = free_device_bytes(self.device)
        if self._swap is not None:
            free += self._swap.device_bytes()
        plan = plan_block_swap(blocks, fixed, self.options.budget_bytes, free, activation_bytes)
        if self._swap is not None and (self._swap.plan.resident, self._swap.plan.slots) == (plan.resident, plan.slots):
            return transformer
        self.park()
        self._swap = BlockSwap(transformer, plan, self.device).install()
        return transformer

    def park(self) -> None:
        """Take the transformer's device share home (block swap removed); a no-op without a budget."""
        if self._swap is not None:
            self._swap.remove()
            self._swap = None

    def release(self, *names: str) -> None:
        """Drop the named components (all when none is named); they are rebuilt from the file on next use."""
        self._drop(names or tuple(self._cache))

    def _drop(self, names) -> None:
        for name in names:
            if name == "transformer":
                self.park()
            self._cache.pop(name, None)

    def release_all(self) -> None:
        """Give back what the model holds on its device: VAEs, vocoder and encoders are dropped; the transformer goes
        home to host memory with a budget, or is dropped (rebuilt from the file on next use) when it was resident on
        an accelerator. On the CPU the transformer stays."""
        self.park()
        self._drop(STEP_COMPONENTS)
        if self.device.type != "cpu" and not self.options.offloads():
            self._drop(("transformer",))
        empty_cache(self.device)

    def loaded(self) -> list[str]:
        return sorted(self._cache)


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
               options: ModelOptions | None = None) -> AVModel:
    """Open an LTX-2 / LTX-2.3 checkpoint: read and check its config now, build components on first use.

    The transformer is built (and its keys checked) immediately, so a wrong file fails here, not mid-run.
    """
    path = Path(path)
    options = options or ModelOptions()
    if options.weights == "fp8_scaled":
        fp8_compute.require_fp8_compute(device)  # before the file is read
    config = ckpt.read_config(path)
    model = AVModel(
        path=path,
        config=config,
        version=ckpt.detect_version(config),
        device=torch.device(device),
        dtype=parse_dtype(dtype, device),
        options=options,
    )
    model.component("transformer")
    return model
