"""Latent sizes, validation messages, and the positions (in seconds) the transformer reads."""

from __future__ import annotations

import pytest
import torch

from avcontrol_core import latents
from avcontrol_core.errors import InputError


@pytest.mark.parametrize("frames", [50, 0, 16, 8 * 200 + 1])
def test_frames_must_be_8n_plus_1(frames):
    with pytest.raises(InputError, match="frames must be 8n\\+1") as err:
        latents.empty_latent(64, 64, frames, 24)
    assert repr(frames) in str(err.value).split("got")[-1]


def test_frames_message_names_the_value():
    with pytest.raises(InputError) as err:
        latents.validate_size(64, 64, 50, 24)
    assert "frames must be 8n+1" in str(err.value) and "50" in str(err.value)


@pytest.mark.parametrize("frames", [1, 9, 17, 121])
def test_valid_frame_counts(frames):
    latents.validate_size(64, 64, frames, 24)


@pytest.mark.parametrize("name, size", [("width", (100, 64)), ("height", (64, 100)), ("width", (0, 64)),
                                        ("height", (64, 16)), ("width", (8192, 64)), ("width", (64.0, 64))])
def test_sides_must_be_multiples_of_32(name, size):
    width, height = size
    with pytest.raises(InputError, match=f"{name} must be a multiple of 32") as err:
        latents.empty_latent(width, height, 17, 24)
    assert repr(size[0] if name == "width" else size[1]) in str(err.value)


@pytest.mark.parametrize("fps", [0, 0.5, 500, -24])
def test_fps_out_of_range(fps):
    with pytest.raises(InputError, match="fps must be between") as err:
        latents.empty_latent(64, 64, 17, fps)
    assert repr(fps) in str(err.value)


def test_batch_size_checked():
    with pytest.raises(InputError, match="batch_size"):
        latents.empty_latent(64, 64, 17, 24, batch=0)


