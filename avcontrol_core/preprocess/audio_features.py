"""Audio features at LTX-2's audio latent rate: intensity envelope and onsets, plus the shared audio helpers.

Rates (documented, and what every curve of the pack's audio preprocessors carries):

- Curves are sampled at ``LATENT_RATE`` = 25 per second, LTX-2's audio latent rate (16 kHz log-mel, hop 160,
  4x temporal compression). Frame ``i`` covers the time ``[i / 25, (i + 1) / 25)`` seconds (40 ms), so a clip of
  ``d`` seconds gives ``ceil(d * 25)`` values; the last frame may be partial.
- Waveforms at other rates are resampled (torchaudio's windowed-sinc ``resample``) where a fixed rate is needed
  (onsets and speech activity run at 16 kHz); the envelope is computed at the input rate, exactly.
- Any channel count ComfyUI's AUDIO holds (mono, stereo) is accepted; features use the mono mix (channel mean).

Envelope: the RMS of the mono mix over each 40 ms frame, reported as

- ``linear``: RMS in full-scale units (a full-scale sine has 0.707),
- ``dB``: ``20 log10(RMS)`` in dBFS, floored at ``floor_db``,
- ``normalized``: the dB value mapped linearly from ``[floor_db, 0 dBFS]`` to ``[0, 1]`` (absolute, so two clips
  compare; not rescaled per clip).

Onsets: spectral flux (half-wave rectified frame-to-frame increase of log-compressed STFT magnitudes) at 16 kHz
with a 32 ms Hann window and a 10 ms hop; a time is reported at each local flux maximum (within +-``min_gap``/2)
that reaches ``threshold`` times the clip's largest flux and stands above the local mean. The per-latent-frame
strength is the largest flux inside each 40 ms frame, divided by the clip's largest flux (0..1).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from ..inputs import check_audio as audio_batch, resample_audio as resample  # noqa: F401 -- the one each
from ..weight import LATENT_RATE, Curve  # one curve type: a preprocessor's output is what a control takes

ANALYSIS_RATE = 16000  # rate of the onset and speech analyses (LTX-2's audio VAE rate, silero-vad's rate)
ONSET_WINDOW = 512  # 32 ms at 16 kHz
ONSET_HOP = 160  # 10 ms at 16 kHz
ENVELOPE_SCALES = ("normalized", "dB", "linear")


# --------------------------------------------------------------------------------------------- audio helpers


def mono(wave: torch.Tensor) -> torch.Tensor:
    """[..., C, T] -> [..., T]: the channel mean."""
    return wave.mean(dim=-2)


def frame_count(samples: int, sr: int, rate: float = LATENT_RATE) -> int:
    """Number of ``rate`` frames covering ``samples`` at ``sr``: ceil(duration * rate)."""
    return max(1, math.ceil(samples * rate / sr - 1e-9))


def frame_bounds(samples: int, sr: int, rate: float = LATENT_RATE) -> np.ndarray:
    """Sample index where each ``rate`` frame starts, plus the end: frame i is [b[i], b[i+1])."""
    n = frame_count(samples, sr, rate)
    bounds = np.round(np.arange(n + 1) * sr / rate).astype(np.int64)
    bounds[-1] = samples
    return np.minimum(bounds, samples)


def to_rate(values: np.ndarray, times: np.ndarray, frames: int, rate: float = LATENT_RATE,
            reduce: str = "mean") -> np.ndarray:
    """Values sampled at ``times`` (seconds) pooled into ``frames`` frames of 1/rate s ("mean" or "max");
    empty frames take the linear interpolation at their centre."""
    out = np.zeros(frames, np.float64)
    if len(values) == 0:
        return out
    index = np.floor(times * rate + 1e-9).astype(np.int64)
    keep = (index >= 0) & (index < frames)
    index, vals = index[keep], values[keep]
    counts = np.bincount(index, minlength=frames)
    if reduce == "max":
        np.maximum.at(out, index, vals)
    else:
        out = np.bincount(index, weights=vals, minlength=frames) / np.maximum(counts, 1)
    empty = counts == 0
    if empty.any():
        centres = (np.arange(frames) + 0.5) / rate
        out[empty] = np.interp(centres[empty], times, values)
    return out


# --------------------------------------------------------------------------------------------- envelope


def rms_envelope(wave: torch.Tensor, sr: int, rate: float = LATENT_RATE) -> np.ndarray:
    """RMS of the mono mix of [C, T] (or [T]) over consecutive frames of 1/rate s (the last may be partial)."""
    x = (mono(wave) if wave.ndim > 1 else wave).double().numpy()
    bounds = frame_bounds(x.shape[-1], sr, rate)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    lengths = np.maximum(np.diff(bounds), 1)
    return np.sqrt(np.maximum(energy[bounds[1:]] - energy[bounds[:-1]], 0.0) / lengths)


def scale_envelope(rms: np.ndarray, scale: str = "normalized", floor_db: float = -60.0) -> np.ndarray:
    """RMS -> the documented scales: linear RMS, dBFS floored at floor_db, or dB mapped [floor_db, 0] -> [0, 1]."""
    if scale not in ENVELOPE_SCALES:
        raise InputError(f"scale must be one of {', '.join(ENVELOPE_SCALES)}, got {scale!r}")
    if not floor_db < 0:
        raise InputError(f"floor_db must be below 0 dBFS, got {floor_db!r}")
    if scale == "linear":
        return rms.copy()
    db = np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), floor_db)
    if scale == "dB":
        return db
    return np.clip((db - floor_db) / -floor_db, 0.0, 1.0)


def intensity_envelope(wave: torch.Tensor, sr: int, scale: str = "normalized", floor_db: float = -60.0) -> Curve:
    """The intensity envelope of one clip [C, T] at 25 frames per second (see the module notes for the scales)."""
    values = scale_envelope(rms_envelope(wave, sr), scale, floor_db)
    unit = {"normalized": f"0..1 over [{floor_db:g}, 0] dBFS", "dB": f"dBFS, floor {floor_db:g}",
            "linear": "RMS"}[scale]
    return Curve(torch.from_numpy(values.astype(np.float32)), LATENT_RATE, f"intensity ({unit}), 25/s")


# --------------------------------------------------------------------------------------------- onsets


def spectral_flux(wave: torch.Tensor, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux of the mono mix at 16 kHz: (flux per 10 ms hop, time in seconds of each hop).

    Frame k is centred at k * 10 ms; its flux is the summed positive increase of log(1 + 100 |X|) from frame k-1.
    """
    x = mono(wave) if wave.ndim > 1 else wave
    x = resample(x.float(), sr, ANALYSIS_RATE)
    window = torch.hann_window(ONSET_WINDOW, periodic=True)
    spec = torch.stft(x, ONSET_WINDOW, ONSET_HOP, window=window, center=True, pad_mode="constant",
                      return_complex=True).abs()
    log_mag = torch.log1p(100.0 * spec)
    diff = torch.diff(log_mag, dim=-1, prepend=log_mag[:, :1]).clamp_min(0).sum(dim=0)
    flux = diff.double().numpy()
    times = np.arange(flux.shape[0]) * ONSET_HOP / ANALYSIS_RATE
    return flux, times


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred mean over `width` samples (zeros beyond the ends), as long as `values` whatever the width:
    np.convolve's mode "same" returns the kernel's length when the kernel is the longer of the two."""
    full = np.convolve(values, np.ones(width) / width, mode="full")
    start = (width - 1) // 2
    return full[start:start + len(values)]


def pick_onsets(flux: np.ndarray, times: np.ndarray, threshold: float = 0.3, min_gap: float = 0.05) -> list[float]:
    """Times of flux peaks: local maxima within +-min_gap/2 that reach threshold * max(flux) and exceed the mean
    of the surrounding 200 ms; later peaks closer than min_gap to a kept one are dropped."""
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be in (0, 1], got {threshold!r}")
    if min_gap < 0:
        raise InputError(f"min_gap must be >= 0 seconds, got {min_gap!r}")
    peak = float(flux.max()) if flux.size else 0.0
    if peak <= 0.0:
        return []
    step = times[1] - times[0] if len(times) > 1 else ONSET_HOP / ANALYSIS_RATE
    half = max(1, int(round(min_gap / 2 / step)))
    wide = max(1, int(round(0.1 / step)))
    padded = np.pad(flux, half, constant_values=-np.inf)
    local_max = np.max(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=-1)
    local_mean = moving_average(flux, 2 * wide + 1)
    candidates = np.nonzero((flux >= local_max) & (flux >= threshold * peak) & (flux > local_mean))[0]
    onsets: list[float] = []
    for k in candidates:
        if not onsets or times[k] - onsets[-1] >= min_gap:
            onsets.append(float(times[k]))
    return onsets


def onsets(wave: torch.Tensor, sr: int, threshold: float = 0.3, min_gap: float = 0.05) -> Curve:
    """Onset strength per 25/s frame (0..1, the frame's largest flux over the clip's largest) and onset times."""
    flux, times = spectral_flux(wave, sr)
    frames = frame_count(wave.shape[-1], sr)
    strength = to_rate(flux, times, frames, reduce="max")
    peak = float(flux.max()) if flux.size else 0.0
    strength = strength / peak if peak > 0 else np.zeros(frames)
    found = pick_onsets(flux, times, threshold, min_gap)
    return Curve(torch.from_numpy(strength.astype(np.float32)), LATENT_RATE,
                 f"onset strength (0..1 of the clip's peak spectral flux), 25/s; {len(found)} onsets", tuple(found))


# --------------------------------------------------------------------------------------------- preview


_COLORS = ((0.20, 0.65, 1.00), (1.00, 0.55, 0.15), (0.35, 0.85, 0.35), (0.90, 0.30, 0.60), (0.85, 0.85, 0.25))


def curve_image(curves: list[np.ndarray], width: int = 512, height: int = 128, rate: float = LATENT_RATE,
                lo: float | None = None, hi: float | None = None, events: tuple[float, ...] = ()) -> torch.Tensor:
    """A cheap preview of curves sharing one time axis: IMAGE [1, height, width, 3] (dark background, a faint
    line each second, event times as faint vertical marks, one colour per curve, scaled to [lo, hi])."""
    img = np.full((height, width, 3), 0.08, np.float32)
    length = max((len(c) for c in curves), default=0)
    if length == 0:
        return torch.from_numpy(img)[None]
    all_values = np.concatenate([np.asarray(c, np.float64) for c in curves if len(c)])
    lo = float(all_values.min()) if lo is None else lo
    hi = float(all_values.max()) if hi is None else hi
    if hi - lo < 1e-9:
        hi = lo + 1.0
    seconds = length / rate
    for s in range(1, int(seconds) + 1):
        img[:, min(width - 1, int(s / seconds * width)), :] = 0.18
    for t in events:
        img[:, min(width - 1, max(0, int(t / seconds * width))), :] = (0.35, 0.35, 0.35)
    for i, c in enumerate(curves):
        c = np.asarray(c, np.float64)
        if len(c) == 0:
            continue
        xs = (np.arange(width) + 0.5) / width * len(c)
        ys = np.interp(xs, np.arange(len(c)) + 0.5, c)
        rows = np.clip(np.round((1 - (ys - lo) / (hi - lo)) * (height - 1)), 0, height - 1).astype(int)
        color = _COLORS[i % len(_COLORS)]
        for x in range(width):
            a, b = rows[x], rows[x - 1] if x else rows[x]
            img[min(a, b) : max(a, b) + 1, x] = color
    return torch.from_numpy(img)[None]
