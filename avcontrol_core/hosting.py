"""What the core asks of the program it runs in: progress, cancel, room on the device, model files, the output folder.

The core never imports a host. It calls `current()`, which is the `StandaloneHost` (a tqdm bar, never cancelled,
nothing else on the device, models under ``$AVCONTROL_MODELS_DIR/<kind>/``, outputs under ``$AVCONTROL_OUTPUT_DIR``)
unless a host installed itself with `install(host)`. ComfyUI's adapter (``nodes/host.py``) is the other
implementation: ComfyUI's progress bar and Cancel, its model folders, and `make_room` asking ComfyUI to unload its
own models (`comfy.model_management.free_memory`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Host", "Progress", "StandaloneHost", "current", "install", "progress"]

MODELS_DIR_ENV = "AVCONTROL_MODELS_DIR"
OUTPUT_DIR_ENV = "AVCONTROL_OUTPUT_DIR"


@runtime_checkable
class Progress(Protocol):
    """One labelled bar for one node's (or one call's) work."""

    def update(self, n: int = 1) -> None: ...

    def update_absolute(self, done: int, total: int | None = None) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Host(Protocol):
    """The services a host gives the core. Every method must be cheap when there is nothing to do."""

    def progress(self, total: int, desc: str) -> Progress:
        """A bar over `total` units of work labelled `desc` (usable as a context manager)."""

    def check_interrupted(self) -> None:
        """Raise the host's own exception when the user asked to cancel (called between units of work)."""

    def make_room(self, nbytes: int | None, device) -> None:
        """Unload the host's own models so that `nbytes` (None: everything) fit on `device` before the core claims
        them. The core's own models are the residency's business, never the host's."""

    def resolve_model(self, kind: str, name: str) -> Path:
        """The path of model file (or folder) `name` of `kind`; FileNotFoundError naming the folders searched."""

    def output_directory(self) -> Path:
        """Where outputs are written (not created here)."""


class _Tqdm:
    def __init__(self, total: int, desc: str):
        from tqdm.auto import tqdm

        self.total, self.n = int(total), 0
        self._bar = tqdm(total=self.total, desc=desc, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._bar.update(n)

    def update_absolute(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = self._bar.total = int(total)
        self.n = self._bar.n = int(done)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StandaloneHost:
    """The host of the CLI, the scripts and the tests: nothing else shares the device, nothing cancels."""

    def progress(self, total: int, desc: str) -> Progress:
        return _Tqdm(total, desc)

    def check_interrupted(self) -> None:
        return None

    def make_room(self, nbytes: int | None, device) -> None:
        return None

    def models_root(self) -> Path:
        return Path(os.environ.get(MODELS_DIR_ENV) or "models")

    def resolve_model(self, kind: str, name: str) -> Path:
        rel = os.path.relpath(os.path.join("/", name or ""), "/")
        path = self.models_root() / kind / rel
        if not name or not path.exists():
            raise FileNotFoundError(f"{kind} model '{name}' not found; searched: {path.parent} "
                                    f"(set ${MODELS_DIR_ENV} to the folder holding '{kind}/')")
        return path

    def output_directory(self) -> Path:
        return Path(os.environ.get(OUTPUT_DIR_ENV) or "output")


_current: Host = StandaloneHost()


def install(host: Host) -> Host:
    """Make `host` the one the core talks to; returns the previous one (so a test can put it back)."""
    global _current
    if not isinstance(host, Host):
        raise TypeError(f"host must implement avcontrol_core.hosting.Host, got {type(host).__name__}")
    previous, _current = _current, host
    return previous


def current() -> Host:
    return _current


def progress(total: int, desc: str) -> Progress:
    """A bar from the current host."""
    return _current.progress(total, desc)
