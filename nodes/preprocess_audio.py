"""Audio preprocessors: demixing into speech / effects / music, intensity envelope, onsets, speech activity and
who is talking. AUDIO in; AUDIO stems out at the input's rate; curves (AVC_CURVE) at 25 values per second, LTX-2's
audio latent rate; MASK frames at the video's frame rate.

Heavy imports (demucs, silero-vad, MediaPipe, scipy) happen only when a node runs; demucs models are loaded once and
kept on the CPU in the core's one model cache until ComfyUI frees memory (the residency's release).
"""

from __future__ import annotations

from . import host
from .common import CURVE, DEVICE_CHOICES, category

SPEAKERS = "AVC_SPEAKERS"  # avcontrol_core.preprocess.speech.Speakers: per-speaker activity (25/s) and face boxes
FALLBACK = "fallback (no weights)"
_AUDIO_TIP = "Sound to analyse: any sample rate, mono or stereo."
_BATCH_NOTE = " Curves are computed for the first clip of an AUDIO batch."


class _Steps:
    """progress(done, total) for avcontrol_core: honours Cancel and drives one labelled bar for the node, whatever
    phases the work reports in turn."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int) -> None:
        host.check_interrupted()
        if self.bar is None:
            self.bar = host.progress_bar(total, self.desc)
        if total != self.bar.total or done < self.bar.n:  # the next phase (or a longer one): the same bar again
            self.bar.update_absolute(done, total)
        elif done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _first_clip(audio):
    from ..avcontrol_core.api import check_audio

    wave, sr = check_audio(audio)
    return wave[0], sr


def _demix_choices() -> list[str]:
    return [FALLBACK, *host.list_models("demucs")]


class AVCAudioDemix:
    """Splits a soundtrack into speech, effects and music (MTV's three streams)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": _AUDIO_TIP + " Every clip of a batch is separated."}),
                "model": (_demix_choices(), {"tooltip":
                    "A demucs checkpoint from models/demucs: the MVSEP CDX23 dialogue/effects/music model "
                    "(97d170e1-dbb4db15.th; .th, .safetensors or a .yaml bag of several). 'fallback (no weights)': "
                    "a signal-processing split (speech-gated band + harmonic/percussive), far below demucs quality."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip":
                    "Where demucs runs (auto: ComfyUI's device). The fallback always runs on the CPU."}),
                "shifts": ("INT", {"default": 0, "min": 0, "max": 10, "tooltip":
                    "demucs only: 0 = one deterministic pass; n > 0 averages n randomly time-shifted passes "
                    "(slightly better, n times slower, not reproducible)."}),
                "overlap": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 0.9, "step": 0.05, "tooltip":
                    "demucs only: overlap between the model's segments, 0 to 0.9 (more = smoother joins, slower)."}),
            }
        }

    RETURN_TYPES = ("AUDIO", "AUDIO", "AUDIO", "STRING")
    RETURN_NAMES = ("speech", "effects", "music", "info")
    OUTPUT_TOOLTIPS = ("Speech / dialogue stem, at the input's sample rate and channels.",
                       "Effects stem (everything that is neither speech nor music).",
                       "Music stem.", "How each stem was made (model and sources, or the fallback).")
    FUNCTION = "demix"
    CATEGORY = category("preprocess")
    DESCRIPTION = ("Demix AUDIO into speech, effects and music stems (same rate, channels and length as the input; "
                   "the three add up to the mix for the fallback).")

    def demix(self, audio, model, device, shifts, overlap):
        import torch

        from ..avcontrol_core import api
        from .loaders import resolve_device

        wave, sr = api.check_audio(audio)
        separator, dev = None, None
        if model != FALLBACK:
            path = api.require_file(api.DEMIX_MODEL_FOLDER, model, api.DEMIX_WHERE_TO_GET, resolve=host.resolve_model)
            separator = api.load_separator(path)
            dev = resolve_device(device)
        stems = []
        steps = _Steps("demixing")
        try:
            for clip in wave:
                host.check_interrupted()
                if separator is None:
                    stems.append(api.demix_fallback(clip, sr, progress=steps))
                else:
                    stems.append(api.demix_demucs(separator, clip, sr, dev, shifts, overlap, steps, name=model))
        finally:
            steps.close()
        out = [{"waveform": torch.stack([getattr(s, k) for s in stems]), "sample_rate": sr} for k in api.STEMS]
        info = stems[0].method + "\n" + "\n".join(stems[0].labels[k] for k in api.STEMS)
        return (*out, info)


