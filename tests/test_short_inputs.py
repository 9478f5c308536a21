"""Real media is short too: every weight-free visual node from 1 frame up and every audio node from 1 sample up,
run through the node with its own defaults. Each either returns outputs of the right length or refuses by name
(an InputError); an IndexError / ValueError from numpy is the bug this guards against (issue 14.4)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

load_pack()
features = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.preprocess.audio_features")
speech = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.preprocess.speech")
InputError = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").InputError

FRAMES = (1, 2, 3, 4, 5, 8, 9)
SAMPLES = (1, 2, 17, 160, 441, 2205, 4410, 8819, 22050)  # 1 sample ... 0.5 s at 44.1 kHz (10-199 ms included)
VISUAL = ("AVCCannyEdges", "AVCSoftEdges", "AVCMaskFromBox", "AVCMaskFromThreshold", "AVCOutpaintPad",
          "AVCFillMasked", "AVCFitClip")


def defaults(cls) -> dict:
    """Every widget input at its default (a combo at its default or first choice)."""
    spec = cls.INPUT_TYPES()
    out = {}
    for group in ("required", "optional"):
        for name, (kind, *rest) in spec.get(group, {}).items():
            opts = rest[0] if rest else {}
            if isinstance(kind, list):
                out[name] = opts.get("default", kind[0])
            elif "default" in opts:
                out[name] = opts["default"]
    return out


def call(name: str, **media):
    cls = pack_node_classes()[name]
    result = getattr(cls(), cls.FUNCTION)(**(defaults(cls) | media))
    return result["result"] if isinstance(result, dict) else result


def frames(n: int, h: int = 40, w: int = 56) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, h, w, 3, generator=g)


@pytest.mark.parametrize("count", FRAMES)
@pytest.mark.parametrize("node", VISUAL)
def test_visual_nodes_work_from_one_frame(node, count):
    images = frames(count)
    media = {"image": images}
    if node == "AVCFillMasked":
        media["mask"] = torch.zeros(count, 40, 56)
    out = call(node, **media)
    first = out[0]
    if node == "AVCFitClip":  # frames 8n+1 ('drop'): 1-8 frames keep one, 9 keep nine
        assert first.shape[0] == (9 if count == 9 else 1) and out[3] == first.shape[0]
        assert first.shape[1] % 32 == 0 and first.shape[2] % 32 == 0
    else:
        assert first.shape[0] == count, (node, tuple(first.shape))
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("samples", SAMPLES)
def test_envelope_and_onsets_work_from_one_sample(samples):
    sr = 44100
    x = np.zeros(samples, np.float32)
    x[samples // 2] = 0.9  # one click in the middle
    sound = {"waveform": torch.from_numpy(x)[None, None], "sample_rate": sr}
    expected = features.frame_count(samples, sr)
    assert expected == max(1, int(np.ceil(samples / sr * 25)))  # 25 frames a second, a started frame counts
    envelope = call("AVCAudioEnvelope", audio=sound)[0]
    assert envelope.values.shape == (expected,)
    strength, times, _ = call("AVCAudioOnsets", audio=sound)
    assert strength.values.shape == (expected,)
    assert all(0.0 <= float(t) <= samples / sr + 0.05 for t in times.split(",") if t)


def test_moving_average_keeps_the_length_whatever_the_width():
    x = np.array([1.0, 2.0, 4.0])
    # a width-5 centred mean with zeros beyond the ends, by hand: (0+0+1+2+4)/5, (0+1+2+4+0)/5, (1+2+4+0+0)/5
    np.testing.assert_allclose(features.moving_average(x, 5), [7 / 5, 7 / 5, 7 / 5])
    # an even width leans back one sample, as numpy's mode "same" does: (0+1)/2, (1+2)/2, (2+4)/2
    np.testing.assert_allclose(features.moving_average(x, 2), [0.5, 1.5, 3.0])
    long = np.random.default_rng(0).standard_normal(50)
    for width in (1, 2, 5, 8):  # where the signal is the longer, it is numpy's own mode "same"
        np.testing.assert_allclose(features.moving_average(long, width),
                                   np.convolve(long, np.ones(width) / width, mode="same"), atol=1e-12)


@pytest.mark.parametrize("count", (1, 2, 3, 4, 5, 9))
def test_who_is_talking_from_one_frame(count, monkeypatch):
    """A single portrait with speech is a real use: mouth motion over 1-9 frames (the face tracker replaced by
    its output; the real face mesh on one frame is below)."""
    fps = 24.0
    opening = np.linspace(0.05, 0.09, count)
    box = np.tile([10.0, 10.0, 30.0, 30.0], (count, 1))
    monkeypatch.setattr(speech, "face_tracks",
                        lambda images, max_faces, progress=None: [{"boxes": box, "opening": opening}])
    talk = speech.Curve(torch.ones(max(1, int(np.ceil(count / fps * 25)))))
    found = speech.speakers_from_video(talk, torch.zeros(count, 48, 48, 3), fps, 2, "soft")
    assert len(found.speakers) == 1
    assert found.speakers[0].activity.values.shape == talk.values.shape
    assert found.talking_map("box").shape[0] == count


def test_who_is_talking_on_one_real_portrait_frame():
    pytest.importorskip("mediapipe", reason="MediaPipe face mesh is the preprocess extra: pip install mediapipe")
    skimage = pytest.importorskip("skimage", reason="scikit-image holds the portrait photo used here")
    pytest.importorskip("silero_vad", reason="silero-vad is the preprocess extra for speech activity")
    face = torch.from_numpy(skimage.data.astronaut()[30:250, 115:335].copy()).float()[None] / 255.0
    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(sr // 10) / sr)).astype(np.float32)
    sound = {"waveform": torch.from_numpy(tone)[None, None], "sample_rate": sr}
    speakers, mask, _, info = call("AVCWhoIsTalking", audio=sound, images=face, fps=24.0)
    assert mask.shape[0] == 1 and len(speakers.speakers) == 1, info
