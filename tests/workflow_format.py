"""ComfyUI's two workflow formats, converted the way the ComfyUI frontend does, and an in-process
runner for API-format workflows. A helper for tests and for authoring the example workflows.

- UI format (what the frontend saves and drags in; litegraph, ``"version": 0.4``): nodes with
  ``id/type/pos/size/inputs/outputs/widgets_values``, a ``links`` array.
- API format (what ``POST /prompt`` takes): ``{node_id: {"class_type", "inputs", "_meta"}}``,
  a linked input being ``[source_node_id_str, output_slot]``.

The server cannot convert between them, so every example workflow ships as a pair,
``workflows/NAME.json`` (UI) and ``workflows/NAME_api.json`` (API). Author the API form, then

    python -m tests.workflow_format regenerate workflows/NAME_api.json   # writes NAME.json
    python -m tests.workflow_format check workflows/NAME_api.json        # pair in sync?
    python -m tests.workflow_format to-api workflows/NAME.json           # UI -> API on stdout

Node definitions come from the pack's ``NODE_CLASS_MAPPINGS`` (``pack_node_classes()``), from
any dict of classic node classes (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``, ...), or from
entries of a server's ``GET /object_info`` (for ComfyUI's own nodes).

Frontend rules reproduced here (ComfyUI_frontend 1.4x, checked in its bundled sources):

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
- Muted (mode 2) nodes are left out; bypassed (mode 4) nodes pass the input of the same type
  through; Reroute nodes are followed; a PrimitiveNode's value is the target's widget value;
  Note / MarkdownNote are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

REPO = Path(__file__).resolve().parents[1]
PACK_PACKAGE = "avcontrol_pack"

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
AUDIO_UI_NODES = frozenset(
    {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced"}
)
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
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


# --------------------------------------------------------------------------------------------
# UI -> API
# --------------------------------------------------------------------------------------------


def _links_by_id(ui: Mapping[str, Any]) -> dict[int, tuple[int, int, int, int, Any]]:
    out = {}
    for link in ui.get("links") or []:
        if isinstance(link, Mapping):
            lid, o, os_, t, ts, ty = (
                link["id"], link["origin_id"], link["origin_slot"],
                link["target_id"], link["target_slot"], link.get("type"),
            )
        else:
            lid, o, os_, t, ts, ty = link[:6]
        out[lid] = (o, os_, t, ts, ty)
    return out


def _expand_ui_node(node: Mapping[str, Any], d: NodeDef):
    """The node's inputs and ``{input name: widget value}`` as the frontend restores them from
    ``widgets_values`` (by position) or ``widgets_values_named`` (by widget name)."""
    named = node.get("widgets_values_named")
    values = node.get("widgets_values")
    if isinstance(values, Mapping):  # some nodes save a dict
        named = values
    if isinstance(named, Mapping):
        def pick(index, widget):
            return named.get(widget.name, MISSING)
    else:
        values = list(values or [])

        def pick(index, widget):
            return values[index] if index < len(values) else MISSING
    inputs, widgets = d.expand(pick)
    return inputs, {w.input: v for w, v in widgets if w.input is not None}


def ui_to_api(ui: Mapping[str, Any], node_classes: Mapping[str, Any] | NodeDefs,
              display_names: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Convert a UI-format workflow to API format, as the frontend's "queue prompt" does."""
    defs = node_classes if isinstance(node_classes, NodeDefs) else NodeDefs(node_classes, display_names)
    if (ui.get("definitions") or {}).get("subgraphs"):
        raise NotImplementedError("workflows with subgraphs are not supported")
    nodes = {n["id"]: n for n in ui.get("nodes") or []}
    links = _links_by_id(ui)

    def input_link(node: Mapping[str, Any], slot: int) -> Any:
        inputs = node.get("inputs") or []
        return inputs[slot].get("link") if slot < len(inputs) else None

    def resolve(link_id: Any, depth: int = 0) -> tuple[str, Any] | None:
        """Follow a link to a real source: ("link", [id, slot]), ("primitive", None) or None."""
        if link_id is None or link_id not in links or depth > len(nodes) + 1:
            return None
        origin, slot, _target, _tslot, ltype = links[link_id]
        src = nodes.get(origin)
        if src is None:
            return None
        kind = src.get("type")
        if kind == "PrimitiveNode":
            return ("primitive", None)
        if kind == "Reroute":
            return resolve(input_link(src, 0), depth + 1)
        mode = src.get("mode", MODE_ALWAYS)
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            inputs = src.get("inputs") or []
            out_type = ((src.get("outputs") or [{}])[slot] if slot < len(src.get("outputs") or []) else {}).get("type", ltype)
            order = ([slot] if slot < len(inputs) else []) + [i for i in range(len(inputs)) if i != slot]
            for i in order:
                if inputs[i].get("type") == out_type and inputs[i].get("link") is not None:
                    return resolve(inputs[i]["link"], depth + 1)
            return None
        return ("link", [str(origin), slot])

    api: dict[str, dict] = {}
    for node_id in sorted(nodes, key=_id_key):
        node = nodes[node_id]
        kind = node.get("type")
        if kind in VIRTUAL_NODES and kind not in defs:
            continue
        if node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        d = defs[kind]
        node_inputs, widget_values = _expand_ui_node(node, d)
        linked: dict[str, Any] = {}
        for slot in node.get("inputs") or []:
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            if slot.get("link") is not None:
                linked[name] = resolve(slot["link"])
        inputs: dict[str, Any] = {}
        for inp in node_inputs:
            found = linked.get(inp.name)
            if found is not None and found[0] == "link":
                inputs[inp.name] = found[1]
            elif inp.is_widget and inp.name in widget_values:
                inputs[inp.name] = widget_values[inp.name]
        api[str(node_id)] = {
            "inputs": inputs,
            "class_type": kind,
            "_meta": {"title": node.get("title") or d.display_name},
        }
    return api


