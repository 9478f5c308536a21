"""The command line on the built-in tiny model: the main job on its defaults; the two-stage path: half-size first pass, upscale, refine, one mp4 at
the asked size; a size the half-size pass cannot take is refused before anything loads."""

from __future__ import annotations

import pytest

from avcontrol_core.__main__ import main
from avcontrol_core.media import probe_mp4


def test_the_main_job_on_its_defaults(tmp_path, monkeypatch):
    """What the README's first command runs (256x160, 25 frames, 8 steps: a latent whose 'ltx2' schedule starts at
    0.99999994, not 1, in ltx-core)."""
    monkeypatch.setenv("AVCONTROL_CACHE", str(tmp_path / "cache"))
    info = probe_mp4(main(["--out", str(tmp_path / "out")]))
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (256, 160, 25, 24.0)
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / 24


def test_two_stage_writes_the_asked_size(tmp_path, monkeypatch):
    monkeypatch.setenv("AVCONTROL_CACHE", str(tmp_path / "cache"))
    path = main(["--upscaler", "tiny", "--width", "128", "--height", "64", "--frames", "9", "--steps", "2",
                 "--out", str(tmp_path / "out"), "--prefix", "two"])
    info = probe_mp4(path)
    assert (info["width"], info["height"], info["frames"]) == (128, 64, 9)
    assert abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / 24


def test_two_stage_inputs_are_refused_before_any_sampling(tmp_path, monkeypatch):
    monkeypatch.setenv("AVCONTROL_CACHE", str(tmp_path / "cache"))
    out = ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="--width must be a size this x2 upsampler reaches .* got 96"):
        main(["--upscaler", "tiny", "--width", "96", "--height", "64", "--frames", "9", *out])
    with pytest.raises(SystemExit, match="--distilled-lora is stage two's LoRA: it needs --upscaler"):
        main(["--distilled-lora", str(tmp_path / "x.safetensors"), *out])
    with pytest.raises(SystemExit, match="--upscaler: file not found: .*nowhere.safetensors"):
        main(["--upscaler", str(tmp_path / "nowhere.safetensors"), *out])
    with pytest.raises(SystemExit, match="--upscaler tiny goes with the built-in tiny model"):
        main(["--upscaler", "tiny", "--checkpoint", "a.safetensors", "--gemma", "g", *out])
    assert not (tmp_path / "out").exists()  # nothing was sampled or written
