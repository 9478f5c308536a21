"""tests/workflow_format.py (with tests/workflow_defs.py and tests/workflow_run.py) on toy nodes in
ComfyUI's classic API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import workflow_defs as wd  # noqa: E402
from tests import workflow_format as wf  # noqa: E402
from tests import workflow_run as wr  # noqa: E402

CALLS: list[str] = []


class ToyNumber:
    CATEGORY = "toy"
    FUNCTION = "make"
    RETURN_TYPES = ("TOYNUM",)
    RETURN_NAMES = ("number",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})}}

    def make(self, value):
        CALLS.append("number")
        return (value,)


class ToyNoise:
    """seed gets the frontend's control_after_generate widget by its name."""

    CATEGORY = "toy"
    FUNCTION = "make"
    RETURN_TYPES = ("TOYNOISE", "INT")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1}),
                "mode": (["gauss", "uniform"], {"default": "gauss"}),
                "scale": ("FLOAT", {"default": 1.0}),
            },
            "optional": {"frames": ("INT", {"default": 9, "control_after_generate": True})},
        }

    def make(self, seed, mode, scale, frames=9):
        CALLS.append("noise")
        return ({"seed": seed, "mode": mode, "scale": scale, "frames": frames}, frames)


class ToyMix:
    CATEGORY = "toy"
    FUNCTION = "mix"
    RETURN_TYPES = ("TOYNUM",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "a": ("TOYNUM", {"tooltip": "first"}),
                "noise": ("TOYNOISE",),
                "weight": ("FLOAT", {"default": 0.5, "step": 0.01}),
                "steps": ("INT", {"default": 20, "forceInput": True}),
            },
            "optional": {
                "b": ("TOYNUM",),
                "note": ("STRING", {"default": "", "multiline": True}),
                "flag": ("BOOLEAN", {"default": False}),
            },
        }

    def mix(self, a, noise, weight, steps, b=0, note="", flag=False):
        CALLS.append("mix")
        return (a * weight + b + noise["seed"] + steps,)


class ToySave:
    CATEGORY = "toy"
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value": ("TOYNUM",), "filename_prefix": ("STRING", {"default": "toy"})},
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    def save(self, value, filename_prefix, prompt=None, unique_id=None):
        CALLS.append("save")
        return {"ui": {"values": [value], "prefix": [filename_prefix], "node": [unique_id],
                       "nodes_in_prompt": [len(prompt)]}}


NODES = {"ToyNumber": ToyNumber, "ToyNoise": ToyNoise, "ToyMix": ToyMix, "ToySave": ToySave}
DISPLAY = {"ToyMix": "Toy Mix"}

API = {
    "1": {"class_type": "ToyNumber", "inputs": {"value": 3}, "_meta": {"title": "ToyNumber"}},
    "2": {"class_type": "ToyNoise", "inputs": {"seed": 42, "mode": "uniform", "scale": 2.0, "frames": 17},
          "_meta": {"title": "Noise (seeded)"}},
    "3": {"class_type": "ToyNumber", "inputs": {"value": 7}, "_meta": {"title": "ToyNumber"}},
    "5": {"class_type": "ToyMix",
          "inputs": {"a": ["1", 0], "noise": ["2", 0], "weight": 0.25, "steps": ["2", 1], "b": ["3", 0],
                     "note": "hello", "flag": True},
          "_meta": {"title": "Toy Mix"}},
    "4": {"class_type": "ToySave", "inputs": {"value": ["5", 0], "filename_prefix": "out/toy"},
          "_meta": {"title": "ToySave"}},
}


def test_api_ui_api_round_trip_is_identity():
    ui = wf.api_to_ui(API, NODES, DISPLAY)
    assert ui["version"] == 0.4
    assert json.loads(json.dumps(ui)) == ui  # plain JSON
    assert wf.ui_to_api(ui, NODES, DISPLAY) == API


def test_api_to_ui_layout_and_widgets():
    ui = wf.api_to_ui(API, NODES, DISPLAY)
    nodes = {n["id"]: n for n in ui["nodes"]}
    # left to right by depth: sources, then mix, then save
    assert nodes[1]["pos"][0] == nodes[2]["pos"][0] == nodes[3]["pos"][0]
    assert nodes[1]["pos"][0] < nodes[5]["pos"][0] < nodes[4]["pos"][0]
    assert nodes[1]["pos"][1] != nodes[2]["pos"][1]
    # seed and the control_after_generate INT option get a control widget; forceInput is a socket
    assert nodes[2]["widgets_values"] == [42, "fixed", "uniform", 2.0, 17, "fixed"]
    assert nodes[5]["widgets_values"] == [0.25, "hello", True]
    assert nodes[2]["title"] == "Noise (seeded)" and "title" not in nodes[5]
    # links: [id, origin, origin_slot, target, target_slot, type], slots index node inputs
    for link_id, origin, oslot, target, tslot, ltype in ui["links"]:
        assert nodes[target]["inputs"][tslot]["link"] == link_id
        assert link_id in nodes[origin]["outputs"][oslot]["links"]
        assert nodes[origin]["outputs"][oslot]["type"] == ltype
    assert ui["last_link_id"] == len(ui["links"]) == 5
    assert ui["last_node_id"] == 5


