"""fp8 compute ("fp8_scaled" weights): the blocks' Linears keep a per-tensor scale and multiply in fp8.

Storage: each block Linear weight w (the ones ltx-core's fp8 cast stores in 8 bits: attention and feed-forward of
both streams) becomes q = round_e4m3(w / s) with s = amax(|w|) / 448 (448 is e4m3fn's largest value), kept as
float8_e4m3fn beside its fp32 scale in a buffer `weight_scale` (so block swap, which moves parameters and buffers,
carries it, and offload's byte counts include it: 1 byte per weight + 4 per Linear). A pre-quantised file's own
`weight_scale` is kept as it is (not dequantised and re-quantised). The bias stays in the model dtype (the
`bias` of `torch._scaled_mm` must be in the output dtype).

Compute: the input is quantised per tensor with a dynamic scale, s_x = amax(|x|) / 448, every call, and
y = _scaled_mm(x_q, q.t(), scale_a=s_x, scale_b=s, out_dtype=x.dtype, bias=b) = (x_q s_x) @ (q s).T + b, accumulated
in fp32 by the GPU. Dynamic, not the file's static `input_scale`: our own quantisation of a bf16 file has no
input_scale, a calibrated one clips activations outside its calibration (controls and references shift them), and
the amax is one small reduction per Linear. `torch._scaled_mm` wants its second operand column-major (q.t() of a
row-major q is) and the inner and output sizes multiples of 16; a Linear whose shape it cannot take, an fp32 input or
a device without fp8 matmul dequantises its weight for a plain matmul instead (the reason is kept on the layer:
`Fp8ScaledLinear.fallback`). Plain tensor ops and one _scaled_mm call per Linear, with no data-dependent Python
branches, so per-block torch.compile should trace it without graph breaks (not yet checked on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import InputError

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
MIN_CAPABILITY = (8, 9)  # Ada (8.9) and Hopper (9.0): cuBLASLt's fp8 matmul
_TINY = 1e-12  # an all-zero tensor gets this scale instead of 0 (q = 0 either way, no division by zero)


def scale_of(t: torch.Tensor) -> torch.Tensor:
    """The per-tensor e4m3 scale, amax(|t|) / 448, as an fp32 scalar tensor on t's device."""
    return (t.detach().abs().amax().float() / FP8_MAX).clamp(min=_TINY)


def quantise(t: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): q = t / scale rounded to float8_e4m3fn (clamped to +-448), scale = amax(|t|) / 448 unless given.
    Computed in t's dtype when it is at least 16-bit float (the activations' bf16: no fp32 copy), so q * scale ~ t
    within e4m3's relative rounding (2^-4) for elements in its normal range (|t| >= 2^-6 * scale), 0 stays 0."""
    scale = scale_of(t) if scale is None else scale.to(device=t.device, dtype=torch.float32)
    work = t if t.dtype in (torch.float32, torch.bfloat16, torch.float16) else t.float()
    q = (work * (1.0 / scale).to(work.dtype)).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def dequantise(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale.float()).to(dtype)


def capability_problem(device: torch.device | str) -> str | None:
    """Why fp8 compute cannot run on `device` (None when it can): needs torch._scaled_mm and a CUDA GPU with
    compute capability >= 8.9."""
    device = torch.device(device)
    if not hasattr(torch, "_scaled_mm"):
        return f"this torch ({torch.__version__}) has no torch._scaled_mm"
    if device.type != "cuda":
        return f"the device is {device.type!r}" + ("" if torch.cuda.is_available() else " (no CUDA GPU here)")
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY:
        return f"{torch.cuda.get_device_name(device)} has compute capability {cap[0]}.{cap[1]}"
    return None


def require_fp8_compute(device: torch.device | str) -> None:
    problem = capability_problem(device)
    if problem is not None:
        raise InputError(
            f"weights 'fp8_scaled' (fp8 matrix multiply) needs a CUDA GPU with compute capability >= "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} (Ada, Hopper: H100/H200, RTX 40xx) and torch._scaled_mm; "
            f"found: {problem}. Use weights 'fp8' (8-bit storage, computes in bf16 on any device) or 'default'.")


