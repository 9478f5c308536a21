"""Visual preprocessors without model files, offline and real where possible.

- Canny / soft edges on real photos (scikit-image's camera and astronaut), against OpenCV itself.
- Masks and fitting to the grid against values computed by hand; every frame reports progress, cancel stops.
- Every visual node is a preprocessor with tooltips.

Depth and pose (model files) are in test_preprocess_models.py; helpers and fixtures in preprocess_fixtures.py.
"""

from __future__ import annotations

import importlib
import warnings
import math

import numpy as np
import pytest
import torch

from avcontrol_core.errors import InputError as CoreInputError
from avcontrol_core.preprocess import fit, masks
from tests.preprocess_fixtures import VISUAL, astronaut, camera, host, models_dir, nodes  # noqa: F401 -- fixtures
from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

cv2 = pytest.importorskip("cv2")

load_pack()
InputError = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").InputError


# --------------------------------------------------------------------------------------------
# Edges
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["camera", "astronaut"])
def test_canny_finds_the_edges_opencv_finds_on_real_photos(nodes, photo, request):
    image = request.getfixturevalue(photo)
    (edges,) = nodes["AVCCannyEdges"].run(image, 100, 200, 0.0, 1, False)
    assert edges.shape == image.shape and edges.dtype == torch.float32
    assert set(torch.unique(edges).tolist()) == {0.0, 1.0}
    assert torch.equal(edges[..., 0], edges[..., 1]) and torch.equal(edges[..., 0], edges[..., 2])
    frame = (image[0] * 255).round().to(torch.uint8).numpy()
    expected = cv2.Canny(frame, 100, 200) > 0
    assert np.array_equal(edges[0, ..., 0].numpy() > 0.5, expected)
    assert 0.01 < expected.mean() < 0.3  # a real photo: edges, not noise or nothing


def test_canny_thresholds_blur_and_thickness_change_the_edge_count(nodes, astronaut):
    run = nodes["AVCCannyEdges"].run
    counts = [int(run(astronaut, lo, hi, 0.0, 1, False)[0][..., 0].sum()) for lo, hi in
              ((20, 40), (50, 100), (100, 200), (200, 400), (400, 800))]
    assert all(a > b for a, b in zip(counts, counts[1:])), counts
    blurred = int(run(astronaut, 100, 200, 2.0, 1, False)[0][..., 0].sum())
    thick = int(run(astronaut, 100, 200, 0.0, 3, False)[0][..., 0].sum())
    assert blurred < counts[2] < thick
    with pytest.raises(InputError, match="low_threshold"):
        run(astronaut, 300, 200, 0.0, 1, False)


def test_soft_edges_are_bright_where_canny_finds_edges(nodes, camera):
    (soft,) = nodes["AVCSoftEdges"].run(camera, 1.0, 1.0)
    (hard,) = nodes["AVCCannyEdges"].run(camera, 100, 200, 1.0, 1, False)
    assert soft.shape == camera.shape and float(soft.max()) == 1.0 and float(soft.min()) == 0.0
    on = hard[0, ..., 0] > 0.5
    assert float(soft[0, ..., 0][on].mean()) > 3 * float(soft[0, ..., 0][~on].mean())