def _id_key(node_id: Any) -> tuple:
    s = str(node_id)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


# --------------------------------------------------------------------------------------------
# API -> UI
# --------------------------------------------------------------------------------------------


def is_link(value: Any) -> bool:
    """ComfyUI's rule (comfy_execution.graph_utils.is_link)."""
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)
    )


def topological_order(api: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Node ids in execution order (sources first; ties by node id). Raises on cycles and
    links to missing nodes."""
    deps: dict[str, set[str]] = {}
    for node_id, node in api.items():
        deps[node_id] = set()
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value):
                if value[0] not in api:
                    raise KeyError(f"node {node_id} input {name!r} links to missing node {value[0]}")
                deps[node_id].add(value[0])
    order: list[str] = []
    done: set[str] = set()
    pending = sorted(api, key=_id_key)
    while pending:
        ready = [n for n in pending if deps[n] <= done]
        if not ready:
            raise ValueError(f"the workflow has a cycle among nodes {pending}")
        for n in ready:
            order.append(n)
            done.add(n)
        pending = [n for n in pending if n not in done]
    return order


def _depths(api: Mapping[str, Mapping[str, Any]], order: list[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for node_id in order:
        sources = [v[0] for v in (api[node_id].get("inputs") or {}).values() if is_link(v)]
        depth[node_id] = 1 + max((depth[s] for s in sources), default=-1)
    return depth


def _estimate_size(d: NodeDef, inputs: list[InputDef], widgets: list[Widget]) -> list[int]:
    by_name = {i.name: i for i in inputs}
    sockets = max(sum(1 for i in inputs if not i.is_widget), len(d.output_types))
    height = 30 + 22 * sockets
    for w in widgets:
        inp = by_name.get(w.input) if w.input else None
        multiline = bool(inp is not None and inp.widget_type == "STRING" and inp.options.get("multiline"))
        height += 100 if multiline else (24 if w.serialize else 0)
    return [340 if any(i.options.get("multiline") for i in inputs) else 300, height]


def api_to_ui(api: Mapping[str, Mapping[str, Any]], node_classes: Mapping[str, Any] | NodeDefs,
              display_names: Mapping[str, str] | None = None, *, control_value: str = "fixed",
              workflow_id: str | None = None,
              node_properties: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Lay an API-format workflow out as a UI-format (0.4) workflow, left to right by
    topological depth. ``control_value`` is given to every control_after_generate widget
    ("fixed" keeps the authored seed, so the UI twin queues exactly the API workflow).
    ``node_properties`` adds properties per class_type (e.g. ``cnr_id``, which ComfyUI-Manager
    reads to offer installing a missing pack)."""
    defs = node_classes if isinstance(node_classes, NodeDefs) else NodeDefs(node_classes, display_names)
    for node_id in api:
        if not str(node_id).isdigit():
            raise ValueError(f"API node id {node_id!r}: a UI twin needs integer node ids")
    order = topological_order(api)
    depth = _depths(api, order)
    defs_by_id = {n: defs[api[n]["class_type"]] for n in api}

    def expand(node_id: str):
        given = api[node_id].get("inputs") or {}

        def pick(index, widget):
            if widget.input is None:
                return control_value if widget.role == "control" else MISSING
            value = given.get(widget.input, MISSING)
            return MISSING if is_link(value) else value
        return defs_by_id[node_id].expand(pick)

    expanded = {n: expand(n) for n in api}
    # Slot layout: every input (sockets and widgets, INPUT_TYPES order) is a UI input slot.
    slot_of = {n: {inp.name: i for i, inp in enumerate(expanded[n][0])} for n in api}
    links: list[list[Any]] = []
    in_link: dict[tuple[str, str], int] = {}
    out_links: dict[tuple[str, int], list[int]] = {}
    for node_id in order:
        d = defs_by_id[node_id]
        for name, value in (api[node_id].get("inputs") or {}).items():
            if not is_link(value):
                continue
            if name not in slot_of[node_id]:
                raise KeyError(f"node {node_id} ({d.class_type}) has no input {name!r}")
            src, src_slot = value[0], int(value[1])
            src_def = defs_by_id[src]
            if src_slot >= len(src_def.output_types):
                raise IndexError(f"node {node_id} input {name!r} links to output {src_slot} of "
                                 f"node {src} ({src_def.class_type}), which has {len(src_def.output_types)}")
            link_id = len(links) + 1
            links.append([link_id, int(src), src_slot, int(node_id), slot_of[node_id][name],
                          src_def.output_types[src_slot]])
            in_link[(node_id, name)] = link_id
            out_links.setdefault((src, src_slot), []).append(link_id)

    column_y: dict[int, int] = {}
    column_width: dict[int, int] = {}
    sizes = {n: _estimate_size(defs_by_id[n], expanded[n][0], [w for w, _ in expanded[n][1]]) for n in api}
    for n in order:
        column_width[depth[n]] = max(column_width.get(depth[n], 0), sizes[n][0])
    column_x, x = {}, 50
    for col in sorted(column_width):
        column_x[col] = x
        x += column_width[col] + 60

    ui_nodes = []
    for index, node_id in enumerate(order):
        node = api[node_id]
        d = defs_by_id[node_id]
        given = node.get("inputs") or {}
        node_inputs, widgets = expanded[node_id]
        for name in given:
            if name not in slot_of[node_id]:
                raise KeyError(f"node {node_id} ({d.class_type}) has no input {name!r}")
        inputs = []
        for inp in node_inputs:
            entry: dict[str, Any] = {"name": inp.name, "type": inp.type,
                                     "link": in_link.get((node_id, inp.name))}
            if inp.is_widget:
                entry["widget"] = {"name": inp.name}
            inputs.append(entry)
        outputs = [
            {"name": d.output_names[i] if i < len(d.output_names) else t, "type": t,
             "links": out_links.get((node_id, i), []), "slot_index": i}
            for i, t in enumerate(d.output_types)
        ]
        # unsaved widgets leave holes (null); a JS array has no trailing holes
        values = [value if w.serialize else None for w, value in widgets]
        while widgets and values and not widgets[len(values) - 1][0].serialize:
            values.pop()
        col = depth[node_id]
        y = column_y.get(col, 50)
        column_y[col] = y + sizes[node_id][1] + 60
        ui_node: dict[str, Any] = {
            "id": int(node_id),
            "type": d.class_type,
            "pos": [column_x[col], y],
            "size": sizes[node_id],
            "flags": {},
            "order": index,
            "mode": MODE_ALWAYS,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {**((node_properties or {}).get(d.class_type) or {}),
                           "Node name for S&R": d.class_type},
            "widgets_values": values,
        }
        title = (node.get("_meta") or {}).get("title")
        if title and title != d.display_name:
            ui_node["title"] = title
        ui_nodes.append(ui_node)

    if workflow_id is None:
        digest = json.dumps(api, sort_keys=True, ensure_ascii=True)
        workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "avcontrol-workflow:" + digest))
    return {
        "id": workflow_id,
        "revision": 0,
        "last_node_id": max((int(n) for n in api), default=0),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


# --------------------------------------------------------------------------------------------
# In-process execution
# --------------------------------------------------------------------------------------------


class WorkflowOutputs(dict):
    """``{node_id: outputs tuple}`` for every node run, plus ``ui``: ``{node_id: ui dict}`` for
    nodes (output nodes) that returned one."""

    def __init__(self):
        super().__init__()
        self.ui: dict[str, Any] = {}


def _call(fn, kwargs):
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return result


def run_api_workflow(api: Mapping[str, Mapping[str, Any]], node_classes: Mapping[str, Any],
                     *, extra_pnginfo: Any = None) -> WorkflowOutputs:
    """Execute an API-format workflow in this process through classic node classes:
    topological order, each node's FUNCTION called with literal inputs and upstream outputs.
    Hidden inputs get what ComfyUI gives: PROMPT (the workflow), UNIQUE_ID (the node id),
    EXTRA_PNGINFO. Returns WorkflowOutputs."""
    results = WorkflowOutputs()
    for node_id in topological_order(api):
        node = api[node_id]
        class_type = node["class_type"]
        if class_type not in node_classes:
            raise KeyError(f"node {node_id}: unknown node type {class_type!r}")
        cls = node_classes[class_type]
        kwargs: dict[str, Any] = {}
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value):
                src_out = results[value[0]]
                slot = int(value[1])
                if slot >= len(src_out):
                    raise IndexError(f"node {node_id} input {name!r}: node {value[0]} has no output {slot}")
                kwargs[name] = src_out[slot]
            else:
                kwargs[name] = value
        for name, kind in ((cls.INPUT_TYPES().get("hidden") or {}).items()):
            if kind == "PROMPT":
                kwargs[name] = api
            elif kind == "UNIQUE_ID":
                kwargs[name] = node_id
            elif kind == "EXTRA_PNGINFO":
                kwargs[name] = extra_pnginfo
        instance = cls()
        result = _call(getattr(instance, cls.FUNCTION), kwargs)
        if isinstance(result, Mapping):
            if result.get("ui") is not None:
                results.ui[node_id] = result["ui"]
            outputs = tuple(result.get("result") or ())
        elif result is None:
            outputs = ()
        else:
            outputs = tuple(result)
        results[node_id] = outputs
    return results


