"""The pack in ComfyUI's real frontend (1.49.6, served by the real server), driven in Debian's chromium through
Playwright (executable_path; no browser is ever downloaded): every UI workflow dropped onto the page as a file
loads with no missing node and no error from the pack; every template opens from the Templates browser with its
thumbnail; one workflow queued from the page's Run button writes its mp4, and a pack warning shows as a toast; the
extension snaps frames and draws the duration without touching the node's title.

Skips, saying why, without the playwright package or a chromium executable."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.workflow_format import read_json

REPO = Path(__file__).resolve().parents[2]
UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
PACK_FOLDER = "comfyui-avcontrol"
# the flags a headless chromium needs on a machine without network (no background connections, no sandbox as root)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One page of the frontend with its console and responses recorded."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.console: list[tuple[str, str, str]] = []
        self.responses: list[tuple[int, str]] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text, m.location.get("url") or "")))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e), "")))
        self.page.on("response", lambda r: self.responses.append((r.status, r.url)))
        self.page.goto(url, wait_until="domcontentloaded")
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph && window.app.vueAppReady",
                                    timeout=90_000)
        self.page.wait_for_timeout(1500)
        self.close_dialogs()

    def close_dialogs(self) -> None:
        for _ in range(3):
            if self.page.get_by_role("dialog").count() == 0:
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)

    def pack_errors(self) -> list[tuple[str, str, str]]:
        """Console errors and uncaught exceptions that come from the pack's extension or name it."""
        return [m for m in self.console if m[0] in ("error", "pageerror")
                and ("avcontrol" in (m[1] + m[2]).lower() or PACK_FOLDER in m[2])]

    def drop_file(self, path: Path) -> None:
        """Drop a file onto the canvas the way a user drags one from the desktop (a real drop event with a
        DataTransfer holding the file)."""
        self.page.evaluate(
            """([text, name]) => {
                const file = new File([text], name, {type: "application/json"});
                const data = new DataTransfer();
                data.items.add(file);
                const target = document.querySelector("#graph-canvas") || document.body;
                for (const kind of ["dragenter", "dragover", "drop"]) {
                    target.dispatchEvent(new DragEvent(kind, {dataTransfer: data, bubbles: true, cancelable: true}));
                }
            }""",
            [path.read_text(encoding="utf-8"), path.name],
        )

    def wait_for_graph(self, ui: dict, timeout_ms: int = 20_000) -> None:
        """Until the page's graph holds exactly the nodes of `ui` (ids and types: two examples can share ids)."""
        nodes = sorted(f"{n['id']}:{n['type']}" for n in ui["nodes"])
        self.page.wait_for_function(
            "want => JSON.stringify(window.app.graph.nodes.map(n => `${n.id}:${n.type}`).sort()) === "
            "JSON.stringify(want)", arg=nodes, timeout=timeout_ms)

    def open_pack_templates(self, tries: int = 3) -> None:
        """Workflow > Browse Templates, then the pack's entry in its side list (ComfyUI names it after the pack's
        folder). A dialog that closes as the next opens is retried."""
        entry = self.page.get_by_role("dialog").get_by_text(PACK_FOLDER, exact=True).first
        for attempt in range(tries):
            self.close_dialogs()
            self.page.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
            try:
                entry.wait_for(state="visible", timeout=8_000)
                entry.click(timeout=8_000)
                return
            except Exception:
                if attempt == tries - 1:
                    raise

    def unregistered_nodes(self) -> list[str]:
        return self.page.evaluate(
            "window.app.graph.nodes.filter(n => !window.LiteGraph.registered_node_types[n.type]).map(n => n.type)")

    def titles(self) -> dict:
        return self.page.evaluate("Object.fromEntries(window.app.graph.nodes.map(n => [n.id, n.title]))")


@pytest.fixture(scope="module")
def browser(comfy):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package drives the browser: "
                                   "pip install playwright (no browser download; Debian's chromium is used)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium executable: apt-get install chromium (Debian's package; never a download)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(browser, comfy):
    for api in sorted((REPO / "workflows" / "api").glob("*_api.json")):  # the clips and pictures they load
        comfy.write_input_images(read_json(api))
    page = Page(browser, comfy.url("/"))
    yield page
    page.page.close()


def test_the_extension_loads_without_errors(page):
    names = page.page.evaluate("window.app.extensions.map(e => e.name)")
    assert "avcontrol.latentSize" in names
    assert not page.pack_errors(), page.pack_errors()
    assert not [m for m in page.console if m[0] == "pageerror"], page.console


