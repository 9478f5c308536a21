"""Visual preprocessors with models, offline and real where possible.

- MediaPipe pose (weights inside its wheel) finds the astronaut.
- Depth (Depth Anything through transformers, MiDaS through controlnet-aux), OpenPose and DWPose load model files
  written here in the exact format of the real ones (random or crafted weights) from a models folder, through the
  nodes, i.e. the code path users hit. DWPose's ONNX pair is crafted so the person box and every keypoint are
  known, which checks its whole pre/post-processing; the skeleton drawing is pixel-identical to controlnet-aux's.
- Missing weights fail with file, folder, source; the weights cache loads once, reloads, frees with ComfyUI.

ZoeDepth (BEiT-L, 345M parameters) takes minutes on a CPU: its test runs with AVCONTROL_SLOW_TESTS=1.
Edges, masks and fitting are in test_preprocess_edges_masks_fit.py; helpers and fixtures in preprocess_fixtures.py.
"""

from __future__ import annotations

import importlib
import os
import re

import numpy as np
import pytest
import torch

from avcontrol_core.errors import InputError as CoreInputError
from avcontrol_core.preprocess.pose import Person, draw_people
from tests.preprocess_fixtures import (BOX, COCO_BODY_UV, COCO_TO_OPENPOSE, EXTRA_UV, FRAME, as_image, host,
                                       uv_to_image, write_midas, write_openpose)
from tests.preprocess_fixtures import astronaut, models_dir, nodes  # noqa: F401 -- fixtures
from tests.workflow_defs import PACK_PACKAGE, load_pack

pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

load_pack()
InputError = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").InputError
weights = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.preprocess.weights")


@pytest.fixture(scope="session")
def aux_models(models_dir):
    """controlnet-aux files (imports controlnet-aux: ~4 s, once)."""
    pytest.importorskip("controlnet_aux")
    write_openpose(models_dir / "annotators")
    write_midas(models_dir / "annotators")
    return models_dir


# --------------------------------------------------------------------------------------------
# Pose
# --------------------------------------------------------------------------------------------


def test_mediapipe_finds_the_astronaut(nodes, astronaut):
    pytest.importorskip("mediapipe")
    from avcontrol_core.preprocess.pose import mediapipe_frames

    people: list = []
    pose = mediapipe_frames(astronaut, 512, tracking=False, people=people)
    assert len(people) == 1 and len(people[0]) == 1
    person = people[0][0]
    # the photo shows her upper body: head, neck, both shoulders, eyes and ears are found; she faces the camera,
    # so her right shoulder (OpenPose 2) is on the image's left
    assert np.isfinite(person.body[[0, 1, 2, 5, 14, 15, 16, 17]]).all()
    assert person.body[2, 0] < person.body[1, 0] < person.body[5, 0]
    seen = person.body[np.isfinite(person.body[:, 0])]
    assert ((seen >= 0) & (seen <= 1)).all()
    nose, neck = person.body[0], person.body[1]
    # the astronaut's face is in the upper middle of the photo, above her neck
    assert 0.3 < nose[0] < 0.6 and 0.1 < nose[1] < 0.4 and neck[1] > nose[1]
    drawn = pose[0].sum(-1) > 0
    ys, xs = np.nonzero(drawn.numpy())
    assert drawn.sum() > 500
    x0, y0 = (seen.min(0) * 512).astype(int) - 12
    x1, y1 = (seen.max(0) * 512).astype(int) + 12
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    nx, ny = (nose * 512).astype(int)
    assert pose[0, ny, nx].tolist() == [1.0, 0.0, 0.0]  # OpenPose's nose colour

    (video,) = nodes["AVCMediaPipePose"].run(astronaut.expand(3, -1, -1, -1), 256, True, True, True, True, 0.5)
    assert video.shape == (3, 512, 512, 3)
    assert all(float(f.sum()) > 100 for f in video)


