"""Watching what the transformer receives, for tests."""

from __future__ import annotations

import contextlib

import torch
from ltx_core.model.transformer.modality import Modality


@contextlib.contextmanager
def recorded(transformer: torch.nn.Module):
    """Every (video, audio) Modality the transformer receives, in call order."""
    calls: list[tuple[Modality, Modality]] = []

    def hook(_module, _args, kwargs):
        calls.append((kwargs["video"], kwargs["audio"]))

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()
