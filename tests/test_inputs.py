"""The one validator of each kind of media and the one resampler of each axis, checked by hand-computed values and
by every caller agreeing with them (controls, preprocessors, writers)."""

from __future__ import annotations

import pytest
import torch

from avcontrol_core import control_media, inputs, media
from avcontrol_core.controls import VideoControl, resample_frames
from avcontrol_core.errors import InputError
from avcontrol_core.preprocess import fit, masks


def test_frames_at_picks_the_latest_source_frame_by_time():
    # 30 fps shown at 24 fps: frame k is at k/24 s, the source frame there is floor(k * 30 / 24)
    assert inputs.frames_at(6, 30, 24, 100).tolist() == [0, 1, 2, 3, 5, 6]
    # 12 fps at 24 fps: each source frame twice; held at the last one past the end
    assert inputs.frames_at(7, 12, 24, 3).tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert inputs.frames_at(4, 25, 25, 9).tolist() == [0, 1, 2, 3]  # exact ratios stay exact
    with pytest.raises(InputError, match="at least one frame, got 0"):
        inputs.frames_at(3, 24, 24, 0)


def test_every_frame_resampler_agrees_with_frames_at():
    clip = torch.arange(10.0)[:, None, None, None].expand(10, 2, 2, 3)
    assert resample_frames(clip, 6, 30, 24)[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 5, 6]
    assert fit.plan_frames(10, 30, 24, rule="repeat").indices == [0, 1, 2, 3, 5, 6, 7, 8, 8]
    # a curve at 25 per second gating a 24 fps mask: frame k reads sample floor(k * 25 / 24)
    curve = torch.tensor([1.0 if i == 25 else 0.0 for i in range(30)])
    gated = control_media.gate_mask(torch.ones(26, 2, 2), curve, 25.0, 24.0)
    assert [k for k in range(26) if gated[k].max() > 0] == [24]  # 24 * 25 / 24 = 25


@pytest.mark.parametrize("bad, words", [
    (torch.rand(2, 3, 4), r"must be an IMAGE batch \[frames, height, width, 3\], got \(2, 3, 4\)"),
    (torch.rand(0, 8, 8, 3), "must hold at least one non-empty frame"),
    (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), "must be a float IMAGE in 0..1, got torch.uint8"),
])
def test_one_image_validator_for_controls_preprocessors_and_the_writer(tmp_path, bad, words):
    with pytest.raises(InputError, match="frames " + words):
        VideoControl(label="depth", frames=bad)
    with pytest.raises(InputError, match="image " + words):
        masks.fill_masked(bad, torch.ones(1, 8, 8))
    with pytest.raises(InputError, match="images " + words):
        media.write_mp4(tmp_path / "x.mp4", bad, 24)
    assert not (tmp_path / "x.mp4").exists()


def test_grey_and_alpha_images_are_taken_everywhere():
    grey, rgba = torch.rand(2, 4, 4, 1), torch.rand(2, 4, 4, 4)
    assert torch.equal(inputs.check_images(grey), grey.expand(-1, -1, -1, 3))
    assert torch.equal(inputs.check_images(rgba), rgba[..., :3])
    assert VideoControl(label="depth", frames=rgba).frames.shape == (2, 4, 4, 3)


def test_one_audio_validator():
    ok = {"waveform": torch.tensor([[[0.5, float("nan")]]]), "sample_rate": 16000}
    wave, sr = inputs.check_audio(ok)
    assert wave.tolist() == [[[0.5, 0.0]]] and sr == 16000
    assert inputs.check_audio({"waveform": torch.zeros(2, 5), "sample_rate": 8000})[0].shape == (1, 2, 5)
    for bad, words in [({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "at least one sample, got 0"),
                       ({"waveform": torch.zeros(1, 1, 4), "sample_rate": 10}, "at least 1000 Hz, got 10"),
                       ("a.wav", "must be an AUDIO dict")]:
        with pytest.raises(InputError, match=words):
            inputs.check_audio(bad, "reference audio")
    with pytest.raises(InputError, match="audio: expected 1 or 2 channels, got 6"):
        media.check_audio({"waveform": torch.zeros(1, 6, 100), "sample_rate": 16000})


def test_one_mask_fill():
    frames = torch.full((2, 2, 2, 3), 0.2)
    mask = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    want = torch.tensor([[0.5, 0.2], [0.35, 0.2]])  # 0.2 * (1 - m) + 0.5 * m, by hand
    assert torch.allclose(control_media.fill_masked(frames, mask)[..., 0], want.expand(2, 2, 2))
    assert torch.allclose(masks.fill_masked(frames, mask, "grey")[..., 0], want.expand(2, 2, 2))
    assert torch.allclose(masks.fill_masked(frames, mask, "white")[0, 0, 0], torch.tensor(1.0))


def test_one_audio_resampler():
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 440 * t)[None]
    out = inputs.resample_audio(tone, 16000, 24000)
    assert out.shape == (1, 24000)
    peak = torch.fft.rfft(out[0]).abs().argmax().item()  # bin = Hz for one second
    assert peak == 440
    assert inputs.resample_audio(tone, 16000, 16000) is tone