# --------------------------------------------------------------------------------------------
# Files and CLI
# --------------------------------------------------------------------------------------------


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: Path | str, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def ui_path_for(api_path: Path | str) -> Path:
    """workflows/NAME_api.json -> workflows/NAME.json"""
    api_path = Path(api_path)
    if not api_path.name.endswith("_api.json"):
        raise ValueError(f"{api_path}: API workflows are named NAME_api.json")
    return api_path.with_name(api_path.name[: -len("_api.json")] + ".json")


def pack_registry_id(root: Path | str = REPO) -> str | None:
    """The pack's Comfy registry id: ``[project] name`` of its pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return None
    path = Path(root) / "pyproject.toml"
    if not path.exists():
        return None
    return (tomllib.loads(path.read_text(encoding="utf-8")).get("project") or {}).get("name")


def pack_node_properties(api: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Properties for the UI twin: pack nodes carry the pack's registry id (``cnr_id``, read by
    ComfyUI-Manager to install a missing pack), ComfyUI's own nodes ``comfy-core``."""
    pack_id = pack_registry_id()
    pack_classes = set(pack_node_classes())
    properties = {}
    for node in api.values():
        kind = node.get("class_type")
        if kind in pack_classes and pack_id:
            properties[kind] = {"cnr_id": pack_id}
        elif kind in CORE_NODE_INFO:
            properties[kind] = {"cnr_id": "comfy-core"}
    return properties


