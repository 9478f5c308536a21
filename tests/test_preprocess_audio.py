"""Audio preprocessors, offline and real: silero-vad on espeak-ng speech, the demix fallback's SDR on a synthetic
dialogue + music + effects mix, demucs checkpoints with random weights loaded from a models folder through the
node, MediaPipe face mesh on a real photo for who-is-talking, and envelope / onsets against hand-computed values."""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

load_pack()
PRE = f"{PACK_PACKAGE}.avcontrol_core.preprocess"
features = importlib.import_module(f"{PRE}.audio_features")
demix = importlib.import_module(f"{PRE}.demix")
speech = importlib.import_module(f"{PRE}.speech")
weights = importlib.import_module(f"{PRE}.weights")
media = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.media")
host = importlib.import_module(f"{PACK_PACKAGE}.nodes.host")
InputError = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").InputError

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


# ----------------------------------------------------------------------------------------------- signals


def espeak(text: str, path) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no real speech to test with")
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    sound = media.load_audio(path)
    return sound["waveform"][0, 0].numpy(), sound["sample_rate"]


def active_span(x: np.ndarray, sr: int, rel: float = 0.02) -> tuple[float, float]:
    """First and last sample louder than rel * peak, in seconds: where the speech really is."""
    idx = np.nonzero(np.abs(x) > rel * np.abs(x).max())[0]
    return idx[0] / sr, idx[-1] / sr


