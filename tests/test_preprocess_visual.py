"""Visual preprocessors, offline and real where possible.

- Canny / soft edges on real photos (scikit-image's camera and astronaut), against OpenCV itself.
- MediaPipe pose (weights inside its wheel) finds the astronaut.
- Depth (Depth Anything through transformers, MiDaS through controlnet-aux), OpenPose and DWPose load model files
  written here in the exact format of the real ones (random or crafted weights) from a models folder, through the
  nodes, i.e. the code path users hit. DWPose's ONNX pair is crafted so the person box and every keypoint are
  known, which checks its whole pre/post-processing; the skeleton drawing is pixel-identical to controlnet-aux's.
- Masks and fitting to the grid against values computed by hand; missing weights fail with file, folder, source.

ZoeDepth (BEiT-L, 345M parameters) takes minutes on a CPU: its test runs with AVCONTROL_SLOW_TESTS=1.
"""

from __future__ import annotations

import importlib
import math
import os
import re

import numpy as np
import pytest
import torch

from avcontrol_core.errors import InputError as CoreInputError
from avcontrol_core.preprocess import fit, masks
from avcontrol_core.preprocess.pose import Person, draw_people
from avcontrol_core.tiny import write_tiny_depth_anything
from tests.workflow_format import PACK_PACKAGE, load_pack, pack_node_classes

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

load_pack()
InputError = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.errors").InputError
weights = importlib.import_module(f"{PACK_PACKAGE}.avcontrol_core.preprocess.weights")
host = importlib.import_module(f"{PACK_PACKAGE}.nodes.host")
VISUAL = ("AVCCannyEdges", "AVCSoftEdges", "AVCDepthMap", "AVCDWPose", "AVCOpenpose", "AVCMediaPipePose",
          "AVCMaskFromBox", "AVCMaskFromThreshold", "AVCOutpaintPad", "AVCFillMasked", "AVCFitClip")


def as_image(array: np.ndarray) -> torch.Tensor:
    """uint8 H x W (x 3) -> IMAGE [1, H, W, 3]."""
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(array.copy()).float()[None] / 255.0


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    return as_image(skdata.astronaut())


@pytest.fixture(scope="session")
def camera() -> torch.Tensor:
    return as_image(skdata.camera())


# --------------------------------------------------------------------------------------------
# Model files in the real formats
# --------------------------------------------------------------------------------------------


def random_state(module_cls, *args, std=0.02, dtype=torch.float16, seed=0, **kwargs) -> dict:
    """A random state dict with the keys and shapes of ``module_cls(...)`` (built on the meta device: no init):
    matrices ~ N(0, std), 1-D norm gains and running variances 1, other vectors 0."""
    with torch.device("meta"):
        module = module_cls(*args, **kwargs)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            t = torch.randn(value.shape, generator=g) * std if value.dim() > 1 else torch.zeros(value.shape)
            if key.endswith("running_var") or key.endswith(".weight") and value.dim() == 1:
                t = torch.ones(value.shape)
            out[key] = t.to(dtype)
        else:
            out[key] = torch.zeros(value.shape, dtype=value.dtype)
    return out


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path, input_name: str, output_names: list[str]):
    """torch.onnx.export without the ``onnx`` package (only needed to insert onnxscript functions; none here)."""
    from torch.onnx._internal.torchscript_exporter import onnx_proto_utils

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_proto_utils, "_add_onnxscript_fn", lambda proto, custom_opsets: proto)
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=output_names,
                          opset_version=17, dynamo=False)


class Constant(torch.nn.Module):
    """Fixed outputs whatever the input (a crafted 'trained' model): outputs[i] + 0 * mean(input)."""

    def __init__(self, *outputs: torch.Tensor):
        super().__init__()
        for i, o in enumerate(outputs):
            self.register_buffer(f"out{i}", o)
        self.n = len(outputs)

    def forward(self, x):
        zero = x.mean() * 0.0
        outs = tuple(getattr(self, f"out{i}") + zero for i in range(self.n))
        return outs if self.n > 1 else outs[0]


# The crafted DWPose scene: a 256 x 256 frame, one person box, COCO-WholeBody keypoints at known places of the
# 288 x 384 crop (u, v); only the 17 body points, the left wrist of the hand and one face point are seen.
FRAME = 256
BOX = (64.0, 32.0, 192.0, 224.0)
COCO_BODY_UV = [(144, 60), (154, 50), (134, 50), (164, 55), (124, 55), (184, 110), (104, 110), (204, 170),
                (84, 170), (214, 225), (74, 225), (169, 230), (119, 230), (174, 300), (114, 300), (179, 370),
                (109, 370)]