def test_mediapipe_finds_each_of_two_people_by_their_faces(nodes, astronaut):
    """Two people side by side: the one-person pass draws one; max_people 2 finds both faces and a body below
    each, at the place the one-person pass finds each alone (the oracle: each half of the frame on its own)."""
    pytest.importorskip("mediapipe")
    from avcontrol_core.preprocess.pose import mediapipe_frames

    pair = torch.cat([astronaut, astronaut.flip(2)], dim=2)  # [1, 512, 1024, 3]
    one: list = []
    mediapipe_frames(pair, 512, tracking=False, people=one)
    assert len(one[0]) == 1
    two: list = []
    pose = mediapipe_frames(pair, 512, tracking=False, people=two, max_people=2)
    assert len(two[0]) == 2
    alone = []
    for half in (pair[:, :, :512], pair[:, :, 512:]):
        found: list = []
        mediapipe_frames(half, 512, tracking=False, people=found)
        alone.append(found[0][0].body[0])  # the nose, in the half's fractions
    noses = sorted((p.body[0] for p in two[0]), key=lambda n: n[0])
    for k, (nose, single) in enumerate(zip(noses, alone)):
        expected = np.array([(k + single[0]) / 2, single[1]])  # the half's fractions in the whole frame
        assert np.abs(nose - expected).max() < 0.03, (k, nose, expected)
    assert pose[0, :, :512].sum() > 0 and pose[0, :, 512:].sum() > 0  # a skeleton on each side
    with pytest.raises(CoreInputError, match="max_people"):
        mediapipe_frames(pair, 512, max_people=0)

    (video,) = nodes["AVCMediaPipePose"].run(pair.expand(2, -1, -1, -1), 512, True, False, False, True, 0.5, 2)
    assert video.shape == (2, 512, 1024, 3)
    assert all(float(f[:, :512].sum()) > 100 and float(f[:, 512:].sum()) > 100 for f in video)


def test_dwpose_onnx_pipeline_puts_every_keypoint_where_the_models_say(nodes, models_dir):
    pytest.importorskip("onnxruntime")
    from avcontrol_core.preprocess.dwpose import load_dwpose

    resolve = lambda kind, name: models_dir / kind / name  # noqa: E731
    frame = np.full((FRAME, FRAME, 3), 90, np.uint8)
    model = load_dwpose("yolox_l.onnx", "dw-ll_ucoco_384.onnx", resolve)
    from avcontrol_core.preprocess.dwpose import detect_people

    assert np.allclose(detect_people(model.det, frame), [BOX], atol=1e-3)
    (person,) = model.people(frame)
    for op, coco in enumerate(COCO_TO_OPENPOSE):
        if coco is None:  # the neck: midway between the shoulders
            expected = np.mean([uv_to_image(*COCO_BODY_UV[5]), uv_to_image(*COCO_BODY_UV[6])], axis=0)
        else:
            expected = uv_to_image(*COCO_BODY_UV[coco])
        assert np.allclose(person.body[op] * FRAME, expected, atol=1e-3), op
    assert np.allclose(person.hands[0][0] * FRAME, uv_to_image(*EXTRA_UV[91]), atol=1e-3)
    assert np.isnan(person.hands[0][1:]).all() and np.isnan(person.hands[1]).all()
    assert np.allclose(person.face[30] * FRAME, uv_to_image(*EXTRA_UV[53]), atol=1e-3)
    assert np.isnan(np.delete(person.face, 30, axis=0)).all()

    image = torch.from_numpy(frame).float()[None].expand(2, -1, -1, -1) / 255.0
    (pose,) = nodes["AVCDWPose"].run(image, "yolox_l.onnx", "dw-ll_ucoco_384.onnx", FRAME, True, True, True, "cpu")
    assert pose.shape == (2, FRAME, FRAME, 3) and torch.equal(pose[0], pose[1])
    expected = draw_people([person], FRAME, FRAME, True, True, True)
    assert np.array_equal((pose[0] * 255).round().to(torch.uint8).numpy(), expected)
    nx, ny = (person.body[0] * FRAME).astype(int)
    assert pose[0, ny, nx].tolist() == [1.0, 0.0, 0.0]
    (no_face,) = nodes["AVCDWPose"].run(image[:1], "yolox_l.onnx", "dw-ll_ucoco_384.onnx", FRAME, True, True, False,
                                        "cpu")
    assert float(no_face.sum()) < float(pose[0].sum())


def test_dwpose_refuses_swapped_files_and_names_missing_ones(nodes, models_dir):
    pytest.importorskip("onnxruntime")
    with pytest.raises(InputError, match="YOLOX person detector"):
        nodes["AVCDWPose"].run(torch.rand(1, 64, 64, 3), "dw-ll_ucoco_384.onnx", "yolox_l.onnx", 64, True, False,
                               False, "cpu")
    with pytest.raises(FileNotFoundError) as err:
        nodes["AVCDWPose"].run(torch.rand(1, 64, 64, 3), "yolox_s.onnx", "dw-ll_ucoco_384.onnx", 64, True, False,
                               False, "cpu")
    message = str(err.value)
    assert "yolox_s.onnx" in message and str(models_dir / "dwpose") in message
    assert "yzd-v/DWPose on Hugging Face" in message and "never downloads" in message


