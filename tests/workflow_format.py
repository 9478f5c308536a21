"""ComfyUI's two workflow formats, converted the way the ComfyUI frontend does. A helper for tests
and for authoring the example workflows.

- UI format (what the frontend saves and drags in; litegraph, ``"version": 0.4``): nodes with
  ``id/type/pos/size/inputs/outputs/widgets_values``, a ``links`` array.
- API format (what ``POST /prompt`` takes): ``{node_id: {"class_type", "inputs", "_meta"}}``,
  a linked input being ``[source_node_id_str, output_slot]``.

The server cannot convert between them, so every example workflow ships as a pair,
``workflows/NAME.json`` (UI, listed as a template by ComfyUI) and ``workflows/api/NAME_api.json`` (API; a
subfolder, so the Templates browser does not list it). Author the API form, then

    python -m tests.workflow_format regenerate workflows/api/NAME_api.json   # writes workflows/NAME.json
    python -m tests.workflow_format check workflows/api/NAME_api.json        # pair in sync?
    python -m tests.workflow_format to-api workflows/NAME.json           # UI -> API on stdout

Node definitions (and the widget rules of the frontend they reproduce) live in
tests/workflow_defs.py; links, execution order and the in-process runner in tests/workflow_run.py.

Frontend rules reproduced here (ComfyUI_frontend 1.4x, checked in its bundled sources):

- Muted (mode 2) nodes are left out; bypassed (mode 4) nodes pass the input of the same type
  through; Reroute nodes are followed; a PrimitiveNode's value is the target's widget value;
  Note / MarkdownNote are ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Mapping

from tests.workflow_defs import (
    CORE_NODE_INFO,
    MISSING,
    REPO,
    InputDef,
    NodeDef,
    NodeDefs,
    Widget,
    pack_node_classes,
    pack_node_defs,
)
from tests.workflow_run import id_key, is_link, topological_order

VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


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
    for node_id in sorted(nodes, key=id_key):
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


# --------------------------------------------------------------------------------------------
# API -> UI
# --------------------------------------------------------------------------------------------


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
# Files and CLI
# --------------------------------------------------------------------------------------------


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: Path | str, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def ui_path_for(api_path: Path | str) -> Path:
    """workflows/api/NAME_api.json -> workflows/NAME.json (an API file outside an api/ folder: its UI twin
    beside it)"""
    api_path = Path(api_path)
    if not api_path.name.endswith("_api.json"):
        raise ValueError(f"{api_path}: API workflows are named NAME_api.json")
    folder = api_path.parent.parent if api_path.parent.name == "api" else api_path.parent
    return folder / (api_path.name[: -len("_api.json")] + ".json")


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
    for node_id in sorted(set(api) | set(converted), key=id_key):
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