def test_every_frame_reports_progress_and_cancel_stops_the_loop(nodes, camera, monkeypatch):
    calls = []

    def interrupted():
        calls.append(1)
        if len(calls) > 3:  # the node's first check, then one per frame: cancel after frame 2
            raise RuntimeError("cancelled")

    monkeypatch.setattr(host, "check_interrupted", interrupted)
    clip = camera.expand(6, -1, -1, -1)
    with pytest.raises(RuntimeError, match="cancelled"):
        nodes["AVCCannyEdges"].run(clip, 100, 200, 0.0, 1, False)
    assert len(calls) == 4


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def test_box_and_threshold_masks(nodes, camera):
    clip = camera.expand(3, -1, -1, -1)
    (box,) = nodes["AVCMaskFromBox"].run(clip, 100, 50, 200, 120, 0.0, False)
    assert box.shape == (3, 512, 512) and float(box.sum()) == 3 * 200 * 120
    assert float(box[:, 50, 100].min()) == 1.0 and float(box[:, 49, 100].max()) == 0.0
    assert float(box[:, 170, 300].max()) == 0.0 and float(box[:, 169, 299].min()) == 1.0
    (inverted,) = nodes["AVCMaskFromBox"].run(clip, 100, 50, 200, 120, 0.0, True)
    assert torch.equal(inverted, 1.0 - box)
    (soft,) = nodes["AVCMaskFromBox"].run(clip, 100, 50, 200, 120, 8.0, False)
    assert 0.0 < float(soft[0, 110, 100]) < 1.0 and float(soft[0, 110, 150]) == pytest.approx(1.0, abs=1e-4)
    (clipped,) = nodes["AVCMaskFromBox"].run(clip, 400, 400, 500, 500, 0.0, False)
    assert float(clipped[0].sum()) == 112 * 112
    with pytest.raises(InputError, match="overlap"):
        nodes["AVCMaskFromBox"].run(clip, 600, 0, 10, 10, 0.0, False)

    (bright,) = nodes["AVCMaskFromThreshold"].run(camera, "luminance", 0.5, False, 0, 0.0)
    frame = (camera[0] * 255).round().to(torch.uint8).numpy()[..., 0]
    assert np.array_equal(bright[0].numpy() > 0.5, frame / 255.0 > 0.5)
    (grown,) = nodes["AVCMaskFromThreshold"].run(camera, "luminance", 0.5, False, 3, 0.0)
    (shrunk,) = nodes["AVCMaskFromThreshold"].run(camera, "luminance", 0.5, False, -3, 0.0)
    assert float(shrunk.sum()) < float(bright.sum()) < float(grown.sum())
    assert bool((grown >= bright).all()) and bool((shrunk <= bright).all())


def test_outpaint_pads_by_pixels_or_to_an_aspect(nodes, astronaut):
    image, mask = nodes["AVCOutpaintPad"].run(astronaut, 10, 20, 0, 32, "none", "center", "center", "edge", 0.0)
    assert image.shape == (1, 544, 542, 3) and mask.shape == (1, 544, 542)
    assert torch.equal(image[:, :512, 10:522], astronaut)
    assert float(mask.sum()) == 544 * 542 - 512 * 512 and float(mask[0, :512, 10:522].max()) == 0.0
    assert torch.equal(image[0, 100, :10], astronaut[0, 100, :1].expand(10, -1))  # edge fill

    image, mask = nodes["AVCOutpaintPad"].run(astronaut, 0, 0, 0, 0, "16:9", "center", "center", "grey", 0.0)
    assert image.shape == (1, 512, 910, 3)  # round(512 * 16 / 9) = 910: 199 px left, 199 px right
    assert float(mask[0, 0, :199].min()) == 1.0 and float(mask[0, 0, 199:711].max()) == 0.0
    assert float(image[0, 0, 0, 0]) == 0.5
    assert masks.aspect_padding(512, 512, "9:16", "left", "top") == (0, 0, 0, 398)  # round(512 * 16 / 9) - 512

    _, soft = nodes["AVCOutpaintPad"].run(astronaut, 0, 64, 0, 0, "none", "center", "center", "mirror", 4.0)
    row = soft[0, 200, 505:515].tolist()  # original pixels 505..511, then the new area
    assert row == pytest.approx([0.0, 0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])

    box = torch.zeros(1, 512, 512)
    box[:, 100:200, 50:150] = 1.0
    (filled,) = nodes["AVCFillMasked"].run(astronaut, box, "grey")
    assert float(filled[0, 150, 100, 0]) == 0.5 and torch.equal(filled[0, 300], astronaut[0, 300])
    with pytest.raises(InputError, match="mask must be the frames' size"):
        nodes["AVCFillMasked"].run(astronaut, torch.zeros(1, 10, 10), "grey")


# --------------------------------------------------------------------------------------------
# Fit to the grid
# --------------------------------------------------------------------------------------------