class AVCAudioEnvelope:
    """Intensity envelope: the sound's loudness per 40 ms (25/s), for the audio-intensity control."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": _AUDIO_TIP + _BATCH_NOTE}),
                "scale": (["normalized", "dB", "linear"], {"default": "normalized", "tooltip":
                    "normalized: dBFS mapped from [floor_db, 0] to [0, 1] (absolute, clips compare); dB: dBFS, "
                    "floored at floor_db; linear: RMS (full-scale sine = 0.707). The intensity control wants "
                    "normalized or linear (non-negative)."}),
                "floor_db": ("FLOAT", {"default": -60.0, "min": -120.0, "max": -10.0, "step": 1.0, "tooltip":
                    "Quietest level in dBFS, -120 to -10: silence reads as this (0 when normalized)."}),
            }
        }

    RETURN_TYPES = (CURVE, "IMAGE")
    RETURN_NAMES = ("envelope", "preview")
    OUTPUT_TOOLTIPS = ("RMS per 40 ms frame of the mono mix, 25 values per second (LTX-2's audio latent rate).",
                       "The curve drawn over time (faint lines each second).")
    FUNCTION = "run"
    CATEGORY = category("preprocess")
    DESCRIPTION = "Audio intensity envelope at 25 values per second (RMS per 40 ms, normalized / dB / linear)."

    def run(self, audio, scale, floor_db):
        from ..avcontrol_core.api import curve_image, intensity_envelope

        wave, sr = _first_clip(audio)
        curve = intensity_envelope(wave, sr, scale, floor_db)
        lo, hi = {"normalized": (0.0, 1.0), "dB": (floor_db, 0.0)}.get(scale, (0.0, None))
        return curve, curve_image([curve.values.numpy()], lo=lo, hi=hi)


class AVCAudioOnsets:
    """Onsets: where sounds start (hits, steps, syllables), as a 25/s strength curve and a list of times."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": _AUDIO_TIP + _BATCH_NOTE}),
                "threshold": ("FLOAT", {"default": 0.3, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip":
                    "An onset must reach this fraction of the clip's strongest one (0.01 to 1; lower finds more)."}),
                "min_gap": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 2.0, "step": 0.01, "tooltip":
                    "Shortest time between two onsets, in seconds (0 to 2)."}),
            }
        }

    RETURN_TYPES = (CURVE, "STRING", "IMAGE")
    RETURN_NAMES = ("strength", "times", "preview")
    OUTPUT_TOOLTIPS = ("Onset strength per 40 ms frame (0..1 of the clip's peak spectral flux), 25 per second; its "
                       "'events' hold the onset times.", "Onset times in seconds, comma separated.",
                       "Strength over time with the onsets marked.")
    FUNCTION = "run"
    CATEGORY = category("preprocess")
    DESCRIPTION = "Onset strength at 25 values per second and onset times (spectral flux at 16 kHz, 10 ms hop)."

    def run(self, audio, threshold, min_gap):
        from ..avcontrol_core.api import curve_image, onsets

        wave, sr = _first_clip(audio)
        curve = onsets(wave, sr, threshold, min_gap)
        times = ", ".join(f"{t:.3f}" for t in curve.events)
        return curve, times, curve_image([curve.values.numpy()], lo=0.0, hi=1.0, events=curve.events)


