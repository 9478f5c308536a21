"""The one residency (cache, make room, on the device for a call, release, out-of-memory errors), the host protocol,
and the facade the nodes stand on."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from avcontrol_core import hosting
from avcontrol_core.residency import GPUMemoryError, Hint, Kind, Residency, memory_guard

ROOT = Path(__file__).resolve().parents[1]


class Held:
    """A cached object that records what the residency asks of it."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def release_all(self) -> None:
        self.log.append(("release_all", self.name))

    def park(self) -> None:
        self.log.append(("park", self.name))


class Plain:
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def release(self) -> None:
        self.log.append(("release", self.name))


class RecordingHost(hosting.StandaloneHost):
    def __init__(self, log: list):
        self.log = log

    def make_room(self, nbytes, device) -> None:
        self.log.append(("host make_room", nbytes, str(device)))


@pytest.fixture
def log():
    return []


@pytest.fixture
def host(log):
    previous = hosting.install(RecordingHost(log))
    yield
    hosting.install(previous)


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"m{i}.safetensors"
        p.write_bytes(b"x" * (i + 1))
        paths.append(p)
    return paths


def small() -> Residency:
    return Residency({"model": Kind(2, "release"), "lora": Kind(3, "keep"), "preprocessor": Kind(2, "drop")})


def test_one_copy_per_file_and_settings(files, log):
    r = small()
    a = r.get("model", [files[0]], lambda: Held("a", log), "fp32")
    assert r.get("model", [files[0]], lambda: Held("again", log), "fp32") is a and r.loads == 1
    b = r.get("model", [files[0]], lambda: Held("b", log), "bf16")  # other settings: another copy
    assert b is not a and r.loads == 2
    lora = r.get("lora", [files[0]], lambda: Plain("lora", log))  # same file, another kind: its own entry
    assert lora is not a and r.held("lora") == [lora] and r.held("model") == [a, b]


def test_eviction_is_per_kind_and_gives_back_device_memory_first(files, log):
    r = small()
    loras = [r.get("lora", [f], lambda f=f: Plain(f.name, log)) for f in files[:3]]
    first = r.get("model", [files[0]], lambda: Held("first", log))
    r.get("model", [files[1]], lambda: Held("second", log))
    r.get("model", [files[1]], lambda: Held("unused", log))  # a hit moves it to the end, builds nothing
    r.get("model", [files[0]], lambda: Held("unused", log))  # first is now the most recent
    r.get("model", [files[2]], lambda: Held("third", log))  # capacity 2: the least recent, second, goes
    assert log == [("release_all", "second")]
    assert [m.name for m in r.held("model")] == ["first", "third"] and first in r.held("model")
    assert r.held("lora") == loras  # another kind's entries are untouched


def test_a_file_changed_on_disk_is_loaded_again_and_the_stale_copy_dropped(files, log):
    r = small()
    old = r.get("model", [files[0]], lambda: Held("old", log))
    files[0].write_bytes(b"changed, longer")
    os.utime(files[0], ns=(1, 1))
    new = r.get("model", [files[0]], lambda: Held("new", log))
    assert new is not old and r.held("model") == [new] and log == [("release_all", "old")]


def test_release_follows_each_kinds_policy(files, log):
    r = small()
    model = r.get("model", [files[0]], lambda: Held("model", log))
    lora = r.get("lora", [files[0]], lambda: Plain("lora", log))
    r.get("preprocessor", [files[1]], lambda: Plain("depth", log))
    r.release()
    assert log == [("release_all", "model"), ("release", "depth")]  # models give back memory, LoRAs are kept as is
    assert r.held("model") == [model] and r.held("lora") == [lora] and r.held("preprocessor") == []
    assert r.drop(model) and r.held("model") == [] and not r.drop(model)
    assert r.clear() == 1 and r.held() == []


def test_make_room_parks_the_packs_models_then_asks_the_host(files, log, host):
    r = small()
    keep = r.get("model", [files[0]], lambda: Held("keep", log))
    r.get("model", [files[1]], lambda: Held("other", log))
    r.make_room(123, "cpu")
    assert log == []  # nothing to make room for on the CPU
    r.make_room(-5, "meta", keep=keep)
    assert log == [("park", "other"), ("host make_room", 0, "meta")]


class Weights(torch.nn.Linear):
    """A module whose moves are recorded instead of done (the CPU has no second device to move to)."""

    def __init__(self, log: list):
        super().__init__(4, 4, bias=False)  # 64 bytes of fp32
        self.log = log

    def to(self, *args, **kwargs):
        self.log.append(("to", str(args[0])))
        return self


def test_on_device_makes_room_moves_there_for_the_call_and_home_again(log, host):
    r = small()
    module = Weights(log)
    with r.on_device(module, "meta", "testing", extra_bytes=36) as m:
        assert m is module
        log.append(("run",))
    assert log == [("host make_room", 100, "meta"), ("to", "meta"), ("run",), ("to", "cpu")]
    log.clear()
    with r.on_device(module, "cpu", "testing"):
        log.append(("run",))
    assert log == [("run",)]  # the CPU: no room to make, nothing to move


