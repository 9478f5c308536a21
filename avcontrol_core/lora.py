"""A runtime LoRA stack for the LTX-2 transformer: several LoRAs, each with its own strength, applied without
touching the shared model.

`read_lora(path)` reads one .safetensors LoRA in any layout `lora_keys` understands. `LoraStack` is an immutable list
of (LoRA, strength). `apply_loras(transformer, stack)` is a context manager that checks every target first (a LoRA
for another model version is refused, naming the file, the module and both shapes), then patches:

- runtime (default): a forward hook on each touched Linear adds `strength * alpha/rank * B(A(x))` to its output, in
  the activation dtype; strengths change between calls without reloading or re-fusing anything;
- fused (`fuse=True`): each touched Linear's weight holds `W + sum strength * alpha/rank * B @ A` (computed in fp32,
  cast to the weight's dtype); faster per step; the originals are kept aside (by reference, or on `backup_device`).

On exit the hooks are removed and the original weight tensors put back (the same Parameter objects throughout;
untouched weights are never copied), so the model that the loader caches for many graphs is bit-identical afterwards.
Strength-0 LoRAs are skipped entirely; several LoRAs on one layer add up.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .errors import InputError, require, warn
from .lora_keys import flat_lookup, parse_key, resolve_module


REFERENCE_DOWNSCALE_KEY = "reference_downscale_factor"
REFERENCE_TEMPORAL_KEY = "reference_temporal_scale_factor"  # read by Lightricks' current IC-LoRA pipelines


@dataclass(frozen=True, eq=False)
class LoraWeights:
    """One low-rank pair: A (rank, in_features), B (out_features, rank); alpha None means scale 1."""

    down: torch.Tensor = field(repr=False)
    up: torch.Tensor = field(repr=False)
    alpha: float | None = None
    flat: bool = False  # module name kohya-flattened (dots as underscores), resolved against the model

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A LoRA read from disk: {module path inside LTXModel: weights}, the file's metadata and the keys not understood."""

    path: Path
    modules: dict[str, LoraWeights] = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict, repr=False)
    unknown_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def reference_downscale_factor(self) -> int:
        """How much smaller than the output the reference (IC-LoRA / AVControl) canvas is; 1 when not declared."""
        return _factor(self.path.name, self.metadata, REFERENCE_DOWNSCALE_KEY)

    @property
    def reference_temporal_scale_factor(self) -> int:
        """How many of the clip's frames one reference frame stands for (a reference at 1/S of the clip's frame
        rate, frame 0 and every S-th frame after it); 1 when not declared."""
        return _factor(self.path.name, self.metadata, REFERENCE_TEMPORAL_KEY)


def _factor(name: str, metadata: dict[str, str], key: str) -> int:
    raw = metadata.get(key, "1")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value.is_integer() and value >= 1):
        raise InputError(f"{name}: metadata {key} must be a positive integer, got {raw!r}")
    return int(value)