class AVCSpeechActivity:
    """Speech activity (silero-vad, shipped with its package): where someone speaks."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": _AUDIO_TIP + _BATCH_NOTE}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 0.95, "step": 0.05, "tooltip":
                    "Speech probability that starts a segment (0.05 to 0.95); it ends below threshold - 0.15."}),
                "min_speech_ms": ("INT", {"default": 250, "min": 0, "max": 5000, "step": 10, "tooltip":
                    "Shorter speech segments are dropped (milliseconds)."}),
                "min_silence_ms": ("INT", {"default": 100, "min": 0, "max": 5000, "step": 10, "tooltip":
                    "Pauses shorter than this do not end a segment (milliseconds)."}),
                "pad_ms": ("INT", {"default": 30, "min": 0, "max": 1000, "step": 10, "tooltip":
                    "Segments grow by this much on each side (milliseconds)."}),
            }
        }

    RETURN_TYPES = (CURVE, CURVE, "STRING", "IMAGE")
    RETURN_NAMES = ("probability", "segments", "segments_text", "preview")
    OUTPUT_TOOLTIPS = ("silero-vad's speech probability, 25 values per second.",
                       "1 inside speech segments, 0 outside, 25 per second (segment bounds in 'events').",
                       "Segments as 'start-end' in seconds, comma separated.", "Probability and segments drawn.")
    FUNCTION = "run"
    CATEGORY = category("preprocess")
    DESCRIPTION = "Speech activity with silero-vad: a 25/s probability curve, segments, and their times."

    def run(self, audio, threshold, min_speech_ms, min_silence_ms, pad_ms):
        from ..avcontrol_core.api import curve_image, format_segments, speech_activity

        wave, sr = _first_clip(audio)
        steps = _Steps("speech activity")
        try:
            act = speech_activity(wave, sr, threshold, min_speech_ms, min_silence_ms, pad_ms, progress=steps)
        finally:
            steps.close()
        preview = curve_image([act.probability.values.numpy(), act.active.values.numpy()], lo=0.0, hi=1.0)
        return act.probability, act.active, format_segments(act.segments), preview


class AVCWhoIsTalking:
    """Who is talking: speech activity shared among the faces in the video by their mouth motion."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": _AUDIO_TIP + " It should start with the video." + _BATCH_NOTE}),
                "max_speakers": ("INT", {"default": 2, "min": 1, "max": 8, "tooltip":
                    "Most faces to track (1 to 8), numbered left to right."}),
                "assignment": (["soft", "hard"], {"default": "soft", "tooltip":
                    "soft: speech shared among faces in proportion to mouth motion; hard: all to the face moving "
                    "most. Speech with no moving mouth in view goes to no one (off-screen)."}),
                "mask_fill": (["activity", "box"], {"default": "activity", "tooltip":
                    "activity: each face box holds its speaker's activity at that frame; box: 1 inside the box "
                    "(use box when the activity curve also gates the who-is-talking control)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Video frames showing the speakers' faces (MediaPipe face mesh). "
                                     "Without them, speakers come from speaker_segments."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.001, "tooltip":
                    "Frame rate of images (1 to 120), to align mouth motion with the sound."}),
                "speaker_segments": ("STRING", {"default": "", "multiline": True, "tooltip":
                    "Used without images: who speaks when, e.g. 'A: 0-2.5, 4-5.2; B: 2.5-4' (seconds); empty = one "
                    "speaker holding all speech. Ignored when images are given."}),
            },
        }

    RETURN_TYPES = (SPEAKERS, "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("speakers", "talking_mask", "preview", "info")
    OUTPUT_TOOLTIPS = ("Per-speaker activity (25/s) and face boxes; pick one with Select Speaker.",
                       "All speakers' masks in one: one frame per video frame (without images: one 1x1 frame per "
                       "1/25 s holding the activity).", "Speech (first colour) and each speaker's activity.",
                       "Method and speakers found.")
    FUNCTION = "run"
    CATEGORY = category("preprocess")
    DESCRIPTION = ("Who is talking: per-speaker activity curves (25/s) and mask frames from faces and mouth motion, "
                   "or from given segments without video.")

    def run(self, audio, max_speakers, assignment, mask_fill, images=None, fps=24.0, speaker_segments=""):
        from ..avcontrol_core.api import curve_image, speakers_from_segments, speakers_from_video, speech_activity

        wave, sr = _first_clip(audio)
        steps = _Steps("who is talking")
        try:
            speech = speech_activity(wave, sr, progress=steps).probability
            if images is not None:
                speakers = speakers_from_video(speech, images, fps, max_speakers, assignment, progress=steps)
            else:
                speakers = speakers_from_segments(speech, speaker_segments)
        finally:
            steps.close()
        curves = [speech.values.numpy()] + [s.activity.values.numpy() for s in speakers.speakers]
        info = speakers.method + "".join(f"\n{i + 1}: {s.label}" for i, s in enumerate(speakers.speakers))
        return speakers, speakers.talking_map(mask_fill), curve_image(curves, lo=0.0, hi=1.0), info


class AVCSelectSpeaker:
    """One speaker of Who Is Talking: its mask frames and activity curve."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "speakers": (SPEAKERS, {"tooltip": "From AVControl Who Is Talking."}),
                "speaker": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip":
                    "Which speaker, 1 = leftmost face (or the first named in speaker_segments); must exist."}),
                "mask_fill": (["activity", "box"], {"default": "activity", "tooltip":
                    "activity: the face box holds the speaker's activity at each frame; box: 1 inside the box."}),
            }
        }

    RETURN_TYPES = ("MASK", CURVE, "STRING")
    RETURN_NAMES = ("mask", "activity", "label")
    OUTPUT_TOOLTIPS = ("Mask frames of this speaker (one per video frame; without video one 1x1 frame per 1/25 s).",
                       "This speaker's activity, 25 values per second.", "Who this is.")
    FUNCTION = "select"
    CATEGORY = category("preprocess")
    DESCRIPTION = "Pick one speaker's mask frames and activity curve (for the who-is-talking control)."

    def select(self, speakers, speaker, mask_fill):
        chosen = speakers.mask(speaker - 1, mask_fill)
        s = speakers.speakers[speaker - 1]
        return chosen, s.activity, s.label

