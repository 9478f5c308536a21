"""Which transformer blocks stay on the GPU under a memory budget: pure functions over byte counts.

Block swap keeps some blocks resident on the device and streams the others from pinned host memory into a few
device buffers ("slots"), each as large as the largest streamed block. With two slots, the next streamed block is
copied while the current one computes (prefetch depth 1); with one slot every copy waits for the block before it
(prefetch depth 0: slower, the smallest footprint). Streamed blocks are spread evenly over the stack, so each copy
has the compute of the resident blocks before it to hide behind.

    device bytes = fixed layers + activations + resident blocks + slots x largest streamed block

`plan_block_swap` picks the fewest streamed blocks that fit `min(budget, free)`, preferring prefetch depth 1, and
refuses a limit below fixed + activations + one block, naming that minimum in GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

GIB = 1024**3
MAX_PREFETCH = 1  # more slots never pay: a slot costs what one more resident block would
RESERVE_BYTES = GIB // 2  # allocator fragmentation, kernels' workspaces, the sampler's own tensors


def gb(n: float) -> str:
    """Bytes as GB (GiB) with two decimals, the way budgets are typed."""
    return f"{n / GIB:.2f} GB"


def _size(n: float) -> str:
    return gb(n) if n >= GIB / 10 else f"{n / 2**20:.2f} MB"


class BudgetError(InputError):
    """The memory budget (or the free device memory) cannot hold even one streamed block."""


@dataclass(frozen=True)
class Plan:
    """Placement of the transformer blocks: `resident` stay on the device, `streamed` are copied in before they run.

    prefetch_depth: how many streamed blocks may be copied ahead of the one computing (slots = depth + 1).
    slot_bytes: one slot's size (the largest streamed block); device_bytes: what the plan expects to hold on the
    device, activations and reserve included; limit_bytes: the limit it was planned for."""

    resident: tuple[int, ...]
    streamed: tuple[int, ...]
    prefetch_depth: int
    slot_bytes: int = 0
    device_bytes: int = 0
    limit_bytes: int = 0

    @property
    def slots(self) -> int:
        return self.prefetch_depth + 1 if self.streamed else 0

    def enabled(self) -> bool:
        """True when anything is streamed (a plan with every block resident installs nothing per block)."""
        return bool(self.streamed)

    def describe(self) -> str:
        n = len(self.resident) + len(self.streamed)
        if not self.streamed:
            return f"all {n} blocks resident ({_size(self.device_bytes)} of {_size(self.limit_bytes)})"
        return (f"{len(self.resident)} of {n} blocks resident, {len(self.streamed)} streamed through {self.slots} "
                f"slot(s) of {_size(self.slot_bytes)}, prefetch depth {self.prefetch_depth} "
                f"({_size(self.device_bytes)} of {_size(self.limit_bytes)})")


def spread(n: int, k: int) -> tuple[int, ...]:
    """k of n indices, evenly spaced: index (2j+1)*n // (2k) for j < k (the middle of each of k equal runs)."""
    if not 0 <= k <= n:
        raise ValueError(f"cannot pick {k} of {n} blocks")
    return tuple((2 * j + 1) * n // (2 * k) for j in range(k))


def minimum_bytes(block_bytes: list[int], fixed_bytes: int, activation_bytes: int) -> int:
    """The smallest limit block swap can run under: fixed layers, activations and one slot for the largest block."""
    return fixed_bytes + activation_bytes + (max(block_bytes) if block_bytes else 0)


def plan_block_swap(block_bytes: list[int], fixed_bytes: int, budget_bytes: int, free_bytes: int,
                    activation_bytes: int, max_prefetch: int = MAX_PREFETCH) -> Plan:
    """The placement that fits `min(budget_bytes, free_bytes)` with the most blocks resident.

    budget_bytes <= 0 means no budget (only the free memory limits). Every block resident when everything fits;
    otherwise the fewest streamed blocks (spread evenly) with prefetch depth `max_prefetch`, else depth 0. Raises
    BudgetError naming the minimum in GB when not even one streamed block fits."""
    n = len(block_bytes)
    if n == 0:
        raise ValueError("the transformer has no blocks to place")
    if min(block_bytes) < 0 or fixed_bytes < 0 or activation_bytes < 0:
        raise ValueError("byte counts must not be negative")
    limit = free_bytes if budget_bytes <= 0 else min(budget_bytes, free_bytes)
    base = fixed_bytes + activation_bytes
    everything = base + sum(block_bytes)
    if everything <= limit:
        return Plan(tuple(range(n)), (), 0, 0, everything, limit)
    need_min = minimum_bytes(block_bytes, fixed_bytes, activation_bytes)
    if limit < need_min:
        raise BudgetError(_too_small(block_bytes, fixed_bytes, activation_bytes, budget_bytes, free_bytes, need_min))
    for depth in range(max(0, max_prefetch), -1, -1):
        for k in range(1, n + 1):
            streamed = spread(n, k)
            slot = max(block_bytes[i] for i in streamed)
            slots = min(k, depth + 1)
            moving = set(streamed)
            kept = tuple(i for i in range(n) if i not in moving)
            need = base + sum(block_bytes[i] for i in kept) + slots * slot
            if need <= limit:
                return Plan(kept, streamed, slots - 1, slot, need, limit)
    raise AssertionError("unreachable: streaming every block through one slot fits by the check above")


def _too_small(block_bytes, fixed_bytes, activation_bytes, budget_bytes, free_bytes, need_min) -> str:
    need = f"{math.ceil(need_min / GIB * 100 - 1e-9) / 100:.2f} GB"  # rounded up: a budget of this many GB fits
    parts = (f"the transformer's fixed layers ({gb(fixed_bytes)}), activations at this size "
             f"({gb(activation_bytes)}) and one streamed block ({gb(max(block_bytes))})")
    if 0 < budget_bytes <= free_bytes:
        return (f"offload_budget_gb {budget_bytes / GIB:.2f} is too small: {parts} need at least {need}; "
                f"raise offload_budget_gb to at least {need[:-3]}, or lower the "
                f"resolution / frames (activations), or use weights fp8 (halves the block size)")
    return (f"only {gb(free_bytes)} of GPU memory is free, and {parts} need at least {need}: close other "
            f"programs or models using the GPU, or lower the resolution / frames, or use weights fp8")


def activation_bytes(transformer_config: dict, video_tokens: int, audio_tokens: int, rows: int, dtype_bytes: int,
                     context_tokens: int = 1024, dense_mask: bool = False) -> int:
    """A conservative estimate of the device memory one transformer forward needs besides weights.

    Per token and batch row, in the compute dtype: the residual stream, norm output, q/k/v, attention output, the
    feed-forward's 4x hidden and its activation, and per-token AdaLN tables (~32 x width); RoPE tables in fp32;
    the text context; and, with a dense attention mask (references with attention weights), T^2 floats per row.
    Plus RESERVE_BYTES. `rows` = batch x guidance passes (they run batched)."""
    t = transformer_config
    video_dim = t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128)
    audio_dim = t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64)
    per_row = (video_tokens * video_dim + audio_tokens * audio_dim) * (32 * dtype_bytes + 2 * 4)
    per_row += context_tokens * (t.get("cross_attention_dim", 4096) + t.get("audio_cross_attention_dim", 2048)) * 2 * dtype_bytes
    if dense_mask:
        per_row += (video_tokens**2 + audio_tokens**2) * 4
    return rows * per_row + RESERVE_BYTES