EXTRA_UV = {91: (214, 232), 23 + 30: (144, 70)}  # left hand's wrist, face point 30 (nose tip)
COCO_TO_OPENPOSE = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]


def uv_to_image(u: float, v: float) -> tuple[float, float]:
    """Crop pixel -> frame pixel for BOX: centre (128, 128), scale (180, 240) after 1.25x and the 3:4 aspect."""
    return u / 288 * 180 + 128 - 90, v / 384 * 240 + 128 - 120


def write_dwpose(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    det = torch.zeros(1, 8400, 85)
    cell = 6400 + 1600 + 10 * 20 + 10  # stride-32 grid cell (10, 10): the box centre (320, 320) of the letterbox
    r = 640 / FRAME
    w, h = (BOX[2] - BOX[0]) * r, (BOX[3] - BOX[1]) * r
    det[0, cell, :6] = torch.tensor([0.0, 0.0, math.log(w / 32), math.log(h / 32), 1.0, 0.95])
    export_onnx(Constant(det), torch.zeros(1, 3, 640, 640), folder / "yolox_l.onnx", "images", ["output"])
    sx, sy = torch.zeros(1, 133, 576), torch.zeros(1, 133, 768)
    for k, (u, v) in list(enumerate(COCO_BODY_UV)) + list(EXTRA_UV.items()):
        sx[0, k, 2 * u], sy[0, k, 2 * v] = 0.9, 0.9
    export_onnx(Constant(sx, sy), torch.zeros(1, 3, 384, 288), folder / "dw-ll_ucoco_384.onnx", "input",
                ["simcc_x", "simcc_y"])


def write_openpose(folder) -> None:
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    folder.mkdir(parents=True, exist_ok=True)
    strip = lambda sd: {k.split(".", 1)[1]: v for k, v in sd.items()}  # noqa: E731 -- the files' key layout
    # tiny weights, zero biases: the heatmaps stay below OpenPose's thresholds (no random "people")
    torch.save(strip(random_state(bodypose_model, std=1e-3)), folder / "body_pose_model.pth")
    torch.save(strip(random_state(handpose_model, std=1e-3)), folder / "hand_pose_model.pth")
    torch.save(random_state(FaceNet, std=1e-3), folder / "facenet.pth")


def write_midas(folder) -> None:
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    folder.mkdir(parents=True, exist_ok=True)
    state = random_state(DPTDepthModel, path=None, backbone="vitb_rn50_384", non_negative=True)
    torch.save(state, folder / "dpt_hybrid-midas-501f0c75.pt")


def write_depth_anything(folder) -> None:
    write_tiny_depth_anything(folder)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("preprocess_models")
    write_dwpose(root / "dwpose")
    write_depth_anything(root / "depth_models" / "Depth-Anything-V2-Small-hf")
    return root


@pytest.fixture(scope="session")
def aux_models(models_dir):
    """controlnet-aux files (imports controlnet-aux: ~4 s, once)."""
    pytest.importorskip("controlnet_aux")
    write_openpose(models_dir / "annotators")
    write_midas(models_dir / "annotators")
    return models_dir


@pytest.fixture()
def nodes(models_dir, monkeypatch):
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(models_dir))
    classes = pack_node_classes()
    return {name: classes[name]() for name in VISUAL}


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
# Pose
# --------------------------------------------------------------------------------------------


def test_mediapipe_finds_the_astronaut(nodes, astronaut):
    pytest.importorskip("mediapipe")
    from avcontrol_core.preprocess.pose import mediapipe_frames

    people: list = []
    pose = mediapipe_frames(astronaut, 512, tracking=False, people=people)
    person = people[0]
    assert person is not None
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


def test_dwpose_onnx_pipeline_puts_every_keypoint_where_the_models_say(nodes, models_dir):
    pytest.importorskip("onnxruntime")
    from avcontrol_core.preprocess.pose import load_dwpose

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
    weights.clear()
    loads = weights.CACHE.loads
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    assert weights.CACHE.loads == loads + 1
    config = models_dir / "depth_models" / name / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    assert weights.CACHE.loads == loads + 2 and len(weights.CACHE) == 1  # the stale copy was dropped

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
    nodes["AVCDepthMap"].run(clip, name, 64, "per clip", "cpu")
    assert len(weights.CACHE) == 1
    mm.free_memory(10 ** 12, torch.device("cuda"))
    assert len(weights.CACHE) == 0
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
