"""Media round trips through real codecs (PyAV: libx264, aac, pcm, flac)."""

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avcontrol_core import media

H, W = 48, 64


def gradient_frames(frames: int) -> torch.Tensor:
    """Smooth RGB gradients that move one step per frame."""
    y = torch.linspace(0, 1, H).view(H, 1)
    x = torch.linspace(0, 1, W).view(1, W)
    out = []
    for i in range(frames):
        s = i / max(frames, 1)
        r = (x + s) % 1.0 * 0.8 + 0.1
        g = (y * 0.7 + 0.2 * s).expand(H, W)
        b = (0.5 + 0.4 * torch.sin(2 * math.pi * (x + y + s))).expand(H, W)
        out.append(torch.stack([r.expand(H, W), g, b], dim=-1))
    return torch.stack(out).float()


def tone(seconds: float, sr: int, channels: int = 2, hz: float = 440.0) -> dict:
    n = round(seconds * sr)
    wave = 0.5 * torch.sin(2 * math.pi * hz * torch.arange(n) / sr)
    return {"waveform": wave.repeat(1, channels, 1).float(), "sample_rate": sr}


def peak_hz(wave: torch.Tensor, sr: int) -> float:
    x = wave[0, 0].numpy() * np.hanning(wave.shape[-1])
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


@pytest.mark.parametrize("frames,fps", [(9, 24), (17, 25), (121, 24), (33, Fraction(30000, 1001))])
def test_round_trip(tmp_path, frames, fps):
    sr = 48000
    images = gradient_frames(frames)
    written = frames / float(fps)
    path = media.write_mp4(tmp_path / "clip.mp4", images, fps, tone(written, sr))
    info = media.probe_mp4(path)
    assert info["frames"] == frames
    assert info["fps"] == pytest.approx(float(fps), rel=1e-9)
    assert (info["width"], info["height"]) == (W, H)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert info["video_seconds"] == pytest.approx(written)
    assert abs(info["audio_seconds"] - info["video_seconds"]) <= 1 / float(fps)

    decoded, fps_read, audio = media.read_mp4(path)
    assert decoded.shape == images.shape and decoded.dtype == torch.float32
    assert fps_read == pytest.approx(float(fps), rel=1e-9)
    assert (decoded - images).abs().mean() < 0.05
    # Priming and padding removed: exactly the samples written come back.
    assert audio["sample_rate"] == sr
    assert audio["waveform"].shape == (1, 2, round(Fraction(frames) / Fraction(fps) * sr))
    assert media.audio_seconds(audio) == pytest.approx(info["audio_seconds"])
    assert abs(peak_hz(audio["waveform"], sr) - 440) <= 10


def test_frames_come_back_in_order(tmp_path):
    images = torch.zeros(5, H, W, 3)
    for i in range(5):
        images[i] = i / 4
    decoded, _, audio = media.read_mp4(media.write_mp4(tmp_path / "ramp.mp4", images, 24))
    assert audio is None
    means = decoded.mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.linspace(0, 1, 5), atol=0.03)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sr", [16000, 48000])
def test_audio_layouts_and_rates(tmp_path, channels, sr):
    path = media.write_mp4(tmp_path / "a.mp4", gradient_frames(9), 24, tone(9 / 24, sr, channels))
    info = media.probe_mp4(path)
    assert (info["channels"], info["sample_rate"]) == (channels, sr)
    _, _, audio = media.read_mp4(path)
    assert audio["waveform"].shape == (1, channels, round(9 / 24 * sr))
    assert abs(peak_hz(audio["waveform"], sr) - 440) <= 10


@pytest.mark.parametrize("audio_seconds", [0.1, 2.0])
def test_audio_is_fitted_to_video_length(tmp_path, audio_seconds):
    sr, frames, fps = 16000, 17, 25
    path = media.write_mp4(tmp_path / "fit.mp4", gradient_frames(frames), fps, tone(audio_seconds, sr))
    info = media.probe_mp4(path)
    assert info["audio_seconds"] == pytest.approx(frames / fps, abs=1 / sr)
    _, _, audio = media.read_mp4(path)
    assert audio["waveform"].shape[-1] == round(frames / fps * sr)
    if audio_seconds < frames / fps:  # the padded tail is silence
        assert audio["waveform"][..., round(0.15 * sr) :].abs().max() < 0.01


def test_unsupported_rate_is_resampled(tmp_path):
    path = media.write_mp4(tmp_path / "r.mp4", gradient_frames(9), 24, tone(9 / 24, 22000))
    info = media.probe_mp4(path)
    assert info["sample_rate"] in media.AAC_RATES and info["sample_rate"] >= 22000
    assert info["audio_seconds"] == pytest.approx(9 / 24, abs=1 / info["sample_rate"])
    _, _, audio = media.read_mp4(path)
    assert abs(peak_hz(audio["waveform"], audio["sample_rate"]) - 440) <= 10


