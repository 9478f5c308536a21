"""Shrinking the example workflows (written for the real models) to the tiny test models, shared by the
in-process workflow tests and the tests inside a real ComfyUI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.workflow_format import is_link

# small sizes, 2 steps, and an STG block the 2-layer tiny transformer has
TINY_OVERRIDES = {"width": 64, "height": 64, "frames": 9, "steps": 2, "stg_blocks": "1"}


def combo_options(spec: dict, name: str) -> list | None:
    """The choices of a COMBO input in an INPUT_TYPES / object_info input spec, else None."""
    entry = spec.get(name)
    if entry and isinstance(entry[0], list):
        return entry[0]
    if entry and entry[0] == "COMBO":
        return (entry[1] if len(entry) > 1 else {}).get("options")
    return None


def tinify(api: dict, input_spec: Callable[[str], dict], overrides: dict | None = None) -> dict:
    """A copy of `api` with TINY_OVERRIDES on literal inputs, and every model name the host does not offer
    switched to the offered choice with 'tiny' in its name. `input_spec(class_type)` returns the node's
    required + optional inputs (from INPUT_TYPES or /object_info)."""
    overrides = {**TINY_OVERRIDES, **(overrides or {})}
    api = json.loads(json.dumps(api))
    for node_id, node in api.items():
        spec = input_spec(node["class_type"])
        for name, value in list(node["inputs"].items()):
            if is_link(value):
                continue
            if name in overrides:
                node["inputs"][name] = overrides[name]
                continue
            options = combo_options(spec, name)
            if options and value not in options:
                tiny = [o for o in options if "tiny" in str(o)]
                assert tiny, f"node {node_id} input {name!r}: {value!r} not offered and no tiny model in {options[:10]}"
                node["inputs"][name] = tiny[0]
    return api


def class_input_spec(node_classes: dict[str, Any]) -> Callable[[str], dict]:
    def spec(class_type: str) -> dict:
        types = node_classes[class_type].INPUT_TYPES()
        return {**(types.get("required") or {}), **(types.get("optional") or {})}

    return spec
