"""The pack's one adapter to host (ComfyUI) services.

Every other module of the pack reaches ComfyUI only through this module. It never imports
``comfy`` or ``folder_paths`` at import time: each function imports them lazily, and only when
ComfyUI has already loaded them (``is_hosted()``), so ``nodes/*`` import and run without ComfyUI
(CI, scripts, tests). Without a host the functions fall back to plain behaviour:

- model folders: ``$AVCONTROL_MODELS_DIR/<kind>/`` (default ``./models/<kind>/``)
- output folder: ``$AVCONTROL_OUTPUT_DIR`` (default ``./output``)
- progress: tqdm; interruption: never; device: CUDA if available, else CPU.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "ComfyHost",
    "MODEL_FOLDERS",
    "MODEL_EXTENSIONS",
    "ModelFolder",
    "Progress",
    "check_interrupted",
    "free_host_memory",
    "install_core_host",
    "is_hosted",
    "on_host_free",
    "list_models",
    "models_root",
    "output_directory",
    "progress_bar",
    "register_model_folders",
    "reporting_warnings",
    "resolve_model",
    "show_text",
    "show_warning",
    "torch_device",
]

MODELS_DIR_ENV = "AVCONTROL_MODELS_DIR"
OUTPUT_DIR_ENV = "AVCONTROL_OUTPUT_DIR"

# The file endings ComfyUI lists in its model folders (folder_paths.supported_pt_extensions).
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# A folder holding a Hugging Face model (e.g. Gemma 3) is recognised by this file.
HF_MARKER = "config.json"


@dataclass(frozen=True)
class ModelFolder:
    """One kind of model file the pack reads, i.e. one ComfyUI model folder.

    kind: the folder_paths name (and the folder name under the models directory).
    extensions: file endings listed for this kind.
    hf_folders: whether folders holding a Hugging Face model count as entries.
    """

    kind: str
    extensions: frozenset[str] = MODEL_EXTENSIONS
    hf_folders: bool = False


# Every kind the pack uses. A new kind of file is one more line here; register_model_folders()
# adds it to ComfyUI when ComfyUI does not know it yet.
MODEL_FOLDERS: tuple[ModelFolder, ...] = (
    ModelFolder("checkpoints"),
    ModelFolder("diffusion_models"),
    ModelFolder("text_encoders", hf_folders=True),
    ModelFolder("loras"),
    ModelFolder("latent_upscale_models"),
    ModelFolder("annotators"),  # controlnet-aux files: MiDaS, ZoeDepth, OpenPose (lllyasviel/Annotators)
    ModelFolder("depth_models", hf_folders=True),  # transformers depth folders (Depth Anything V2)
    ModelFolder("dwpose", extensions=frozenset({".onnx"})),  # yolox_l.onnx + dw-ll_ucoco_384.onnx
    ModelFolder("demucs", extensions=frozenset({".th", ".safetensors", ".yaml"})),  # audio demixing (CDX23)
)

_FOLDERS_BY_KIND = {f.kind: f for f in MODEL_FOLDERS}


def _folder_spec(kind: str) -> ModelFolder:
    return _FOLDERS_BY_KIND.get(kind) or ModelFolder(kind)


# --------------------------------------------------------------------------------------------
# Host detection and lazy imports
# --------------------------------------------------------------------------------------------


def is_hosted() -> bool:
    """True when running inside ComfyUI.

    ComfyUI imports ``folder_paths`` and ``comfy.model_management`` before it loads custom
    nodes, so their presence in ``sys.modules`` is the test. Importing them ourselves would have
    side effects (ComfyUI parses the command line and picks devices on import), so we never do
    that just to find out.
    """
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


def _folder_paths() -> Any | None:
    if not is_hosted():
        return None
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return None
    return folder_paths


def _model_management() -> Any | None:
    if not is_hosted():
        return None
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return None
    return mm


def _comfy_utils() -> Any | None:
    if not is_hosted():
        return None
    try:
        import comfy.utils as cu  # type: ignore[import-not-found]
    except ImportError:
        return None
    return cu


# --------------------------------------------------------------------------------------------
# Model folders
# --------------------------------------------------------------------------------------------


def register_model_folders() -> None:
    """Make every kind in MODEL_FOLDERS known to ComfyUI. Idempotent; a no-op without a host.

    ComfyUI's own kinds are left as they are (users configure them with
    extra_model_paths.yaml). A kind ComfyUI lacks (e.g. ``latent_upscale_models`` on older
    versions) gets ``<models_dir>/<kind>`` with the kind's file endings.
    """
    fp = _folder_paths()
    if fp is None:
        return
    known = getattr(fp, "folder_names_and_paths", {})
    for spec in MODEL_FOLDERS:
        if spec.kind in known:
            continue
        fp.add_model_folder_path(spec.kind, os.path.join(fp.models_dir, spec.kind))
        # add_model_folder_path creates new kinds with no extension filter (every file):
        # give the kind its own endings so stray files are not offered as models.
        paths = known.get(spec.kind, ([], set()))[0]
        known[spec.kind] = (paths, set(spec.extensions))


def models_root() -> Path:
    """Root of the model folders when not hosted: ``$AVCONTROL_MODELS_DIR`` or ``./models``."""
    return Path(os.environ.get(MODELS_DIR_ENV) or "models")


def _kind_directories(kind: str) -> list[Path]:
    """The directories searched for ``kind``, in priority order."""
    fp = _folder_paths()
    if fp is not None:
        register_model_folders()
        try:
            return [Path(p) for p in fp.get_folder_paths(kind)]
        except KeyError:
            return []
    return [models_root() / kind]


def _find_hf_folders(directory: Path) -> list[str]:
    """Folders under ``directory`` (recursive) holding a Hugging Face model, as posix paths
    relative to ``directory``. A model folder is not searched further."""
    found: list[str] = []
    if not directory.is_dir():
        return found
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True):
        current = Path(dirpath)
        if current != directory and HF_MARKER in filenames:
            found.append(current.relative_to(directory).as_posix())
            subdirs[:] = []
            continue
        subdirs.sort()
    return found


def _list_files(directory: Path, extensions: Iterable[str]) -> list[str]:
    exts = {e.lower() for e in extensions}
    out: list[str] = []
    if not directory.is_dir():
        return out
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True):
        subdirs.sort()
        for name in filenames:
            if not exts or os.path.splitext(name)[1].lower() in exts:
                out.append((Path(dirpath) / name).relative_to(directory).as_posix())
    return out


def _inside_any(entry: str, folders: Iterable[str]) -> bool:
    return any(entry.startswith(folder + "/") for folder in folders)


def list_models(kind: str) -> list[str]:
    """Names of the models of ``kind``: relative posix paths, sorted, no duplicates.

    Hosted: ComfyUI's ``folder_paths.get_filename_list(kind)``. Otherwise: the files under
    ``$AVCONTROL_MODELS_DIR/<kind>/`` with a model file ending. For kinds that accept Hugging
    Face folders (``text_encoders``) every folder holding a ``config.json`` is one entry, and the
    files inside it (weight shards) are not listed separately.
    """
    spec = _folder_spec(kind)
    directories = _kind_directories(kind)
    fp = _folder_paths()
    names: set[str] = set()
    if fp is not None:
        try:
            names.update(str(n).replace(os.sep, "/") for n in fp.get_filename_list(kind))
        except KeyError:
            pass
    else:
        for directory in directories:
            names.update(_list_files(directory, spec.extensions))
    if spec.hf_folders:
        hf = set()
        for directory in directories:
            hf.update(_find_hf_folders(directory))
        names = {n for n in names if not _inside_any(n, hf)} | hf
    return sorted(names)


def _safe_relative(name: str) -> str:
    """``name`` as a relative path that cannot leave its folder (what ComfyUI does)."""
    return os.path.relpath(os.path.join("/", name), "/")


def resolve_model(kind: str, name: str) -> Path:
    """Full path of the model ``name`` of ``kind`` (a file, or a Hugging Face folder).

    Raises FileNotFoundError naming the kind, the name and the folders searched.
    """
    if not name:
        raise FileNotFoundError(f"no {kind} model selected (empty name)")
    rel = _safe_relative(name)
    fp = _folder_paths()
    if fp is not None:
        register_model_folders()
        try:
            full = fp.get_full_path(kind, rel)
        except KeyError:
            full = None
        if full:
            return Path(full)
    directories = _kind_directories(kind)
    for directory in directories:
        candidate = directory / rel
        if candidate.is_file() or candidate.is_dir():
            return candidate
    searched = ", ".join(str(d) for d in directories) or "(no folders registered)"
    hint = (
        f"put it in a '{kind}' model folder (ComfyUI models/{kind}, a folder listed for "
        f"'{kind}' in extra_model_paths.yaml"
        + ("" if fp is not None else f", or ${MODELS_DIR_ENV}/{kind}")
        + ")"
    )
    raise FileNotFoundError(f"{kind} model '{name}' not found; searched: {searched}; {hint}")


# --------------------------------------------------------------------------------------------
# Output, progress, interruption, devices, memory
# --------------------------------------------------------------------------------------------


def output_directory() -> Path:
    """Where outputs are written: ComfyUI's output folder, else ``$AVCONTROL_OUTPUT_DIR``,
    else ``./output``. The folder is not created here."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(os.environ.get(OUTPUT_DIR_ENV) or "output")


