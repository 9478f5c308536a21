"""Weights of the visual preprocessors: files the user placed in a model folder, loaded once, clear errors.

- ``require_file(kind, name, source_hint, resolve=...)``: the path of a model file (or Hugging Face folder), or a
  ``MissingWeightsError`` naming the file, the folder searched and where users get it. Nothing is ever downloaded.
- ``require_package(module, pip_name, purpose)``: the imported module, or a ``MissingPackageError`` with the pip
  command that fixes it. Preprocessors call it when they run, so heavy packages never load at import time.
- ``cached(paths, build, *extra)``: one loaded copy per file (keyed by path, mtime and size, plus ``extra`` such as a
  model type) in the pack's one model cache (``residency.RESIDENCY``); a file that changed on disk is loaded again.
- ``clear()``: drop every cached preprocessor model (the residency's release does it when the host frees memory).
- ``on_device(module, device)``: the residency's one way onto the device for a call.

This module never imports ComfyUI: the nodes pass ``resolve`` (their host's model-folder lookup).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..residency import RESIDENCY, file_key, tensor_bytes

__all__ = [
    "MissingPackageError",
    "MissingWeightsError",
    "WeightSource",
    "cached",
    "clear",
    "file_key",
    "on_device",
    "require_file",
    "require_folder_files",
    "require_package",
]

NO_DOWNLOAD = "the pack never downloads weights by itself"

Resolver = Callable[[str, str], Path]


class MissingWeightsError(FileNotFoundError):
    """A model file is not in its model folder. The message names the file, the folder and where to get it."""


class MissingPackageError(ImportError):
    """An optional Python package a preprocessor needs is not installed. The message gives the pip command."""


@dataclass(frozen=True)
class WeightSource:
    """Where users get one file: ``repo`` on Hugging Face (or another site) and the file's name there."""

    filename: str
    repo: str
    site: str = "Hugging Face"
    note: str = ""

    def hint(self) -> str:
        extra = f" ({self.note})" if self.note else ""
        return f"{self.repo} on {self.site}: {self.filename}{extra}"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _search(kind: str, name: str, folders: Iterable[Path]) -> tuple[Path | None, str]:
    rel = os.path.relpath(os.path.join("/", name), "/")
    searched = []
    for folder in folders:
        candidate = Path(folder) / rel
        if candidate.exists():
            return candidate, ""
        searched.append(str(folder))
    where = ", ".join(searched) or "(no folders)"
    return None, f"{kind} file '{name}' not found; searched: {where}"


def require_file(kind: str, name: str, source_hint: str, *, resolve: Resolver | None = None,
                 folders: Sequence[Path] | None = None) -> Path:
    """The path of model ``name`` of ``kind`` (a file or a folder), else MissingWeightsError.

    ``resolve(kind, name)`` is the host's lookup (it raises FileNotFoundError naming the folders it searched);
    without it ``folders`` are searched in order. ``source_hint`` says where users get the file, e.g.
    ``"lllyasviel/Annotators on Hugging Face: dpt_hybrid-midas-501f0c75.pt"``.
    """
    detail = ""
    path: Path | None = None
    if resolve is not None:
        try:
            path = Path(resolve(kind, name))
            if not path.exists():
                detail, path = f"{kind} file '{name}' not found at {path}", None
        except FileNotFoundError as exc:
            detail = str(exc)
    else:
        path, detail = _search(kind, name, folders or ())
    if path is None:
        where = "" if resolve is not None else (
            f" and put it in ComfyUI/models/{kind}/ (or a folder listed for '{kind}' in extra_model_paths.yaml)")
        raise MissingWeightsError(f"{detail.rstrip('.')}. Get it from {source_hint}{where}; {NO_DOWNLOAD}.")
    return path


def require_folder_files(folder: Path, kind: str, groups: Sequence[Sequence[str]], source_hint: str) -> None:
    """Check a model folder holds, for every group, at least one of the group's files (e.g. the weights as
    ``model.safetensors`` or ``pytorch_model.bin``); else MissingWeightsError naming what is missing."""
    if not folder.is_dir():
        raise MissingWeightsError(
            f"{kind} entry '{folder.name}' must be a folder (a Hugging Face model: config.json, weights, "
            f"preprocessor_config.json), got the file {folder}. Get it from {source_hint}; {NO_DOWNLOAD}.")
    present = {p.name for p in folder.iterdir()}
    missing = [" or ".join(g) for g in groups if not any(f in present for f in g)
               and not any(p.startswith(Path(f).stem + "-") for f in g for p in present)]
    if missing:
        raise MissingWeightsError(
            f"{kind} folder {folder} lacks {', '.join(missing)}. Get the whole folder from {source_hint} "
            f"and put it in ComfyUI/models/{kind}/; {NO_DOWNLOAD}.")


# --------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------


def require_package(module: str, pip_name: str, purpose: str = "this preprocessor") -> Any:
    """``importlib.import_module(module)``, or MissingPackageError("... pip install <pip_name> ...")."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingPackageError(
            f"{purpose} needs the Python package '{pip_name.split('=')[0].split('<')[0].split('>')[0]}' "
            f"(module '{module}'), which could not be imported ({exc}). Install it into ComfyUI's Python "
            f"environment: pip install {pip_name}, then restart ComfyUI.") from exc


# --------------------------------------------------------------------------------------------
# Loaded-model cache
# --------------------------------------------------------------------------------------------


def cached(paths: Sequence[Path | str], build: Callable[[], Any], *extra: Any) -> Any:
    """The model built from ``paths`` (plus ``extra`` settings), from the pack's one model cache
    (``residency.RESIDENCY``, kind "preprocessor": the last few, host memory, dropped when the host frees memory)."""
    return RESIDENCY.get("preprocessor", paths, build, *extra)


def clear() -> int:
    """Drop every cached preprocessor model and return the memory; returns how many were dropped."""
    return RESIDENCY.clear("preprocessor")


def on_device(module: Any, device: Any, what: str = "running a preprocessor model"):
    """A cached torch module on ``device`` for one run, then home again (``RESIDENCY.on_device``: room is made
    first, an out-of-memory error names the device setting), so a cached preprocessor never holds GPU memory
    between runs (the LTX-2 model needs it)."""
    # room for the weights and twice as much again for activations (a preprocessor's frames are small)
    return RESIDENCY.on_device(module, "cpu" if device is None else device, what,
                               extra_bytes=2 * tensor_bytes(module))
