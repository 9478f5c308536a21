"""The pack inside a real ComfyUI server: registration, every example workflow end to end through
``POST /prompt`` with the tiny models, progress over the websocket, and interruption.

Runs in COMFYUI_PATH, or else in the snapshot ../shared/hosts/comfyui-*.tar.gz unpacked (see conftest.py)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.workflow_defs import pack_node_classes
from tests.workflow_format import read_json

REPO = Path(__file__).resolve().parents[2]

PACK_PREFIX = "AVControl"
WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*_api.json"))


def test_object_info_lists_every_pack_node(comfy):
    info = comfy.object_info
    classes = pack_node_classes()
    assert classes, "the pack's NODE_CLASS_MAPPINGS is empty"
    missing = sorted(set(classes) - set(info))
    assert not missing, f"not registered in ComfyUI: {missing}\n{comfy.log_tail()}"
    for name, cls in classes.items():
        category = info[name]["category"]
        assert category == PACK_PREFIX or category.startswith(PACK_PREFIX + "/"), (name, category)
        assert category == cls.CATEGORY
        assert info[name]["python_module"].startswith("custom_nodes."), info[name]["python_module"]
    assert "IMPORT FAILED" not in comfy.log_tail(200_000)


def _run(comfy, api: dict, client_id: str | None = None) -> dict:
    prompt_id = comfy.queue_prompt(api, client_id)
    entry = comfy.wait_history(prompt_id, comfy.run_timeout)
    status = entry.get("status") or {}
    assert status.get("status_str") == "success", (
        f"prompt failed: {json.dumps(status.get('messages'), indent=1)[-6000:]}\n{comfy.log_tail()}"
    )
    return entry


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_example_workflow_runs(comfy, workflow: Path):
    api = comfy.tinify(read_json(workflow))
    comfy.write_input_images(api)
    frames, fps = comfy.expected_frames_fps(api)
    sampler = comfy.sampler_node(api)
    client_id = uuid.uuid4().hex
    ws = comfy.websocket(client_id)
    try:
        entry = _run(comfy, api, client_id)
        time.sleep(0.5)  # let the last messages arrive
        messages = list(ws.log)
    finally:
        ws.close()

    videos = comfy.output_files(entry)
    assert len(videos) == 1, f"expected one mp4 in the history outputs, got {entry.get('outputs')}"
    video = videos[0]
    assert video.is_file(), video
    assert comfy.output_dir in video.parents

    from avcontrol_core.media import probe_mp4

    probe = probe_mp4(video)
    if frames is not None:
        assert probe["frames"] == frames, probe
    if fps is not None:
        assert probe["fps"] == pytest.approx(fps, rel=1e-3), probe
        assert probe["audio_codec"], probe
        assert abs(probe["audio_seconds"] - probe["video_seconds"]) <= 1.0 / fps + 1e-6, probe

    if sampler is not None:
        progress = [m for m in messages if m.get("type") == "progress"
                    and (m.get("data") or {}).get("node") == sampler]
        assert progress, f"no progress messages from the sampler node {sampler}: {messages[-20:]}"


def _interruptible_workflow(comfy) -> tuple[dict, str, int]:
    for path in WORKFLOWS:
        api = comfy.tinify(read_json(path))
        sampler = comfy.sampler_node(api)
        if sampler is not None:
            spec = comfy.object_info[api[sampler]["class_type"]]["input"]
            steps_spec = {**(spec.get("required") or {}), **(spec.get("optional") or {})}["steps"]
            max_steps = int((steps_spec[1] if len(steps_spec) > 1 else {}).get("max", 200))
            return api, sampler, min(max_steps, 500)
    pytest.skip("no example workflow has a sampler with a 'steps' input")


def test_interrupt_then_next_run_succeeds(comfy):
    api, sampler, many_steps = _interruptible_workflow(comfy)
    comfy.write_input_images(api)
    long_api = json.loads(json.dumps(api))
    long_api[sampler]["inputs"]["steps"] = many_steps

    client_id = uuid.uuid4().hex
    ws = comfy.websocket(client_id)
    try:
        prompt_id = comfy.queue_prompt(long_api, client_id)
        ended = ("execution_error", "execution_success", "execution_interrupted")
        started = ws.wait_for(
            lambda m: (m.get("data") or {}).get("prompt_id") == prompt_id and (
                m.get("type") in ended
                or (m.get("type") in ("progress", "executing") and (m.get("data") or {}).get("node") == sampler)
            ),
            timeout=comfy.run_timeout,
        )
        assert started is not None and started.get("type") not in ended, (
            f"the sampler never started ({started}):\n{comfy.log_tail()}"
        )
        # Interrupt this prompt; repeat (bounded) until it ends, in case the first request
        # lands between two checks.
        deadline = time.monotonic() + 120
        entry = None
        while time.monotonic() < deadline:
            status, _ = comfy.post_json("/interrupt", {"prompt_id": prompt_id})
            assert status == 200
            entry = comfy.history(prompt_id)
            if entry is not None and (entry.get("status") or {}).get("status_str") is not None:
                break
            time.sleep(0.3)
        assert entry is not None, f"prompt {prompt_id} did not stop after /interrupt:\n{comfy.log_tail()}"
    finally:
        ws.close()

    status = entry["status"]
    assert status["status_str"] != "success" and not status["completed"], status
    events = [m[0] for m in status.get("messages") or []]
    assert "execution_interrupted" in events, (
        f"the sampler must let ComfyUI's interruption through (not wrap it): {status}"
    )
    assert not comfy.output_files(entry)

    # The next run works (new seed, so the sampler really runs again).
    again = json.loads(json.dumps(api))
    if "seed" in again[sampler]["inputs"]:
        again[sampler]["inputs"]["seed"] = int(again[sampler]["inputs"]["seed"]) + 1
    entry = _run(comfy, again)
    assert len(comfy.output_files(entry)) == 1


def _text_to_av(comfy) -> dict:
    api = comfy.tinify(read_json(REPO / "workflows" / "api" / "text_to_audio_video_api.json"))
    comfy.write_input_images(api)
    return api


def _node_of(api: dict, class_type: str) -> str:
    return next(k for k, v in api.items() if v["class_type"] == class_type)


def test_a_bad_filename_prefix_is_refused_when_queued(comfy):
    """Save Video's VALIDATE_INPUTS: POST /prompt answers 400 naming the node and the input; nothing runs."""
    api = _text_to_av(comfy)
    save = _node_of(api, "AVCSaveVideo")
    api[save]["inputs"]["filename_prefix"] = "../escape"
    status, body = comfy.post_json("/prompt", {"prompt": api, "client_id": uuid.uuid4().hex})
    assert status == 400, body
    errors = body["node_errors"][save]["errors"]
    assert any("filename_prefix must" in e.get("details", "") for e in errors), errors
    assert not (comfy.output_dir.parent / "escape_00001_.mp4").exists()


def test_a_pack_warning_reaches_the_browser_naming_the_node(comfy):
    """An over-long prompt is cut at the encoder's limit: the websocket carries avcontrol.warning (the toast
    web/avcontrol.js shows) with the prompt node's id, and the run still succeeds."""
    api = _text_to_av(comfy)
    prompt = _node_of(api, "AVCPromptEncode")
    api[prompt]["inputs"]["positive"] = "A storm rolls over the harbour, rain hammers the tin roofs. " * 40
    client_id = uuid.uuid4().hex
    ws = comfy.websocket(client_id)
    try:
        _run(comfy, api, client_id)
        time.sleep(0.5)
        warnings = [m["data"] for m in ws.log if m.get("type") == "avcontrol.warning"]
    finally:
        ws.close()
    assert warnings, f"no avcontrol.warning message:\n{comfy.log_tail()}"
    assert warnings[0]["node"] == prompt and "positive prompt is longer" in warnings[0]["message"], warnings
    assert warnings[0]["title"] == "AVControl Prompt Encode"