def chords(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Music-like audio: a four-chord loop (one chord a second), four harmonics per note, peak 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for i in range(int(np.ceil(seconds))):
        seg = (t >= i) & (t < i + 1)
        root = (220.0, 261.63, 196.0, 174.61)[i % 4]
        for ratio in (1, 1.25, 1.5, 2):
            for h in range(1, 5):
                out[seg] += np.sin(2 * np.pi * root * ratio * h * t[seg] + rng.uniform(0, 2 * np.pi)) / h
    out *= np.minimum(1, np.minimum((t % 1) / 0.02, (1 - t % 1) / 0.02))
    return (out / np.abs(out).max()).astype(np.float32)


def knocks(seconds: float, sr: int, times, seed: int = 1) -> np.ndarray:
    """Effects: decaying noise bursts (knocks) at the given times, peak 1."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr), np.float32)
    for t0 in times:
        n, i = int(0.15 * sr), int(t0 * sr)
        burst = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * sr))
        out[i : i + n] += burst[: len(out) - i]
    return out / np.abs(out).max()


def place(x: np.ndarray, seconds: float, sr: int, offset: float) -> np.ndarray:
    out = np.zeros(int(seconds * sr), np.float32)
    i = int(offset * sr)
    out[i : i + len(x)] = x[: len(out) - i]
    return out


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def audio(*channels: np.ndarray, sr: int) -> dict:
    return {"waveform": torch.from_numpy(np.stack(channels).astype(np.float32))[None], "sample_rate": sr}


@pytest.fixture(scope="module")
def sentence(tmp_path_factory):
    wave, sr = espeak(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav")
    return wave, sr, active_span(wave, sr)


@pytest.fixture()
def nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("AVCONTROL_MODELS_DIR", str(tmp_path / "models"))
    return {name: cls() for name, cls in pack_node_classes().items()}


# ----------------------------------------------------------------------------------------------- envelope, onsets


def test_envelope_is_the_rms_per_40_ms_computed_by_hand(nodes):
    sr, hop = 16000, 640  # 25 frames per second
    n = int(2.1 * sr)
    amp = np.zeros(n)
    amp[: sr] = 0.5  # 0 - 1 s
    amp[sr : int(1.5 * sr)] = 0.1  # 1 - 1.5 s: frame 37 (1.48 - 1.52 s) is half 0.1, half silence
    amp[int(2.02 * sr) :] = 0.2  # from the middle of frame 50 to the end (frame 52 is half long)
    x = amp * np.where(np.arange(n) % 2, -1.0, 1.0)  # +-a alternating: RMS exactly a over any even span
    expected = np.array([0.5] * 25 + [0.1] * 12 + [np.sqrt(320 * 0.01 / hop)] + [0.0] * 12
                        + [np.sqrt(320 * 0.04 / hop), 0.2, 0.2])

    (curve, preview) = nodes["AVCAudioEnvelope"].run(audio(x, sr=sr), "linear", -60.0)
    assert curve.rate == 25.0 and curve.values.shape == (53,)
    np.testing.assert_allclose(curve.values.numpy(), expected, atol=1e-6)
    assert preview.shape == (1, 128, 512, 3) and 0 <= float(preview.min()) and float(preview.max()) <= 1

    db = nodes["AVCAudioEnvelope"].run(audio(x, sr=sr), "dB", -60.0)[0].values.numpy()
    np.testing.assert_allclose(db[[0, 30, 40, 51]], [20 * np.log10(0.5), -20.0, -60.0, 20 * np.log10(0.2)], atol=1e-4)
    norm = nodes["AVCAudioEnvelope"].run(audio(x, sr=sr), "normalized", -60.0)[0].values.numpy()
    np.testing.assert_allclose(norm[[0, 30, 40]], [(20 * np.log10(0.5) + 60) / 60, 40 / 60, 0.0], atol=1e-4)

    # stereo at 44.1 kHz, one channel silent: the mono mix (channel mean) halves the RMS; 1764 samples a frame
    sr2 = 44100
    y = 0.4 * np.where(np.arange(sr2) % 2, -1.0, 1.0)
    stereo = nodes["AVCAudioEnvelope"].run(audio(y, np.zeros_like(y), sr=sr2), "linear", -60.0)[0].values
    np.testing.assert_allclose(stereo.numpy(), np.full(25, 0.2), atol=1e-6)


def test_onsets_of_clicks_are_found_within_one_latent_frame(nodes):
    sr = 44100
    truth = [0.31, 0.77, 1.24, 1.9, 2.45]
    x = np.random.default_rng(0).standard_normal(int(2.8 * sr)) * 1e-3
    for t in truth:
        i = int(t * sr)
        x[i : i + 88] += 0.8 * np.exp(-np.arange(88) / 20.0) * np.sign(np.sin(np.arange(88)))  # a 2 ms click
    strength, times, preview = nodes["AVCAudioOnsets"].run(audio(x, 0.5 * x, sr=sr), 0.3, 0.05)
    found = [float(t) for t in times.split(",")]
    print("onset errors (s):", [round(f - t, 4) for f, t in zip(found, truth)])
    assert len(found) == len(truth)
    assert all(abs(f - t) <= 0.04 for f, t in zip(found, truth))
    assert list(strength.events) == pytest.approx(found, abs=1e-3)
    values = strength.values.numpy()
    assert strength.rate == 25.0 and values.shape == (70,) and values.max() == pytest.approx(1.0)
    click_frames = {int(np.floor(t * 25)) + d for t in truth for d in (-1, 0)}
    assert all(values[int(np.floor(t * 25)) - 1 : int(np.floor(t * 25)) + 1].max() > 0.5 for t in truth)
    quiet = [v for i, v in enumerate(values) if i not in click_frames and i - 1 not in click_frames]
    assert max(quiet) < 0.1
    assert preview.shape == (1, 128, 512, 3)


def test_envelope_and_onsets_refuse_bad_input(nodes):
    with pytest.raises(InputError, match="AUDIO dict"):
        nodes["AVCAudioEnvelope"].run({"samples": []}, "linear", -60.0)
    with pytest.raises(InputError, match="floor_db"):
        nodes["AVCAudioEnvelope"].run(audio(np.zeros(100), sr=16000), "dB", 0.0)


# ----------------------------------------------------------------------------------------------- speech activity


def test_silero_vad_finds_espeak_speech_within_0_3_s(nodes, sentence):
    x, sr, (a, b) = sentence
    offset, seconds = 1.5, 7.0
    truth = (offset + a, offset + b)
    quiet = place(x, seconds, sr, offset)
    music = quiet + 0.5 * chords(seconds, sr)  # chords peak at half the speech's peak

    probability, segments, text, preview = nodes["AVCSpeechActivity"].run(audio(quiet, quiet, sr=sr), 0.5, 250, 100, 30)
    found = [tuple(map(float, s.split("-"))) for s in text.split(", ")]
    start, end = found[0][0], found[-1][1]
    print(f"VAD in silence: truth {truth[0]:.3f}-{truth[1]:.3f}, found {text}; errors {start - truth[0]:+.3f} "
          f"{end - truth[1]:+.3f} s")
    assert abs(start - truth[0]) <= 0.3 and abs(end - truth[1]) <= 0.3
    assert probability.rate == 25.0 and probability.values.shape == (175,)
    inside = segments.values.numpy()[int(truth[0] * 25) + 8 : int(truth[1] * 25) - 8]
    assert inside.min() == 1.0 and segments.values[: int(truth[0] * 25) - 8].max() == 0.0
    assert preview.shape == (1, 128, 512, 3)

    in_music = speech.speech_activity(torch.from_numpy(music)[None], sr)
    start, end = in_music.segments[0][0], in_music.segments[-1][1]
    print(f"VAD over chords: found {speech.format_segments(in_music.segments)}; errors {start - truth[0]:+.3f} "
          f"{end - truth[1]:+.3f} s")
    assert abs(start - truth[0]) <= 0.3 and abs(end - truth[1]) <= 0.3


def test_silero_vad_finds_no_speech_in_music():
    sr = 48000
    music = chords(6.0, sr) * 0.8 + 0.3 * knocks(6.0, sr, [0.5, 2.2, 4.1])
    act = speech.speech_activity(torch.from_numpy(np.stack([music, music[::-1].copy()])), sr)
    print("VAD on music: max speech probability", float(act.probability.values.max()))
    assert act.segments == ()
    assert float(act.active.values.max()) == 0.0 and float(act.probability.values.max()) < 0.5


# ----------------------------------------------------------------------------------------------- demixing


def test_demix_fallback_beats_the_unprocessed_mix(nodes, sentence):
    x, sr0, _ = sentence
    seconds, sr = 6.0, 48000
    import torchaudio.functional as AF

    voice = AF.resample(torch.from_numpy(place(x, seconds, sr0, 1.2)), sr0, sr).numpy()
    music = chords(seconds, sr)
    effects = knocks(seconds, sr, [0.4, 1.9, 2.7, 3.6, 4.4, 5.3])
    music *= rms(voice) / rms(music)
    effects *= rms(voice) / rms(effects)
    mix = voice + music + effects
    stereo = audio(mix, 0.9 * mix, sr=sr)

    speech_out, effects_out, music_out, info = nodes["AVCAudioDemix"].demix(
        stereo, "fallback (no weights)", "auto", 0, 0.25)
    assert "fallback" in info and "no neural separation" in info
    est = speech_out["waveform"][0, 0].numpy()
    got, baseline = sdr(voice, est), sdr(voice, mix)
    print(f"speech SDR: fallback {got:.2f} dB, unprocessed mix {baseline:.2f} dB")
    print(f"music SDR: fallback {sdr(music, music_out['waveform'][0, 0].numpy()):.2f} dB, mix {sdr(music, mix):.2f} dB;"
          f" effects SDR: fallback {sdr(effects, effects_out['waveform'][0, 0].numpy()):.2f} dB, "
          f"mix {sdr(effects, mix):.2f} dB")
    assert got > baseline + 3.0
    for out in (speech_out, effects_out, music_out):
        assert out["sample_rate"] == sr and out["waveform"].shape == stereo["waveform"].shape
    total = speech_out["waveform"] + effects_out["waveform"] + music_out["waveform"]
    assert torch.allclose(total, stereo["waveform"], atol=1e-4)  # the fallback's masks sum to one


def _tiny_htdemucs(seed: int = 0):
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HTDemucs(sources=["music", "effect", "dialog"], samplerate=8000, segment=Fraction(1), channels=8,
                        depth=3, t_layers=1, nfft=512).eval()


def _package(model, **extra) -> dict:
    args, kwargs = model._init_args_kwargs
    return {"klass": type(model), "args": args, "kwargs": kwargs,
            "state": {k: v.clone() for k, v in model.state_dict().items()}, "training_args": {"lr": 3e-4}, **extra}


def test_demucs_checkpoints_load_from_the_models_folder_through_the_node(nodes, tmp_path):
    from demucs.apply import BagOfModels
    from demucs.pretrained import get_model

    folder = tmp_path / "models" / "demucs"
    folder.mkdir(parents=True)
    tiny = _tiny_htdemucs()
    torch.save(_package(tiny), folder / "tiny-cdx.th")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(_package(get_model("demucs_unittest")), folder / "demucs_unittest.th")  # demucs's own random model
    (folder / "pair.yaml").write_text("models: ['tiny-cdx', 'tiny-cdx-copy']\nweights: [[1, 1, 1], [1, 1, 1]]\n")
    shutil.copy(folder / "tiny-cdx.th", folder / "tiny-cdx-copy.th")
    choices = nodes["AVCAudioDemix"].INPUT_TYPES()["required"]["model"][0]
    assert choices == ["fallback (no weights)", "demucs_unittest.th", "pair.yaml", "tiny-cdx-copy.th", "tiny-cdx.th"]

    sr = 24000
    t = np.arange(int(1.3 * sr)) / sr
    clip = audio(0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 220 * t), sr=sr)
    speech_out, effects_out, music_out, info = nodes["AVCAudioDemix"].demix(clip, "tiny-cdx.th", "cpu", 0, 0.25)
    for out in (speech_out, effects_out, music_out):
        assert out["sample_rate"] == sr and out["waveform"].shape == clip["waveform"].shape
        assert torch.isfinite(out["waveform"]).all() and float(out["waveform"].abs().max()) > 0
    assert "demucs tiny-cdx.th" in info and "speech (demucs tiny-cdx.th: dialog)" in info
    assert "effects (demucs tiny-cdx.th: effect)" in info and "music (demucs tiny-cdx.th: music)" in info

    loaded = demix.load_separator(folder / "tiny-cdx.th")
    assert loaded is demix.load_separator(folder / "tiny-cdx.th")  # loaded once, then cached
    weights.clear()  # what the nodes do when ComfyUI frees memory
    assert demix.load_separator(folder / "tiny-cdx.th") is not loaded
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key  # the file's weights, not a fresh init
    bag = demix.load_separator(folder / "pair.yaml")
    assert isinstance(bag, BagOfModels) and len(bag.models) == 2 and bag.sources == ["music", "effect", "dialog"]
    unit = demix.load_separator(folder / "demucs_unittest.th")
    assert type(unit).__name__ == "HDemucs" and unit.sources == ["drums", "bass", "other", "vocals"]
    groups, _ = demix.source_mapping(unit.sources)
    assert groups == {"speech": [3], "effects": [], "music": [0, 1, 2]}

    mono = audio(0.3 * np.sin(2 * np.pi * 330 * t), sr=sr)
    outs = nodes["AVCAudioDemix"].demix(mono, "pair.yaml", "cpu", 0, 0.25)
    assert all(o["waveform"].shape == mono["waveform"].shape for o in outs[:3])


class Cancelled(Exception):
    pass


def test_cancel_stops_demixing_and_leaves_the_model_on_the_cpu(nodes, tmp_path, monkeypatch):
    folder = tmp_path / "models" / "demucs"
    folder.mkdir(parents=True)
    torch.save(_package(_tiny_htdemucs()), folder / "tiny-cdx.th")
    calls = []

    def cancel_on_second_check():
        calls.append(1)
        if len(calls) >= 2:
            raise Cancelled()

    monkeypatch.setattr(host, "check_interrupted", cancel_on_second_check)
    clip = audio(np.random.default_rng(0).standard_normal(4 * 8000) * 0.1, sr=8000)
    for model in ("tiny-cdx.th", "fallback (no weights)"):
        calls.clear()
        with pytest.raises(Cancelled):
            nodes["AVCAudioDemix"].demix(clip, model, "cpu", 0, 0.25)
        assert len(calls) == 2
    model = demix.load_separator(folder / "tiny-cdx.th")
    assert next(model.parameters()).device.type == "cpu"


def test_pickled_extras_are_refused_and_convert_makes_the_file_loadable(tmp_path):
    tiny = _tiny_htdemucs(seed=1)
    path = tmp_path / "with-namespace.th"
    torch.save(_package(tiny, training_args=argparse.Namespace(lr=3e-4)), path)
    with pytest.raises(InputError, match="argparse.Namespace") as err:
        demix.load_separator(path)
    assert "convert" in str(err.value) and "with-namespace.th" in str(err.value)

    assert demix.main(["convert", str(path)]) == 0
    converted = demix.load_separator(tmp_path / "with-namespace.safetensors")
    assert converted.sources == ["music", "effect", "dialog"] and converted.segment == Fraction(1)
    for key, value in tiny.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key

    (tmp_path / "broken.th").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="truncated"):
        demix.load_separator(tmp_path / "broken.th")


def test_missing_demucs_file_names_the_file_the_folder_and_where_to_get_it(nodes):
    clip = audio(np.zeros(1600), sr=16000)
    with pytest.raises(FileNotFoundError) as err:
        nodes["AVCAudioDemix"].demix(clip, "97d170e1-dbb4db15.th", "cpu", 0, 0.25)
    message = str(err.value)
    assert "97d170e1-dbb4db15.th" in message and "demucs" in message
    assert "MVSEP-CDX23-Cinematic-Sound-Demixing/releases" in message


# ----------------------------------------------------------------------------------------------- who is talking


def test_who_is_talking_without_video_splits_speech_by_the_given_segments(nodes, sentence):
    x, sr, _ = sentence
    wave = place(x, 6.0, sr, 1.0)
    speakers, talking, preview, info = nodes["AVCWhoIsTalking"].run(
        audio(wave, sr=sr), 2, "soft", "activity", speaker_segments="A: 0-2.5\nB: 2.5-6")
    assert [s.label for s in speakers.speakers] == ["A", "B"] and "given segments" in info
    a_mask, a_curve, a_label = nodes["AVCSelectSpeaker"].select(speakers, 1, "activity")
    _, b_curve, _ = nodes["AVCSelectSpeaker"].select(speakers, 2, "activity")
    a, b = a_curve.values.numpy(), b_curve.values.numpy()
    assert a_label == "A" and a_mask.shape == (150, 1, 1) and a_curve.rate == 25.0
    assert a[63:].max() == 0 and b[:62].max() == 0 and a[30:60].mean() > 0.5 and b[70:120].mean() > 0.5
    np.testing.assert_allclose(a + b, speakers.speech.values.numpy(), atol=1e-6)
    assert talking.shape == (150, 1, 1)
    with pytest.raises(InputError, match="speaker must be between 1 and 2"):
        nodes["AVCSelectSpeaker"].select(speakers, 3, "box")
    with pytest.raises(InputError, match="start-end"):
        nodes["AVCWhoIsTalking"].run(audio(wave, sr=sr), 2, "soft", "box", speaker_segments="A: 3-1")

    alone = nodes["AVCWhoIsTalking"].run(audio(wave, sr=sr), 2, "soft", "box")[0]
    assert len(alone.speakers) == 1 and torch.equal(alone.speakers[0].activity.values, alone.speech.values)


def _talking_faces(fps: float, frames: int, left_speaks, right_speaks) -> torch.Tensor:
    """Two copies of scikit-image's astronaut photo side by side; a speaker's mouth opens and closes (a dark gap
    between the lips, 3 Hz) while it speaks."""
    import cv2
    from skimage import data

    face = data.astronaut()[30:250, 115:335].copy()  # 220 x 220 around the face
    centre, half_width = (108, 116), 19  # between the lips, in the crop
    out = np.zeros((frames, 220, 440, 3), np.uint8)
    for f in range(frames):
        t = f / fps
        for side, speaks in ((0, left_speaks), (1, right_speaks)):
            img = face.copy()
            if any(a <= t < b for a, b in speaks):
                gap = int(round(2 + 11 * abs(np.sin(2 * np.pi * 3 * (t + 0.05 * side)))))
                cv2.ellipse(img, (centre[0], centre[1] + gap // 2), (half_width, gap), 0, 0, 360, (40, 10, 10), -1)
            out[f, :, side * 220 : (side + 1) * 220] = img
    return torch.from_numpy(out).float() / 255.0


def test_who_is_talking_follows_the_moving_mouth(nodes, tmp_path):
    pytest.importorskip("mediapipe")
    pytest.importorskip("skimage")
    first, sr = espeak("Hello there, how are you today?", tmp_path / "a.wav")
    second, _ = espeak("I am fine, thank you very much.", tmp_path / "b.wav")
    fps, seconds = 25.0, 5.0
    t1, t2 = 0.3, 2.6
    wave = place(first, seconds, sr, t1) + place(second, seconds, sr, t2)
    span1 = (t1 + active_span(first, sr)[0], t1 + active_span(first, sr)[1])
    span2 = (t2 + active_span(second, sr)[0], t2 + active_span(second, sr)[1])
    frames = _talking_faces(fps, int(seconds * fps), [span1], [span2])

    speakers, talking, preview, info = nodes["AVCWhoIsTalking"].run(
        audio(wave, sr=sr), 2, "soft", "activity", images=frames, fps=fps)
    print(info)
    assert len(speakers.speakers) == 2 and "face mesh" in info
    left, right = (s.activity.values.numpy() for s in speakers.speakers)
    in1 = slice(int(span1[0] * 25) + 3, int(span1[1] * 25) - 3)
    in2 = slice(int(span2[0] * 25) + 3, int(span2[1] * 25) - 3)
    print(f"speaker 1 activity: {left[in1].mean():.2f} in its speech, {left[in2].mean():.2f} in the other's; "
          f"speaker 2: {right[in2].mean():.2f} / {right[in1].mean():.2f}")
    assert left[in1].mean() > 0.4 and right[in2].mean() > 0.4
    assert left[in1].mean() > 4 * right[in1].mean() and right[in2].mean() > 4 * left[in2].mean()

    mask, curve, label = nodes["AVCSelectSpeaker"].select(speakers, 1, "box")
    assert mask.shape == (125, 220, 440) and label.startswith("speaker 1 (left)")
    assert float(mask[:, :, 230:].max()) == 0.0 and float(mask[:, 60:160, 60:160].min()) == 1.0  # on the left face
    gated = nodes["AVCSelectSpeaker"].select(speakers, 2, "activity")[0]
    frames1 = slice(int(span1[0] * fps) + 3, int(span1[1] * fps) - 3)  # fps 25: video frames = curve frames
    frames2 = slice(int(span2[0] * fps) + 3, int(span2[1] * fps) - 3)
    assert float(gated[frames2].amax(dim=(1, 2)).mean()) > 0.4 and float(gated[frames1].max()) < 0.15
    assert talking.shape == (125, 220, 440)
    assert float(talking[frames1, :, :220].amax(dim=(1, 2)).mean()) > 0.4  # speaker 1's face lights up in its speech
    assert float(talking[frames1, :, 220:].max()) < 0.15


def test_speech_goes_to_the_moving_mouth_or_to_no_one(monkeypatch):
    fps, frames = 25.0, 100
    t = np.arange(frames) / fps
    moving = 0.05 + 0.04 * np.abs(np.sin(2 * np.pi * 3 * t))  # opens and closes (face heights)
    still = np.full(frames, 0.05)
    box = np.tile([10.0, 10.0, 50.0, 60.0], (frames, 1))
    opening_left = np.where(t < 2, moving, still)  # the left face talks for 2 s, then nobody in view moves
    tracks = [{"boxes": box, "opening": opening_left}, {"boxes": box + [100, 0, 100, 0], "opening": still}]
    monkeypatch.setattr(speech, "face_tracks", lambda images, max_faces, progress=None: tracks)
    talk = speech.Curve(torch.ones(frames))  # speech all along: the last 2 s are an off-screen voice
    images = torch.zeros(frames, 80, 200, 3)
    for mode in ("soft", "hard"):
        found = speech.speakers_from_video(talk, images, fps, 2, mode).speakers
        left, right = (sp.activity.values.numpy() for sp in found)
        assert left[10:45].min() > 0.99 and right.max() == 0.0  # one talking face holds all the speech
        assert left[60:].max() == 0.0  # speech with no moving mouth in view belongs to no one

    tracks[1]["opening"] = moving[::-1].copy()  # both talk at once: soft shares the speech by motion
    left, right = (sp.activity.values.numpy() for sp in speech.speakers_from_video(talk, images, fps, 2).speakers)
    np.testing.assert_allclose((left + right)[10:45], 1.0, atol=1e-6)
    assert 0.2 < left[10:45].mean() < 0.8


def _shots_of_two_people() -> tuple[torch.Tensor, list[int]]:
    """Three shots of 10 frames on different backgrounds: A: the astronaut left, a grey (black-and-white) person
    right; B (the reverse shot): grey left, astronaut right; C: the astronaut alone, right."""
    from skimage import data

    face = data.astronaut()[30:250, 115:335].copy()
    grey = np.repeat(face.mean(-1, keepdims=True), 3, -1).astype(np.uint8)[:, ::-1].copy()
    out = []
    for background, left, right in (((40, 40, 60), face, grey), ((230, 140, 40), grey, face),
                                    ((60, 170, 70), None, face)):
        frame = np.empty((360, 600, 3), np.uint8)
        frame[:] = background
        for x, who in ((40, left), (340, right)):
            if who is not None:
                frame[70:290, x:x + 220] = who
        out += [frame] * 10
    return torch.from_numpy(np.stack(out)).float() / 255.0, [0, 10, 20]


def test_faces_keep_their_identity_across_shot_cuts_and_are_absent_where_unseen():
    pytest.importorskip("mediapipe")
    pytest.importorskip("skimage")
    images, cuts = _shots_of_two_people()
    pixels = (images * 255).round().to(torch.uint8).numpy()
    assert speech.shot_starts(pixels) == cuts
    tracks = speech.face_tracks(images, 2)
    assert len(tracks) == 2
    centre_x = [(t["boxes"][:, 0] + t["boxes"][:, 2]) / 2 for t in tracks]
    def colourful(t, f):  # who is who: the astronaut's face has colour, the other's none
        x0, y0, x1, y1 = t["boxes"][f].astype(int)
        crop = pixels[f, y0:y1, x0:x1].reshape(-1, 3).astype(float)
        return float((crop.max(1) - crop.min(1)).mean())

    astronaut = 0 if colourful(tracks[0], 0) > colourful(tracks[1], 0) else 1
    other = 1 - astronaut
    a, b = centre_x[astronaut], centre_x[other]
    assert (a[:10] < 300).all() and (b[:10] > 300).all()  # shot A: she is on the left
    assert (a[10:] > 300).all()  # shots B and C: on the right, still the same track
    assert (b[10:20] < 300).all()  # B: the other person moved left, the same track
    assert np.isnan(tracks[other]["boxes"][20:]).all()  # C: not in the shot
    found = speech.speakers_from_video(speech.Curve(torch.ones(30)), images, 25.0, 2)
    other_mask = found.mask(other, "box")
    assert float(other_mask[:20].amax(dim=(1, 2)).min()) == 1.0 and float(other_mask[20:].max()) == 0.0


def test_demix_shows_one_labelled_bar_through_its_phases(nodes, monkeypatch):
    """The fallback reports speech activity, then its masks (two totals in turn): one bar, labelled, that ends
    full, instead of one unlabelled bar per phase."""
    bars, reports = [], []
    real = host.progress_bar

    def recording(total, desc=None):
        bar = real(total, desc)
        bars.append(desc)
        update_absolute = bar.update_absolute
        bar.update_absolute = lambda done, total=None: reports.append((done, total)) or update_absolute(done, total)
        return bar

    monkeypatch.setattr(host, "progress_bar", recording)
    clip = audio(np.random.default_rng(0).standard_normal(3 * 16000) * 0.1, sr=16000)
    nodes["AVCAudioDemix"].demix(clip, "fallback (no weights)", "cpu", 0, 0.25)
    assert bars == ["demixing"]
    assert reports, "the phases did not restart the one bar"
