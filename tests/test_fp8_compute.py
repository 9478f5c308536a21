"""weights "fp8_scaled" (avcontrol_core/fp8.py): per-tensor e4m3 quantisation by hand, the fp8-compute Linear's logic
with torch._scaled_mm replaced by a pure-torch emulation (the real call needs CUDA: tests/test_cuda.py), the CPU
refusal, pre-quantised scales kept, offload's byte counts, block swap carrying the scales, runtime LoRA on it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from avcontrol_core import backbone, checkpoint, fp8, kernels, lora, offload
from avcontrol_core.errors import InputError
from avcontrol_core.fidelity import align_with_current_source
from avcontrol_core.offload import BlockSwap
from tests import test_offload as on_cpu
from tests.test_sampling import rel

FP8 = torch.float8_e4m3fn
CALLS = []


def emulate(a, b, scale_a, scale_b, bias, out_dtype):
    """torch._scaled_mm's contract in plain torch, checking the layout it would insist on."""
    assert a.dtype == FP8 and b.dtype == FP8 and a.dim() == 2 and a.is_contiguous()
    assert b.t().is_contiguous(), "second operand must be column-major"
    assert a.shape[1] % 16 == 0 and b.shape[0] % 16 == 0 and b.shape[1] % 16 == 0
    assert scale_a.dtype == scale_b.dtype == torch.float32 and scale_a.numel() == scale_b.numel() == 1
    CALLS.append(a.shape)
    out = (a.float() * scale_a) @ (b.float() * scale_b)
    return (out if bias is None else out + bias.float()).to(out_dtype)


def emulated(module):
    for _, layer in fp8.scaled_linears(module):
        layer.matmul = emulate
    return module


def test_refused_on_cpu_before_the_file_is_read(tmp_path):
    with pytest.raises(InputError) as e:
        backbone.load_model(tmp_path / "missing.safetensors", "cpu", "bf16", backbone.ModelOptions(weights="fp8_scaled"))
    text = str(e.value)
    assert "weights 'fp8_scaled'" in text and "compute capability >= 8.9" in text and "_scaled_mm" in text
    assert "found: the device is 'cpu'" in text


def test_quantise_by_hand_exact_values():
    t = torch.tensor([0.0, 0.25, -1.0, 7.0])
    q, s = fp8.quantise(t)
    assert s.item() == 7.0 / 448 == 1 / 64  # amax / 448
    assert q.dtype == FP8 and q.float().tolist() == [0.0, 16.0, -64.0, 448.0]
    assert torch.equal(fp8.dequantise(q, s), t)


def test_quantise_round_trip_within_e4m3_rounding():
    t = torch.randn(256, 96, generator=torch.Generator().manual_seed(0))
    q, s = fp8.quantise(t)
    assert torch.isclose(s, t.abs().max() / 448)
    back = fp8.dequantise(q, s)
    normal = t.abs() >= 2**-6 * s  # e4m3's normal range: 3 mantissa bits, relative error <= 2^-4
    assert ((back - t).abs()[normal] <= t.abs()[normal] * 2**-4 + 1e-12).all()
    assert ((back - t).abs()[~normal] <= 2**-10 * s).all()  # subnormal steps of 2^-9 * s, half of one
    assert 0 < rel(back, t) < 0.04
    assert float(back.abs().max()) == pytest.approx(float(t.abs().max()))  # the amax element maps to 448 exactly


def test_the_linear_matches_a_hand_computation_and_keeps_the_scaled_mm_layout():
    g = torch.Generator().manual_seed(1)
    w, b, x = torch.randn(48, 32, generator=g), torch.randn(48, generator=g), torch.randn(2, 5, 32, generator=g) * 3
    layer = fp8.make_linear(w, b, torch.float32)
    layer.matmul = emulate
    assert layer.fallback is None and layer.weight.dtype == FP8 and layer.weight_scale.dtype == torch.float32
    CALLS.clear()
    y = layer(x)
    assert CALLS == [torch.Size([10, 32])]  # (batch x tokens, in) in one call
    sw, sx = w.abs().max() / 448, x.abs().max() / 448
    wq = (w / sw).clamp(-448, 448).to(FP8)
    xq = (x / sx).clamp(-448, 448).to(FP8)
    hand = (xq.float() * sx) @ (wq.float() * sw).T + b
    assert y.shape == (2, 5, 48) and torch.allclose(y, hand, rtol=1e-5, atol=1e-5)
    assert 0 < rel(y, torch.nn.functional.linear(x, w, b)) < 0.06  # both operands in e4m3


def test_a_shape_scaled_mm_cannot_take_dequantises_with_the_reason():
    w = torch.randn(40, 24)
    layer = fp8.make_linear(w, None, torch.float32)
    layer.matmul = emulate
    assert "in_features 24 and out_features 40 not a multiple of 16" in layer.fallback
    CALLS.clear()
    x = torch.randn(3, 24)
    y = layer(x)
    assert CALLS == [] and torch.equal(y, x @ fp8.dequantise(layer.weight, layer.weight_scale).T)


def test_without_cuda_the_default_matmul_dequantises():
    layer = fp8.make_linear(torch.randn(32, 32), None, torch.float32)
    x = torch.randn(4, 32)
    assert torch.equal(layer(x), x @ fp8.dequantise(layer.weight, layer.weight_scale).T)


def build(path, weights="fp8_scaled"):
    config = checkpoint.read_config(path)
    t = backbone.build_component(path, config, "transformer", "cpu", torch.float32, weights)
    t = align_with_current_source(t)
    kernels.set_attention(t, kernels.resolve_attention("sdpa", "cpu")[1])
    return t


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    path = on_cpu.write_six_block_checkpoint(tmp_path_factory.mktemp("fp8c"))
    return path, emulated(build(path)), build(path, "default")


