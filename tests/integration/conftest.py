"""Run the pack inside a real ComfyUI server: ``COMFYUI_PATH`` (a ComfyUI checkout), or else the source snapshot
``../shared/hosts/comfyui-*.tar.gz`` unpacked into the session's scratch folder.

The server is started once per session, with everything it writes kept out of the checkout:

    python main.py --cpu --listen 127.0.0.1 --port <free>
        --base-directory <tmp>/base          custom_nodes/, input/, temp/, user/ live here;
                                             custom_nodes/comfyui-avcontrol -> the pack root
        --extra-model-paths-config <tmp>/extra_model_paths.yaml   -> the tiny models
        --output-directory <tmp>/output --input-directory <tmp>/input
        --user-directory <tmp>/user --temp-directory <tmp>/temp
        --database-url sqlite:///<tmp>/comfyui.db   (the default lives in the checkout)

It needs the pack's dependencies and ComfyUI's requirements in the same interpreter
(``COMFYUI_PYTHON``, default: the one running pytest). Only 127.0.0.1 is contacted; every wait
is bounded (``COMFYUI_START_TIMEOUT``, default 120 s; ``COMFYUI_RUN_TIMEOUT``, default 600 s).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.workflow_tiny import tinify, write_inputs, write_preprocessor_models

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SKIP_REASON = ("no ComfyUI: COMFYUI_PATH is not set and ../shared/hosts holds no comfyui-*.tar.gz; point COMFYUI_PATH "
               "at a ComfyUI checkout to run the pack inside a real server")
PACK_LINK_NAME = "comfyui-avcontrol"
HOST = "127.0.0.1"

# How the example workflows are shrunk to the tiny models on CPU: literal inputs with these
# names are replaced wherever they occur. Model names are swapped for the tiny models through
# the combo options the server lists (see ComfyServer.tinify).
FRAME_INPUTS = ("frames", "num_frames", "length", "frames_number")
FPS_INPUTS = ("fps", "frame_rate")


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


START_TIMEOUT = _env_seconds("COMFYUI_START_TIMEOUT", 120)
RUN_TIMEOUT = _env_seconds("COMFYUI_RUN_TIMEOUT", 600)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("COMFYUI_PATH") or host_snapshot() is not None:
        return
    here = Path(__file__).parent
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(marker)


# --------------------------------------------------------------------------------------------
# A minimal websocket client (standard library only) for ComfyUI's /ws progress messages
# --------------------------------------------------------------------------------------------


class WebSocketMessages:
    """Connects to ``/ws?clientId=...`` and collects the JSON messages in a background thread."""

    def __init__(self, port: int, client_id: str, timeout: float = 10.0):
        self.client_id = client_id
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.log: list[dict] = []
        self._sock = socket.create_connection((HOST, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self._sock.sendall(request.encode())
        header = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in header:
            if time.monotonic() > deadline:
                raise TimeoutError("websocket handshake timed out")
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            header += chunk
        head, _, self._buffer = header.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self._sock.settimeout(0.5)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._closed.is_set():
                raise ConnectionError("closed")
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionError("closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(head + mask + masked)

    def _run(self) -> None:
        fragments, kind = b"", 0
        try:
            while not self._closed.is_set():
                b0, b1 = self._read(2)
                opcode, length = b0 & 0x0F, b1 & 0x7F
                if length == 126:
                    (length,) = struct.unpack(">H", self._read(2))
                elif length == 127:
                    (length,) = struct.unpack(">Q", self._read(8))
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(length)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x8:
                    break
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                if opcode in (0x1, 0x2):
                    fragments, kind = b"", opcode
                if opcode in (0x0, 0x1, 0x2):
                    fragments += payload
                    if b0 & 0x80:
                        message = None
                        if kind == 0x1:  # text: JSON; binary frames (previews) are ignored
                            try:
                                message = json.loads(fragments.decode("utf-8"))
                            except ValueError:
                                message = None
                        fragments = b""
                        if isinstance(message, dict):
                            self.log.append(message)
                            self.messages.put(message)
        except (ConnectionError, OSError):
            pass

    def wait_for(self, predicate, timeout: float) -> dict | None:
        """The first new message matching ``predicate`` within ``timeout`` seconds, else None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if predicate(message):
                return message
        return None

    def close(self) -> None:
        self._closed.set()
        try:
            self._send(0x8)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def pack_host():
    """The pack's host adapter module (it lists the model folder kinds)."""
    import importlib

    from tests.workflow_defs import PACK_PACKAGE, load_pack

    load_pack()
    return importlib.import_module(f"{PACK_PACKAGE}.nodes.host")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _literal(value: Any) -> bool:
    return not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str))


