"""Tiny LTX-2 checkpoints with the real architecture, key layout and metadata, made offline in seconds.

They run the whole text -> audio+video -> mp4 path on a CPU. The weights are random but exercise every path:
unit-gain matrices (N(0, 1/fan_in)), norm gains away from zero, AdaLN tables and biases with real spread, so RoPE,
positions, frame rate and timestep bugs change the output instead of vanishing in uniform attention.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import checkpoint as ckpt

TINY_CHECKPOINT = "avcontrol-tiny-{version}.safetensors"
TINY_GEMMA_DIR = "avcontrol-tiny-gemma"
TINY_LORA = "avcontrol-tiny-ic-lora-ref0.5.safetensors"
TINY_DEPTH_DIR = "avcontrol-tiny-depth-anything"
TINY_UPSCALER = "avcontrol-tiny-spatial-upscaler-x2.safetensors"

_FIXED_TRANSFORMER = {
    # values ltx-core's configurator checks
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
    "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
    "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
    "av_cross_ada_norm": True, "use_middle_indices_grid": True,
}

_TINY_TRANSFORMER = {
    "num_attention_heads": 4, "attention_head_dim": 16, "cross_attention_dim": 64,
    "audio_num_attention_heads": 4, "audio_attention_head_dim": 8, "audio_cross_attention_dim": 32,
    "in_channels": 128, "out_channels": 128, "audio_in_channels": 128, "audio_out_channels": 128,
    "num_layers": 2, "norm_eps": 1e-6, "attention_type": "default",
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20], "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000, "rope_type": "split", "frequencies_precision": "float64",
    "causal_temporal_positioning": True,
}

_VERSION_TRANSFORMER = {
    "ltx2": {},
    "ltx2.3": {"cross_attention_adaln": True, "apply_gated_attention": True},
}

_TINY_VAE = {
    "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128, "patch_size": 4,
    "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False,
    "timestep_conditioning": False, "decoder_base_channels": 8, "spatial_padding_mode": "zeros",
    "encoder_blocks": [["res_x", {"num_layers": 1}]] + [["compress_all_res", {"multiplier": 1}]] * 3
    + [["res_x", {"num_layers": 1}]],
    "decoder_blocks": [["res_x", {"num_layers": 1}]] + [["compress_all", {"residual": True, "multiplier": 2}]] * 3
    + [["res_x", {"num_layers": 1}]],
}

_TINY_AUDIO_VAE = {
    "model": {"params": {"sampling_rate": 16000, "ddconfig": {
        "ch": 128, "out_ch": 2, "in_channels": 2, "ch_mult": [1, 1, 1], "num_res_blocks": 1,
        "attn_resolutions": [], "resolution": 256, "z_channels": 8, "double_z": True, "norm_type": "pixel",
        "causality_axis": "height", "mid_block_add_attention": False, "mel_bins": 64}}},
    "preprocessing": {"stft": {"hop_length": 160, "filter_length": 1024, "causal": True},
                      "mel": {"n_mel_channels": 64}},
}

_TINY_VOCODER = {
    "resblock_kernel_sizes": [3], "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
    "resblock_dilation_sizes": [[1, 3, 5]], "upsample_initial_channel": 32, "resblock": "1", "stereo": True,
    "output_sampling_rate": 24000, "activation": "snake", "use_tanh_at_final": True, "use_bias_at_final": True,
}


# LTX-2.3's vocoder layout: a BigVGAN-v2 style vocoder (AMP1 blocks, snakebeta) to 16 kHz, then a bandwidth extension
# generator whose residual over a resampled skip reaches 48 kHz (ltx-core's VocoderWithBWE, nested config)
_AMP_VOCODER = {"resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]], "upsample_initial_channel": 32,
                "resblock": "AMP1", "stereo": True, "activation": "snakebeta", "use_tanh_at_final": False,
                "use_bias_at_final": False}
_TINY_VOCODER_BWE = {
    "vocoder": {**_AMP_VOCODER, "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [10, 8, 4, 4, 4]},
    "bwe": {**_AMP_VOCODER, "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
            "input_sampling_rate": 16000, "output_sampling_rate": 48000, "n_fft": 512, "hop_length": 80,
            "num_mels": 64},
}
_VERSION_VOCODER = {"ltx2": _TINY_VOCODER, "ltx2.3": _TINY_VOCODER_BWE}


def tiny_config(version: str = "ltx2") -> dict:
    """The full metadata config of a tiny checkpoint in the given layout ('ltx2' = 19B, 'ltx2.3' = 22B)."""
    from . import tiny_text

    if version not in ckpt.VERSIONS:
        raise ValueError(f"version must be one of {ckpt.VERSIONS}, got {version!r}")
    transformer = {**_FIXED_TRANSFORMER, **_TINY_TRANSFORMER, **_VERSION_TRANSFORMER[version]}
    transformer.update(tiny_text.tiny_connector_config(version))
    return {
        "transformer": transformer,
        "vae": dict(_TINY_VAE),
        "audio_vae": json.loads(json.dumps(_TINY_AUDIO_VAE)),
        "vocoder": json.loads(json.dumps(_VERSION_VOCODER[version])),
    }


def spread_init_(name: str, tensor: torch.Tensor, generator: torch.Generator) -> None:
    """Fill one tensor with values that keep every path alive (see module docstring)."""
    with torch.no_grad():
        if "per_channel_statistics" in name:
            if "std" in name:
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
        elif "scale_shift_table" in name:
            tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))
        elif tensor.ndim >= 2:
            fan_in = math.prod(tensor.shape[1:])
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
        elif "norm" in name or name.endswith(("alpha", "beta", "gain", "scale")):
            tensor.copy_(1.0 + 0.3 * torch.randn(tensor.shape, generator=generator))
        else:  # biases and other vectors
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))


def random_init_(module: torch.nn.Module, seed: int) -> None:
    """spread_init_'s distributions for a whole module, drawn in place on the tensors' own device (random 19B
    weights on a GPU in seconds; used by the benchmarks)."""
    for i, (name, t) in enumerate(module.state_dict().items()):
        g = torch.Generator(t.device).manual_seed(seed + i)
        if not t.is_floating_point():
            continue
        if "scale_shift_table" in name:
            t.normal_(0.0, 0.5, generator=g)
        elif t.ndim >= 2:
            t.normal_(0.0, 1.0 / math.sqrt(math.prod(t.shape[1:])), generator=g)
        elif "norm" in name:
            t.normal_(1.0, 0.3, generator=g)
        else:
            t.normal_(0.0, 0.1, generator=g)


def tiny_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every component, under the checkpoint's real key names (text side included)."""
    from . import tiny_text
    from .backbone import COMPONENTS

    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for configurator, prefixes, _ in COMPONENTS.values():
        module = configurator.from_config(config)
        for name, tensor in sorted(module.state_dict().items()):
            key = _file_key(prefixes, name)
            if key in state:  # statistics are shared between encoder and decoder
                continue
            value = torch.empty(tensor.shape, dtype=torch.float32)
            spread_init_(key, value, generator)
            state[key] = value.contiguous()
    # the statistics the released file carries beside the used ones (checkpoint.UNUSED_STATISTICS)
    channels = state["vae.per_channel_statistics.mean-of-means"].shape[0]
    state["vae.per_channel_statistics.channel"] = torch.arange(channels)
    state["vae.per_channel_statistics.mean-of-stds"] = torch.full((channels,), 0.5)
    state.update(tiny_text.connector_state_dict(config, seed=seed))
    return state


