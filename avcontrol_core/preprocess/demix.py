"""Demix a soundtrack into speech, effects and music: demucs checkpoints, or a labelled no-weights fallback.

Both paths return stems at the input's sample rate, channel count and length (mono in, mono out).

**demucs** (``demucs`` package, models from ``ComfyUI/models/demucs/``). Dialogue / effects / music separation
uses the MVSEP CDX23 checkpoints (Demucs4 HT trained on the Divide-and-Remaster set; sources music, effect,
dialog): ``97d170e1-dbb4db15.th`` (single model) and optionally ``97d170e1-a778de4a.th`` and
``97d170e1-e41a5468.th`` for the 3-model ensemble, from
https://github.com/ZFTurbo/MVSEP-CDX23-Cinematic-Sound-Demixing/releases/tag/v.1.0.0 . Accepted files:

- ``.th``: demucs's own package (``{"klass", "args", "kwargs", "state", ...}``), read with
  ``torch.load(weights_only=True)`` and only the demucs model classes (and ``fractions.Fraction``) allowed, so no
  code inside the file can run. A file that pickles anything else is refused with the name of what it holds;
  ``python -m avcontrol_core.preprocess.demix convert FILE.th`` (run from the pack's folder) rewrites it once as
  ``FILE.safetensors``: that step unpickles the file fully, so run it only on files you trust.
- ``.safetensors``: demucs's Hugging Face format (class and arguments as JSON in the metadata).
- ``.yaml``: a demucs bag (``models: [signature, ...]``, optional ``weights`` and ``segment``), each signature a
  ``.th`` / ``.safetensors`` file beside it (``SIG.th``, ``SIG-CHECKSUM.th`` or ``SIG.safetensors``), e.g.
  ``cdx23.yaml`` = ``models: ['97d170e1-a778de4a', '97d170e1-dbb4db15', '97d170e1-e41a5468']``.

Sources map to stems by name: dialog / dialogue / speech / vocals -> speech; effect(s) / sfx -> effects;
music / drums / bass / other / instrumental -> music; a 3-source model with other names is read in CDX23's order
(music, effect, dialog); anything else goes to effects, and the stem's label says so. Music models
(drums/bass/other/vocals) therefore give vocals as speech and a silent effects stem.

**fallback** (no weights; not a neural separation, clearly labelled): an STFT (~64 ms window) of the mix;
music = the time-median of the magnitude over 0.5 s (sustained tones), effects = the frequency-median over
800 Hz (broadband, percussive); speech = what neither explains (``|X| - max(music, effects)``), within
80 Hz - 8 kHz, weighted by silero-vad's speech probability of the frame. Soft (Wiener, power 2) masks that sum to
one, applied to every channel's STFT, so the three stems add up to the mix.
"""

from __future__ import annotations

import glob
import json
import math
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .audio_features import resample
from .weights import NO_DOWNLOAD, MissingWeightsError, cached, on_device, require_package

Progress = Callable[[int, int], None]  # progress(done, total); may raise to cancel

MODEL_FOLDER = "demucs"
MODEL_EXTENSIONS = (".th", ".safetensors", ".yaml")
WHERE_TO_GET = ("the MVSEP CDX23 dialogue/effects/music checkpoints (97d170e1-dbb4db15.th, optionally "
                "97d170e1-a778de4a.th and 97d170e1-e41a5468.th) from "
                "https://github.com/ZFTurbo/MVSEP-CDX23-Cinematic-Sound-Demixing/releases/tag/v.1.0.0")
STEMS = ("speech", "effects", "music")
FALLBACK_LABEL = "fallback (no weights): VAD-gated speech band + harmonic/percussive split, not a neural separation"

SPEECH_SOURCES = frozenset({"dialog", "dialogue", "speech", "vocals", "vocal", "voice"})
EFFECTS_SOURCES = frozenset({"effect", "effects", "sfx", "fx"})
MUSIC_SOURCES = frozenset({"music", "drums", "bass", "other", "guitar", "piano", "instrumental", "accompaniment"})
CDX23_ORDER = ("music", "effects", "speech")



@dataclass(frozen=True)
class Stems:
    """Three stems [C, T] at ``sample_rate`` (the input's) and how each was made."""

    speech: torch.Tensor
    effects: torch.Tensor
    music: torch.Tensor
    sample_rate: int
    labels: dict  # stem name -> label
    method: str


# --------------------------------------------------------------------------------------------- fallback


def _odd(value: float) -> int:
    v = max(1, int(round(value)))
    return v + 1 - v % 2