def test_ntsc_float_fps(tmp_path):
    assert media.fps_fraction(23.976) == Fraction(24000, 1001)
    assert media.fps_fraction(29.97) == Fraction(30000, 1001)
    assert media.fps_fraction(12.5) == Fraction(25, 2)
    info = media.probe_mp4(media.write_mp4(tmp_path / "n.mp4", gradient_frames(9), 23.976))
    assert info["frames"] == 9 and info["fps"] == pytest.approx(24000 / 1001)
    assert info["audio_codec"] is None and info["audio_seconds"] is None


def write_audio_file(path, wave: np.ndarray, sr: int, codec: str):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "stereo" if wave.shape[0] == 2 else "mono"
        fmt = "s16" if codec == "pcm_s16le" else stream.codec_context.format.name
        data = (wave * 32767).astype(np.int16).T.reshape(1, -1) if fmt == "s16" else wave
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=stream.layout.name)
        frame.sample_rate, frame.pts = sr, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.mark.parametrize("name,codec", [("x.wav", "pcm_s16le"), ("x.flac", "flac")])
def test_load_audio_files(tmp_path, name, codec):
    sr = 22050
    wave = tone(0.5, sr, 2)["waveform"][0].numpy()
    write_audio_file(tmp_path / name, wave, sr, codec)
    audio = media.load_audio(tmp_path / name)
    assert audio["sample_rate"] == sr and audio["waveform"].dtype == torch.float32
    assert audio["waveform"].shape == (1, 2, wave.shape[-1])
    assert np.abs(audio["waveform"][0].numpy() - wave).max() < 1e-3


def test_load_audio_from_mp4_and_refuses_silent_file(tmp_path):
    path = media.write_mp4(tmp_path / "v.mp4", gradient_frames(17), 25, tone(1.0, 16000, 1))
    audio = media.load_audio(path)
    assert audio["waveform"].shape == (1, 1, round(17 / 25 * 16000))
    assert media.audio_seconds(audio) == pytest.approx(17 / 25)
    silent = media.write_mp4(tmp_path / "s.mp4", gradient_frames(9), 24)
    with pytest.raises(ValueError, match="no audio"):
        media.load_audio(silent)


def test_unique_output_path(tmp_path):
    existing = tmp_path / "avcontrol" / "run_00001_.mp4"
    existing.parent.mkdir()
    existing.write_bytes(b"keep me")
    first = media.unique_output_path(tmp_path, "avcontrol/run")
    second = media.unique_output_path(tmp_path, "avcontrol/run")
    assert first != second and first.exists() and second.exists()
    assert first.parent == existing.parent and first.name == "run_00002_.mp4"
    assert existing.read_bytes() == b"keep me"
    nested = media.unique_output_path(tmp_path / "out", "a/b/clip", ext="wav")
    assert nested == tmp_path / "out" / "a" / "b" / "clip_00001_.wav"


def test_unique_output_path_under_concurrency(tmp_path):
    barrier = threading.Barrier(8)

    def reserve(_):
        barrier.wait()
        return [media.unique_output_path(tmp_path, "race/clip") for _ in range(6)]

    with ThreadPoolExecutor(8) as pool:
        paths = [p for batch in pool.map(reserve, range(8)) for p in batch]
    assert len(set(paths)) == len(paths) == 48
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == sorted(p.name for p in paths)


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/abs/clip", ""])
def test_unique_output_path_refuses_escape(tmp_path, prefix):
    with pytest.raises(ValueError, match="filename_prefix"):
        media.unique_output_path(tmp_path / "out", prefix)
    assert not (tmp_path / "escape_00001_.mp4").exists()


def test_invalid_inputs_are_refused_before_writing(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match=r"images: .*width 63"):
        media.write_mp4(path, torch.rand(3, 48, 63, 3), 24)
    with pytest.raises(ValueError, match=r"images must be an IMAGE batch \[frames, height, width, 3\], got \(2, 3, 4\)"):
        media.write_mp4(path, torch.rand(2, 3, 4), 24)
    with pytest.raises(ValueError, match="images must hold at least one non-empty frame"):
        media.write_mp4(path, torch.rand(0, 48, 64, 3), 24)
    with pytest.raises(ValueError, match="fps"):
        media.write_mp4(path, torch.rand(1, 48, 64, 3), 0)
    with pytest.raises(ValueError, match="audio: expected 1 or 2 channels"):
        six = {"waveform": torch.zeros(1, 6, 100), "sample_rate": 16000}
        media.write_mp4(path, torch.rand(1, 48, 64, 3), 24, six)
    assert not path.exists()