class Progress:
    """Progress of one node's work: ``update(n=1)``; usable as a context manager.

    Drives ComfyUI's progress bar (sent to the frontend over the websocket) when hosted,
    otherwise a tqdm bar (or nothing when tqdm is missing).
    """

    def __init__(self, total: int, desc: str | None = None):
        self.total = int(total)
        self.n = 0
        self._comfy = None
        self._tqdm = None
        cu = _comfy_utils()
        if cu is not None:
            self._comfy = cu.ProgressBar(self.total)
            if desc:
                show_text(desc)  # ComfyUI's bar has no label of its own
        else:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=self.total, desc=desc, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._comfy is not None:
            self._comfy.update(n)
        elif self._tqdm is not None:
            self._tqdm.update(n)

    def update_absolute(self, done: int, total: int | None = None) -> None:
        """Set the bar to ``done`` of ``total`` (a new total restarts the same bar: one bar per node, phases in
        turn)."""
        if total is not None:
            self.total = int(total)
        self.n = int(done)
        if self._comfy is not None:
            self._comfy.update_absolute(self.n, self.total)
        elif self._tqdm is not None:
            self._tqdm.total = self.total
            self._tqdm.n = self.n
            self._tqdm.refresh()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server() -> Any | None:
    """ComfyUI's PromptServer when hosted (ComfyUI imported ``server`` before the nodes), else None."""
    if not is_hosted():
        return None
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def _running_node() -> str | None:
    """The id of the node ComfyUI is executing, or None."""
    context = sys.modules.get("comfy_execution.utils")
    current = context.get_executing_context() if context is not None else None
    if current is not None:
        return current.node_id
    return getattr(_server(), "last_node_id", None)