def demix_fallback(wave: torch.Tensor, sr: int, progress: Progress | None = None,
                   speech_probability: tuple[np.ndarray, np.ndarray] | None = None) -> Stems:
    """The no-weights separation of one clip [C, T] (see the module notes). ``speech_probability``: (probs, times)
    from ``speech.speech_probabilities`` when already computed."""
    from scipy.ndimage import median_filter

    from .speech import speech_probabilities

    wave = wave.float()
    channels, length = wave.shape
    if speech_probability is None:
        speech_probability = speech_probabilities(wave, sr, progress)
    probs, times = speech_probability
    n_fft = 2 ** int(round(math.log2(sr * 0.064)))
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    if length < n_fft:  # the STFT's reflect padding needs at least one window of samples
        wave = torch.nn.functional.pad(wave, (0, n_fft - length))
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # [C, F, T]
    mag = spec.abs().mean(dim=0).double().numpy()
    bins, frames = mag.shape
    freqs = np.arange(bins) * sr / n_fft
    frame_times = np.arange(frames) * hop / sr
    gate = np.interp(frame_times, times, probs)[None, :] * ((freqs >= 80) & (freqs <= 8000))[:, None]
    k_time = _odd(0.5 * sr / hop)
    k_freq = _odd(800.0 / (sr / n_fft))
    block = max(k_time, int(10 * sr / hop))  # ~10 s of frames per step, plus median context on both sides
    steps = max(1, -(-frames // block))
    masks = np.zeros((3, bins, frames), np.float32)
    for i in range(steps):
        a, b = i * block, min(frames, (i + 1) * block)
        lo, hi = max(0, a - k_time // 2), min(frames, b + k_time // 2)
        part = mag[:, lo:hi]
        sustained = median_filter(part, size=(1, k_time), mode="nearest")[:, a - lo : b - lo]
        percussive = median_filter(part[:, a - lo : b - lo], size=(k_freq, 1), mode="nearest")
        residual = np.maximum(part[:, a - lo : b - lo] - np.maximum(sustained, percussive), 0.0)
        w_speech = (gate[:, a:b] * residual) ** 2
        w_music, w_effects = sustained**2, percussive**2
        total = w_speech + w_music + w_effects
        silent = total <= 1e-20
        total[silent] = 1.0
        w_effects[silent] = 1.0  # nothing to explain: give the (near-silent) bin to effects
        masks[:, :, a:b] = np.stack([w_speech, w_effects, w_music]) / total
        if progress is not None:
            progress(i + 1, steps)
    stems = [torch.istft(spec * torch.from_numpy(m), n_fft, hop, window=window, length=length) for m in masks]
    labels = {
        "speech": "speech (fallback: speech-probability-gated 80 Hz-8 kHz residual; no neural separation)",
        "effects": "effects (fallback: percussive/broadband part, 800 Hz frequency median; no neural separation)",
        "music": "music (fallback: sustained part, 0.5 s time median; no neural separation)",
    }
    return Stems(stems[0], stems[1], stems[2], sr, labels, FALLBACK_LABEL)


# --------------------------------------------------------------------------------------------- demucs loading


def _model_classes() -> list:
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    return [Demucs, HDemucs, HTDemucs]


def _refuse(path: Path, why: str) -> InputError:
    return InputError(f"demucs model '{path.name}' in {path.parent}: {why}")


def _check_package(path: Path, package) -> dict:
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= set(package):
        raise _refuse(path, "not a demucs model package (expected the keys klass, args, kwargs, state)")
    if package["klass"] not in _model_classes():
        raise _refuse(path, f"model class {package['klass']!r} is not a demucs model")
    if isinstance(package["state"], dict) and package["state"].get("__quantized"):
        raise _refuse(path, "quantized (diffq) models are not supported; use the full-precision checkpoint")
    return package


def read_th(path: Path) -> dict:
    """A demucs ``.th`` package, unpickled safely (weights_only, demucs classes and Fraction allowed).

    The ``SIG-CHECKSUM.th`` naming of demucs is not verified: third-party files do not always follow it."""
    allowed = _model_classes() + [Fraction]
    try:
        with torch.serialization.safe_globals(allowed):
            package = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())
        if "unsupported global" not in detail.lower():
            raise _refuse(path, "it cannot be read as a torch file (truncated or not a checkpoint?): "
                          f"{detail[:300]}") from exc
        match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", detail)
        what = f" (it holds {match.group(1)})" if match else ""
        raise _refuse(path, f"it cannot be read safely{what}: only demucs model classes may be unpickled. Convert it "
                      f"once with `python -m avcontrol_core.preprocess.demix convert \"{path}\"` run from the "
                      "AVControl pack folder (this unpickles the file fully: do it only for files you trust), then "
                      "select the .safetensors it writes") from exc
    return _check_package(path, package)


def _decode(value):
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _encode(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def read_safetensors(path: Path) -> dict:
    """A demucs model in demucs's safetensors format (class and arguments as JSON metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "klass" not in meta:
        raise _refuse(path, "no 'klass' in the safetensors metadata: not a demucs model file")
    if "structure" in meta:
        raise _refuse(path, "quantized (diffq) models are not supported; use the full-precision checkpoint")
    classes = {f"{c.__module__}.{c.__name__}": c for c in _model_classes()}
    if meta["klass"] not in classes:
        raise _refuse(path, f"model class {meta['klass']!r} is not a demucs model")
    package = {"klass": classes[meta["klass"]], "args": _decode(json.loads(meta.get("args", "[]"))),
               "kwargs": _decode(json.loads(meta.get("kwargs", "{}"))), "state": state}
    return _check_package(path, package)


def _build(path: Path, package: dict):
    import warnings

    from demucs.states import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = load_model(package)  # a dict: demucs builds the class and loads the state, no unpickling
        except Exception as exc:
            raise _refuse(path, f"its weights do not fit its own model description ({exc})") from exc
    return model.eval()


def _signature_file(folder: Path, sig: str) -> Path:
    candidates = [folder / f"{sig}.safetensors", folder / f"{sig}.th"] + sorted(folder.glob(f"{glob.escape(sig)}-*.th"))
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"demucs bag model '{sig}' not found in {folder} (expected {sig}.th, {sig}-CHECKSUM.th "
                            f"or {sig}.safetensors there); get {WHERE_TO_GET}")


def _load_single(path: Path):
    if path.suffix == ".safetensors":
        return _build(path, read_safetensors(path))
    if path.suffix == ".th":
        return _build(path, read_th(path))
    raise _refuse(path, f"unsupported file type; expected one of {', '.join(MODEL_EXTENSIONS)}")


def _bag(path: Path) -> tuple[dict, list[Path]]:
    import yaml

    try:
        bag = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise _refuse(path, f"not a readable YAML bag file ({exc})") from exc
    if not isinstance(bag, dict) or not bag.get("models"):
        raise _refuse(path, "a bag file must list 'models: [signature, ...]'")
    return bag, [_signature_file(path.parent, str(sig)) for sig in bag["models"]]


def load_separator(path: Path):
    """A demucs model or bag (BagOfModels) from a ``.th``, ``.safetensors`` or ``.yaml`` file, loaded once and kept
    on the CPU in the preprocessors' shared cache (``weights.cached``; a changed file is read again)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"demucs model file '{path.name}' not found in {path.parent}. Get "
                                  f"{WHERE_TO_GET} and put it in ComfyUI/models/{MODEL_FOLDER}/; {NO_DOWNLOAD}.")
    require_package("demucs.apply", "demucs==4.1.0", "demixing with a demucs checkpoint (the fallback needs none)")
    if path.suffix != ".yaml":
        return cached([path], lambda: _load_single(path), "demucs")
    bag, members = _bag(path)

    def build():
        from demucs.apply import BagOfModels

        models = [_load_single(member) for member in members]
        try:
            return BagOfModels(models, bag.get("weights"), bag.get("segment"))
        except AssertionError as exc:
            raise _refuse(path, "the bag's models disagree on sources, sample rate or channels, or its weights "
                          "do not match") from exc

    return cached([path, *members], build, "demucs")


def convert_th(path: Path, out: Path | None = None) -> Path:
    """Rewrite a demucs ``.th`` as demucs-format ``.safetensors`` (for files ``read_th`` refuses).

    This UNPICKLES the file fully (arbitrary code in it runs): use it only on files you trust."""
    import warnings

    from safetensors.torch import save_file

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        package = torch.load(str(path), map_location="cpu", weights_only=False)
    _check_package(path, package)
    klass = package["klass"]
    state = {k: v.contiguous() for k, v in package["state"].items()}
    meta = {"klass": f"{klass.__module__}.{klass.__name__}", "args": json.dumps(_encode(list(package["args"]))),
            "kwargs": json.dumps(_encode(package["kwargs"]))}
    out = Path(out) if out is not None else path.with_suffix(".safetensors")
    save_file(state, str(out), metadata=meta)
    return out


# --------------------------------------------------------------------------------------------- demucs separation


def source_mapping(sources: list[str]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Which model sources make each stem, and a note per stem (see the module notes)."""
    names = [s.lower() for s in sources]
    known = SPEECH_SOURCES | EFFECTS_SOURCES | MUSIC_SOURCES
    groups: dict[str, list[int]] = {s: [] for s in STEMS}
    notes: dict[str, str] = {}
    if len(names) == 3 and not any(n in known for n in names):
        for i, stem in enumerate(CDX23_ORDER):
            groups[stem].append(i)
        notes = {s: "unnamed sources read in CDX23 order" for s in STEMS}
    else:
        for i, n in enumerate(names):
            stem = ("speech" if n in SPEECH_SOURCES else "effects" if n in EFFECTS_SOURCES
                    else "music" if n in MUSIC_SOURCES else None)
            if stem is None:
                stem = "effects"
                notes["effects"] = f"unrecognised source {sources[i]!r} put here"
            groups[stem].append(i)
    return groups, notes


def _chunk_calls(model, length: int, overlap: float, shifts: int) -> int:
    """How many forward passes apply_model will make (for the progress bar)."""
    members = list(model.models) if hasattr(model, "models") else [model]
    total = 0
    for m in members:
        seg = int(m.samplerate * float(m.segment))
        stride = max(1, int((1 - overlap) * seg))
        padded = length + (int(0.5 * m.samplerate) if shifts else 0)
        total += max(1, shifts) * max(1, -(-padded // stride))
    return total


def demix_demucs(model, wave: torch.Tensor, sr: int, device=None, shifts: int = 0, overlap: float = 0.25,
                 progress: Progress | None = None, name: str = "demucs") -> Stems:
    """Separate one clip [C, T] with a loaded demucs model or bag; stems at ``sr`` with the input's channels."""
    from demucs.apply import apply_model

    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap!r}")
    if shifts < 0:
        raise InputError(f"shifts must be >= 0, got {shifts!r}")
    channels, length = wave.shape
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = resample(wave.float(), sr, model.samplerate)
    if model.audio_channels == 1:
        x = x.mean(dim=0, keepdim=True)
    elif x.shape[0] == 1:
        x = x.expand(model.audio_channels, -1)
    ref = x.mean(dim=0)
    mean = ref.mean()
    std = ref.std().clamp_min(1e-8) if ref.numel() > 1 else torch.tensor(1.0)
    x = (x - mean) / std
    total = _chunk_calls(model, x.shape[-1], overlap, shifts)
    done = [0]

    def callback(info: dict) -> None:
        if info.get("state") == "end":
            done[0] += 1
            if progress is not None:
                progress(done[0], max(total, done[0]))

    try:
        with torch.inference_mode(), on_device(model, device, "demixing the audio"):
            out = apply_model(model, x[None], shifts=shifts, split=True, overlap=overlap, progress=False,
                              device=device, callback=callback)[0]
    finally:
        model.to("cpu")  # apply_model moves the members of a bag itself; every weight goes back to the CPU
    out = (out.float().cpu() * std + mean)  # [S, C_model, T_model]
    groups, notes = source_mapping(list(model.sources))
    stems = {}
    for stem in STEMS:
        y = out[groups[stem]].sum(dim=0) if groups[stem] else torch.zeros_like(out[0])
        y = resample(y, model.samplerate, sr)
        if channels == 1 and y.shape[0] != 1:
            y = y.mean(dim=0, keepdim=True)
        elif channels == 2 and y.shape[0] == 1:
            y = y.expand(2, -1)
        y = y[:, :length]
        if y.shape[-1] < length:
            y = torch.nn.functional.pad(y, (0, length - y.shape[-1]))
        stems[stem] = y.contiguous()
    labels = {}
    for stem in STEMS:
        srcs = ", ".join(model.sources[i] for i in groups[stem]) or "none: silent"
        note = f"; {notes[stem]}" if stem in notes else ""
        labels[stem] = f"{stem} (demucs {name}: {srcs}{note})"
    return Stems(stems["speech"], stems["effects"], stems["music"], sr, labels,
                 f"demucs {name} ({', '.join(model.sources)} at {model.samplerate} Hz)")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m avcontrol_core.preprocess.demix",
                                     description="Tools for demucs model files.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert",
                          help="rewrite a demucs .th as .safetensors. UNPICKLES the file: trusted files only")
    conv.add_argument("file", type=Path)
    conv.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = convert_th(args.file, args.out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
