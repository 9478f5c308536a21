"""DWPose from its two ONNX files through onnxruntime (no mmcv / mmpose / mmdet).

- detector ``yolox_l.onnx``: input ``[1, 3, 640, 640]`` (RGB 0..255, letterboxed top-left on grey 114), output
  ``[1, 8400, 85]`` (YOLOX grid offsets at strides 8 / 16 / 32: cx, cy, log w, log h, objectness, 80 classes).
- estimator ``dw-ll_ucoco_384.onnx``: input ``[1, 3, 384, 288]`` (a person box cropped by an affine warp,
  ImageNet-normalized), outputs ``simcc_x [1, 133, 576]`` and ``simcc_y [1, 133, 768]`` (SimCC, split ratio 2).

The pre- and post-processing is DWPose's own ONNX pipeline (IDEA-Research/DWPose, ``onnxdet.py`` /
``onnxpose.py``), which comfyui_controlnet_aux also uses; keypoints come out in COCO-WholeBody order (133) and
are turned into OpenPose order (body 18 with the neck, feet 6, face 68, two hands 21) as controlnet-aux does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .frames import Step
from .pose import Person, Resolver, _cv2, draw_people, render_frames
from .weights import WeightSource, cached, require_file, require_package

DWPOSE = "dwpose"
ONNXRUNTIME = "onnxruntime"  # or onnxruntime-gpu for CUDA
SOURCES = {
    "det": WeightSource("yolox_l.onnx", "yzd-v/DWPose"),
    "pose": WeightSource("dw-ll_ucoco_384.onnx", "yzd-v/DWPose"),
}
DET_SIZE = (640, 640)
KEYPOINT_THRESHOLD = 0.3
MMPOSE_TO_OPENPOSE = ([17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3],
                      [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17])
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def providers_for(device) -> list[str]:
    """onnxruntime providers for ``device``: CUDA first when asked for and available, else the CPU."""
    ort = require_package("onnxruntime", ONNXRUNTIME, "DWPose")
    available = ort.get_available_providers()
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# --------------------------------------------------------------------------------------------
# Person detection (YOLOX)
# --------------------------------------------------------------------------------------------


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


def _letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    cv2 = _cv2()
    padded = np.full((size[0], size[1], 3), 114, dtype=np.uint8)
    r = min(size[0] / image.shape[0], size[1] / image.shape[1])
    h, w = int(image.shape[0] * r), int(image.shape[1] * r)
    padded[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), r


def _decode_grid(outputs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    grids, strides = [], []
    for stride in (8, 16, 32):
        xv, yv = np.meshgrid(np.arange(size[1] // stride), np.arange(size[0] // stride))
        grid = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(grid)
        strides.append(np.full((*grid.shape[:2], 1), stride))
    grid, stride = np.concatenate(grids, 1), np.concatenate(strides, 1)
    outputs = outputs.copy()
    outputs[..., :2] = (outputs[..., :2] + grid) * stride
    outputs[..., 2:4] = np.exp(outputs[..., 2:4]) * stride
    return outputs


def detect_people(session, image: np.ndarray, size: tuple[int, int] = DET_SIZE) -> np.ndarray:
    """Person boxes (N, 4) x1 y1 x2 y2 in ``image`` pixels: class 0 above 0.3 after NMS (0.45)."""
    blob, ratio = _letterbox(image, size)
    raw = session.run(None, {session.get_inputs()[0].name: blob[None]})[0]
    predictions = _decode_grid(raw, size)[0]
    boxes, scores = predictions[:, :4], predictions[:, 4:5] * predictions[:, 5:]
    xyxy = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                     boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2], 1) / ratio
    person = scores[:, 0]
    valid = person > 0.1
    if not valid.any():
        return np.zeros((0, 4))
    candidates, candidate_scores = xyxy[valid], person[valid]
    keep = _nms(candidates, candidate_scores, 0.45)
    boxes, scores = candidates[keep], candidate_scores[keep]
    return boxes[scores > 0.3]


# --------------------------------------------------------------------------------------------
# Keypoints (DWPose / RTMPose, SimCC)
# --------------------------------------------------------------------------------------------


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.r_[-d[1], d[0]]


def warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """The affine map of the box (center, scale = w, h) onto the model input (w, h), no rotation."""
    cv2 = _cv2()
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, scale[0] * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def crop_person(image: np.ndarray, box: np.ndarray, input_size: tuple[int, int]):
    """(normalized crop [3, h, w], center, scale) of one person box, padded 1.25x to the model's aspect."""
    cv2 = _cv2()
    w, h = input_size
    x1, y1, x2, y2 = box
    center = np.array([x1 + x2, y1 + y2]) * 0.5
    scale = np.array([x2 - x1, y2 - y1]) * 1.25
    aspect = w / h
    scale = np.array([scale[0], scale[0] / aspect]) if scale[0] > scale[1] * aspect \
        else np.array([scale[1] * aspect, scale[1]])
    crop = cv2.warpAffine(image, warp_matrix(center, scale, (w, h)), (int(w), int(h)), flags=cv2.INTER_LINEAR)
    crop = (crop - MEAN) / STD
    return crop.transpose(2, 0, 1).astype(np.float32), center, scale


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0):
    """(keypoints (N, K, 2) in model-input pixels, scores (N, K)) from SimCC logits; -1 where no maximum > 0."""
    n, k, _ = simcc_x.shape
    sx, sy = simcc_x.reshape(n * k, -1), simcc_y.reshape(n * k, -1)
    locs = np.stack((np.argmax(sx, axis=1), np.argmax(sy, axis=1)), axis=-1).astype(np.float32)
    vals = np.minimum(np.amax(sx, axis=1), np.amax(sy, axis=1))
    locs[vals <= 0.0] = -1
    return locs.reshape(n, k, 2) / split_ratio, vals.reshape(n, k)


