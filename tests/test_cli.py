"""The command line's two-stage path on the built-in tiny model: half-size first pass, upscale, refine, one mp4 at
the asked size; a size the half-size pass cannot take is refused before anything loads."""

from __future__ import annotations

import pytest

from avcontrol_core.__main__ import main
from avcontrol_core.media import probe_mp4


def test_two_stage_writes_the_asked_size(tmp_path, monkeypatch):
    monkeypatch.setenv("AVCONTROL_CACHE", str(tmp_path / "cache"))
    path = main(["--upscaler", "tiny", "--width", "128", "--height", "64", "--frames", "9", "--steps", "2",
                 "--out", str(tmp_path / "out"), "--prefix", "two"])
    info = probe_mp4(path)
    assert (info["width"], info["height"], info["frames"]) == (128, 64, 9)
    assert abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / 24


def test_two_stage_needs_sides_that_halve_onto_the_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("AVCONTROL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit, match="multiples of 64 with --upscaler .* got 96x64"):
        main(["--upscaler", "tiny", "--width", "96", "--height", "64", "--frames", "9"])
    assert not (tmp_path / "cache").exists()  # refused before the tiny models were even written