@pytest.mark.parametrize("w, h, frames, fps, audio_frames", [
    (64, 64, 17, 24.0, 18),     # 17/24 s * 25 = 17.7 -> 18
    (256, 128, 121, 24.0, 126),  # 121/24 * 25 = 126.04
    (96, 32, 1, 25.0, 1),       # one frame: one audio latent
    (64, 64, 49, 30.0, 41),     # 49/30 * 25 = 40.83
    (64, 64, 97, 8.0, 303),     # 97/8 * 25 = 303.1
])
def test_empty_latent_shapes(w, h, frames, fps, audio_frames):
    lat = latents.empty_latent(w, h, frames, fps, batch=2)
    assert lat.video.shape == (2, 128, (frames - 1) // 8 + 1, h // 32, w // 32)
    assert lat.audio.shape == (2, 8, audio_frames, 16)
    assert lat.video_mask.shape == (2, 1, (frames - 1) // 8 + 1, h // 32, w // 32)
    assert lat.audio_mask.shape == (2, 1, audio_frames, 1)
    assert torch.all(lat.video_mask == 1) and torch.all(lat.audio_mask == 1)
    assert lat.seconds == pytest.approx(frames / fps)
    assert lat.batch == 2


def _video_positions(causal: bool, fps: float = 24.0) -> torch.Tensor:
    lat = latents.empty_latent(64, 96, 17, fps)  # latent grid f=3, h=3, w=2
    return latents.video_state(lat, causal=causal).positions


def test_video_positions_layout_and_dtype():
    pos = _video_positions(causal=True)
    assert pos.dtype == torch.float32
    assert pos.shape == (1, 3, 3 * 3 * 2, 2)
    # token order is (f, h, w) row-major; height and width in pixels, [start, end) of 32-pixel cells
    h_start = pos[0, 1, :, 0].view(3, 3, 2)
    w_start = pos[0, 2, :, 0].view(3, 3, 2)
    assert torch.equal(h_start[0, :, 0], torch.tensor([0.0, 32.0, 64.0]))
    assert torch.equal(w_start[0, 0, :], torch.tensor([0.0, 32.0]))
    assert torch.equal(pos[0, 1:, :, 1] - pos[0, 1:, :, 0], torch.full((2, 18), 32.0))


def test_video_time_positions_in_seconds_causal():
    """17 frames at 24 fps -> 3 latent frames. Causal: the first latent frame covers pixel frame 0 only,
    the next ones pixel frames [1, 9) and [9, 17); divided by the frame rate."""
    pos = _video_positions(causal=True)
    t = pos[0, 0].view(3, 6, 2)[:, 0]  # one token per latent frame
    expected = torch.tensor([[0.0, 1.0], [1.0, 9.0], [9.0, 17.0]]) / 24.0
    torch.testing.assert_close(t, expected, rtol=0, atol=1e-7)
    # every token of a frame shares its time bounds
    assert torch.equal(pos[0, 0].view(3, 6, 2), t[:, None].expand(3, 6, 2))


def test_video_time_positions_in_seconds_not_causal():
    pos = _video_positions(causal=False)
    t = pos[0, 0].view(3, 6, 2)[:, 0]
    expected = torch.tensor([[0.0, 8.0], [8.0, 16.0], [16.0, 24.0]]) / 24.0
    torch.testing.assert_close(t, expected, rtol=0, atol=1e-7)


def test_causal_flag_changes_only_time_axis():
    causal, plain = _video_positions(True), _video_positions(False)
    assert torch.equal(causal[:, 1:], plain[:, 1:])
    assert causal[0, 0, 0, 1] != plain[0, 0, 0, 1]  # first frame: ends at 1/24 s vs 8/24 s


def test_time_positions_follow_fps():
    """Same latent grid, double frame rate -> half the seconds (what audio/video alignment rests on)."""
    p24, p48 = _video_positions(True, 24.0), _video_positions(True, 48.0)
    torch.testing.assert_close(p48[:, 0], p24[:, 0] / 2, rtol=0, atol=1e-7)
    assert torch.equal(p48[:, 1:], p24[:, 1:])


def test_audio_positions_in_seconds():
    lat = latents.empty_latent(64, 64, 17, 24.0)  # 18 audio latents
    pos = latents.audio_state(lat).positions
    assert pos.dtype == torch.float32
    assert pos.shape == (1, 1, 18, 2)
    # causal like the video: latent k covers mel frames [4k - 3, 4k + 1) (clipped at 0), hop 160 at 16 kHz,
    # so 1/25 s per latent and the first one only 1/100 s
    k = torch.arange(18, dtype=torch.float64)
    expected = torch.stack([(4 * k - 3).clamp(min=0), 4 * k + 1], dim=-1) * 160 / 16000
    torch.testing.assert_close(pos[0, 0].double(), expected, rtol=0, atol=1e-6)
    # the audio stream ends where the video does (within one audio latent)
    assert abs(float(pos[0, 0, -1, 1]) - lat.seconds) < 0.04


def test_states_are_float32_and_roundtrip():
    lat = latents.empty_latent(64, 96, 17, 24.0, batch=2)
    g = torch.Generator().manual_seed(0)
    lat = lat.replace(video=torch.randn(lat.video.shape, generator=g, dtype=torch.float64).to(torch.bfloat16),
                      audio=torch.randn(lat.audio.shape, generator=g))
    v, a = latents.video_state(lat, causal=True), latents.audio_state(lat)
    assert v.latent.dtype == a.latent.dtype == torch.float32
    assert v.latent.shape == (2, 18, 128) and a.latent.shape == (2, 18, 128)
    assert v.denoise_mask.shape == (2, 18, 1)
    back = latents.unpatchify(lat, v.latent, a.latent)
    assert torch.equal(back.video, lat.video.float()) and torch.equal(back.audio, lat.audio)


def test_condition_first_frame():
    """The image becomes frame 0's clean latent with denoise mask 1 - strength when the state is built; the noisy
    latent keeps what it was (zeros here), as in Lightricks' current source."""
    from avcontrol_core.sampling import initial_states

    lat = latents.empty_latent(64, 96, 17, 24.0)
    image = torch.randn(1, 128, 1, 3, 2)
    n = 3 * 2  # tokens of one latent frame
    for strength in (1.0, 0.25):
        cond = latents.condition_first_frame(lat, image, strength)
        v, _ = initial_states(cond, True, torch.device("cpu"))
        assert torch.equal(v.clean_latent[0, :n], image[0].flatten(1).T)  # (h*w, 128), row-major like the patchifier
        assert torch.all(v.clean_latent[:, n:] == 0) and torch.all(v.latent == 0)
        assert torch.all(v.denoise_mask[:, :n] == 1 - strength) and torch.all(v.denoise_mask[:, n:] == 1)
    assert latents.condition_first_frame(lat, image, 0.0) is lat  # strength 0: nothing to do
    assert torch.all(lat.video == 0) and torch.all(lat.video_mask == 1) and lat.conditioning == ()
    with pytest.raises(InputError, match="strength"):
        latents.condition_first_frame(lat, image, 1.5)
    with pytest.raises(InputError, match="image latent must have shape"):
        latents.condition_first_frame(lat, torch.randn(1, 128, 1, 2, 2), 1.0)