def _file_key(prefixes: dict[str, str], name: str) -> str:
    """Checkpoint key of a module key, given {checkpoint prefix: module prefix} (longest module prefix wins)."""
    file_prefix, module_prefix = max(
        ((old, new) for old, new in prefixes.items() if name.startswith(new)), key=lambda pair: len(pair[1])
    )
    return file_prefix + name[len(module_prefix) :]


def write_tiny_checkpoint(path: str | Path, version: str = "ltx2", seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = tiny_config(version)
    save_file(tiny_state_dict(config, seed), str(path), metadata={"config": json.dumps(config)})
    return path


def write_tiny_lora(path: str | Path, version: str = "ltx2", rank: int = 4, downscale: int = 2, seed: int = 1) -> Path:
    """A random control LoRA (ComfyUI / ltx-trainer key layout) over every attention projection of the tiny
    transformer, declaring `reference_downscale_factor` in its metadata like Lightricks' IC-LoRAs."""
    from .backbone import COMPONENTS

    configurator = COMPONENTS["transformer"][0]
    with torch.device("meta"):
        model = configurator.from_config(tiny_config(version))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".attn1.to_" in f".{name}":
            out_f, in_f = module.weight.shape
            state[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=generator) / in_f**0.5
            state[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=generator) * 0.1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"reference_downscale_factor": str(downscale)})
    return path


