"""Node definitions as the ComfyUI frontend lays them out (inputs, sockets, widgets), and the
pack's own nodes. A helper for tests and for authoring the example workflows; the conversions
between ComfyUI's two workflow formats (tests/workflow_format.py) are built on it.

Node definitions come from the pack's ``NODE_CLASS_MAPPINGS`` (``pack_node_classes()``), from
any dict of classic node classes (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``, ...), or from
entries of a server's ``GET /object_info`` (for ComfyUI's own nodes, ``CORE_NODE_INFO``).

Widget rules reproduced here (ComfyUI_frontend 1.4x, checked in its bundled sources):

- An input is a widget when its type is INT, FLOAT, STRING, BOOLEAN, COMBO (or a list of
  options) and it is not ``forceInput``; widgets are created in INPUT_TYPES order, required
  then optional, and ``widgets_values`` holds their values in that order.
- An INT widget gets a "control_after_generate" combo right after it when its options say
  ``control_after_generate`` (true or a default mode string), or, when that option is absent,
  when it is named ``seed`` or ``noise_seed``. A COMBO with ``control_after_generate`` gets
  the control combo and a "control_filter_list" string. These values are saved in
  ``widgets_values`` but never sent to the server.
- A required COMBO with ``image_upload``/``video_upload``/``animated_image_upload`` adds an
  "upload" button at the end of the required widgets; ``audio`` with ``audio_upload`` adds one
  too; LoadAudio and the audio save/preview nodes get an (unsaved) "audioUI" widget.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
PACK_PACKAGE = "avcontrol_pack"

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
AUDIO_UI_NODES = frozenset(
    {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced"}
)
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


# --------------------------------------------------------------------------------------------
# Node definitions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputDef:
    name: str  # the API input name ("parent.child" for inputs nested in a dynamic combo)
    type: str  # "COMBO" for option lists
    options: Mapping[str, Any]
    required: bool
    choices: tuple = ()

    @property
    def widget_type(self) -> str:
        return str(self.options.get("widgetType") or self.type)

    @property
    def is_widget(self) -> bool:
        return (
            self.widget_type in WIDGET_TYPES or self.type == DYNAMIC_COMBO
        ) and not self.options.get("forceInput", False)

    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.type == DYNAMIC_COMBO:
            opts = self.options.get("options") or []
            return opts[0]["key"] if opts else None
        if self.type == "COMBO":
            return self.choices[0] if self.choices else None
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.widget_type)

    def nested(self, key: Any) -> list["InputDef"]:
        """The inputs a dynamic combo shows when ``key`` is selected (names prefixed)."""
        for option in self.options.get("options") or []:
            if option.get("key") == key:
                spec = option.get("inputs") or {}
                return [
                    _parse_input(f"{self.name}.{name}", entry, is_required and self.required)
                    for section, is_required in (("required", True), ("optional", False))
                    for name, entry in (spec.get(section) or {}).items()
                ]
        return []


@dataclass(frozen=True)
class Widget:
    """One frontend widget: ``input`` names the input it edits (None for helper widgets)."""

    name: str
    input: str | None
    default: Any
    serialize: bool = True  # False: the frontend leaves a hole (null) in widgets_values
    role: str = "input"  # input | control | filter | upload | ui


MISSING = object()


@dataclass(frozen=True)
class NodeDef:
    class_type: str
    inputs: tuple[InputDef, ...]  # top level, INPUT_TYPES order (required, then optional)
    output_types: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool
    display_name: str
    hidden: tuple[tuple[str, str], ...] = ()

    def input(self, name: str) -> InputDef | None:
        for inp in self.inputs:
            if inp.name == name:
                return inp
        return None

    @property
    def widgets(self) -> tuple[Widget, ...]:
        """The widgets with every input at its default (dynamic combos at their default)."""
        return tuple(w for w, _ in self.expand(lambda index, widget: MISSING)[1])

    def expand(self, pick) -> tuple[list[InputDef], list[tuple[Widget, Any]]]:
        """The node's inputs and its widgets with their values, in frontend order.

        ``pick(index, widget)`` gives the value of the widget at position ``index`` (or
        MISSING for its default). Dynamic combos show the inputs of the option picked, so the
        layout depends on the values; picking happens in widget order, as the frontend
        restores ``widgets_values``.
        """
        inputs: list[InputDef] = []
        widgets: list[tuple[Widget, Any]] = []

        def take(widget: Widget) -> Any:
            value = pick(len(widgets), widget)
            if value is MISSING:
                value = widget.default
            widgets.append((widget, value))
            return value

        def add(inp: InputDef) -> None:
            if inp.options.get("hidden"):  # V3 inputs kept for old workflows: no widget, no socket
                return
            inputs.append(inp)
            if not inp.is_widget:
                return
            value = take(Widget(inp.name, inp.name, inp.default()))
            cag = inp.options.get("control_after_generate")
            # a string option is both the control's default mode and (frontend quirk) its name
            mode = cag if isinstance(cag, str) else "randomize"
            control_name = cag if isinstance(cag, str) else "control_after_generate"
            if inp.widget_type == "INT":
                if cag if cag is not None else inp.name in SEED_NAMES:
                    take(Widget(control_name, None, mode, role="control"))
            elif inp.widget_type == "COMBO" and cag:
                take(Widget(control_name, None, mode, role="control"))
                take(Widget("control_filter_list", None, "", role="filter"))
            elif inp.type == DYNAMIC_COMBO:
                for sub in inp.nested(value):
                    add(sub)

        required = [i for i in self.inputs if i.required]
        for inp in required:
            add(inp)
        # Frontend extensions append to the required inputs, in their registration order.
        if self.class_type in AUDIO_UI_NODES:
            take(Widget("audioUI", None, None, serialize=False, role="ui"))
        audio = next((i for i in required if i.name == "audio"), None)
        if audio is not None and audio.options.get("audio_upload") is True:
            take(Widget("upload", None, "", role="upload"))
        if any(i.type == "COMBO" and any(i.options.get(o) for o in UPLOAD_OPTIONS) for i in required):
            take(Widget("upload", None, "image", role="upload"))
        for inp in self.inputs:
            if not inp.required:
                add(inp)
        return inputs, widgets


def _parse_input(name: str, spec: Any, required: bool) -> InputDef:
    if not isinstance(spec, (list, tuple)) or not spec:
        spec = (spec,)
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if isinstance(kind, (list, tuple)):
        return InputDef(name, "COMBO", options, required, tuple(kind))
    if kind == "COMBO":
        return InputDef(name, "COMBO", options, required, tuple(options.get("options", ())))
    return InputDef(name, str(kind), options, required)


def node_def(class_type: str, source: Any) -> NodeDef:
    """A NodeDef from a classic node class or an ``/object_info`` entry (a dict)."""
    if isinstance(source, Mapping):  # /object_info entry
        spec = source.get("input", {})
        order = source.get("input_order") or {}
        outputs = tuple("COMBO" if isinstance(t, list) else str(t) for t in source.get("output", ()))
        names = tuple(source.get("output_name") or outputs)
        output_node = bool(source.get("output_node", False))
        display = source.get("display_name") or class_type
    else:
        spec = source.INPUT_TYPES()
        order = {}
        outputs = tuple(
            "COMBO" if isinstance(t, (list, tuple)) else str(t) for t in getattr(source, "RETURN_TYPES", ())
        )
        names = tuple(getattr(source, "RETURN_NAMES", None) or outputs)
        output_node = bool(getattr(source, "OUTPUT_NODE", False))
        display = getattr(source, "DISPLAY_NAME", None) or class_type
    inputs: list[InputDef] = []
    for section, is_required in (("required", True), ("optional", False)):
        entries = spec.get(section) or {}
        for name in order.get(section) or list(entries):
            inputs.append(_parse_input(name, entries[name], is_required))
    hidden = tuple((k, str(v)) for k, v in (spec.get("hidden") or {}).items())
    return NodeDef(
        class_type=class_type,
        inputs=tuple(inputs),
        output_types=outputs,
        output_names=names,
        output_node=output_node,
        display_name=display,
        hidden=hidden,
    )


class NodeDefs:
    """Node definitions by class_type, built on demand from classes or object_info entries."""

    def __init__(self, node_classes: Mapping[str, Any], display_names: Mapping[str, str] | None = None):
        if isinstance(node_classes, NodeDefs):
            node_classes, display_names = node_classes.sources, display_names or node_classes.display_names
        self.sources = dict(node_classes)
        self.display_names = dict(display_names or {})
        self._cache: dict[str, NodeDef] = {}

    def __contains__(self, class_type: str) -> bool:
        return class_type in self.sources

    def __getitem__(self, class_type: str) -> NodeDef:
        if class_type not in self._cache:
            if class_type not in self.sources:
                raise KeyError(f"unknown node type {class_type!r}: not in the node classes given")
            d = node_def(class_type, self.sources[class_type])
            if class_type in self.display_names:
                d = NodeDef(**{**d.__dict__, "display_name": self.display_names[class_type]})
            self._cache[class_type] = d
        return self._cache[class_type]


# --------------------------------------------------------------------------------------------
# The pack
# --------------------------------------------------------------------------------------------


def load_pack(root: Path | str = REPO, package: str = PACK_PACKAGE):
    """Import the pack root ``__init__.py`` as package ``package`` (as ComfyUI does, by path)."""
    if package in sys.modules:
        return sys.modules[package]
    root = Path(root).resolve()
    spec = importlib.util.spec_from_file_location(
        package, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the pack at {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(package, None)
        raise
    return module


def pack_node_classes(root: Path | str = REPO) -> dict[str, Any]:
    return dict(getattr(load_pack(root), "NODE_CLASS_MAPPINGS", None) or {})


def pack_display_names(root: Path | str = REPO) -> dict[str, str]:
    return dict(getattr(load_pack(root), "NODE_DISPLAY_NAME_MAPPINGS", None) or {})


# The few ComfyUI core nodes example workflows use, as /object_info entries (layout only: the
# file lists are the server's business). More come from a saved /object_info (CLI --object-info).
CORE_NODE_INFO: dict[str, dict] = {
    "LoadImage": {
        "input": {"required": {"image": [[], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"], "display_name": "Load Image",
    },
    "LoadAudio": {
        "input": {"required": {"audio": ["COMBO", {"options": [], "audio_upload": True}]}},
        "output": ["AUDIO"], "output_name": ["AUDIO"], "display_name": "Load Audio",
    },
    "LoadVideo": {
        "input": {"required": {"file": ["COMBO", {"options": [], "video_upload": True}]}},
        "output": ["VIDEO"], "output_name": ["VIDEO"], "display_name": "Load Video",
    },
    "GetVideoComponents": {
        "input": {"required": {"video": ["VIDEO"]}},
        "output": ["IMAGE", "AUDIO", "FLOAT", "INT", "COMBO"],
        "output_name": ["images", "audio", "fps", "bit_depth", "color_space"], "display_name": "Get Video Components",
    },
    "SaveImage": {
        "input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                  "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
        "output": [], "output_node": True, "display_name": "Save Image",
    },
    "PreviewImage": {
        "input": {"required": {"images": ["IMAGE"]},
                  "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
        "output": [], "output_node": True, "display_name": "Preview Image",
    },
}


def pack_node_defs(root: Path | str = REPO, object_info: Mapping[str, Any] | None = None) -> NodeDefs:
    """The pack's nodes, over ComfyUI core nodes (CORE_NODE_INFO, then ``object_info``)."""
    sources: dict[str, Any] = {**CORE_NODE_INFO, **(object_info or {})}
    names = {k: v["display_name"] for k, v in sources.items() if isinstance(v, Mapping) and v.get("display_name")}
    sources.update(pack_node_classes(root))
    names.update(pack_display_names(root))
    return NodeDefs(sources, names)
