"""Checkpoint reading and strict loading: bad files fail early, with a message that names the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avcontrol_core import backbone, checkpoint
from avcontrol_core.dtypes import parse_dtype
from avcontrol_core.errors import InputError

BLOCK_KEY = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"


def rewrite(src: Path, dst: Path, *, drop=(), add=None, replace=None, config=None, metadata=True) -> Path:
    """Copy a checkpoint with keys dropped / added / replaced and optionally another config."""
    tensors = load_file(str(src))
    meta = checkpoint.read_metadata(src)
    for key in drop:
        del tensors[key]
    tensors.update(add or {})
    tensors.update(replace or {})
    if config is not None:
        meta = {**meta, "config": json.dumps(config)}
    save_file(tensors, str(dst), metadata=meta if metadata else None)
    return dst


@pytest.fixture(scope="module")
def ckpt(tiny_models) -> Path:
    return tiny_models["checkpoint_ltx2"]


def test_pickled_formats_are_refused_before_reading(tmp_path, ckpt):
    for name in ("model.ckpt", "model.pt", "model.bin"):
        path = tmp_path / name
        path.write_bytes(ckpt.read_bytes()[:1000])  # contents do not matter: refused by its kind
        with pytest.raises(InputError, match=r"\.safetensors") as err:
            backbone.load_model(path)
        assert name in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(InputError, match="not found") as err:
        backbone.load_model(path)
    assert "nope.safetensors" in str(err.value)


@pytest.mark.parametrize("where", ["half", "inside_header", "last_byte", "length_prefix"])
def test_truncated_file_is_refused(tmp_path, ckpt, where):
    data = ckpt.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    cuts = {"half": len(data) // 2, "inside_header": 8 + header_len // 2, "last_byte": len(data) - 1, "length_prefix": 5}
    cut = cuts[where]
    path = tmp_path / f"cut-{where}.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(InputError, match="truncated|not a readable") as err:
        backbone.load_model(path)
    assert path.name in str(err.value)
    with pytest.raises(InputError, match="truncated|not a readable"):
        checkpoint.read_config(path)


def test_payload_shorter_than_header_promises_is_refused(tmp_path, ckpt):
    """Our own size check, independent of how strict the safetensors library is about a short file."""
    data = ckpt.read_bytes()
    path = tmp_path / "short.safetensors"
    path.write_bytes(data[:-16])
    with pytest.raises(InputError, match="truncated"):
        checkpoint._check_payload_size(path)
    checkpoint._check_payload_size(ckpt)  # the intact file passes


def test_file_without_config_is_not_an_ltx2_checkpoint(tmp_path, ckpt):
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(4, 4)}, str(plain))
    with pytest.raises(InputError, match="not an LTX-2 checkpoint") as err:
        backbone.load_model(plain)
    assert "plain.safetensors" in str(err.value) and "'config'" in str(err.value)
    # the real tensors, but saved as a bare state dict (metadata stripped)
    stripped = rewrite(ckpt, tmp_path / "stripped.safetensors", metadata=False)
    with pytest.raises(InputError, match="not an LTX-2 checkpoint"):
        backbone.load_model(stripped)


def test_video_only_checkpoint_is_refused_naming_missing_sections(tmp_path, ckpt):
    config = checkpoint.read_config(ckpt)
    video_only = {k: v for k, v in config.items() if k not in ("audio_vae", "vocoder")}
    tensors = {k: v for k, v in load_file(str(ckpt)).items() if not k.startswith(("audio_vae.", "vocoder."))}
    path = tmp_path / "ltxv-video-only.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps(video_only)})
    with pytest.raises(InputError, match="audio\\+video") as err:
        backbone.load_model(path)
    msg = str(err.value)
    assert "audio_vae" in msg and "vocoder" in msg and "ltxv-video-only.safetensors" in msg
    assert "'transformer'" not in msg  # only the sections really missing are named


def test_missing_transformer_key_is_listed(tmp_path, ckpt):
    path = rewrite(ckpt, tmp_path / "missing.safetensors", drop=[BLOCK_KEY])
    with pytest.raises(InputError, match="1 missing keys") as err:
        backbone.load_model(path, dtype="fp32")
    msg = str(err.value)
    assert "transformer_blocks.0.attn1.to_q.weight" in msg and "missing.safetensors" in msg
    assert "unexpected" not in msg


def test_many_missing_keys_are_counted_and_shortened(tmp_path, ckpt):
    block1 = [k for k in load_file(str(ckpt)) if k.startswith("model.diffusion_model.transformer_blocks.1.")]
    assert len(block1) > 8
    path = rewrite(ckpt, tmp_path / "no-block1.safetensors", drop=block1)
    with pytest.raises(InputError, match=f"{len(block1)} missing keys") as err:
        backbone.load_model(path, dtype="fp32")
    assert f"(+{len(block1) - 8} more)" in str(err.value)


def test_unexpected_transformer_key_is_listed(tmp_path, ckpt):
    extra = "model.diffusion_model.transformer_blocks.0.attn1.extra_lora.weight"
    path = rewrite(ckpt, tmp_path / "extra.safetensors", add={extra: torch.zeros(2, 2)})
    with pytest.raises(InputError, match="1 unexpected keys") as err:
        backbone.load_model(path, dtype="fp32")
    assert "transformer_blocks.0.attn1.extra_lora.weight" in str(err.value)
    assert "missing" not in str(err.value)


def test_the_released_vaes_unused_statistics_are_skipped_but_other_extras_refused(tmp_path, ckpt):
    """LTX-2's file carries vae.per_channel_statistics.channel / .mean-of-stds, which no module has (the tiny file
    mirrors that): the VAEs load with the used statistics; an unknown extra statistic is still refused."""
    keys = load_file(str(ckpt))
    assert {"vae.per_channel_statistics.channel", "vae.per_channel_statistics.mean-of-stds"} <= set(keys)
    model = backbone.load_model(ckpt, dtype="fp32")
    for name in ("video_decoder", "video_encoder"):
        stats = dict(model.component(name).per_channel_statistics.named_buffers())
        assert set(stats) == {"mean-of-means", "std-of-means"}
        assert torch.equal(stats["std-of-means"], keys["vae.per_channel_statistics.std-of-means"])
    extra = "vae.per_channel_statistics.median-of-means"
    path = rewrite(ckpt, tmp_path / "extra-stat.safetensors", add={extra: torch.zeros(4)})
    with pytest.raises(InputError, match="1 unexpected keys: per_channel_statistics.median-of-means"):
        backbone.load_model(path, dtype="fp32").component("video_decoder")


def test_wrong_shaped_tensor_is_refused(tmp_path, ckpt):
    original = load_file(str(ckpt))[BLOCK_KEY]
    bad = torch.zeros(original.shape[0], original.shape[1] + 1)
    path = rewrite(ckpt, tmp_path / "shape.safetensors", replace={BLOCK_KEY: bad})
    with pytest.raises(InputError, match="shapes do not match") as err:
        backbone.load_model(path, dtype="fp32")
    msg = str(err.value)
    assert "transformer_blocks.0.attn1.to_q.weight" in msg
    assert str(tuple(bad.shape)) in msg and str(tuple(original.shape)) in msg


def test_damaged_vocoder_is_refused_when_built(tmp_path, ckpt):
    """Components other than the transformer are checked as strictly when first built."""
    key = next(k for k in load_file(str(ckpt)) if k.startswith("vocoder."))
    path = rewrite(ckpt, tmp_path / "novocoder.safetensors", drop=[key])
    model = backbone.load_model(path, dtype="fp32")
    with pytest.raises(InputError, match="vocoder weights do not match") as err:
        model.component("vocoder")
    assert key[len("vocoder.") :] in str(err.value)


def test_version_detection(tiny_model, tiny_model_23):
    assert tiny_model.version == "ltx2" and tiny_model_23.version == "ltx2.3"
    assert checkpoint.detect_version(tiny_model.config) == "ltx2"
    assert checkpoint.detect_version(tiny_model_23.config) == "ltx2.3"
    # the layouts really differ: 19B projects captions inside the transformer, 22B modulates text cross-attention
    assert tiny_model.transformer.caption_projection is not None
    assert not hasattr(tiny_model_23.transformer, "caption_projection")
    assert tiny_model_23.transformer.prompt_adaln_single is not None
    assert tiny_model.transformer.prompt_adaln_single is None
    for flag in ("caption_proj_before_connector", "cross_attention_adaln"):
        cfg = {"transformer": {flag: True}}
        assert checkpoint.detect_version(cfg) == "ltx2.3"
    assert checkpoint.detect_version({"transformer": {}}) == "ltx2"


def test_config_flags_are_read(tiny_model):
    assert tiny_model.causal_temporal_positions is True
    # a config without the key: tests/test_parity.py::test_a_config_without_the_causal_flag_is_causal


def test_no_meta_tensors_after_loading(tiny_models):
    model = backbone.load_model(tiny_models["checkpoint_ltx2"], dtype="fp32")
    assert model.loaded() == ["transformer"]  # built (and checked) at load time, the rest lazily
    for name in backbone.COMPONENTS:
        module = model.component(name)
        tensors = dict(module.named_parameters()) | dict(module.named_buffers())
        assert tensors, name
        on_meta = [n for n, t in tensors.items() if t.is_meta or t.device.type != "cpu"]
        assert not on_meta, (name, on_meta[:5])
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    # weights are the file's, not a fresh init
    file_q = load_file(str(tiny_models["checkpoint_ltx2"]))[BLOCK_KEY]
    assert torch.equal(model.transformer.transformer_blocks[0].attn1.to_q.weight, file_q)
    model.release("vocoder")
    assert "vocoder" not in model.loaded()


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_dtype_is_honoured(tiny_models, name, dtype):
    model = backbone.load_model(tiny_models["checkpoint_ltx2"], dtype=name)
    assert model.dtype == dtype
    floats = {t.dtype for t in model.transformer.parameters() if t.is_floating_point()}
    assert floats == {dtype}
    decoder = model.component("video_decoder")
    for n, t in decoder.state_dict().items():
        if t.is_floating_point():
            # latent statistics stay fp32 so (de)normalisation is exact in every dtype
            assert t.dtype == (torch.float32 if "per_channel_statistics" in n else dtype), n


def test_parse_dtype():
    assert parse_dtype("bf16") is torch.bfloat16
    assert parse_dtype(torch.float16) is torch.float16
    assert parse_dtype("auto", "cpu") is torch.float32  # never bf16 on a CPU
    assert parse_dtype("auto", "cuda") is torch.bfloat16  # names a device; nothing is put on it
    with pytest.raises(InputError, match="dtype") as err:
        parse_dtype("fp8")
    assert "'fp8'" in str(err.value) and "'auto'" in str(err.value)


def test_auto_dtype_loads_fp32_on_the_cpu(tiny_models):
    model = backbone.load_model(tiny_models["checkpoint_ltx2"])  # the default is "auto"
    assert model.dtype == torch.float32
    assert {t.dtype for t in model.transformer.parameters()} == {torch.float32}