def read_lora(path: str | Path) -> LoraFile:
    """Read a LoRA .safetensors file (pickled formats are refused) and map its keys to the transformer's modules."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise InputError(
            f"a LoRA must be a .safetensors file (pickled .ckpt/.pt/.bin files are refused: loading them can run "
            f"code), got {path.name}"
        )
    if not path.is_file():
        raise InputError(f"LoRA file not found: {path}")
    metadata = dict(ckpt.read_metadata(path))
    parts: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}
    where: dict[tuple[str, bool], list[str]] = {}
    unknown: list[str] = []
    with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            parsed = parse_key(key)
            if parsed is None:
                unknown.append(key)
                continue
            slot = (parsed.module, parsed.flat)
            seen = parts.setdefault(slot, {})
            if parsed.role in seen:
                raise InputError(f"{path.name}: module {parsed.module} has two '{parsed.role}' tensors "
                                 f"({where[slot][0]} and {key}); the file mixes layouts")
            seen[parsed.role] = f.get_tensor(key)
            where.setdefault(slot, []).append(key)
    modules: dict[str, LoraWeights] = {}
    for (module, flat), tensors in parts.items():
        if "A" not in tensors or "B" not in tensors:
            unknown.extend(where[(module, flat)])  # half a pair (or a lone alpha) cannot be applied
            continue
        down, up = tensors["A"], tensors["B"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise InputError(f"{path.name}: module {module} is not a linear low-rank pair: A {tuple(down.shape)}, "
                             f"B {tuple(up.shape)} (expected A (rank, in) and B (out, rank))")
        alpha = float(tensors["alpha"].float().reshape(-1)[0]) if "alpha" in tensors else None
        if alpha is not None and not math.isfinite(alpha):
            raise InputError(f"{path.name}: module {module} has a non-finite alpha {alpha}")
        modules[module] = LoraWeights(down, up, alpha, flat)
    if not modules:
        raise InputError(f"{path.name} holds no LoRA weights in a layout this loader reads "
                         f"(keys such as {ckpt._short(unknown, 3)})")
    lora = LoraFile(path=path, modules=modules, metadata=metadata, unknown_keys=tuple(unknown))
    lora.reference_downscale_factor, lora.reference_temporal_scale_factor  # noqa: B018 - refuse malformed now
    return lora


@dataclass(frozen=True)
class LoraStack:
    """An ordered, immutable list of (LoRA, strength); `add` returns a new stack, so stacks compose and share."""

    entries: tuple[tuple[LoraFile, float], ...] = ()

    def add(self, lora: LoraFile, strength: float = 1.0) -> LoraStack:
        require(isinstance(strength, (int, float)) and math.isfinite(strength), "LoRA strength", "a finite number",
                strength)
        return LoraStack((*self.entries, (lora, float(strength))))

    def active(self) -> tuple[tuple[LoraFile, float], ...]:
        """The entries that change anything (strength 0 is skipped entirely)."""
        return tuple((lora, s) for lora, s in self.entries if s != 0.0)

    def enabled(self) -> bool:
        return bool(self.active())

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def reference_downscale_factor(self) -> int:
        """The factor declared by the active LoRAs (1 if none declares one); two different ones are a conflict."""
        return self._declared(REFERENCE_DOWNSCALE_KEY)

    @property
    def reference_temporal_scale_factor(self) -> int:
        return self._declared(REFERENCE_TEMPORAL_KEY)

    def _declared(self, key: str) -> int:
        factors = {(lora.name, _factor(lora.name, lora.metadata, key)) for lora, _ in self.active()}
        declared = {f for _, f in factors if f != 1}
        if len(declared) > 1:
            raise InputError(f"LoRAs declare conflicting {key} values: "
                             f"{sorted(f'{n}={f}' for n, f in factors if f != 1)}")
        return declared.pop() if declared else 1


@dataclass(frozen=True)
class LoraReport:
    """What a stack did to a model: per LoRA file, the modules patched, its keys not understood, and the modules it
    names that this model does not have."""

    applied: dict[str, int] = field(default_factory=dict)
    unknown_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unmatched_modules: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not any(self.unknown_keys.values()) and not any(self.unmatched_modules.values())

    def summary(self) -> str:
        lines = [f"{name}: {count} layers patched" for name, count in self.applied.items()]
        lines += [f"{name}: {len(keys)} keys not understood: {ckpt._short(list(keys))}"
                  for name, keys in self.unknown_keys.items() if keys]
        lines += [f"{name}: {len(mods)} modules not in this model: {ckpt._short(list(mods))}"
                  for name, mods in self.unmatched_modules.items() if mods]
        return "\n".join(lines)


def lora_targets(model: torch.nn.Module) -> set[str]:
    """Names of the modules a LoRA can patch: every Linear layer of the model."""
    return {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


# module name -> [(weights, strength * scale, lora file name)]
_Plan = dict[str, list[tuple[LoraWeights, float, str]]]


def plan(model: torch.nn.Module, stack: LoraStack) -> tuple[_Plan, LoraReport]:
    """Match every active LoRA to the model and check shapes; nothing is patched. Refuses (InputError) a shape
    mismatch, a LoRA that matches nothing, or a target that is not a Linear layer."""
    modules = dict(model.named_modules())
    names = set(modules)
    flat_names = flat_lookup(lora_targets(model))
    out: _Plan = {}
    applied, unknown, unmatched = {}, {}, {}
    for lora, strength in stack.active():
        matched, missing, wrong = [], [], []
        for name, weights in lora.modules.items():
            target = resolve_module(name, weights.flat, names, flat_names)
            if target is None:
                missing.append(name)
                continue
            layer = modules[target]
            if not isinstance(layer, torch.nn.Linear):
                raise InputError(f"{lora.name}: module {target} is a {type(layer).__name__}, not a Linear layer; "
                                 f"this loader patches Linear layers only")
            out_f, in_f = layer.weight.shape
            if weights.down.shape[1] != in_f or weights.up.shape[0] != out_f:
                wrong.append((target, (out_f, in_f), weights))
                continue
            matched.append((target, weights))
        if wrong:
            target, shape, weights = sorted(wrong, key=lambda w: w[0])[0]
            more = f" (and {len(wrong) - 1} more modules)" if len(wrong) > 1 else ""
            raise InputError(
                f"{lora.name} does not fit this model: module {target} has weight {shape} (out, in), the LoRA has "
                f"A {tuple(weights.down.shape)} (rank, in) and B {tuple(weights.up.shape)} (out, rank){more}. "
                f"It is probably for another model version (e.g. LTX-2 19B vs LTX-2.3 22B)."
            )
        if not matched:
            raise InputError(
                f"{lora.name}: none of its {len(lora.modules)} modules exist in this model "
                f"(e.g. {ckpt._short(sorted(missing), 3)}); it is not a LoRA for this LTX-2 transformer"
            )
        for target, weights in matched:
            out.setdefault(target, []).append((weights, strength * weights.scale, lora.name))
        key = _unique(lora.name, applied)
        applied[key] = len(matched)
        unknown[key] = lora.unknown_keys
        unmatched[key] = tuple(sorted(missing))
    report = LoraReport(applied, unknown, unmatched)
    for name, count in applied.items():
        missing, keys = unmatched[name], unknown[name]
        if missing:
            warn(f"{name}: {len(missing)} of its {count + len(missing)} modules are not in this model and were "
                 f"skipped (e.g. {ckpt._short(list(missing), 3)}); it may be a LoRA for the other layout "
                 f"(LTX-2 19B vs LTX-2.3 22B)")
        if keys:
            warn(f"{name}: {len(keys)} keys were not understood and were skipped (e.g. {ckpt._short(list(keys), 3)})")
    return out, report


def _unique(name: str, taken: dict) -> str:
    """A report key for this file (the same file twice in a stack gets '#2')."""
    key, n = name, 1
    while key in taken:
        n += 1
        key = f"{name}#{n}"
    return key


def _stacked(entries: list[tuple[LoraWeights, float, str]], device: torch.device, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """All LoRAs of one module as one pair: A (sum of ranks, in), B (out, sum of ranks) with each coefficient folded
    into its B (in fp32, then cast), so B @ A = sum coefficient * B_i @ A_i."""
    down = torch.cat([w.down.to(device=device, dtype=torch.float32) for w, _, _ in entries])
    up = torch.cat([w.up.to(device=device, dtype=torch.float32) * c for w, c, _ in entries], dim=1)
    return down.to(dtype), up.to(dtype)


class _RuntimeDelta:
    """The forward hook of one Linear: output + B(A(x)), with A and B kept per activation dtype and device (moved
    once): a block streamed by block swap keeps its weights on the host while its activations are on the GPU."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor):
        self.pairs = {(down.dtype, down.device): (down, up)}

    def __call__(self, _module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        key = (x.dtype, x.device)
        pair = self.pairs.get(key)
        if pair is None:
            first = next(iter(self.pairs.values()))
            pair = self.pairs[key] = (first[0].to(device=x.device, dtype=x.dtype),
                                      first[1].to(device=x.device, dtype=x.dtype))
        return output + F.linear(F.linear(x, pair[0]), pair[1])


def _activation_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a Linear computes in: its weight's, unless that is a storage-only type (fp8), then bf16."""
    return weight.dtype if weight.is_floating_point() and weight.element_size() >= 2 else torch.bfloat16


@contextlib.contextmanager
def apply_loras(transformer: torch.nn.Module, stack: LoraStack, fuse: bool = False,
                backup_device: torch.device | str | None = None) -> Iterator[LoraReport]:
    """Patch `transformer` with the stack for the duration of the block; yields the LoraReport.

    Every LoRA is checked against the model before anything is patched; on exit the model is exactly as before.
    With `fuse`, each touched weight's data is swapped for the fused tensor and the original tensor kept: by
    reference where it is (`backup_device` None: fastest, the touched layers take twice their memory while active),
    or moved to `backup_device` (e.g. "cpu": device memory stays flat, the originals are copied there and back)."""
    touched, report = plan(transformer, stack)
    modules = dict(transformer.named_modules())
    scaled = [n for n in touched if hasattr(modules[n], "weight_scale")]  # fp8.Fp8ScaledLinear
    if fuse and scaled:
        raise InputError(f"lora_mode fuse cannot be used with weights fp8_scaled ({len(scaled)} touched Linears, e.g. "
                         f"{scaled[0]}, hold fp8 weights with a per-tensor scale: fusing would re-quantise them, and "
                         f"undoing it would not restore them exactly); use lora_mode runtime")
    handles: list[torch.utils.hooks.RemovableHandle] = []
    originals: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, entries in touched.items():
                weight = modules[name].weight
                if fuse:
                    down, up = _stacked(entries, weight.device, torch.float32)
                    original = weight.data
                    fused = (original.float() + up @ down).to(original.dtype)
                    originals[name] = original if backup_device is None else original.to(backup_device)
                    weight.data = fused  # the same Parameter object: anything holding it sees the fused weight
                else:
                    down, up = _stacked(entries, weight.device, _activation_dtype(weight))
                    handles.append(modules[name].register_forward_hook(_RuntimeDelta(down, up)))
        yield report
    finally:
        for handle in handles:
            handle.remove()
        for name, original in originals.items():
            weight = modules[name].weight
            weight.data = original.to(weight.device)  # the kept tensor itself when it never left the device