def show_text(text: str) -> None:
    """A line of text on the running node in ComfyUI's graph (what a bar is counting, a warning); no-op unhosted."""
    server, node = _server(), _running_node()
    if server is not None and node is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, node, server.client_id)


WARNING_EVENT = "avcontrol.warning"  # web/avcontrol.js shows it as a toast


def show_warning(title: str, message: str) -> None:
    """What the pack changed of what the user asked for: on stderr always; hosted, also a toast in the browser
    (event ``avcontrol.warning``) and a line on the node that raised it."""
    print(f"[AVControl] warning, {title}: {message}", file=sys.stderr, flush=True)
    server = _server()
    if server is not None:
        server.send_sync(WARNING_EVENT, {"node": _running_node(), "title": title, "message": message},
                         server.client_id)
        show_text(f"warning: {message}")


@contextmanager
def reporting_warnings(title: str):
    """Run a node's work, then show every PackWarning it raised (show_warning); other warnings pass on as usual."""
    from ..avcontrol_core.api import PackWarning

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PackWarning)
            yield
    finally:
        for w in caught:
            if issubclass(w.category, PackWarning):
                show_warning(title, str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def progress_bar(total: int, desc: str | None = None) -> Progress:
    """A progress bar over ``total`` steps (see Progress)."""
    return Progress(total, desc=desc)


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user pressed Cancel; no-op unhosted.

    Call it between steps of any long loop."""
    mm = _model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def torch_device():
    """The device to compute on: ComfyUI's choice when hosted, else CUDA if available, else CPU."""
    import torch

    mm = _model_management()
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_host_memory(required_bytes: int | None, device=None) -> None:
    """Ask ComfyUI to unload its own models so ``required_bytes`` fit on ``device`` before the
    pack loads its own; ``None`` unloads everything. No-op without a host."""
    global _asking
    mm = _model_management()
    if mm is None:
        return
    if device is None:
        device = mm.get_torch_device()
    _asking = True  # our own request must not make ComfyUI's free_memory release our models (on_host_free)
    try:
        if required_bytes is None:
            mm.unload_all_models()
        else:
            mm.free_memory(int(required_bytes), device)
    finally:
        _asking = False
    soft_empty = getattr(mm, "soft_empty_cache", None)
    if soft_empty is not None:
        soft_empty()


_free_callbacks: list = []
_asking = False


def on_host_free(callback) -> None:
    """Call ``callback()`` whenever ComfyUI frees device memory for something else and its own
    unloading left too little: POST /free (``unload_models`` / ``free_memory``, which run
    ``unload_all_models``), the Unload Models menu, and ComfyUI loading one of its own models.

    ComfyUI has no registry for outside memory users, so the first call wraps
    ``comfy.model_management.free_memory`` (``unload_all_models`` calls it for every device):
    the original runs first; if less than the requested memory is free afterwards, the
    callbacks run and the cache is emptied. Requests the pack makes itself
    (``free_host_memory``) never trigger them. Idempotent; a no-op without a host."""
    if callback not in _free_callbacks:
        _free_callbacks.append(callback)
    mm = _model_management()
    if mm is None or getattr(mm.free_memory, "_avcontrol_wrapped", False):
        return
    original = mm.free_memory

    def free_memory(memory_required, device, *args, **kwargs):
        result = original(memory_required, device, *args, **kwargs)
        if _asking or not _free_callbacks:
            return result
        try:
            short = device is None or mm.get_free_memory(device) < memory_required
        except Exception:  # noqa: BLE001 -- a device ComfyUI cannot measure: be generous
            short = True
        if short:
            for cb in list(_free_callbacks):
                cb()
            soft_empty = getattr(mm, "soft_empty_cache", None)
            if soft_empty is not None:
                soft_empty()
        return result

    free_memory._avcontrol_wrapped = True
    free_memory.__wrapped__ = original
    mm.free_memory = free_memory


class ComfyHost:
    """avcontrol_core.hosting.Host for ComfyUI: its progress bar and Cancel, its model folders and output folder,
    and make_room asking it to unload its own models. Unhosted (CI, scripts) each falls back as described above."""

    def progress(self, total: int, desc: str) -> Progress:
        return Progress(total, desc=desc)

    def check_interrupted(self) -> None:
        check_interrupted()

    def make_room(self, nbytes: int | None, device) -> None:
        free_host_memory(nbytes, device)

    def resolve_model(self, kind: str, name: str) -> Path:
        return resolve_model(kind, name)

    def output_directory(self) -> Path:
        return output_directory()


def install_core_host() -> None:
    """Make ComfyHost the core's host, and ComfyUI's "free memory" release the core's models (api.release: the
    residency's one release). Light: imports neither torch nor the core's models."""
    from ..avcontrol_core import api

    if not isinstance(api.current_host(), ComfyHost):
        api.install_host(ComfyHost())
    on_host_free(api.release)