def regenerate(api_path: Path | str, defs: NodeDefs | None = None,
               node_properties: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write the UI twin (NAME.json) of an API workflow (NAME_api.json); returns its path.
    Without ``defs``: the pack's nodes and ``pack_node_properties``."""
    api = read_json(api_path)
    if defs is None:
        defs = pack_node_defs()
        node_properties = pack_node_properties(api) if node_properties is None else node_properties
    out = ui_path_for(api_path)
    write_json(out, api_to_ui(api, defs, node_properties=node_properties))
    return out


def check_pair(api_path: Path | str, defs: NodeDefs | None = None) -> list[str]:
    """Differences between an API workflow and what its UI twin converts to ([] = in sync)."""
    defs = defs or pack_node_defs()
    api = read_json(api_path)
    ui_file = ui_path_for(api_path)
    if not ui_file.exists():
        return [f"{ui_file} is missing"]
    converted = ui_to_api(read_json(ui_file), defs)
    problems = []
    for node_id in sorted(set(api) | set(converted), key=_id_key):
        a, b = api.get(node_id), converted.get(node_id)
        if a is None or b is None:
            problems.append(f"node {node_id}: only in {'UI' if a is None else 'API'} form")
        elif a.get("class_type") != b.get("class_type") or (a.get("inputs") or {}) != (b.get("inputs") or {}):
            problems.append(f"node {node_id}: API {json.dumps(a, sort_keys=True)} != UI {json.dumps(b, sort_keys=True)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workflow_format", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("regenerate", "write NAME.json (UI) from each NAME_api.json"),
        ("check", "exit 1 if a NAME_api.json and its NAME.json disagree"),
        ("to-api", "print the API form of a UI workflow"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("paths", nargs="+", type=Path)
        p.add_argument("--object-info", type=Path, metavar="FILE",
                       help="a saved GET /object_info, for ComfyUI nodes beyond CORE_NODE_INFO")
    args = parser.parse_args(argv)
    defs = pack_node_defs(object_info=read_json(args.object_info) if args.object_info else None)
    status = 0
    for path in args.paths:
        if args.command == "regenerate":
            print(f"wrote {regenerate(path, defs, pack_node_properties(read_json(path)))}")
        elif args.command == "check":
            problems = check_pair(path, defs)
            status |= bool(problems)
            print(f"{path}: " + ("in sync" if not problems else "OUT OF SYNC\n  " + "\n  ".join(problems)))
        else:
            print(json.dumps(ui_to_api(read_json(path), defs), indent=2, ensure_ascii=False))
    return status


if __name__ == "__main__":
    sys.exit(main())
