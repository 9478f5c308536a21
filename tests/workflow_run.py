"""API-format workflows as ComfyUI's executor sees them: links between nodes, execution order,
and an in-process runner through classic node classes. A helper for tests."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Mapping

# --------------------------------------------------------------------------------------------
# Links and execution order
# --------------------------------------------------------------------------------------------


def is_link(value: Any) -> bool:
    """ComfyUI's rule (comfy_execution.graph_utils.is_link)."""
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)
    )


def id_key(node_id: Any) -> tuple:
    """Sort key for node ids: numeric ids by value, before the others by name."""
    s = str(node_id)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


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
    pending = sorted(api, key=id_key)
    while pending:
        ready = [n for n in pending if deps[n] <= done]
        if not ready:
            raise ValueError(f"the workflow has a cycle among nodes {pending}")
        for n in ready:
            order.append(n)
            done.add(n)
        pending = [n for n in pending if n not in done]
    return order


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
