"""nodes.host without ComfyUI: the plain fallbacks every node relies on in CI and scripts."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.workflow_defs import PACK_PACKAGE, load_pack

load_pack()  # the pack as ComfyUI imports it (by path, as a package): its nodes reach the core by relative imports
host = importlib.import_module(f"{PACK_PACKAGE}.nodes.host")


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(root))
    return root


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_not_hosted_here():
    assert not host.is_hosted()


def test_list_models_recursive_sorted_posix_filtered(models):
    touch(models / "checkpoints" / "b.safetensors")
    touch(models / "checkpoints" / "a.ckpt")
    touch(models / "checkpoints" / "sub" / "deeper" / "c.safetensors")
    touch(models / "checkpoints" / "readme.txt")
    touch(models / "loras" / "l.safetensors")
    assert host.list_models("checkpoints") == [
        "a.ckpt",
        "b.safetensors",
        "sub/deeper/c.safetensors",
    ]
    assert host.list_models("loras") == ["l.safetensors"]


def test_list_models_missing_folder_is_empty(models):
    assert host.list_models("latent_upscale_models") == []


def test_text_encoders_list_hf_folders_as_entries(models):
    te = models / "text_encoders"
    touch(te / "gemma-3-12b" / "config.json", b"{}")
    touch(te / "gemma-3-12b" / "model-00001-of-00002.safetensors")
    touch(te / "gemma-3-12b" / "model-00002-of-00002.safetensors")
    touch(te / "nested" / "tiny-gemma" / "config.json", b"{}")
    touch(te / "nested" / "tiny-gemma" / "model.safetensors")
    touch(te / "single_file_encoder.safetensors")
    touch(te / "not_a_model" / "notes.md")
    assert host.list_models("text_encoders") == [
        "gemma-3-12b",
        "nested/tiny-gemma",
        "single_file_encoder.safetensors",
    ]
    # other kinds do not treat folders as entries
    touch(models / "checkpoints" / "folder" / "config.json", b"{}")
    assert host.list_models("checkpoints") == []


def test_resolve_model_file_and_folder(models):
    ckpt = touch(models / "checkpoints" / "sub" / "m.safetensors")
    gemma = models / "text_encoders" / "gemma"
    touch(gemma / "config.json", b"{}")
    assert host.resolve_model("checkpoints", "sub/m.safetensors") == ckpt
    assert host.resolve_model("text_encoders", "gemma") == gemma
    for name in host.list_models("text_encoders"):
        assert host.resolve_model("text_encoders", name).exists()


def test_resolve_model_missing_names_kind_name_and_folders(models):
    with pytest.raises(FileNotFoundError) as err:
        host.resolve_model("loras", "nope.safetensors")
    text = str(err.value)
    assert "loras" in text
    assert "nope.safetensors" in text
    assert str(models / "loras") in text


def test_resolve_model_cannot_escape_its_folder(models, tmp_path):
    touch(tmp_path / "secret.safetensors")
    with pytest.raises(FileNotFoundError):
        host.resolve_model("checkpoints", "../../secret.safetensors")


def test_models_dir_defaults_to_cwd_models(tmp_path, monkeypatch):
    monkeypatch.delenv(host.MODELS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "models" / "loras" / "x.safetensors")
    assert host.list_models("loras") == ["x.safetensors"]
    assert host.resolve_model("loras", "x.safetensors").resolve() == (
        tmp_path / "models" / "loras" / "x.safetensors"
    )


def test_output_directory_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv(host.OUTPUT_DIR_ENV, str(tmp_path / "out"))
    assert host.output_directory() == tmp_path / "out"
    monkeypatch.delenv(host.OUTPUT_DIR_ENV)
    assert host.output_directory() == Path("output")


def test_progress_without_host_counts():
    with host.progress_bar(3) as bar:
        bar.update()
        bar.update(n=2)
        assert bar.n == 3
        assert bar.total == 3


def test_interrupt_device_and_memory_are_plain_without_host():
    import torch

    host.check_interrupted()  # never raises without a host
    device = host.torch_device()
    assert isinstance(device, torch.device)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    host.free_host_memory(1 << 30, device)  # no-op
    host.free_host_memory(None)
    host.register_model_folders()  # no-op, idempotent
    host.register_model_folders()


def test_model_folders_are_data_driven():
    kinds = [f.kind for f in host.MODEL_FOLDERS]
    for kind in ("checkpoints", "diffusion_models", "text_encoders", "loras", "latent_upscale_models"):
        assert kind in kinds
    assert len(kinds) == len(set(kinds))