def test_fit_audio_and_seconds():
    audio = tone(1.0, 16000, 1)
    assert media.audio_seconds(audio) == 1.0
    assert media.fit_audio(audio, 0.5)["waveform"].shape == (1, 1, 8000)
    longer = media.fit_audio(audio, 1.5)["waveform"]
    assert longer.shape == (1, 1, 24000) and longer[..., 16000:].abs().max() == 0


def _damage_audio_packets(src, dst, which):
    """Copy `src` with the bytes of its audio packets number `which` (demux order) replaced by noise."""
    import av

    with av.open(str(src)) as c:
        packets = [(p.pos, p.size, p.pts) for p in c.demux(c.streams.audio[0]) if p.size]
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(0)
    for k in which:
        pos, size, _ = packets[k]
        data[pos:pos + size] = bytes(rng.integers(0, 256, size, dtype=np.uint8))
    Path(dst).write_bytes(bytes(data))
    return [packets[k][2] for k in which]


def test_damaged_audio_packets_are_skipped_and_the_sound_stays_in_sync(tmp_path):
    """A corrupt first packet (and one in the middle) used to make load_audio / read_mp4 / probe_mp4 raise.
    Now: a warning, the same length, silence where the damaged frame was, and every later sample where the
    undamaged file has it (an implementation that just dropped the frame would shift the rest by 1024 samples)."""
    from avcontrol_core.errors import PackWarning

    sr = 48000
    t = np.arange(2 * sr) / sr
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))
                            .astype(np.float32))[None, None]
    clean = media.write_mp4(tmp_path / "clean.mp4", torch.rand(24, 64, 64, 3), 12, {"waveform": tone, "sample_rate": sr})
    pts = _damage_audio_packets(clean, tmp_path / "bad.mp4", [0, 40])
    assert pts[0] < 0 and pts[1] > 0  # the AAC priming packet, and one 0.8 s in
    good = media.load_audio(clean)["waveform"][0, 0].numpy()
    with pytest.warns(PackWarning, match="2 damaged audio packets skipped"):
        bad = media.load_audio(tmp_path / "bad.mp4")["waveform"][0, 0].numpy()
    assert bad.shape == good.shape
    frame = 1024
    start = pts[1]  # time base 1/48000 (the AAC stream's): the damaged frame's first sample
    assert np.all(bad[start:start + frame] == 0.0)  # silence, at its place
    later = slice(start + 3 * frame, len(good))  # after the decoder's overlap settles
    np.testing.assert_allclose(bad[later], good[later], atol=1e-3)
    before = slice(3 * frame, start - frame)
    np.testing.assert_allclose(bad[before], good[before], atol=1e-3)
    with pytest.warns(PackWarning):
        images, fps, audio = media.read_mp4(tmp_path / "bad.mp4")
    assert images.shape[0] == 24 and audio["waveform"].shape[-1] == len(good)
    with pytest.warns(PackWarning):
        assert media.probe_mp4(tmp_path / "bad.mp4")["frames"] == 24


def _avi_with_ac3(path, seconds: float = 2.0, sr: int = 48000) -> Path:
    """An AVI with MPEG-4 video and AC3 sound, as cameras and old rips make them."""
    c = av.open(str(path), "w")
    v = c.add_stream("mpeg4", rate=12)
    v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
    a = c.add_stream("ac3", rate=sr)
    a.layout = "stereo"
    for _ in range(int(12 * seconds)):
        for p in v.encode(av.VideoFrame.from_ndarray(np.random.randint(0, 255, (64, 64, 3), np.uint8), "rgb24")):
            c.mux(p)
    t = np.arange(int(seconds * sr)) / sr
    w = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for k in range(0, len(w), 1536):
        frame = av.AudioFrame.from_ndarray(np.stack([w[k:k + 1536]] * 2), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = sr, k
        for p in a.encode(frame):
            c.mux(p)
    for stream in (a, v):
        for p in stream.encode(None):
            c.mux(p)
    c.close()
    return Path(path)


def test_damaged_ac3_packets_in_an_avi_become_silence_in_place(tmp_path):
    from avcontrol_core.errors import PackWarning

    clean = _avi_with_ac3(tmp_path / "clip.avi")
    _damage_audio_packets(clean, tmp_path / "bad.avi", [0, 20])
    good = media.load_audio(clean)["waveform"][0, 0].numpy()
    with pytest.warns(PackWarning, match="2 damaged audio packets skipped"):
        images, fps, audio = media.read_mp4(tmp_path / "bad.avi")
    bad = audio["waveform"][0, 0].numpy()
    assert images.shape[0] == 24 and fps == 12 and bad.shape == good.shape
    frame, start = 1536, 20 * 1536  # AC3: 1536 samples a packet, the 21st damaged
    assert np.all(bad[:frame] == 0.0) and np.all(bad[start:start + frame] == 0.0)
    for part in (slice(2 * frame, start - frame), slice(start + 2 * frame, len(good))):
        np.testing.assert_allclose(bad[part], good[part], atol=1e-3)