def shape_problem(in_features: int, out_features: int) -> str | None:
    """Why torch._scaled_mm cannot take a Linear of this shape (None when it can)."""
    bad = [f"{n} {v}" for n, v in (("in_features", in_features), ("out_features", out_features)) if v % 16]
    return f"{' and '.join(bad)} not a multiple of 16 (torch._scaled_mm)" if bad else None


def _scaled_mm(a, b, scale_a, scale_b, bias, out_dtype):
    return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, bias=bias, out_dtype=out_dtype)


class Fp8ScaledLinear(torch.nn.Linear):
    """A Linear whose weight is float8_e4m3fn with a per-tensor fp32 scale (`weight_scale`, a buffer) and whose
    matmul runs in fp8 (`matmul`, torch._scaled_mm by default; tests inject an emulation). Still an nn.Linear with
    `weight` (out, in) and `bias`, so LoRA planning, forward hooks (runtime LoRA) and block swap treat it as one."""

    matmul: Callable | None = None  # None: torch._scaled_mm (CUDA, bf16/fp16 input); else f(a, b, sa, sb, bias, dtype)

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, fallback: str | None):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.register_buffer("weight_scale", scale.reshape(()).float())
        self.fallback = fallback  # why this layer dequantises instead of multiplying in fp8 (None: it does not)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.fallback is not None or not self._fp8_ok(x):
            w = dequantise(self.weight, self.weight_scale, dtype)
            return torch.nn.functional.linear(x, w, None if self.bias is None else self.bias.to(dtype))
        lead = x.shape[:-1]
        xq, sx = quantise(x.reshape(-1, self.in_features).contiguous())
        bias = None if self.bias is None else self.bias.to(dtype)
        matmul = self.matmul or _scaled_mm
        y = matmul(xq, self.weight.t(), sx, self.weight_scale, bias, dtype)
        return y.reshape(*lead, self.out_features)

    def _fp8_ok(self, x: torch.Tensor) -> bool:
        if self.matmul is not None:
            return True  # an injected matmul (an emulation) runs on any device and dtype
        return x.device.type == "cuda" and x.dtype in (torch.bfloat16, torch.float16)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", fp8 matmul" if self.fallback is None else f", dequantised: {self.fallback}")


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                scale: torch.Tensor | None = None) -> Fp8ScaledLinear:
    """An Fp8ScaledLinear from a weight: quantised here (scale = amax / 448), or an fp8 weight with its file scale
    kept as given. The bias goes to `dtype`."""
    if weight.dtype == FP8 and scale is not None:
        q, s = weight, scale.float()
    else:
        q, s = quantise(weight.float())
    out_f, in_f = q.shape
    return Fp8ScaledLinear(q.contiguous(), s, None if bias is None else bias.to(dtype), shape_problem(in_f, out_f))


def scaled_linears(module: torch.nn.Module) -> list[tuple[str, Fp8ScaledLinear]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, Fp8ScaledLinear)]


def convert(module: torch.nn.Module, names: list[str], dtype: torch.dtype,
            file_scales: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Replace the Linears named (module paths) by Fp8ScaledLinear in place; `file_scales` {module path: scale}
    keeps a pre-quantised file's scales. Returns 'name: reason' for the layers that will dequantise instead."""
    file_scales = file_scales or {}
    fallbacks = []
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, leaf)
        if not isinstance(old, torch.nn.Linear):
            raise RuntimeError(f"{name} is a {type(old).__name__}, not a Linear: this ltx-core layout is not supported")
        new = make_linear(old.weight.data, None if old.bias is None else old.bias.data, dtype, file_scales.get(name))
        setattr(parent, leaf, new)
        if new.fallback is not None:
            fallbacks.append(f"{name}: {new.fallback}")
    return fallbacks