def test_skeleton_drawing_is_pixel_identical_to_controlnet_aux(aux_models):
    from controlnet_aux.dwpose import draw_pose

    rng = np.random.default_rng(0)
    people = []
    for _ in range(3):
        body = rng.uniform(0.05, 0.95, (18, 2))
        body[rng.uniform(size=18) < 0.2] = np.nan
        hands = [rng.uniform(0.05, 0.95, (21, 2)) for _ in range(2)]
        hands[1][rng.uniform(size=21) < 0.3] = np.nan
        face = rng.uniform(0.05, 0.95, (68, 2))
        face[:10] = np.nan
        people.append(Person(body, hands, face))
    ours = draw_people(people, 240, 320, True, True, True)

    candidate = np.concatenate([np.nan_to_num(p.body, nan=-1.0) for p in people])
    subset = np.array([[18 * i + j if np.isfinite(p.body[j, 0]) else -1 for j in range(18)]
                       for i, p in enumerate(people)], dtype=float)
    hands = np.array([np.nan_to_num(h, nan=-1.0) for p in people for h in p.hands])
    faces = np.array([np.nan_to_num(p.face, nan=-1.0) for p in people])
    theirs = draw_pose({"bodies": {"candidate": candidate, "subset": subset}, "hands": hands, "faces": faces}, 240, 320)
    assert ours.sum() > 0 and np.array_equal(ours, theirs)


def test_openpose_loads_the_annotator_files_through_the_node(nodes, aux_models):
    image = as_image(skdata.astronaut())[:, ::4, ::4]
    (pose,) = nodes["AVCOpenpose"].run(image, "body_pose_model.pth", 128, True, True, True, "cpu")
    assert pose.shape == image.shape and float(pose.max()) <= 1.0
    assert float(pose.sum()) == 0.0  # near-zero weights: no person, and no invented skeleton

    hidden = aux_models / "annotators" / "hand_pose_model.pth"
    hidden.rename(hidden.with_suffix(".bak"))
    try:
        with pytest.raises(FileNotFoundError) as err:
            nodes["AVCOpenpose"].run(image, "body_pose_model.pth", 128, True, True, False, "cpu")
    finally:
        hidden.with_suffix(".bak").rename(hidden)
    message = str(err.value)
    assert "hand_pose_model.pth" in message and str(aux_models / "annotators") in message
    assert "lllyasviel/Annotators on Hugging Face" in message


# --------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------


def test_depth_anything_runs_through_transformers_from_the_models_folder(nodes, models_dir, astronaut):
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    assert "Depth-Anything-V2-Small-hf" in nodes["AVCDepthMap"].INPUT_TYPES()["required"]["model"][0]
    clip = torch.cat([astronaut, astronaut.flip(2)])[:, ::2, ::2]
    (depth,) = nodes["AVCDepthMap"].run(clip, "Depth-Anything-V2-Small-hf", 126, "per frame", "cpu")
    assert depth.shape == clip.shape
    for frame in depth:
        assert float(frame.min()) == 0.0 and float(frame.max()) == 1.0
        assert torch.equal(frame[..., 0], frame[..., 2])

    # the same numbers as transformers' own pipeline on the folder
    folder = models_dir / "depth_models" / "Depth-Anything-V2-Small-hf"
    model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    frame = (clip[0] * 255).round().to(torch.uint8).numpy()
    with torch.no_grad():
        raw = model(**processor(images=frame, return_tensors="pt", size={"height": 126, "width": 126}))
    raw = torch.nn.functional.interpolate(raw.predicted_depth[None], size=clip.shape[1:3], mode="bilinear")[0, 0]
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    assert torch.allclose(depth[0, ..., 0], expected, atol=1.0 / 255)

    (per_clip,) = nodes["AVCDepthMap"].run(clip, "Depth-Anything-V2-Small-hf", 126, "per clip", "cpu")
    assert float(per_clip.min()) == 0.0 and float(per_clip.max()) == 1.0
    assert float(per_clip[0].max()) < 1.0 or float(per_clip[1].max()) < 1.0 or \
        float(per_clip[0].min()) > 0.0 or float(per_clip[1].min()) > 0.0


def test_depth_model_is_loaded_once_reloaded_when_changed_and_freed_with_comfyui(nodes, models_dir, monkeypatch):
    from avcontrol_core.preprocess import depth as core_depth

    clip = torch.rand(1, 64, 64, 3)
    name = "Depth-Anything-V2-Small-hf"
    cache = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.residency").RESIDENCY  # the nodes' one cache
    weights.clear()
    loads = cache.loads
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    assert cache.loads == loads + 1
    config = models_dir / "depth_models" / name / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    assert cache.loads == loads + 2 and len(cache.held("preprocessor")) == 1  # the stale copy was dropped

    # ComfyUI needs the device memory for something else: the cached preprocessors go
    class FakeComfy:
        def __init__(self):
            self.free_memory = lambda memory_required, device, *a, **k: None

        get_free_memory = staticmethod(lambda device=None: 0)
        get_torch_device = staticmethod(lambda: torch.device("cpu"))
        throw_exception_if_processing_interrupted = staticmethod(lambda: None)
        soft_empty_cache = staticmethod(lambda *a, **k: None)

    mm = FakeComfy()
    monkeypatch.setattr(host, "_model_management", lambda: mm)
    host.install_core_host()  # what importing the pack does inside ComfyUI (comfy.model_management loaded by then)
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    assert len(cache.held("preprocessor")) == 1
    mm.free_memory(10 ** 12, torch.device("cuda"))
    assert len(cache.held("preprocessor")) == 0
    assert core_depth.model_kind(name) == "depth_models"


