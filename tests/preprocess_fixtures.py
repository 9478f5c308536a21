"""Shared by the visual preprocessor tests (test_preprocess_edges_masks_fit.py, test_preprocess_models.py):
real photos as IMAGE tensors, model files written in the exact format of the real ones (random or crafted
weights), the crafted DWPose scene, and the models_dir / nodes fixtures (import them into the test module).

DWPose's ONNX pair is crafted so the person box and every keypoint are known, which checks its whole
pre/post-processing.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from avcontrol_core.tiny import write_tiny_depth_anything
from tests.workflow_defs import PACK_PACKAGE, load_pack, pack_node_classes

skdata = pytest.importorskip("skimage.data")

load_pack()
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


# models_dir is imported by two test modules, and pytest runs a session fixture once per module that defines
# (or imports) it: the folder is built once per session and handed to both.
_BUILT: list = []  # [(tmp_path_factory, root)] of this session


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    if not _BUILT or _BUILT[0][0] is not tmp_path_factory:
        root = tmp_path_factory.mktemp("preprocess_models")
        write_dwpose(root / "dwpose")
        write_depth_anything(root / "depth_models" / "Depth-Anything-V2-Small-hf")
        _BUILT[:] = [(tmp_path_factory, root)]
    return _BUILT[0][1]


@pytest.fixture()
def nodes(models_dir, monkeypatch):
    monkeypatch.setenv(host.MODELS_DIR_ENV, str(models_dir))
    classes = pack_node_classes()
    return {name: classes[name]() for name in VISUAL}
