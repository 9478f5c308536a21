"""Nothing saved breaks: the example workflows as saved at b10d867 (tests/legacy_workflows/) still load the way the
frontend loads them (UI widgets by position, the same values) and run on the tiny models through today's nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_workflows import run_on_the_tiny_models
from tests.workflow_defs import pack_node_classes, pack_node_defs
from tests.workflow_format import read_json, ui_to_api

LEGACY = Path(__file__).parent / "legacy_workflows"
API = sorted(LEGACY.glob("*_api.json"))


def test_the_legacy_set_is_complete():
    assert len(API) == 21 and all(p.with_name(p.name.replace("_api.json", ".json")).exists() for p in API)


@pytest.mark.parametrize("api_path", API, ids=lambda p: p.stem)
def test_a_legacy_ui_workflow_loads_with_its_saved_values(api_path):
    """The UI file, read with today's node definitions (widgets by position, as the frontend does), gives the
    saved API prompt: every saved input the same, and only inputs added since extra, at their defaults."""
    saved = read_json(api_path)
    loaded = ui_to_api(read_json(api_path.with_name(api_path.name.replace("_api.json", ".json"))), pack_node_defs())
    classes = pack_node_classes()
    assert set(loaded) == set(saved)
    for node_id, node in saved.items():
        now = loaded[node_id]
        assert now["class_type"] == node["class_type"]
        for name, value in node["inputs"].items():
            assert now["inputs"].get(name) == value, (node_id, node["class_type"], name)
        spec = classes[node["class_type"]].INPUT_TYPES() if node["class_type"] in classes else {}
        for name in set(now["inputs"]) - set(node["inputs"]):
            options = {**spec.get("required", {}), **spec.get("optional", {})}[name][1]
            assert name in spec.get("optional", {}) and now["inputs"][name] == options["default"], (node_id, name)


@pytest.mark.parametrize("api_path", API, ids=lambda p: p.stem)
def test_a_legacy_api_workflow_runs(api_path, tiny_models, tmp_path, monkeypatch):
    _, saved = run_on_the_tiny_models(api_path, tiny_models, tmp_path, monkeypatch)
    assert len(saved) == 1 and Path(saved[0]).stat().st_size > 0
