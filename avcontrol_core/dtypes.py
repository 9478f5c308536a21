"""The one dtype parser: a torch dtype or a name, "auto" choosing by device (bf16 on CUDA, fp32 elsewhere: a CPU
without bf16 instructions runs bf16 many times slower than fp32, measured 360 s against 6 s)."""

from __future__ import annotations

import torch

from .errors import InputError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHOICES = ("auto", *DTYPES)


def auto_dtype(device: torch.device | str) -> str:
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def parse_dtype(name: str | torch.dtype, device: torch.device | str = "cpu") -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        name = auto_dtype(device)
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {list(CHOICES)}, got {name!r}")
    return DTYPES[name]