def test_fit_1280x720x50_to_768x448x49_with_its_report(nodes):
    frame = torch.rand(1, 720, 1280, 3, generator=torch.Generator().manual_seed(0))
    clip = frame.expand(50, -1, -1, -1)
    out = nodes["AVCFitClip"].run(clip, 768, 448, "crop", 0.0, 24.0, 0, "drop")
    image, mask, fps, frames, report = out["result"]
    assert image.shape == (49, 448, 768, 3) and mask.shape == (49, 448, 768) and frames == 49 and fps == 24.0
    # scale = max(768/1280, 448/720) = 0.6222 -> 796 x 448, then 28 px cropped: 14 left, 14 right
    assert report == ("resized 1280x720 -> 768x448 (scaled to 796x448, cropped 14 px left/right), "
                      "50 frames -> 49 (dropped 1 at the end)")
    assert out["ui"]["text"] == [report]
    scaled = torch.nn.functional.interpolate(frame.permute(0, 3, 1, 2), size=(448, 796), mode="bicubic",
                                             antialias=True).clamp(0, 1)
    assert torch.allclose(image, scaled[..., 14:782].permute(0, 2, 3, 1).expand(49, -1, -1, -1), atol=1e-5)


def test_fit_sizes_from_the_clip_pad_and_masks():
    g = fit.plan_geometry(1280, 720, 0, 0, "crop")
    assert (g.target, g.crop) == ((1280, 704), (0, 0, 8, 8))
    assert g.describe() == "cropped 1280x720 -> 1280x704 (8 px top/bottom)"
    g = fit.plan_geometry(1280, 720, 768, 0, "pad")  # 768 x 432 -> up to 448: 8 px bars
    assert (g.target, g.scaled, g.pad) == ((768, 448), (768, 432), (0, 0, 8, 8))
    assert fit.plan_geometry(1280, 720, 768, 0, "crop").target == (768, 416)
    assert fit.plan_geometry(720, 1280, 0, 512, "stretch").target == (288, 512)
    assert fit.plan_geometry(768, 448, 768, 448).describe() == "kept 768x448"
    with pytest.raises(CoreInputError, match="width must be 0 .* or a multiple of 32, got 100"):
        fit.plan_geometry(1280, 720, 100, 448)

    clip = torch.zeros(9, 72, 128, 3)
    mask = torch.zeros(1, 72, 128)
    mask[:, :36] = 1.0
    result = fit.fit_clip(clip + 1.0, 128, 96, "pad", mask=mask)
    assert result.images.shape == (9, 96, 128, 3) and result.mask.shape == (9, 96, 128)
    assert float(result.images[:, :12].max()) == 0.0 and float(result.images[:, 12:84].min()) == 1.0
    assert float(result.mask[:, :12].max()) == 0.0 and float(result.mask[:, 12:48].min()) == 1.0
    assert float(result.mask[:, 48:].max()) == 0.0