def frontend_style_ui():
    """A UI workflow shaped like what the frontend saves: seed with its control widget value,
    a widget converted to an input and linked, a muted node, a Note, a Reroute."""
    return {
        "last_node_id": 9,
        "last_link_id": 6,
        "nodes": [
            {"id": 7, "type": "ToyNoise", "pos": [0, 0], "size": [300, 100], "mode": 0,
             "inputs": [], "outputs": [{"name": "TOYNOISE", "type": "TOYNOISE", "links": [1]},
                                       {"name": "INT", "type": "INT", "links": [2]}],
             "widgets_values": [123456789, "randomize", "gauss", 1.5, 33, "increment"]},
            {"id": 8, "type": "ToyNumber", "pos": [0, 200], "size": [300, 60], "mode": 0,
             "inputs": [], "outputs": [{"name": "number", "type": "TOYNUM", "links": [3]}],
             "widgets_values": [5]},
            {"id": 9, "type": "Reroute", "pos": [200, 200], "size": [75, 26], "mode": 0,
             "inputs": [{"name": "", "type": "*", "link": 3}],
             "outputs": [{"name": "", "type": "TOYNUM", "links": [4]}]},
            {"id": 2, "type": "ToyMix", "pos": [400, 0], "size": [300, 200], "mode": 0,
             "inputs": [{"name": "a", "type": "TOYNUM", "link": 4},
                        {"name": "noise", "type": "TOYNOISE", "link": 1},
                        {"name": "steps", "type": "INT", "link": 2, "widget": {"name": "steps"}},
                        {"name": "b", "type": "TOYNUM", "link": 6}],
             "outputs": [{"name": "TOYNUM", "type": "TOYNUM", "links": [5]}],
             "widgets_values": [0.75, "a note", False]},
            {"id": 3, "type": "ToyNumber", "pos": [0, 400], "size": [300, 60], "mode": 2,
             "inputs": [], "outputs": [{"name": "number", "type": "TOYNUM", "links": [6]}],
             "widgets_values": [99]},
            {"id": 4, "type": "ToySave", "pos": [800, 0], "size": [300, 60], "mode": 0,
             "inputs": [{"name": "value", "type": "TOYNUM", "link": 5}], "outputs": [],
             "widgets_values": ["prefix"], "title": "Save it"},
            {"id": 5, "type": "Note", "pos": [0, 600], "size": [300, 60], "mode": 0,
             "inputs": [], "outputs": [], "widgets_values": ["read me"]},
        ],
        "links": [
            [1, 7, 0, 2, 1, "TOYNOISE"],
            [2, 7, 1, 2, 2, "INT"],
            [3, 8, 0, 9, 0, "TOYNUM"],
            [4, 9, 0, 2, 0, "TOYNUM"],
            [5, 2, 0, 4, 0, "TOYNUM"],
            [6, 3, 0, 2, 3, "TOYNUM"],
        ],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def test_ui_with_seed_widget_converts_like_the_frontend():
    api = wf.ui_to_api(frontend_style_ui(), NODES, DISPLAY)
    assert api == {
        "7": {"class_type": "ToyNoise",
              "inputs": {"seed": 123456789, "mode": "gauss", "scale": 1.5, "frames": 33},
              "_meta": {"title": "ToyNoise"}},
        "8": {"class_type": "ToyNumber", "inputs": {"value": 5}, "_meta": {"title": "ToyNumber"}},
        # reroute followed, muted source dropped, converted widget linked
        "2": {"class_type": "ToyMix",
              "inputs": {"a": ["8", 0], "noise": ["7", 0], "steps": ["7", 1], "weight": 0.75,
                         "note": "a note", "flag": False},
              "_meta": {"title": "Toy Mix"}},
        "4": {"class_type": "ToySave", "inputs": {"value": ["2", 0], "filename_prefix": "prefix"},
              "_meta": {"title": "Save it"}},
    }


def test_named_widget_values_win_and_bypass_passes_through():
    ui = frontend_style_ui()
    by_id = {n["id"]: n for n in ui["nodes"]}
    by_id[7]["widgets_values_named"] = {"seed": 1, "control_after_generate": "fixed", "mode": "uniform",
                                        "scale": 2.5, "frames": 9, }
    # bypass the ToyNumber behind the reroute: nothing of type TOYNUM feeds it, so 'a' is dropped
    by_id[8]["mode"] = 4
    api = wf.ui_to_api(ui, NODES, DISPLAY)
    assert api["7"]["inputs"] == {"seed": 1, "mode": "uniform", "scale": 2.5, "frames": 9}
    assert "8" not in api and "a" not in api["2"]["inputs"]


def test_run_api_workflow_respects_links():
    CALLS.clear()
    out = wr.run_api_workflow(API, NODES)
    # node ids sort 1,2,3,4,5 but 4 needs 5: execution follows the links
    assert CALLS == ["number", "noise", "number", "mix", "save"]
    assert list(out) == ["1", "2", "3", "5", "4"]
    assert out["5"] == (3 * 0.25 + 7 + 42 + 17,)
    assert out["4"] == ()
    assert out.ui["4"] == {"values": [out["5"][0]], "prefix": ["out/toy"], "node": ["4"],
                           "nodes_in_prompt": [5]}


def test_topological_order_errors():
    with pytest.raises(ValueError, match="cycle"):
        wr.topological_order({
            "1": {"class_type": "ToyMix", "inputs": {"a": ["2", 0]}},
            "2": {"class_type": "ToyMix", "inputs": {"a": ["1", 0]}},
        })
    with pytest.raises(KeyError, match="missing node 9"):
        wr.topological_order({"1": {"class_type": "ToyMix", "inputs": {"a": ["9", 0]}}})


def test_object_info_entries_work_like_classes():
    """/object_info entries (for ComfyUI's own nodes) give the same layout as the class."""
    info = {
        "input": {"required": {"seed": ["INT", {"default": 0}], "mode": [["gauss", "uniform"], {}],
                               "scale": ["FLOAT", {"default": 1.0}]},
                  "optional": {"frames": ["INT", {"default": 9, "control_after_generate": True}]}},
        "input_order": {"required": ["seed", "mode", "scale"], "optional": ["frames"]},
        "output": ["TOYNOISE", "INT"], "output_name": ["TOYNOISE", "INT"], "output_node": False,
        "display_name": "ToyNoise",
    }
    from_info = wd.node_def("ToyNoise", info)
    from_class = wd.node_def("ToyNoise", ToyNoise)
    assert from_info.widgets == from_class.widgets
    assert [(i.name, i.type, i.required, i.choices) for i in from_info.inputs] == [
        (i.name, i.type, i.required, i.choices) for i in from_class.inputs
    ]


def test_frontend_upload_widgets_of_core_nodes():
    load_image = {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                  "output": ["IMAGE", "MASK"], "display_name": "Load Image"}
    load_audio = {"input": {"required": {"audio": [["a.wav"], {"audio_upload": True}]}},
                  "output": ["AUDIO"], "display_name": "Load Audio"}
    defs = wd.NodeDefs({"LoadImage": load_image, "LoadAudio": load_audio})
    assert [w.name for w in defs["LoadImage"].widgets] == ["image", "upload"]
    assert [w.name for w in defs["LoadAudio"].widgets] == ["audio", "audioUI", "upload"]
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "b.png"}, "_meta": {"title": "Load Image"}},
           "2": {"class_type": "LoadAudio", "inputs": {"audio": "a.wav"}, "_meta": {"title": "Load Audio"}}}
    ui = wf.api_to_ui(api, defs)
    assert ui["nodes"][0]["widgets_values"] == ["b.png", "image"]
    assert wf.ui_to_api(ui, defs) == api


def test_cli_regenerate_and_check(tmp_path, monkeypatch):
    api_path = tmp_path / "toy_api.json"
    wf.write_json(api_path, API)
    defs = wd.NodeDefs(NODES, DISPLAY)
    ui_path = wf.regenerate(api_path, defs)
    assert ui_path == tmp_path / "toy.json"
    assert wf.check_pair(api_path, defs) == []
    ui = wf.read_json(ui_path)
    ui["nodes"][0]["widgets_values"][0] = 4  # drift
    wf.write_json(ui_path, ui)
    assert wf.check_pair(api_path, defs) != []
    with pytest.raises(ValueError):
        wf.ui_path_for(tmp_path / "toy.json")