class ComfyServer:
    run_timeout = RUN_TIMEOUT
    repo = REPO

    def __init__(self, comfyui: Path, work: Path, models_root: Path, python: str):
        self.comfyui = comfyui
        self.work = work
        self.models_root = models_root
        self.python = python
        self.port = free_port()
        self.base = work / "base"
        self.output_dir = work / "output"
        self.input_dir = work / "input"
        self.log_path = work / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self._object_info: dict | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        for d in (self.base / "custom_nodes", self.output_dir, self.input_dir,
                  self.work / "user", self.work / "temp"):
            d.mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_LINK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        kinds = [folder.kind for folder in pack_host().MODEL_FOLDERS]  # every model folder kind the pack reads
        lines = ["avcontrol_tests:", f"    base_path: {self.models_root}"]
        lines += [f"    {kind}: {kind}/" for kind in kinds]
        config = self.work / "extra_model_paths.yaml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [
            self.python, "main.py", "--cpu", "--listen", HOST, "--port", str(self.port),
            "--base-directory", str(self.base),
            "--extra-model-paths-config", str(config),
            "--output-directory", str(self.output_dir),
            "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.work / "temp"),
            "--user-directory", str(self.work / "user"),
            "--database-url", f"sqlite:///{self.work / 'comfyui.db'}",
            "--disable-auto-launch",
        ]

    def start(self) -> None:
        command = self.prepare()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the pack must import on its own, as in a real install
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, cwd=self.comfyui, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self._object_info = self.get_json("/object_info", timeout=10)
                return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer /object_info within {START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the session we started: ComfyUI and its children
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- HTTP -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def get_json(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def post_json(self, path: str, body: Any, timeout: float = 30) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url(path), data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read().decode("utf-8")
                status = response.status
        except urllib.error.HTTPError as err:
            raw = err.read().decode("utf-8", errors="replace")
            status = err.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    @property
    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.get_json("/object_info", timeout=60)
        return self._object_info

    def websocket(self, client_id: str | None = None) -> WebSocketMessages:
        return WebSocketMessages(self.port, client_id or uuid.uuid4().hex)

    def queue_prompt(self, api: dict, client_id: str | None = None) -> str:
        status, body = self.post_json("/prompt", {"prompt": api, "client_id": client_id or uuid.uuid4().hex})
        assert status == 200 and isinstance(body, dict) and body.get("prompt_id"), (
            f"POST /prompt refused ({status}): {json.dumps(body, indent=1)[:4000]}"
        )
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait_history(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and (entry.get("status") or {}).get("status_str") is not None:
                return entry
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f} s:\n{self.log_tail()}")

    def is_running(self, prompt_id: str) -> bool:
        running = self.get_json("/queue").get("queue_running") or []
        return any(len(item) > 1 and item[1] == prompt_id for item in running)

    def output_files(self, entry: dict, suffix: str = ".mp4") -> list[Path]:
        """Files the output nodes report in a history entry ({filename, subfolder, type})."""
        found = []
        for node_output in (entry.get("outputs") or {}).values():
            for items in node_output.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and str(item.get("filename", "")).endswith(suffix):
                        root = self.output_dir if item.get("type", "output") == "output" else self.work / "temp"
                        found.append(root / (item.get("subfolder") or "") / item["filename"])
        return found

    # -- workflows ------------------------------------------------------------------------

    def tinify(self, api: dict, overrides: dict | None = None) -> dict:
        """A copy of ``api`` shrunk for the tiny models (tests/workflow_tiny.py), with the choices the
        server offers."""
        def spec(class_type: str) -> dict:
            info = self.object_info.get(class_type)
            assert info is not None, f"{class_type} is not registered in ComfyUI"
            return {**(info["input"].get("required") or {}), **(info["input"].get("optional") or {})}

        return tinify(api, spec, overrides)

    def write_input_images(self, api: dict) -> None:
        """Create the files the Load* core nodes ask for in the server's input folder (tests/workflow_tiny.py)."""
        write_inputs(api, self.input_dir)

    @staticmethod
    def expected_frames_fps(api: dict) -> tuple[int | None, float | None]:
        """The frame count and rate a workflow asks for (first literal inputs named so)."""
        from tests.workflow_run import topological_order

        frames = fps = None
        for node_id in topological_order(api):
            inputs = api[node_id]["inputs"]
            for name in FRAME_INPUTS:
                if frames is None and name in inputs and _literal(inputs[name]):
                    frames = int(inputs[name])
            for name in FPS_INPUTS:
                if fps is None and name in inputs and _literal(inputs[name]):
                    fps = float(inputs[name])
        return frames, fps


    @staticmethod
    def sampler_node(api: dict) -> str | None:
        """The node with a literal ``steps`` input (the sampler)."""
        for node_id, node in api.items():
            if "steps" in node["inputs"] and _literal(node["inputs"]["steps"]):
                return node_id
        return None


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


# ComfyUI's own requirements (requirements-comfyui.txt): without them the server cannot start
COMFYUI_MODULES = ("aiohttp", "alembic", "comfyui_frontend_package", "torchsde", "kornia", "spandrel", "comfy_kitchen")


def host_snapshot() -> Path | None:
    """The ComfyUI source snapshot beside the project (../shared/hosts/comfyui-*.tar.gz), newest name last."""
    found = sorted((REPO.parent / "shared" / "hosts").glob("comfyui-*.tar.gz"))
    return found[-1] if found else None


@pytest.fixture(scope="session")
def comfyui_path(tmp_path_factory) -> Path:
    """COMFYUI_PATH, or else the snapshot in ../shared/hosts unpacked into the session's scratch folder."""
    import importlib.util
    import tarfile

    missing = [m for m in COMFYUI_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"ComfyUI's requirements are not installed ({', '.join(missing)} missing): "
                    "pip install -r requirements-comfyui.txt")
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        snapshot = host_snapshot()
        if snapshot is None:
            pytest.skip(SKIP_REASON)
        target = tmp_path_factory.mktemp("comfyui-src")
        with tarfile.open(snapshot) as archive:
            archive.extractall(target, filter="data")
        mains = sorted(target.glob("*/main.py"))
        assert mains, f"{snapshot.name} holds no ComfyUI (no */main.py)"
        value = str(mains[0].parent)
    path = Path(value).expanduser().resolve()
    assert (path / "main.py").is_file(), f"COMFYUI_PATH={value} is not a ComfyUI checkout (no main.py)"
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, dict]:
    from avcontrol_core.tiny import write_tiny_models

    root = tmp_path_factory.mktemp("models")
    paths = write_tiny_models(root)
    write_preprocessor_models(root)
    return root, paths


@pytest.fixture(scope="session")
def comfy(comfyui_path, tiny_models, tmp_path_factory):
    models_root, _ = tiny_models
    server = ComfyServer(
        comfyui_path, tmp_path_factory.mktemp("comfyui"), models_root,
        os.environ.get("COMFYUI_PYTHON") or sys.executable,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
