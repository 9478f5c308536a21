"""The pack as ComfyUI and ComfyUI-Manager see it: dependencies, registry metadata, a light import, node hygiene."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.workflow_defs import pack_display_names, pack_node_classes

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ltx_core", "transformers", "av", "safetensors", "numpy")


def test_requirements_txt_mirrors_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [ln for ln in lines if ln and not ln.startswith("#")]
    assert requirements == project["dependencies"]


def test_registry_metadata_is_complete():
    comfy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy.get(key), key
    assert (ROOT / comfy["Icon"]).is_file()


def test_layout_is_the_designed_one():
    for name in ("nodes", "avcontrol_core", "workflows", "web", "tests", "__init__.py", "pyproject.toml"):
        assert (ROOT / name).exists(), name
    assert list((ROOT / "web").glob("*.js")), "web/ must hold the frontend extension"


def test_importing_the_pack_is_light_and_only_registers_nodes():
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("pack", {str(ROOT / '__init__.py')!r},
                                              submodule_search_locations=[{str(ROOT)!r}])
mod = importlib.util.module_from_spec(spec); sys.modules["pack"] = mod; spec.loader.exec_module(mod)
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules], "nodes": sorted(mod.NODE_CLASS_MAPPINGS),
                  "web": mod.WEB_DIRECTORY}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["heavy"] == []
    assert len(info["nodes"]) >= 9
    assert (ROOT / info["web"]).is_dir()


def test_every_node_has_category_tooltips_and_display_name():
    classes, names = pack_node_classes(), pack_display_names()
    for name, cls in classes.items():
        assert name.startswith("AVC"), name
        assert cls.CATEGORY.startswith("AVControl/"), (name, cls.CATEGORY)
        assert names.get(name), name
        assert callable(getattr(cls, cls.FUNCTION))
        assert isinstance(cls.RETURN_TYPES, tuple)
        for section in cls.INPUT_TYPES().values():
            for input_name, spec in section.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        tips = getattr(cls, "OUTPUT_TOOLTIPS", None)
        assert tips and len(tips) == len(cls.RETURN_TYPES) and all(tips), f"{name}: an output has no tooltip"


def test_core_library_never_imports_comfy():
    files = sorted((ROOT / "avcontrol_core").rglob("*.py"))  # every subfolder (preprocess/ included)
    assert any(p.parent.name == "preprocess" for p in files)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            # absolute imports of ComfyUI's modules, and relative ones reaching the pack's nodes/ (level 2+: ..nodes)
            level = getattr(node, "level", 0)
            assert not any(m.split(".")[0] in ("comfy", "folder_paths", "server", "comfy_execution")
                           or (m.split(".")[0] == "nodes" and level != 1) for m in mods), (str(path), mods)


def _import_graph(package: Path) -> dict[str, set[str]]:
    """module -> modules of the same package it imports (top level or inside functions), by the source."""
    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in files}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                found = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {m for m in found if m in files and m != name and files[m].name != "__init__.py"}
    return graph


@pytest.mark.parametrize("package", ["avcontrol_core", "nodes"])
def test_no_import_circles(package):
    graph, state, circles = _import_graph(ROOT / package), {}, []

    def visit(module, path):
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                circles.append(path[path.index(other):] + [module, other])
            elif other not in state:
                visit(other, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not circles, circles


def test_every_progress_bar_of_the_nodes_has_a_label():
    """ComfyUI's bar has no label of its own: each bar the nodes open names its work (host.progress_bar's desc)."""
    calls = []
    for path in sorted((ROOT / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "progress_bar":
                labelled = len(node.args) >= 2 or any(k.arg == "desc" for k in node.keywords)
                calls.append((path.name, node.lineno, labelled))
    assert len(calls) >= 4 and all(labelled for *_, labelled in calls), calls