def test_fit_resamples_frame_rate_by_time():
    # 30 -> 24 fps: output frame k shows source frame floor(k * 30 / 24) = floor(1.25 k)
    timing = fit.plan_frames(121, source_fps=30.0, target_fps=24.0)
    assert len(timing.indices) == 97  # ceil(121 * 24 / 30) = ceil(96.8); 97 = 8 * 12 + 1
    assert timing.indices[:9] == [0, 1, 2, 3, 5, 6, 7, 8, 10] and timing.indices[-1] == 120
    assert timing.report == "121 frames at 30 fps -> 97 at 24 fps (resampled by time, 4.03 s)"
    # 12 -> 24 fps doubles frames: 0, 0, 1, 1, ...; 20 frames -> 40 -> 41 by repeating the last
    timing = fit.plan_frames(20, 12.0, 24.0, rule="repeat")
    assert timing.indices == [k // 2 for k in range(40)] + [19]
    assert timing.report.endswith("-> 40 at 24 fps (resampled by time, 1.67 s) -> 41 (repeated the last frame 1 time)")
    # 25 -> 24 fps over 125 frames: 120 frames, then 113 (8n+1); capped at 97 first when asked
    assert len(fit.plan_frames(125, 25.0, 24.0).indices) == 113
    capped = fit.plan_frames(125, 25.0, 24.0, max_frames=97)
    assert len(capped.indices) == 97 and "kept the first 97" in capped.report
    with pytest.raises(CoreInputError, match="max_frames must be 0 .* or 8n\\+1"):
        fit.plan_frames(50, max_frames=50)

    clip = torch.arange(30, dtype=torch.float32).view(30, 1, 1, 1).expand(30, 32, 32, 3) / 29.0
    result = fit.fit_clip(clip, 32, 32, source_fps=30.0, target_fps=24.0)
    assert result.images.shape[0] == 17 and result.fps == 24.0  # ceil(30 * 24 / 30) = 24 -> 17
    shown = (result.images[:, 0, 0, 0] * 29.0).round().long().tolist()
    assert shown == [math.floor(k * 30 / 24) for k in range(17)]


def test_visual_nodes_are_preprocessors_with_tooltips():
    classes = pack_node_classes()
    for name in VISUAL:
        cls = classes[name]
        assert cls.CATEGORY == "AVControl/preprocess"
        assert set(cls.RETURN_TYPES) <= {"IMAGE", "MASK", "FLOAT", "INT", "STRING"}
        for section in cls.INPUT_TYPES().values():
            for input_name, spec in section.items():
                assert spec[1].get("tooltip"), f"{name}.{input_name}"


@pytest.mark.parametrize("node, args", [
    ("AVCMaskFromBox", (10, 20, 30, 25, 4.0, False)),
    ("AVCMaskFromThreshold", ("luminance", 0.5, False, 2, 3.0)),
    ("AVCOutpaintPad", (8, 4, 0, 6, "none", "center", "center", "mirror", 2.0)),
    ("AVCFillMasked", ("grey",)),
])
def test_whole_batch_nodes_show_progress_and_cancel_between_chunks(nodes, monkeypatch, node, args):
    """40 frames go in chunks of 16: three labelled steps, Cancel between them, and the joined result equals the
    whole batch done at once by the core function."""
    from importlib import import_module

    visual = import_module(f"{PACK_PACKAGE}.nodes.preprocess_visual")
    core = import_module(f"{PACK_PACKAGE}.avcontrol_core.preprocess.masks")
    clip = torch.rand(40, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    mask = (torch.rand(40, 48, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    inputs = (clip, mask) if node == "AVCFillMasked" else (clip,)
    labels = []
    real_bar = host.progress_bar
    monkeypatch.setattr(host, "progress_bar", lambda total, desc=None: labels.append((total, desc))
                        or real_bar(total, desc))
    out = nodes[node].run(*inputs, *args)
    whole = {
        "AVCMaskFromBox": lambda: (core.box_mask(40, 48, 64, *args),),
        "AVCMaskFromThreshold": lambda: (core.threshold_mask(clip, args[1], args[0], *args[2:]),),
        "AVCOutpaintPad": lambda: core.outpaint(clip, *args[:4], args[7], args[8]),
        "AVCFillMasked": lambda: (core.fill_masked(clip, mask, *args),),
    }[node]()
    assert len(out) == len(whole) and all(torch.equal(a, b) for a, b in zip(out, whole))
    assert len(labels) == 1 and labels[0][0] == -(-40 // visual.CHUNK) == 3 and labels[0][1]  # labelled

    checks = []

    def interrupted():
        checks.append(1)
        if len(checks) > 2:  # the node's first check, then one per chunk: cancel after the first chunk
            raise RuntimeError("cancelled")

    monkeypatch.setattr(host, "check_interrupted", interrupted)
    with pytest.raises(RuntimeError, match="cancelled"):
        nodes[node].run(*inputs, *args)
    assert len(checks) == 3


def test_fit_says_when_it_assumes_the_rate_or_makes_a_huge_clip():
    fit = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.preprocess.fit")
    PackWarning = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").PackWarning
    clip = torch.rand(200, 40, 72, 3)
    with pytest.warns(PackWarning) as said:
        out = fit.fit_clip(clip, 64, 32, "crop", 10.0, 24.0, 0, "drop")
    messages = [str(w.message) for w in said if issubclass(w.category, PackWarning)]
    assert out.images.shape[0] == 473  # 480 by time, 8n+1 -> 473
    assert messages == ["Fit Clip makes 473 frames at 64x32 (0.0 GB as an IMAGE batch) because max_frames is 0 "
                        "(no limit); set max_frames (e.g. 121 or 257) to keep fewer"]
    with pytest.warns(PackWarning, match=r"source_fps is 0, so the clip's 200 frames are taken as already 24 fps"):
        fit.fit_clip(clip, 64, 32, "crop", 0.0, 24.0, 121, "drop")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PackWarning)  # a given rate and a frame limit: nothing to say
        fit.fit_clip(clip, 64, 32, "crop", 10.0, 24.0, 121, "drop")
        fit.fit_clip(clip[:1], 64, 32, "crop", 0.0, 24.0, 0, "drop")  # one picture has no rate
