"""One owner of the device memory the pack uses: one cache for every model it loads, one way onto the device, one
release, and out-of-memory errors that say which setting to lower.

- `RESIDENCY.get(kind, files, build, *extra)`: the one loaded copy of a model, keyed by its files (path, mtime,
  size) and the settings in `extra`. Kinds (KINDS) are the LTX models and their text encoders, LoRAs, latent
  upsamplers and preprocessor models; each kind keeps its last few. A file that changed on disk is loaded again and
  the stale copy dropped; an evicted model first gives back its device memory.
- `RESIDENCY.make_room(nbytes, device)`: before the pack claims device memory. The pack's own cached models go home
  first (a budgeted transformer to host memory), then the host is asked (`hosting.current().make_room`: in ComfyUI,
  its own models are unloaded). A no-op on the CPU.
- `RESIDENCY.on_device(module, device, what)`: a cached module on the device for one call, then home again and
  its memory returned; running out of memory there raises GPUMemoryError.
- `RESIDENCY.release()`: what the host's "free memory" calls: every cached model gives back its device memory
  (LTX models stay cached; preprocessor models are dropped).
- `memory_guard(what, hints, *holders)`: an out-of-memory error inside becomes `GPUMemoryError(what, hints)` after
  the holders and the residency released their device memory; `hints` are `Hint(setting, value, change)`:
  structured, so the nodes word them with their own input names, and the CLI prints the default wording.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import hosting

__all__ = ["GPUMemoryError", "Hint", "KINDS", "RESIDENCY", "Residency", "empty_cache", "file_key", "memory_guard",
           "tensor_bytes"]


@dataclass(frozen=True)
class Kind:
    capacity: int
    on_release: str  # "release": the model gives back its device memory and stays; "drop": forgotten; "keep"


KINDS = {
    "model": Kind(2, "release"),  # an LTX-2 model and its text encoder: tens of GB each, keep only the current pair
    "lora": Kind(16, "keep"),  # small, host memory
    "upsampler": Kind(2, "keep"),  # about 1 GB each (bf16), host memory, on the device only while upscaling
    "preprocessor": Kind(4, "drop"),  # depth, pose, demixing models: host memory, on the device only for their node
}

OOM_ERRORS = tuple({torch.OutOfMemoryError, torch.cuda.OutOfMemoryError})


def tensor_bytes(module: torch.nn.Module) -> int:
    """The bytes of a module's parameters and buffers (what it claims on a device)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def empty_cache(device: torch.device | str | None = None) -> None:
    """Collect garbage, then return what PyTorch's allocator holds unused on a CUDA device."""
    gc.collect()
    if (device is None or torch.device(device).type == "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def file_key(path: Path | str) -> tuple:
    """(resolved path, mtime_ns, size) of a file; for a folder, the newest mtime and total size of its files."""
    path = Path(path)
    resolved = str(path.resolve())
    if path.is_dir():
        newest, total = path.stat().st_mtime_ns, 0
        for dirpath, _, filenames in os.walk(path):
            for f in filenames:
                st = os.stat(os.path.join(dirpath, f))
                newest, total = max(newest, st.st_mtime_ns), total + st.st_size
        return (resolved, newest, total)
    st = path.stat()
    return (resolved, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class Hint:
    """One setting to lower after running out of memory: its name, its value now and what to change it to."""

    setting: str
    value: Any
    change: str

    def words(self) -> str:
        return f"{self.setting} (now {self.value}: {self.change})"


class GPUMemoryError(RuntimeError):
    """The device ran out of memory while doing `what`; `hints` are the settings to lower, most effective first.
    Everything the pack held on the device was released. `str()` is the default wording (the CLI's) unless a host
    words it (`message`: the nodes name the node and the input that holds each setting)."""

    def __init__(self, what: str, hints: Sequence[Hint], detail: str = "", message: str | None = None):
        self.what, self.hints, self.detail = what, tuple(hints), detail
        lower = "; or ".join(h.words() for h in self.hints)
        super().__init__(message or f"ran out of GPU memory while {what}: lower {lower}. Everything the pack held "
                         f"on the GPU was released, so the next run starts clean. ({detail})")


def _release_one(value: Any) -> None:
    for method in ("release_all", "release"):
        if callable(getattr(type(value), method, None)):
            getattr(value, method)()
            return


class Residency:
    """See the module's docstring. One instance, RESIDENCY, serves the whole process."""

    def __init__(self, kinds: dict[str, Kind] | None = None):
        self.kinds = dict(kinds or KINDS)
        self.loads = 0  # builds, so callers (and tests) can see a model was not loaded twice
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.RLock()

    # -- the cache ------------------------------------------------------------------------------------------------

    def get(self, kind: str, files: Sequence[Path | str], build: Callable[[], Any], *extra: Any) -> Any:
        spec = self.kinds[kind]
        stamps = tuple(file_key(p) for p in files)
        key = (kind, stamps, tuple(extra))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            names = tuple(s[0] for s in stamps)
            for old in [k for k in self._items if k[0] == kind and k[2] == key[2]
                        and tuple(s[0] for s in k[1]) == names]:
                self._forget(old)  # the same files with other stamps: a stale copy
            value = build()
            self.loads += 1
            self._items[key] = value
            mine = [k for k in self._items if k[0] == kind]
            for old in mine[:max(0, len(mine) - spec.capacity)]:
                self._forget(old)
            return value

    def _forget(self, key: tuple) -> None:
        _release_one(self._items.pop(key))

    def drop(self, value: Any) -> bool:
        """Forget the cached entry holding `value` (its device memory given back); False when none holds it."""
        with self._lock:
            keys = [k for k, v in self._items.items() if v is value]
            for key in keys:
                self._forget(key)
        if keys:
            empty_cache()
        return bool(keys)

    def held(self, kind: str | None = None) -> list[Any]:
        return [v for k, v in self._items.items() if kind is None or k[0] == kind]

    def clear(self, kind: str | None = None) -> int:
        """Drop every cached model (of `kind`, or all), their device memory given back first; returns how many."""
        with self._lock:
            keys = [k for k in self._items if kind is None or k[0] == kind]
            for key in keys:
                self._forget(key)
        empty_cache()
        return len(keys)

    # -- device memory --------------------------------------------------------------------------------------------

    def release(self) -> None:
        """Every cached model gives back its device memory (the host's "free memory" calls this)."""
        with self._lock:
            for key in list(self._items):
                policy = self.kinds[key[0]].on_release
                if policy == "drop":
                    self._forget(key)
                elif policy == "release":
                    _release_one(self._items[key])
        empty_cache()

    def make_room(self, nbytes: int | None, device: torch.device | str, keep: Any = None) -> None:
        """Before claiming `nbytes` on `device`: the pack's budgeted transformers (other than `keep`) go home to
        host memory, then the host unloads its own models. A no-op on the CPU."""
        device = torch.device(device)
        if device.type == "cpu":
            return
        for value in self.held():
            if value is not keep and callable(getattr(value, "park", None)):
                value.park()
        hosting.current().make_room(None if nbytes is None else max(0, int(nbytes)), device)

    @contextlib.contextmanager
    def on_device(self, module: torch.nn.Module, device: torch.device | str, what: str,
                  extra_bytes: int = 0, hints: Sequence[Hint] = ()) -> Iterator[torch.nn.Module]:
        """`module` on `device` for the block (room made for its weights and `extra_bytes` of activations), then
        back where it was and the memory returned. Out of memory inside: GPUMemoryError(`what`, `hints`, by default
        the device setting)."""
        device = torch.device(device)
        if device.type == "cpu":
            yield module
            return
        home = next(iter(module.parameters()), torch.empty(0)).device
        self.make_room(tensor_bytes(module) + int(extra_bytes), device)
        lower = list(hints) or [Hint("device", device.type, "cpu runs it without the GPU, slower")]
        with memory_guard(what, lambda: lower, residency=self):
            module.to(device)
            try:
                yield module
            finally:
                module.to(home)
                empty_cache(device)


RESIDENCY = Residency()


@contextlib.contextmanager
def memory_guard(what: str, hints: Callable[[], Sequence[Hint]], *holders: Any,
                 residency: Residency | None = None) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into GPUMemoryError(what, hints()) (the hints read when it
    happens), after `holders` (models the caller holds, cached or not) and every model the residency holds gave back
    their device memory.

    The failed computation's frames are cleared first: the new error's context (the OOM) and its traceback would
    otherwise keep their locals, the activations, alive for as long as anyone holds the error."""
    failed = None
    try:
        yield
    except OOM_ERRORS as err:
        failed = str(err).splitlines()[0][:300]
        traceback.clear_frames(err.__traceback__)  # frames still running (ours, the caller's) are left as they are
    if failed is None:
        return
    lower = list(hints())
    for holder in holders:
        _release_one(holder)
    (residency or RESIDENCY).release()
    raise GPUMemoryError(what, lower, failed) from None