@pytest.mark.parametrize("workflow", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_each_ui_workflow_drops_in_with_no_missing_node(page, workflow):
    ui = read_json(workflow)
    before = len(page.console)
    page.drop_file(workflow)
    page.wait_for_graph(ui)
    assert page.unregistered_nodes() == []
    titles = page.titles()
    assert {n["id"]: n["title"] for n in ui["nodes"] if "title" in n} == {
        n["id"]: titles[str(n["id"])] for n in ui["nodes"] if "title" in n}
    new = page.console[before:]
    assert not [m for m in new if m[0] == "pageerror"], new
    assert not page.pack_errors(), page.pack_errors()
    page.close_dialogs()  # a missing-models notice (the real checkpoints are not here) is not an error


def test_every_template_opens_from_the_templates_browser_with_its_thumbnail(page, comfy):
    thumbs_before = len(page.responses)
    for workflow in UI_WORKFLOWS:
        for attempt in range(3):  # a click that lands while the dialog is still animating in is tried again
            page.open_pack_templates()
            card = page.page.locator(f"[data-testid='template-workflow-{workflow.stem}']")
            card.wait_for(timeout=15_000)
            card.click()
            try:
                page.wait_for_graph(read_json(workflow), timeout_ms=10_000)
                break
            except Exception:
                if attempt == 2:
                    page.page.screenshot(path=str(Path(comfy.work) / f"template-{workflow.stem}.png"))
                    raise
        assert page.unregistered_nodes() == [], workflow.name
        page.close_dialogs()
    listed = page.page.evaluate("fetch('/api/workflow_templates').then(r => r.json())")[PACK_FOLDER]
    assert sorted(listed) == sorted(p.stem for p in UI_WORKFLOWS)  # no API twin listed
    thumbs = {url.rsplit("/", 1)[-1]: status for status, url in page.responses[thumbs_before:]
              if f"/workflow_templates/{PACK_FOLDER}/" in url and url.endswith(".jpg")}
    assert thumbs and all(status == 200 for status in thumbs.values()), thumbs
    assert not page.pack_errors(), page.pack_errors()


def test_latent_frames_snap_and_the_title_stays_the_users(page):
    workflow = REPO / "workflows" / "two_stage_depth_control.json"
    ui = read_json(workflow)
    page.drop_file(workflow)
    page.wait_for_graph(ui)
    page.close_dialogs()
    found = page.page.evaluate("""() => {
        const node = window.app.graph.nodes.find(n => n.comfyClass === "AVCEmptyLatent");
        node.title = "my latent (stage one: half size)";
        window.app.canvas.draw(true, true);
        const loaded = node.avcDuration;
        const frames = node.widgets.find(w => w.name === "frames");
        const fps = node.widgets.find(w => w.name === "fps").value;
        frames.callback(50);
        window.app.canvas.draw(true, true);
        return {loaded, value: frames.value, fps, duration: node.avcDuration, title: node.title};
    }""")
    assert found["value"] == 49  # 8n+1
    assert found["title"] == "my latent (stage one: half size)"
    assert found["duration"] == f"{49 / found['fps']:.2f} s"
    assert found["loaded"] and found["loaded"].endswith(" s")  # a loaded graph shows it before any edit


def test_a_workflow_queued_from_the_run_button_writes_its_mp4_and_shows_a_warning(page, comfy):
    """text to audio+video, shrunk to the tiny models by setting the widgets in the page, an over-long prompt
    (the encoder cuts it: the pack warns), queued with the Run button."""
    workflow = REPO / "workflows" / "text_to_audio_video.json"
    api = comfy.tinify(read_json(REPO / "workflows" / "api" / "text_to_audio_video_api.json"))
    prompt = next(k for k, v in api.items() if v["class_type"] == "AVCPromptEncode")
    api[prompt]["inputs"]["positive"] = "Waves break on a rocky shore under a grey sky, gulls cry. " * 40
    page.drop_file(workflow)
    page.wait_for_graph(read_json(workflow))
    page.close_dialogs()
    literals = {k: {n: v for n, v in node["inputs"].items() if not isinstance(v, list)} for k, node in api.items()}
    unset = page.page.evaluate("""values => {
        const unset = [];
        for (const [id, inputs] of Object.entries(values)) {
            const node = window.app.graph.getNodeById(id) ?? window.app.graph.getNodeById(Number(id));
            for (const [name, value] of Object.entries(inputs)) {
                const widget = node?.widgets?.find(w => w.name === name);
                if (widget) widget.value = value; else unset.push(`${id}.${name}`);
            }
        }
        return unset;
    }""", literals)
    assert not [u for u in unset if not u.endswith(".seed")], unset
    before = set(comfy.get_json("/history"))
    run = page.page.locator("[data-testid='queue-button']").first
    try:
        run.click(timeout=10_000)
    except Exception:  # headless chromium can leave a closed dialog's leaving mask over the page
        run.dispatch_event("click")
    deadline = time.monotonic() + comfy.run_timeout
    entry = None
    while time.monotonic() < deadline:
        new = set(comfy.get_json("/history")) - before
        if new:
            entry = comfy.history(new.pop())
            if (entry.get("status") or {}).get("status_str") is not None:
                break
        time.sleep(0.5)
    assert entry is not None, f"nothing ran after Run was clicked:\n{comfy.log_tail()}"
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    videos = comfy.output_files(entry)
    assert len(videos) == 1 and videos[0].is_file()
    from avcontrol_core.media import probe_mp4

    frames, fps = comfy.expected_frames_fps(api)
    assert probe_mp4(videos[0])["frames"] == frames  # the page's widgets, set to the tiny sizes, were what ran
    toast = page.page.locator(".p-toast-message", has_text="AVControl")
    toast.first.wait_for(timeout=10_000)
    assert "positive prompt is longer" in toast.first.inner_text()
    assert not page.pack_errors(), page.pack_errors()
