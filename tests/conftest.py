"""Shared fixtures: tiny LTX-2 checkpoints in the real key layout, written once per session and loaded by the real
loader (fp32, CPU). Session-scoped models are shared: tests must not mutate them (no release(), no weight edits)."""

from __future__ import annotations

import pytest
import torch

from avcontrol_core import backbone, tiny
from avcontrol_core.sampling import TextContext


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Paths of a models root laid out like ComfyUI's: {'checkpoint_ltx2', 'checkpoint_ltx2.3', 'gemma', 'root'}."""
    root = tmp_path_factory.mktemp("models")
    paths = dict(tiny.write_tiny_models(root, versions=("ltx2", "ltx2.3")))
    paths["root"] = root
    return paths


@pytest.fixture(scope="session")
def tiny_model(tiny_models) -> backbone.AVModel:
    """The tiny LTX-2 (19B layout) model, fp32 on the CPU."""
    return backbone.load_model(tiny_models["checkpoint_ltx2"], device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def tiny_model_23(tiny_models) -> backbone.AVModel:
    """The tiny LTX-2.3 (22B layout) model, fp32 on the CPU."""
    return backbone.load_model(tiny_models["checkpoint_ltx2.3"], device="cpu", dtype="fp32")


def context_dims(model: backbone.AVModel) -> tuple[int, int]:
    """Feature sizes of the (video, audio) text contexts the transformer reads for this model's layout."""
    t = model.config["transformer"]
    if t.get("caption_proj_before_connector"):  # ltx2.3: contexts arrive already projected to the inner dims
        video = t["num_attention_heads"] * t["attention_head_dim"]
        return video, t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
    return t["caption_channels"], t["caption_channels"]


@pytest.fixture(scope="session")
def make_context():
    """make_context(model, batch=1, length=8, seed=0) -> a random TextContext of the right sizes for the model."""

    def make(model: backbone.AVModel, batch: int = 1, length: int = 8, seed: int = 0) -> TextContext:
        g = torch.Generator().manual_seed(seed)
        dv, da = context_dims(model)
        video = torch.randn(batch, length, dv, generator=g)
        return TextContext(video=video, audio=torch.randn(batch, length, da, generator=g))

    return make
