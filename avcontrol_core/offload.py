"""GPU memory: block swap of the transformer (the rest of residency, the cache and out-of-memory errors: residency.py).

BlockSwap places a transformer by a Plan (offload_plan): fixed layers and resident blocks move to the device;
each streamed block is packed once into a contiguous (pinned, on CUDA) span of a host buffer shared with its
neighbours (see host_buffers) and, while it runs, its parameters point into a device slot. Hooks on
`transformer.transformer_blocks[i]` (ltx-core's LTXModel calls them in order) do the work:

- transformer pre-hook: start the copies of the first streamed blocks (normally already in flight from the
  previous forward, see below);
- block pre-hook (streamed): wait for the block's copy, point its parameters at the slot;
- block post-hook (streamed): point them back at the host copy, mark the slot reusable once the compute that reads
  it is done, and start the next copy: the next streamed blocks in cyclic order, so the last block of one forward
  prefetches the first ones of the next.

On CUDA copies run on a side stream: an event per copy makes the compute stream wait for the data, an event per
compute makes the next copy into that slot wait for the reads. Elsewhere (CPU) the same bookkeeping runs with
synchronous copies, which is how the tests prove it. A parameter whose tensor was replaced while at home (a fused
LoRA) is copied from its current tensor, so block swap composes with `lora.apply_loras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .offload_plan import GIB, Plan, activation_bytes, gb
from .residency import Hint, empty_cache, tensor_bytes

ALIGN = 256  # byte alignment of each tensor inside a packed block / slot


def packed_bytes(module: torch.nn.Module) -> int:
    """A block's size packed for streaming (each tensor aligned to ALIGN bytes): what one slot must hold."""
    return sum(-(-t.numel() * t.element_size() // ALIGN) * ALIGN for _, _, t in _tensors(module))


def block_bytes(transformer: torch.nn.Module) -> list[int]:
    return [packed_bytes(b) for b in transformer.transformer_blocks]


def fixed_bytes(transformer: torch.nn.Module) -> int:
    return tensor_bytes(transformer) - sum(tensor_bytes(b) for b in transformer.transformer_blocks)


def free_device_bytes(device: torch.device) -> int:
    """What a new allocation can get on `device`: free memory plus what PyTorch's allocator caches unused.
    Not limited on the CPU (there the budget alone limits the plan)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 1 << 62
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _tensors(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
    """(owner module, attribute, tensor) for every parameter and buffer of `module`, in a fixed order."""
    out = []
    for owner in module.modules():
        out += [(owner, n, p) for n, p in owner._parameters.items() if p is not None]
        out += [(owner, n, b) for n, b in owner._buffers.items() if b is not None]
    return out


def _set(owner: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    if name in owner._parameters:
        owner._parameters[name].data = value
    else:
        owner._buffers[name] = value


def _get(owner: torch.nn.Module, name: str) -> torch.Tensor:
    return owner._parameters[name].data if name in owner._parameters else owner._buffers[name]


@dataclass
class _Packed:
    """A streamed block's tensors in one host buffer: `flat` (uint8) and each tensor's (offset, dtype, shape)."""

    flat: torch.Tensor
    entries: list[tuple[torch.nn.Module, str, int, torch.dtype, torch.Size]]

    @property
    def nbytes(self) -> int:
        return self.flat.numel()

    def views(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        return [buffer[o:o + _nbytes(d, s)].view(d).view(s) for _, _, o, d, s in self.entries]


def _nbytes(dtype: torch.dtype, shape: torch.Size) -> int:
    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


def _packed_in_place(block: torch.nn.Module, pin: bool) -> _Packed | None:
    """The block's earlier pack, if its tensors still live there (pinned as asked): reused instead of packed again."""
    cached = getattr(block, "_avc_packed", None)
    if cached is None or (pin and not cached.flat.is_pinned()):
        return None
    if all(_get(o, n).data_ptr() == v.data_ptr() for (o, n, *_), v in zip(cached.entries, cached.views(cached.flat))):
        return cached
    return None


def _pack(block: torch.nn.Module, flat: torch.Tensor) -> _Packed:
    """Copy a block's tensors into `flat` (uint8, packed_bytes(block) long) and point the block at it."""
    entries, offset = [], 0
    for owner, name, t in _tensors(block):
        entries.append((owner, name, offset, t.dtype, t.shape))
        offset += -(-_nbytes(t.dtype, t.shape) // ALIGN) * ALIGN
    packed = _Packed(flat[:offset], entries)
    for (owner, name, *_), view in zip(entries, packed.views(packed.flat)):
        view.copy_(_get(owner, name))
        _set(owner, name, view)
    block._avc_packed = packed
    return packed


def host_buffers(sizes: list[int]) -> list[list[int]]:
    """Blocks grouped (in order) into host buffers for the packs. PyTorch's pinned-memory allocator rounds every
    request up to a power of two, so one buffer per 19B block (0.72 GiB) would pin 1 GiB (+39%); each group here
    fills the largest power of two not above what is left, so only the last, smallest buffers round up (30 such
    blocks pin 23 GiB instead of 30). Returns the block positions of each buffer."""
    groups, start = [], 0
    while start < len(sizes):
        left = sum(sizes[start:])
        cap, end, used = 1 << (left.bit_length() - 1), start, 0
        while end < len(sizes) and used + sizes[end] <= cap:
            used += sizes[end]
            end += 1
        end = max(end, start + 1)  # a block larger than that power of two gets a buffer of its own
        groups.append(list(range(start, end)))
        start = end
    return groups


@dataclass
class _Slot:
    buffer: torch.Tensor
    holds: int | None = None  # block index whose data is (or is being copied) in the buffer
    busy: bool = False  # the block it holds is computing
    ready: object = None  # CUDA event: copy done
    done: object = None  # CUDA event: last compute reading the buffer done


@dataclass
class BlockSwap:
    """Places `transformer` on `device` by `plan`; `install()` moves and hooks, `remove()` restores (everything back
    on the host, hooks gone). `log` records ("load" | "run" | "free", block, slot) when `record` is set."""

    transformer: torch.nn.Module
    plan: Plan
    device: torch.device
    record: bool = False
    log: list[tuple[str, int, int]] = field(default_factory=list)
    loads: int = 0

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.blocks = self.transformer.transformer_blocks
        self.cuda = self.device.type == "cuda"
        self._home: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        self._packed: dict[int, _Packed] = {}
        self._slots: list[_Slot] = []
        self._views: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._resting: dict[int, list[torch.Tensor]] = {}
        self._hooks: list = []
        self._cursor = 0
        self._stream = None
        self.installed = False

    # ---- placement ----------------------------------------------------------------------------------------------

    def install(self) -> BlockSwap:
        if self.installed:
            return self
        n = len(self.blocks)
        if sorted(self.plan.resident + self.plan.streamed) != list(range(n)):
            raise ValueError(f"plan does not cover the {n} blocks exactly once: {self.plan}")
        try:
            block_ids = {id(m) for b in self.blocks for m in b.modules()}
            fixed = [(o, name, t) for o, name, t in _tensors(self.transformer) if id(o) not in block_ids]
            resident = [x for i in self.plan.resident for x in _tensors(self.blocks[i])]
            for owner, name, _ in fixed + resident:
                home = _get(owner, name)  # the tensor itself: a Parameter's .data is about to be replaced
                self._home.append((owner, name, home))
                _set(owner, name, home.to(self.device))
            self._pack_streamed()
            if self.plan.streamed:
                size = max(p.nbytes for p in self._packed.values())
                for s in range(self.plan.slots):
                    self._slots.append(_Slot(torch.empty(size, dtype=torch.uint8, device=self.device)))
                    for i, packed in self._packed.items():
                        self._views[s, i] = packed.views(self._slots[s].buffer)
                if self.cuda:
                    self._stream = torch.cuda.Stream(self.device)
                self._hooks.append(self.transformer.register_forward_pre_hook(lambda *_: self._begin()))
                for i in self.plan.streamed:
                    self._hooks.append(self.blocks[i].register_forward_pre_hook(
                        lambda _m, _a, i=i: self._enter(i)))
                    self._hooks.append(self.blocks[i].register_forward_hook(
                        lambda _m, _a, _o, i=i: self._leave(i)))
        except BaseException:
            self.installed = True
            self.remove()
            raise
        self.installed = True
        return self

    def _pack_streamed(self) -> None:
        """Each streamed block's tensors into a packed host copy (pinned on CUDA): kept from an earlier placement when
        still in place, else packed into buffers grouped by host_buffers."""
        todo = []
        for i in self.plan.streamed:
            cached = _packed_in_place(self.blocks[i], self.cuda)
            if cached is not None:
                self._packed[i] = cached
            else:
                todo.append(i)
        sizes = [packed_bytes(self.blocks[i]) for i in todo]
        for group in host_buffers(sizes):
            buffer = torch.empty(max(1, sum(sizes[j] for j in group)), dtype=torch.uint8, pin_memory=self.cuda)
            offset = 0
            for j in group:
                self._packed[todo[j]] = _pack(self.blocks[todo[j]], buffer[offset:offset + sizes[j]])
                offset += sizes[j]

    def remove(self) -> None:
        """Hooks off, streamed blocks back on their host copies, fixed layers and resident blocks back home."""
        if not self.installed:
            return
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self._stream is not None:
            self._stream.synchronize()
        for i in list(self._resting):
            self._restore(i)
        for owner, name, t in self._home:
            _set(owner, name, t)
        self._home.clear()
        self._slots.clear()
        self._views.clear()
        self._stream = None
        self.installed = False
        empty_cache(self.device)

    def device_bytes(self) -> int:
        """Bytes this placement holds on the device (weights and slots; activations not counted)."""
        if not self.installed:
            return 0
        moved = sum(_get(o, n).numel() * _get(o, n).element_size() for o, n, _ in self._home)
        return moved + sum(s.buffer.numel() for s in self._slots)

    # ---- the hooks ----------------------------------------------------------------------------------------------

    def _begin(self) -> None:
        for i in list(self._resting):  # a forward that raised half-way left a block pointing at its slot
            self._release_slot(self._restore(i))
        self._cursor = 0
        self._fill()

    def _release_slot(self, slot_index: int) -> _Slot:
        """The slot may be refilled once the compute queued so far (which may read it) is done."""
        slot = self._slots[slot_index]
        slot.busy = False
        if self.cuda:
            slot.done = torch.cuda.Event()
            slot.done.record(torch.cuda.current_stream(self.device))
        return slot

    def invalidate(self) -> None:
        """Forget what the slots hold (call after editing streamed weights in place at home)."""
        for slot in self._slots:
            slot.holds = None if not slot.busy else slot.holds

    def _enter(self, i: int) -> None:
        slot_index = next((s for s, slot in enumerate(self._slots) if slot.holds == i), None)
        if slot_index is None:  # not prefetched (cursor moved past it): load now
            self._cursor = self.plan.streamed.index(i)
            self._fill()
            slot_index = next(s for s, slot in enumerate(self._slots) if slot.holds == i)
        slot = self._slots[slot_index]
        if self.cuda and slot.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(slot.ready)
        slot.busy = True
        packed, views = self._packed[i], self._views[slot_index, i]
        resting = []
        for (owner, name, *_), packed_view, view in zip(packed.entries, packed.views(packed.flat), views):
            current = _get(owner, name)
            if current.data_ptr() != packed_view.data_ptr():  # replaced while at home (fused LoRA): copy it now
                view.copy_(current, non_blocking=True)
            resting.append(current)
            _set(owner, name, view)
        self._resting[i] = resting
        if self.record:
            self.log.append(("run", i, slot_index))

    def _leave(self, i: int) -> None:
        slot_index = self._restore(i)
        slot = self._release_slot(slot_index)
        if self._rewritten(i):
            slot.holds = None  # its contents came partly from replaced tensors: never reuse them as the block's
        if self.record:
            self.log.append(("free", i, slot_index))
        self._cursor = (self.plan.streamed.index(i) + 1) % len(self.plan.streamed)
        self._fill()

    def _restore(self, i: int) -> int:
        slot_index = next(s for s, slot in enumerate(self._slots) if slot.holds == i)
        packed = self._packed[i]
        for (owner, name, *_), rest in zip(packed.entries, self._resting.pop(i)):
            _set(owner, name, rest)
        return slot_index

    def _rewritten(self, i: int) -> bool:
        packed = self._packed[i]
        return any(_get(o, n).data_ptr() != v.data_ptr() for (o, n, *_), v in zip(packed.entries, packed.views(packed.flat)))

    def _fill(self) -> None:
        """Have the next `slots` streamed blocks (cyclic from the cursor) loaded or loading."""
        order = self.plan.streamed
        wanted = [order[(self._cursor + j) % len(order)] for j in range(min(len(self._slots), len(order)))]
        for block in wanted:
            if any(slot.holds == block for slot in self._slots):
                continue
            free = [s for s, slot in enumerate(self._slots) if not slot.busy and slot.holds not in wanted]
            if not free:
                return
            self._load(block, free[0])

    def _load(self, i: int, slot_index: int) -> None:
        slot, packed = self._slots[slot_index], self._packed[i]
        target = slot.buffer[:packed.nbytes]
        if self.cuda:
            with torch.cuda.stream(self._stream):
                if slot.done is not None:
                    self._stream.wait_event(slot.done)
                target.copy_(packed.flat, non_blocking=True)
                slot.ready = torch.cuda.Event()
                slot.ready.record(self._stream)
        else:
            target.copy_(packed.flat)
        slot.holds = i
        self.loads += 1
        if self.record:
            self.log.append(("load", i, slot_index))


# -----------------------------------------------------------------------------------------------------------------
# Out-of-memory hints and activation estimates
# -----------------------------------------------------------------------------------------------------------------


def sampling_hints(options, latent, fuse_loras: bool, plan: Plan | None) -> list[Hint]:
    """What to lower, most effective first, for an out-of-memory error while sampling."""
    hints = []
    if options.offload_budget_gb > 0:
        kept = f", {len(plan.resident)} blocks resident" if plan is not None else ""
        hints.append(Hint("offload_budget_gb", f"{options.offload_budget_gb:g}{kept}",
                          "a lower budget streams more blocks"))
    else:
        hints.append(Hint("offload_budget_gb", "0, everything resident",
                          "your GPU's memory minus a few GB streams the other blocks from host memory"))
    if options.weights == "default":
        hints.append(Hint("weights", "default", "fp8 halves the blocks' memory"))
    hints.append(Hint("resolution or frames", f"{latent.width}x{latent.height}x{latent.frames}", "smaller"))
    if fuse_loras:
        hints.append(Hint("lora_mode", "fuse", "runtime; fuse holds a fused copy of each touched weight"))
    if options.compile:
        hints.append(Hint("compile", "on", "off; the compiled kernels keep extra workspaces"))
    return hints


def run_activation_bytes(config: dict, latent, rows: int, dtype: torch.dtype, references: tuple = ()) -> int:
    """activation_bytes for sampling `latent` with `rows` batched passes and the given references."""
    video = latent.video[0, 0].numel()
    audio = latent.audio.shape[2]
    for ref in references:
        lat = ref.latent
        if lat.ndim == 5:
            video += lat[0, 0].numel()
        else:
            audio += lat.shape[2]
    dense = any(not isinstance(getattr(r, "attention", 1.0), float) or getattr(r, "attention", 1.0) != 1.0
                for r in references)
    return activation_bytes(config["transformer"], video, audio, rows, torch.empty((), dtype=dtype).element_size(),
                            dense_mask=dense)


__all__ = ["BlockSwap", "GIB", "block_bytes", "fixed_bytes", "free_device_bytes", "gb", "run_activation_bytes",
           "sampling_hints"]
