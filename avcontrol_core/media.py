"""Video and audio in and out: MP4 (H.264 + AAC) and audio files, through PyAV.

Data follow ComfyUI: IMAGE is a float tensor [F, H, W, 3] in 0..1, AUDIO is
{"waveform": float [B, C, T] in -1..1, "sample_rate": int}.

AAC adds 1024 priming samples at the start and pads the last 1024-sample frame.
The MP4 muxer records the real length in an edit list, in the movie time scale;
the writer picks a time scale in which the audio length is exact, and the readers
trim decoded audio to that length, so a round trip keeps the sample count.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .errors import InputError, warn
from .inputs import check_audio as _check_audio, check_images as _check_images, resample_audio

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_LAYOUTS = {1: "mono", 2: "stereo"}
_MAX_TIMESCALE = 2**31 - 1


# ----------------------------------------------------------------------------- names


def output_prefix_problem(prefix: str, directory=None) -> str | None:
    """Why `prefix` cannot name a file inside the output folder `directory`, or None; checks only, creates
    nothing (nodes call it before any work)."""
    rel = Path(str(prefix))
    if not isinstance(prefix, str) or not prefix.strip() or not rel.name or rel.is_absolute() or ".." in rel.parts:
        return f"filename_prefix must be a relative name inside the output folder (e.g. avcontrol/clip), got {prefix!r}"
    if directory is not None and not (Path(directory) / rel).parent.resolve().is_relative_to(Path(directory).resolve()):
        return f"filename_prefix must stay inside the output folder, got {prefix!r} (it leads outside)"
    return None


def unique_output_path(directory, prefix: str, ext: str = ".mp4") -> Path:
    """Reserve and return a new file `directory/prefix_00001_.ext` (ComfyUI style).

    The prefix may hold subfolders (created). The file is created exclusively,
    so concurrent callers never get the same name and nothing is overwritten.
    """
    base = Path(directory)
    problem = output_prefix_problem(prefix, base)
    if problem:
        raise InputError(problem)
    rel = Path(str(prefix))
    folder = (base / rel).parent
    folder.mkdir(parents=True, exist_ok=True)
    ext = ext if ext.startswith(".") else "." + ext
    pattern = re.compile(re.escape(rel.name) + r"_(\d+)_" + re.escape(ext) + "$")
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    counter = max(taken, default=0) + 1
    while True:
        path = folder / f"{rel.name}_{counter:05d}_{ext}"
        try:
            with open(path, "x"):
                return path
        except FileExistsError:
            counter += 1


# ----------------------------------------------------------------------------- helpers


def fps_fraction(fps) -> Fraction:
    """Exact frame rate: 24 -> 24/1, 29.97 or 23.976 -> the NTSC x/1001 rate."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps: expected a number > 0, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps: expected a number > 0, got {fps!r}")
    exact = Fraction(fps) if isinstance(fps, (int, Fraction)) else Fraction(value)
    rate = exact.limit_denominator(1001)
    ntsc = Fraction(round(value * 1.001) * 1000, 1001)
    if rate.denominator != 1 and abs(value - float(ntsc)) < 5e-4:
        rate = ntsc
    return rate


def audio_seconds(audio: dict) -> float:
    """Duration in seconds of an AUDIO dict."""
    return audio["waveform"].shape[-1] / float(audio["sample_rate"])