def estimate_keypoints(session, image: np.ndarray, boxes: np.ndarray):
    """Whole-body keypoints (N, 133, 2) in image pixels and their scores (N, 133), one row per box."""
    h, w = session.get_inputs()[0].shape[2:]
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    keypoints, scores = [], []
    for box in boxes:
        crop, center, scale = crop_person(image, box, (w, h))
        simcc_x, simcc_y = session.run(outputs, {input_name: crop[None]})[:2]
        kp, sc = simcc_decode(simcc_x, simcc_y)
        keypoints.append(kp[0] / np.array([w, h]) * scale + center - scale / 2)
        scores.append(sc[0])
    if not keypoints:
        return np.zeros((0, 133, 2)), np.zeros((0, 133))
    return np.array(keypoints), np.array(scores)


def to_openpose(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int,
                threshold: float = KEYPOINT_THRESHOLD) -> list[Person]:
    """COCO-WholeBody keypoints (pixels) as People in OpenPose order, fractions of the image, NaN below
    ``threshold``; the neck is the shoulders' midpoint, seen when both shoulders are."""
    people = []
    for kp, sc in zip(keypoints, scores):
        info = np.concatenate([kp, sc[:, None]], axis=1)
        neck = info[[5, 6]].mean(axis=0)
        neck[2] = float(info[5, 2] > threshold and info[6, 2] > threshold)
        info = np.insert(info, 17, neck, axis=0)
        mm, op = MMPOSE_TO_OPENPOSE
        info[op] = info[mm]
        xy = info[:, :2] / np.array([float(width), float(height)])
        xy[info[:, 2] <= threshold] = np.nan
        people.append(Person(body=xy[:18], hands=[xy[92:113], xy[113:134]], face=xy[24:92]))
    return people


class DWPose:
    """The two ONNX sessions and the whole pipeline: ``people(rgb_uint8) -> [Person]``."""

    def __init__(self, det_path: Path, pose_path: Path, providers: list[str] | None = None):
        ort = require_package("onnxruntime", ONNXRUNTIME, "DWPose")
        providers = providers or ["CPUExecutionProvider"]
        self.det = ort.InferenceSession(str(det_path), providers=providers)
        self.pose = ort.InferenceSession(str(pose_path), providers=providers)
        det_in, det_out = self.det.get_inputs(), self.det.get_outputs()
        last = det_out[0].shape[-1] if len(det_out) == 1 and len(det_out[0].shape) == 3 else None
        if len(det_in) != 1 or len(det_in[0].shape) != 4 or not (isinstance(last, int) and last >= 6):
            raise InputError(f"detector must be a YOLOX person detector ONNX (input [1,3,640,640], output "
                             f"[1,8400,85]) such as yolox_l.onnx, got {det_path.name}")
        pose_in, pose_out = self.pose.get_inputs(), self.pose.get_outputs()
        if len(pose_in) != 1 or len(pose_in[0].shape) != 4 or len(pose_out) < 2 \
                or not all(isinstance(d, int) for d in pose_in[0].shape[2:]):
            raise InputError(f"estimator must be a DWPose / RTMPose whole-body ONNX (input [1,3,384,288], outputs "
                             f"simcc_x and simcc_y) such as dw-ll_ucoco_384.onnx, got {pose_path.name}")
        self.det_size = tuple(d if isinstance(d, int) else DET_SIZE[i] for i, d in enumerate(det_in[0].shape[2:]))

    def people(self, image: np.ndarray) -> list[Person]:
        boxes = detect_people(self.det, image, self.det_size)
        keypoints, scores = estimate_keypoints(self.pose, image, boxes)
        return to_openpose(keypoints, scores, image.shape[0], image.shape[1])


def load_dwpose(detector: str, estimator: str, resolve: Resolver, device: torch.device | str = "cpu"):
    """The DWPose pair from the ``dwpose`` folder (cached per file pair and onnxruntime provider)."""
    det_path = require_file(DWPOSE, detector, SOURCES["det"].hint(), resolve=resolve)
    pose_path = require_file(DWPOSE, estimator, SOURCES["pose"].hint(), resolve=resolve)
    providers = providers_for(device)
    return cached([det_path, pose_path], lambda: DWPose(det_path, pose_path, providers), "dwpose",
                  tuple(providers))


def dwpose_frames(model, images: torch.Tensor, detect_resolution: int = 512, body: bool = True,
                  hands: bool = True, face: bool = True, step: Step | None = None) -> torch.Tensor:
    """DWPose skeletons of every frame (see ``DWPose``)."""

    def render(frame: np.ndarray) -> np.ndarray:
        return draw_people(model.people(frame), frame.shape[0], frame.shape[1], body, hands, face)

    return render_frames(images, render, detect_resolution, step)