def write_tiny_depth_anything(folder: str | Path) -> Path:
    """A random-weight Depth Anything (transformers) folder with the real processor settings at a small size."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=32, patch_size=14)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(do_resize=True, size={"height": 126, "width": 126}, keep_aspect_ratio=True,
                      ensure_multiple_of=14, resample=3, do_rescale=True, do_normalize=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return Path(folder)


def tiny_upscaler_config(mid_channels: int = 32) -> dict:
    """The released x2 spatial upsampler's config keys (its metadata) with a narrow middle and one block per stage."""
    return {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": mid_channels,
            "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True, "temporal_upsample": False,
            "spatial_scale": 2.0, "rational_resampler": False}


def write_tiny_upscaler(path: str | Path, config: dict | None = None, seed: int = 2) -> Path:
    """A random-weight latent upsampler file in the released layout: LatentUpsampler's own keys, config metadata."""
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator

    config = config or tiny_upscaler_config()
    with torch.device("meta"):
        module = LatentUpsamplerConfigurator.from_config(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in sorted(module.state_dict().items()):
        value = torch.empty(tensor.shape, dtype=torch.float32)
        spread_init_(name, value, generator)
        state[name] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"config": json.dumps(config)})
    return path


def write_tiny_models(root: str | Path, versions: tuple[str, ...] = ("ltx2",), seed: int = 0) -> dict[str, Path]:
    """Lay out tiny model files the way ComfyUI's models folder holds them; returns their paths.

    root/checkpoints/avcontrol-tiny-<version>.safetensors, root/text_encoders/avcontrol-tiny-gemma/ (an HF folder)
    root/loras/avcontrol-tiny-ic-lora-ref0.5.safetensors (a control LoRA for the first version) and
    root/latent_upscale_models/avcontrol-tiny-spatial-upscaler-x2.safetensors (stage two's latent upsampler).
    Files already present are kept (same seed gives the same bytes), so repeated calls are cheap. Only what
    requirements.txt installs is needed; the preprocessors' tiny files (write_tiny_depth_anything needs pillow and
    torchvision) are written by the tests that use them.
    """
    from . import tiny_text

    root = Path(root)
    paths: dict[str, Path] = {}
    for version in versions:
        target = root / "checkpoints" / TINY_CHECKPOINT.format(version=version)
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            write_tiny_checkpoint(tmp, version, seed)
            tmp.replace(target)
        paths[f"checkpoint_{version}"] = target
    gemma = root / "text_encoders" / TINY_GEMMA_DIR
    if not (gemma / "config.json").exists():
        tiny_text.write_tiny_gemma_folder(gemma)
    paths["gemma"] = gemma
    lora = root / "loras" / TINY_LORA
    if not lora.exists():
        write_tiny_lora(lora, versions[0])
    paths["lora"] = lora
    upscaler = root / "latent_upscale_models" / TINY_UPSCALER
    if not upscaler.exists():
        write_tiny_upscaler(upscaler)
    paths["upscaler"] = upscaler
    return paths
