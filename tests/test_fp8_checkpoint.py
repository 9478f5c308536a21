"""Pre-quantised fp8 checkpoints (ltx-core's scaled layout, as in ltx-2-19b-dev-fp8.safetensors: an F8_E4M3 `.weight`
with a per-tensor `.weight_scale` and a static `.input_scale`) load: each weight is its fp8 value times its scale,
in the model's dtype or in the fp8 storage option, and the model runs close to the full-precision file."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from avcontrol_core import backbone, checkpoint, kernels, latents, sampling
from avcontrol_core.errors import InputError
from avcontrol_core.guidance import Guidance

# the Linears ltx-core's fp8 layouts quantise: attention and feed-forward of both streams, inside the blocks
SCALED = re.compile(r"^model\.diffusion_model\.transformer_blocks\.\d+\..*(to_q|to_k|to_v|to_out\.0|ff\.net\.0\.proj|"
                    r"ff\.net\.2)\.weight$")
FP8_MAX = torch.finfo(kernels.FP8).max


def quantised_copy(src, dst):
    """The checkpoint re-saved the way the fp8 release stores it: q = w / s in e4m3 with s = amax(|w|) / 448."""
    tensors, meta = load_file(str(src)), checkpoint.read_metadata(src)
    expected = {}
    for key in [k for k in tensors if SCALED.match(k)]:
        w = tensors[key].float()
        scale = w.abs().amax() / FP8_MAX
        q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(kernels.FP8)
        tensors[key] = q
        tensors[key.removesuffix("weight") + "weight_scale"] = scale.reshape(())
        tensors[key.removesuffix("weight") + "input_scale"] = torch.tensor(0.02)
        expected[key.removeprefix(checkpoint.TRANSFORMER_PREFIX)] = q.float() * scale
    save_file(tensors, str(dst), metadata=meta)
    return dst, expected


@pytest.fixture(scope="module")
def quantised(tiny_models, tmp_path_factory):
    return quantised_copy(tiny_models["checkpoint_ltx2"], tmp_path_factory.mktemp("fp8") / "tiny-fp8.safetensors")


def run(model, make_context):
    latent = latents.empty_latent(64, 64, 9, 24.0)
    sigmas = sampling.schedule("ltx2", 2, latent.video[0, 0].numel())
    return sampling.sample(model.transformer, latent, make_context(model, seed=4), None, Guidance(), sigmas, 1,
                           causal_positions=True, dtype=model.dtype)


def test_each_weight_is_its_fp8_value_times_its_scale(quantised, tiny_model, make_context):
    path, expected = quantised
    model = backbone.load_model(path, "cpu", "fp32")
    params = dict(model.transformer.named_parameters())
    assert expected and all(torch.equal(params[name], value) for name, value in expected.items())
    original = dict(tiny_model.transformer.named_parameters())
    worst = max(float((params[n] - original[n]).norm() / original[n].norm()) for n in expected)
    assert 0 < worst < 0.05, worst  # e4m3 keeps 3 mantissa bits
    out, ref = run(model, make_context), run(tiny_model, make_context)
    for x, r in ((out.video, ref.video), (out.audio, ref.audio)):
        err = float((x - r).norm() / r.norm())
        assert 0 < err < 0.05, err


def test_the_fp8_option_stores_the_dequantised_weights_in_fp8(quantised, make_context):
    path, expected = quantised
    model = backbone.load_model(path, "cpu", "bf16", backbone.ModelOptions(weights="fp8"))
    params = dict(model.transformer.named_parameters())
    for name, value in expected.items():  # fp8 value x scale, rounded to bf16, then ltx-core's fp8 cast
        assert torch.equal(params[name], value.to(torch.bfloat16).to(kernels.FP8)), name
    bf16 = backbone.load_model(path, "cpu", "bf16")
    out, ref = run(model, make_context), run(bf16, make_context)
    assert float((out.video - ref.video).norm() / ref.video.norm()) < 0.05


def test_a_scale_beside_a_full_precision_weight_is_refused(tiny_models, tmp_path):
    tensors, meta = load_file(str(tiny_models["checkpoint_ltx2"])), checkpoint.read_metadata(
        tiny_models["checkpoint_ltx2"])
    key = next(k for k in tensors if SCALED.match(k))
    tensors[key.removesuffix("weight") + "weight_scale"] = torch.tensor(0.01)
    save_file(tensors, str(tmp_path / "stray.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="1 unexpected keys: .*weight_scale"):
        backbone.load_model(tmp_path / "stray.safetensors", "cpu", "fp32")