def fit_samples(wave: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad [C, T] samples to exactly n along T."""
    if wave.shape[-1] >= n:
        return wave[..., :n]
    pad = np.zeros(wave.shape[:-1] + (n - wave.shape[-1],), dtype=wave.dtype)
    return np.concatenate([wave, pad], axis=-1)


def fit_audio(audio: dict, seconds: float) -> dict:
    """AUDIO trimmed or zero-padded to `seconds` (round(seconds * sample_rate) samples)."""
    sr = int(audio["sample_rate"])
    wave = audio["waveform"]
    n = round(seconds * sr)
    if wave.shape[-1] >= n:
        wave = wave[..., :n]
    else:
        wave = torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
    return {"waveform": wave, "sample_rate": sr}


def check_images(images) -> torch.Tensor:
    """Validate an IMAGE batch for H.264 yuv420p (inputs.check_images, then even sides); a CPU float tensor."""
    images = _check_images(images, "images")
    frames, height, width, _ = images.shape
    if height % 2 or width % 2:
        raise InputError(
            f"images: height and width must be even for H.264 (yuv420p), got height {height}, width {width}"
        )
    return images.detach().cpu()


def check_audio(audio) -> tuple[np.ndarray, int]:
    """Validate an AUDIO dict (inputs.check_audio, then 1 or 2 channels); the first clip as float32 [C, T] in -1..1
    and the rate."""
    wave, sr = _check_audio(audio, "audio")
    if wave.shape[1] not in _LAYOUTS:
        raise InputError(f"audio: expected 1 or 2 channels, got {wave.shape[1]}")
    return np.ascontiguousarray(wave[0].clamp(-1, 1).numpy()), sr


def _aac_rate(sr: int) -> int:
    """The sample rate AAC encodes at: sr itself, else the next supported one up."""
    if sr in AAC_RATES:
        return sr
    higher = [r for r in AAC_RATES if r >= sr]
    return min(higher) if higher else max(AAC_RATES)


def _movie_timescale(rate: Fraction, sr: int | None) -> int:
    """MP4 movie time scale in which the video and audio lengths are exact."""
    scale = math.lcm(rate.numerator, sr or 1, 1000)
    return scale if scale <= _MAX_TIMESCALE else (sr or 1000)


# ----------------------------------------------------------------------------- write


def write_mp4(path, images, fps, audio: dict | None = None, crf: int = 19) -> Path:
    """Encode IMAGE (+ optional AUDIO) to an H.264 + AAC MP4; audio fitted to the video length."""
    images = check_images(images)
    rate = fps_fraction(fps)
    frames, height, width, _ = images.shape
    wave = sr = None
    if audio is not None:
        wave, sr = check_audio(audio)
        if _aac_rate(sr) != sr:
            wave, sr = resample_audio(torch.from_numpy(wave), sr, _aac_rate(sr)).numpy(), _aac_rate(sr)
        wave = fit_samples(wave, round(Fraction(frames) / rate * sr))
    path = Path(path)
    options = {"movie_timescale": str(_movie_timescale(rate, sr)), "movflags": "+faststart"}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(int(crf))}
        sound = None
        if wave is not None:
            sound = out.add_stream("aac", rate=sr)
            sound.layout = _LAYOUTS[wave.shape[0]]
        for i in range(frames):
            pixels = (images[i].float().nan_to_num().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=sound.layout.name)
            frame.sample_rate, frame.pts = sr, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


# ----------------------------------------------------------------------------- read


def _stream_fps(stream) -> float:
    """Frame rate of a video stream, as a float."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError(f"video stream has no frame rate: {stream}")
    return float(rate)


def _frames(container, stream, skipped: list):
    """Decoded frames of one stream; a packet the decoder refuses (damaged data, common in real AVI / AC3 files)
    is skipped and its pts appended to `skipped`."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()  # the last, empty packet flushes the decoder
        except av.error.FFmpegError:
            skipped.append(packet.pts)


def _decode_audio(path, fallback_seconds: float | None = None):
    """(float32 [C, T], sample_rate, codec) of the first audio track; None without one.

    Each frame is placed at its timestamp: leading samples before time 0 (AAC priming the decoder kept) are
    dropped, and the samples of a damaged packet that was skipped become silence, so the sound stays in sync
    (with a warning). In MP4/MOV the result is trimmed to the stream's container duration (the edit list), or to
    fallback_seconds when that is unknown.
    """
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        resampler = av.AudioResampler(format="fltp")
        parts, length, origin, skipped = [], 0, None, []

        def place(arrays, at):
            nonlocal length
            for a in arrays:
                if at is not None and origin is not None:
                    start = at - origin
                    if start < 0:  # before time 0 (priming)
                        a, start = a[:, -start:], 0
                    if start - length > max(32, a.shape[-1] // 2):  # a gap: a skipped packet
                        parts.append(np.zeros((a.shape[0], start - length), np.float32))
                        length = start
                    at = None  # the resampler's later arrays follow on
                parts.append(a)
                length += a.shape[-1]

        for frame in _frames(container, stream, skipped):
            at = None if frame.pts is None else round(frame.pts * stream.time_base * frame.sample_rate)
            if origin is None:
                first = stream.start_time if stream.start_time is not None else frame.pts
                origin = 0 if first is None else max(0, round(first * stream.time_base * frame.sample_rate))
                if skipped and skipped[0] is not None:  # a damaged first packet still marks where sound begins
                    origin = min(origin, max(0, round(skipped[0] * stream.time_base * frame.sample_rate)))
            place([f.to_ndarray() for f in resampler.resample(frame)], at)
        place([f.to_ndarray() for f in resampler.resample(None)], None)
        limit = None
        if "mp4" in container.format.name or "mov" in container.format.name:
            if stream.duration:
                limit = round(stream.duration * stream.time_base * sr)
            elif fallback_seconds is not None:
                limit = round(fallback_seconds * sr)
        codec = stream.codec_context.name
    if skipped:
        warn(f"{Path(path).name}: {len(skipped)} damaged audio packet{'s' if len(skipped) > 1 else ''} skipped; "
             f"the gap is silence, so the sound stays in sync with the picture")
    wave = np.concatenate(parts, axis=-1) if parts else np.zeros((channels, 0), np.float32)
    if limit is not None:
        wave = wave[:, :limit]
    return np.ascontiguousarray(wave, dtype=np.float32), sr, codec


def load_audio(path) -> dict:
    """Read the first audio track of any file PyAV reads into an AUDIO dict [1, C, T]."""
    decoded = _decode_audio(path)
    if decoded is None:
        raise ValueError(f"audio: no audio stream in {path}")
    wave, sr, _ = decoded
    return {"waveform": torch.from_numpy(wave).unsqueeze(0), "sample_rate": int(sr)}


def read_mp4(path) -> tuple[torch.Tensor, float, dict | None]:
    """Decode a video file to (IMAGE [F, H, W, 3] in 0..1, fps, AUDIO or None)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"video: no video stream in {path}")
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        skipped: list = []
        frames = [f.to_ndarray(format="rgb24") for f in _frames(container, stream, skipped)]
        claimed = stream.frames
    if not frames:
        raise ValueError(f"video: no frames decoded from {path}")
    if skipped:
        warn(f"{Path(path).name}: {len(skipped)} damaged video packet{'s' if len(skipped) > 1 else ''} skipped "
             f"({len(frames)} frames read)")
    elif claimed and claimed > len(frames):
        warn(f"{Path(path).name} claims {claimed} frames but holds {len(frames)}: read what it has")
    images = torch.from_numpy(np.stack(frames)).float() / 255.0
    decoded = _decode_audio(path, fallback_seconds=len(frames) / fps)
    audio = None
    if decoded is not None:
        wave, sr, _ = decoded
        audio = {"waveform": torch.from_numpy(wave).unsqueeze(0), "sample_rate": int(sr)}
    return images, fps, audio