def test_out_of_memory_on_the_device_is_structured_and_releases(files, log, host):
    r = small()
    r.get("preprocessor", [files[0]], lambda: Plain("depth", log))
    module = Weights(log)
    with pytest.raises(GPUMemoryError) as err:
        with r.on_device(module, "meta", "estimating depth"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    e = err.value
    assert e.what == "estimating depth" and e.hints == (Hint("device", "meta", "cpu runs it without the GPU, slower"),)
    assert "Tried to allocate 2.00 GiB" in e.detail
    assert str(e).startswith("ran out of GPU memory while estimating depth: lower device (now meta: cpu runs it")
    assert ("to", "cpu") in log and ("release", "depth") in log and r.held() == []  # home again, memory given back


def test_memory_guard_reads_hints_when_it_fails_and_releases_the_holders(log):
    r = small()
    state = {"budget": 8}
    holder = Held("caller's model", log)
    with pytest.raises(GPUMemoryError) as err:
        with memory_guard("sampling", lambda: [Hint("offload_budget_gb", state["budget"], "lower")], holder,
                          residency=r):
            state["budget"] = 4
            raise torch.OutOfMemoryError("out of memory")
    assert err.value.hints[0].value == 4 and log == [("release_all", "caller's model")]
    with memory_guard("nothing", lambda: pytest.fail("hints are read only on failure"), holder, residency=r):
        pass
    with pytest.raises(ValueError):  # other errors pass through unchanged
        with memory_guard("x", lambda: [], residency=r):
            raise ValueError("not memory")


def test_install_takes_only_a_host_and_gives_back_the_previous():
    with pytest.raises(TypeError, match="must implement avcontrol_core.hosting.Host, got object"):
        hosting.install(object())
    mine = hosting.StandaloneHost()
    previous = hosting.install(mine)
    try:
        assert hosting.current() is mine
    finally:
        assert hosting.install(previous) is mine


def test_the_standalone_host_finds_models_under_its_folder_and_names_it_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(hosting.MODELS_DIR_ENV, str(tmp_path))
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "depth.safetensors").write_bytes(b"")
    h = hosting.StandaloneHost()
    assert h.resolve_model("loras", "depth.safetensors") == tmp_path / "loras" / "depth.safetensors"
    assert h.resolve_model("loras", "../../depth.safetensors") == tmp_path / "loras" / "depth.safetensors"  # stays inside
    with pytest.raises(FileNotFoundError, match=f"loras model 'pose.safetensors' not found; searched: {tmp_path}/loras"):
        h.resolve_model("loras", "pose.safetensors")


def test_the_facade_loads_each_model_once(tiny_models):
    from avcontrol_core import api

    model = api.load_model(tiny_models["checkpoint_ltx2"], "cpu", "fp32")
    assert api.load_model(tiny_models["checkpoint_ltx2"], "cpu", "fp32") is model
    encoder = api.load_text_encoder(tiny_models["gemma"], model, "cpu", "fp32")
    assert api.load_text_encoder(tiny_models["gemma"], model, "cpu", "fp32") is encoder and encoder.visit is None
    assert api.unload(encoder) and api.load_text_encoder(tiny_models["gemma"], model, "cpu", "fp32") is not encoder
    api.clear_models()


def test_every_public_name_of_the_facade_resolves():
    from avcontrol_core import api

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="public names are api.__all__"):
        api.run_sampler  # noqa: B018 -- an internal name is not part of the facade


def _core_imports(path: Path) -> list[str]:
    """The core modules a node file imports (relative `..avcontrol_core...` imports)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "avcontrol_core":
            names = [a.name for a in node.names]
            found.append(node.module if node.module != "avcontrol_core" else f"avcontrol_core:{','.join(names)}")
    return found


def test_no_node_imports_core_internals():
    offenders = {}
    for path in sorted((ROOT / "nodes").glob("*.py")):
        bad = [m for m in _core_imports(path) if m not in ("avcontrol_core.api", "avcontrol_core:api")]
        if bad:
            offenders[path.name] = bad
    assert offenders == {}
    assert _core_imports(ROOT / "nodes" / "loaders.py"), "the scan must see the nodes' imports"


def test_a_node_words_an_out_of_memory_error_with_the_graphs_names(tiny_models, monkeypatch):
    """The sampler node runs out of memory in the transformer: the error names the node, what it was doing and
    where in the graph each setting to lower is; the pack's models gave back their memory."""
    import importlib

    from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

    load_pack()
    api = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.api")
    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tiny_models["root"]))
    nodes = pack_node_classes()
    (model,) = nodes["AVCModelLoader"]().load("avcontrol-tiny-ltx2.safetensors", "fp32", "cpu")
    (encoder,) = nodes["AVCTextEncoderLoader"]().load(model, tiny_models["gemma"].name, "fp32", "cpu")
    (prompts,) = nodes["AVCPromptEncode"]().encode(encoder, "a kite", "")
    (latent,) = nodes["AVCEmptyLatent"]().create(64, 64, 9, 24.0)

    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.transformer.transformer_blocks[0].register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(api.GPUMemoryError) as err:
            nodes["AVCSampler"]().run(model, prompts, latent, seed=0, steps=2, schedule="distilled")
    finally:
        handle.remove()
        api.clear_models()
    text = str(err.value)
    assert text.startswith("AVControl Sampler ran out of GPU memory while sampling 64x64x9 with its audio. Lower ")
    assert "Load AVControl Model: offload_budget_gb (now 0, everything resident;" in text
    assert "Empty Audio+Video Latent: width, height or frames (now 64x64x9; smaller)" in text
    assert [h.setting for h in err.value.hints][:2] == ["offload_budget_gb", "weights"]