def test_every_fp8_cast_linear_is_scaled_and_the_model_runs_close_to_full_precision(scaled, make_context):
    path, t8, t32 = scaled
    names = [n for n, _ in fp8.scaled_linears(t8)]
    expected = sorted(n.removesuffix(".weight") for n, p in t32.named_parameters()
                      if kernels.fp8_storage(n, p.data).dtype == FP8 and n.endswith(".weight"))
    assert names and sorted(names) == expected and all(n.startswith("transformer_blocks.") for n in names)
    ctx = make_context(backbone.load_model(path, "cpu", "fp32"), seed=1)
    CALLS.clear()
    out, ref = on_cpu.sample(t8, ctx, steps=2), on_cpu.sample(t32, ctx, steps=2)
    assert len(CALLS) >= 2 * len(names)  # the fp8 path ran (tiny widths are multiples of 16)
    for x, r in ((out.video, ref.video), (out.audio, ref.audio)):
        assert 0 < rel(x, r) < on_cpu.FP8_TOLERANCE


def test_offload_counts_fp8_bytes_plus_scales(scaled):
    _, t8, t32 = scaled
    for b8, b32 in zip(t8.transformer_blocks, t32.transformer_blocks):
        hand = offload.tensor_bytes(b32)
        for name, layer in fp8.scaled_linears(b8):
            hand -= b32.get_submodule(name).weight.numel() * 3  # 4 bytes -> 1 each
            hand += 4  # its fp32 scale
        assert offload.tensor_bytes(b8) == hand
    assert offload.block_bytes(t8) == [offload.packed_bytes(b) for b in t8.transformer_blocks]


def test_block_swap_carries_the_scales_and_equals_resident(scaled, make_context):
    path, _, _ = scaled
    ctx = make_context(backbone.load_model(path, "cpu", "fp32"), seed=1)
    t = emulated(build(path))
    reference = on_cpu.sample(t, ctx, steps=2)
    swap = BlockSwap(t, on_cpu.plan_of((0, 2, 4)), "cpu").install()
    seen = []
    hook = t.transformer_blocks[1].register_forward_pre_hook(
        lambda m, _a: seen.append({n: l.weight_scale.data_ptr() for n, l in fp8.scaled_linears(m)}))
    out = on_cpu.sample(t, ctx, steps=2)
    hook.remove()
    swap.remove()
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)
    home = {n: l.weight_scale.data_ptr() for n, l in fp8.scaled_linears(t.transformer_blocks[1])}
    assert seen and all(ptr != home[n] for n, ptr in seen[0].items())  # the scales ran from the slot, not home


def test_a_prequantised_files_weights_and_scales_are_kept(tiny_models, tmp_path):
    from tests.test_fp8_checkpoint import quantised_copy

    path, _ = quantised_copy(tiny_models["checkpoint_ltx2"], tmp_path / "fp8.safetensors")
    raw = load_file(str(path))
    t = build(path)
    layers = dict(fp8.scaled_linears(t))
    scaled_keys = [k for k in raw if k.endswith(".weight_scale")]
    assert scaled_keys
    for key in scaled_keys:
        name = key.removeprefix(checkpoint.TRANSFORMER_PREFIX).removesuffix(".weight_scale")
        weight = raw[key.removesuffix("_scale")]
        assert torch.equal(layers[name].weight.view(torch.uint8), weight.view(torch.uint8))  # not re-quantised
        assert layers[name].weight_scale.item() == raw[key].item()


def test_runtime_lora_adds_its_delta_and_fuse_is_refused(scaled):
    _, t8, _ = scaled
    name, layer = fp8.scaled_linears(t8)[0]
    g = torch.Generator().manual_seed(2)
    down, up = torch.randn(4, layer.in_features, generator=g), torch.randn(layer.out_features, 4, generator=g)
    from pathlib import Path

    stack = lora.LoraStack().add(lora.LoraFile(Path("test.safetensors"), {name: lora.LoraWeights(down, up)}), 0.5)
    x = torch.randn(3, layer.in_features, generator=g)
    base = layer(x)
    with lora.apply_loras(t8, stack):
        patched = layer(x)
    # lora.py keeps A and B of an fp8 Linear in bf16 (its compute dtype), the 0.5 folded into B first
    a, b = down.bfloat16().float(), (up * 0.5).bfloat16().float()
    assert torch.allclose(patched - base, (x @ a.T) @ b.T, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="lora_mode fuse cannot be used with weights fp8_scaled"):
        with lora.apply_loras(t8, stack, fuse=True):
            pass


def test_the_loader_node_maps_its_choice_and_is_refused_on_cpu(tiny_models, monkeypatch):
    from avcontrol_core import tiny
    from tests.workflow_defs import load_pack, pack_node_classes

    load_pack()
    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tiny_models["root"]))
    cls = pack_node_classes()["AVCModelLoader"]
    choices = cls.INPUT_TYPES()["optional"]["weights"][0]
    assert "fp8_scaled (fp8 matmul)" in choices
    # the pack is imported as its own package, so its InputError is another class object: compare by name
    with pytest.raises(Exception, match=r"weights 'fp8_scaled' .*compute capability >= 8\.9.*found: the device") as e:
        cls().load(tiny.TINY_CHECKPOINT.format(version="ltx2"), "bf16", "cpu", "fp8_scaled (fp8 matmul)")
    assert type(e.value).__name__ == "InputError"