def probe_mp4(path) -> dict:
    """Frames, rate, size, codecs and durations of a video file (audio as a player plays it)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"video: no video stream in {path}")
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        frames = sum(1 for p in container.demux(stream) if p.size)  # what the file holds, not what it claims
        info = {
            "frames": int(frames),
            "fps": fps,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "video_codec": stream.codec_context.name,
            "video_seconds": frames / fps,
        }
    decoded = _decode_audio(path, fallback_seconds=frames / fps)
    wave, sr, codec = decoded if decoded is not None else (None, None, None)
    info.update(
        audio_codec=codec,
        audio_seconds=None if wave is None else wave.shape[-1] / sr,
        sample_rate=sr,
        channels=None if wave is None else wave.shape[0],
    )
    return info


def load_image(path) -> torch.Tensor:
    """An image file (png, jpg, webp...) as IMAGE [1, H, W, 3] float 0..1, decoded by FFmpeg through PyAV."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        rgb = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(rgb).float().div(255.0)[None]


def write_image(path, image: torch.Tensor) -> Path:
    """One IMAGE frame [H, W, 3] (or [1, H, W, 3]) in 0..1 as a PNG."""
    image = torch.as_tensor(image)
    image = image[0] if image.ndim == 4 else image
    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_audio(path, audio: dict) -> Path:
    """The first clip of an AUDIO as 16-bit PCM WAV at its own rate."""
    wave, sr = check_audio(audio)
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    pcm = (np.clip(wave, -1, 1) * 32767).round().astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sr, layout=layout)
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