def test_midas_loads_the_annotator_file_through_the_node(nodes, aux_models):
    clip = torch.rand(2, 96, 128, 3, generator=torch.Generator().manual_seed(1))
    (depth,) = nodes["AVCDepthMap"].run(clip, "dpt_hybrid-midas-501f0c75.pt", 128, "per clip", "cpu")
    assert depth.shape == clip.shape
    assert float(depth.min()) == 0.0 and float(depth.max()) == 1.0
    assert "dpt_hybrid-midas-501f0c75.pt" in nodes["AVCDepthMap"].INPUT_TYPES()["required"]["model"][0]


@pytest.mark.skipif(not os.environ.get("AVCONTROL_SLOW_TESTS"), reason="ZoeDepth (BEiT-L) takes minutes on a CPU; "
                    "set AVCONTROL_SLOW_TESTS=1")
def test_zoedepth_loads_the_annotator_file_through_the_node(nodes, aux_models):
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    # built for real (its default random init): its buffers (bin indices, position tables) need their true values
    state = ZoeDepth.build_from_config(get_config("zoedepth", "infer")).state_dict()
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in state.items()}},
               aux_models / "annotators" / "ZoeD_M12_N.pt")
    clip = torch.rand(1, 64, 64, 3)
    (depth,) = nodes["AVCDepthMap"].run(clip, "ZoeD_M12_N.pt", 64, "per frame", "cpu")
    assert depth.shape == clip.shape and float(depth.max()) <= 1.0


def test_missing_depth_files_name_the_file_the_folder_and_the_source(nodes, models_dir):
    clip = torch.rand(1, 64, 64, 3)
    for name, source in (("sub/dpt_hybrid-midas-501f0c75.pt", "lllyasviel/Annotators on Hugging Face: "
                                                                 "dpt_hybrid-midas-501f0c75.pt"),
                         ("dpt_large-midas-2f21e586.pt", "isl-org/MiDaS on GitHub"),
                         ("ZoeD_M12_NK.pt", "isl-org/ZoeDepth on GitHub")):
        with pytest.raises(FileNotFoundError) as err:
            nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
        message = str(err.value)
        assert name in message and str(models_dir / "annotators") in message and source in message, message
    broken = models_dir / "depth_models" / "broken-depth"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json") as err:
        nodes["AVCDepthMap"].run(clip, "broken-depth", 64, "per clip", "cpu")
    assert "depth-anything/Depth-Anything-V2-Small-hf" in str(err.value)
    with pytest.raises(InputError, match="MiDaS .* or ZoeDepth"):
        nodes["AVCDepthMap"].run(clip, "body_pose_model.pth", 64, "per clip", "cpu")


def test_require_package_and_file_say_what_to_do(tmp_path):
    with pytest.raises(ImportError, match=re.escape("pip install controlnet-aux==0.0.10")):
        weights.require_package("controlnet_aux_not_here", "controlnet-aux==0.0.10", "MiDaS depth")
    with pytest.raises(FileNotFoundError) as err:
        weights.require_file("annotators", "facenet.pth", "lllyasviel/Annotators on Hugging Face: facenet.pth",
                             folders=[tmp_path / "a", tmp_path / "b"])
    assert re.search(r"facenet\.pth.*not found.*/a, .*/b.*Get it from lllyasviel/Annotators.*ComfyUI/models/"
                     r"annotators/", str(err.value))
    (tmp_path / "b" / "facenet.pth").parent.mkdir()
    (tmp_path / "b" / "facenet.pth").write_bytes(b"x")
    assert weights.require_file("annotators", "facenet.pth", "", folders=[tmp_path / "a", tmp_path / "b"]) == \
        tmp_path / "b" / "facenet.pth"


def test_a_depth_model_that_returns_nan_is_refused():
    from avcontrol_core.preprocess.depth import estimate_depth

    class Broken:
        name, low_percentile, high_percentile = "broken.pt", 0.0, 100.0

        def module(self):
            return torch.nn.Identity()

        def predict(self, frame, resolution, device):
            return np.full(frame.shape[:2], np.nan, np.float32)

    with pytest.raises(CoreInputError, match="broken.pt.*NaN"):
        estimate_depth(Broken(), torch.rand(1, 64, 64, 3))
