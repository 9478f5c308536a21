"""Visual preprocessors: IMAGE batches (video frames) in, control pictures (IMAGE) or masks (MASK) out, ready for the
control nodes. Edges, depth, pose (DWPose / OpenPose / MediaPipe), inpaint / outpaint masks, and fitting a clip to
the LTX-2 grid.

Weights come only from ComfyUI's model folders (``annotators``, ``depth_models``, ``dwpose``); a missing file fails
with its name, the folder and where to get it, and nothing is ever downloaded. Models load once and stay cached
(on the CPU between runs) until ComfyUI needs the memory. Every node shows progress per frame and honours Cancel.
"""

from __future__ import annotations

from . import host
from .common import DEVICE_CHOICES, category

CATEGORY = category("preprocess")
_IMAGE_TIP = "Frames to process (an IMAGE batch: a video's frames or a single image)."
_DETECT_TIP = ("Short side, in pixels, the frames are scaled to for detection (64-2048); the result is drawn at "
               "that size and scaled back to the frames' size. Higher finds smaller people, slower.")
_DEVICE_TIP = "Where the model runs. auto: ComfyUI's device (your GPU). Between runs the model waits on the CPU."


def _steps(total: int, desc: str):
    """(progress bar, step): step() after each frame updates the bar and raises if the user pressed Cancel."""
    host.check_interrupted()
    bar = host.progress_bar(total, desc)

    def step() -> None:
        bar.update(1)
        host.check_interrupted()

    return bar, step


CHUNK = 16  # frames per progress step of the whole-batch operations (masks, padding, fill)


def _by_chunks(frames: int, desc: str, run):
    """run(start, stop) over CHUNK-frame slices with a labelled bar and Cancel between slices; the results (a
    tensor, or a tuple of tensors) are joined along frames."""
    import torch

    bar, step = _steps(max(1, -(-frames // CHUNK)), desc)
    parts = []
    with bar:
        for start in range(0, max(frames, 1), CHUNK):
            parts.append(run(start, min(start + CHUNK, frames)))
            step()
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


def _device(name: str):
    from .loaders import resolve_device

    return resolve_device(name)


def _choices(found: list[str], defaults: tuple[str, ...], prefer: tuple[str, ...] = ()) -> list[str]:
    """The files found (those whose name holds one of ``prefer`` first), then the expected names still missing:
    choosing a missing one fails with where to get it, instead of an empty list."""
    low = [n.lower() for n in found]
    first = [n for n, lo in zip(found, low) if any(p in lo for p in prefer)]
    rest = [n for n in found if n not in first]
    listed = first + rest
    return listed + [d for d in defaults if d not in listed]


# --------------------------------------------------------------------------------------------
# Edges
# --------------------------------------------------------------------------------------------


class AVCCannyEdges:
    """Canny edges (OpenCV, no weights): white edges on black, the frames' size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "low_threshold": ("INT", {"default": 100, "min": 0, "max": 1000, "tooltip":
                    "Gradient strength below which a pixel is never an edge (0 to high_threshold). "
                    "Lower: more, fainter edges."}),
                "high_threshold": ("INT", {"default": 200, "min": 0, "max": 1000, "tooltip":
                    "Gradient strength above which a pixel is surely an edge; weaker pixels count only when "
                    "connected to one. Lower: more edges."}),
                "blur": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20.0, "step": 0.1, "tooltip":
                    "Gaussian blur (sigma, pixels) before detection, 0 = none. Removes texture and noise edges."}),
                "thickness": ("INT", {"default": 1, "min": 1, "max": 9, "tooltip":
                    "Edge width in pixels (1 = Canny's one-pixel lines; more dilates them)."}),
                "l2_gradient": ("BOOLEAN", {"default": False, "tooltip":
                    "Use the exact (L2) gradient magnitude instead of OpenCV's faster L1 approximation."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("edges",)
    OUTPUT_TOOLTIPS = ("White Canny edges on black, one frame per input frame; connect to a canny / edges control.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Canny edge maps of every frame (OpenCV on the colour frames, as controlnet-aux does)."

    def run(self, image, low_threshold, high_threshold, blur, thickness, l2_gradient):
        from ..avcontrol_core.api import canny_frames

        bar, step = _steps(image.shape[0], "canny")
        with bar:
            return (canny_frames(image, low_threshold, high_threshold, blur, l2_gradient, thickness, step),)


class AVCSoftEdges:
    """Soft edges (Sobel gradient magnitude, no weights)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "blur": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 20.0, "step": 0.1, "tooltip":
                    "Gaussian blur (sigma, pixels) before the gradient, 0 = none."}),
                "gamma": ("FLOAT", {"default": 0.6, "min": 0.1, "max": 3.0, "step": 0.05, "tooltip":
                    "Below 1 brightens faint edges, above 1 keeps only strong ones (each frame's strongest "
                    "edge is white)."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("edges",)
    OUTPUT_TOOLTIPS = ("Grey soft edges on black, one frame per input frame.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Soft edge maps (Sobel gradient magnitude of the luminance) of every frame."

    def run(self, image, blur, gamma):
        from ..avcontrol_core.api import soft_edge_frames

        bar, step = _steps(image.shape[0], "soft edges")
        with bar:
            return (soft_edge_frames(image, blur, gamma, step),)


# --------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------


class AVCDepthMap:
    """Depth maps from MiDaS / ZoeDepth files (controlnet-aux) or a transformers depth folder (Depth Anything)."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..avcontrol_core.api import DEPTH_ANNOTATORS, DEPTH_MODELS, depth_choices

        names = depth_choices(host.list_models(DEPTH_ANNOTATORS), host.list_models(DEPTH_MODELS))
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "model": (names, {"default": names[0], "tooltip":
                    "Folders in models/depth_models: transformers depth models, e.g. Depth-Anything-V2-Small-hf "
                    "(the whole depth-anything/Depth-Anything-V2-Small-hf repository from Hugging Face). Files in "
                    "models/annotators: dpt_hybrid-midas-501f0c75.pt (MiDaS) or ZoeD_M12_N.pt (ZoeDepth), from "
                    "lllyasviel/Annotators on Hugging Face (need controlnet-aux). Nothing is downloaded for you."}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 32, "tooltip":
                    "Short side, in pixels, the model sees (MiDaS / ZoeDepth round it to 64, Depth Anything to "
                    "14). The depth map is scaled back to the frames' size."}),
                "normalize": (["per clip", "per frame"], {"default": "per clip", "tooltip":
                    "per clip: one brightness scale for the whole clip (no flicker); per frame: each frame "
                    "stretched to black..white (single images)."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip": _DEVICE_TIP}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("depth",)
    OUTPUT_TOOLTIPS = ("Grey depth frames, near = white, the frames' size; connect to a depth control.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Depth map of every frame (MiDaS, ZoeDepth or Depth Anything), from local model files only."

    def run(self, image, model, resolution, normalize, device):
        from ..avcontrol_core.api import estimate_depth, load_depth_model

        dev = _device(device)
        estimator = load_depth_model(model, host.resolve_model)
        bar, step = _steps(image.shape[0], "depth")
        with bar:
            return (estimate_depth(estimator, image, resolution, normalize, dev, step),)


# --------------------------------------------------------------------------------------------
# Pose
# --------------------------------------------------------------------------------------------

_BODY_TIP = "Draw the body skeleton (18 OpenPose keypoints: head, neck, arms, legs)."
_HANDS_TIP = "Draw the hands (21 keypoints each)."
_FACE_TIP = "Draw the face (68 white dots)."


class AVCDWPose:
    """DWPose whole-body pose from its ONNX files (onnxruntime; no mmcv)."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..avcontrol_core.api import DWPOSE, DWPOSE_SOURCES

        found = host.list_models(DWPOSE)
        det = _choices(found, (DWPOSE_SOURCES["det"].filename,), ("yolo",))
        pose = _choices(found, (DWPOSE_SOURCES["pose"].filename,), ("dw-", "rtmpose", "ucoco"))
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "detector": (det, {"default": det[0], "tooltip":
                    "Person detector from models/dwpose: yolox_l.onnx from yzd-v/DWPose on Hugging Face."}),
                "estimator": (pose, {"default": pose[0], "tooltip":
                    "Whole-body keypoint model from models/dwpose: dw-ll_ucoco_384.onnx from yzd-v/DWPose on "
                    "Hugging Face."}),
                "detect_resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                                              "tooltip": _DETECT_TIP}),
                "body": ("BOOLEAN", {"default": True, "tooltip": _BODY_TIP}),
                "hands": ("BOOLEAN", {"default": True, "tooltip": _HANDS_TIP}),
                "face": ("BOOLEAN", {"default": True, "tooltip": _FACE_TIP}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip":
                    "auto / cuda: onnxruntime's CUDA provider when onnxruntime-gpu is installed, else the CPU."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("OpenPose-style skeletons on black, the frames' size; connect to a pose control.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "DWPose skeletons (body, hands, face) of every frame, from the two DWPose ONNX files."

    def run(self, image, detector, estimator, detect_resolution, body, hands, face, device):
        from ..avcontrol_core.api import dwpose_frames, load_dwpose

        model = load_dwpose(detector, estimator, host.resolve_model, _device(device))
        bar, step = _steps(image.shape[0], "dwpose")
        with bar:
            return (dwpose_frames(model, image, detect_resolution, body, hands, face, step),)


class AVCOpenpose:
    """OpenPose (controlnet-aux) from lllyasviel/Annotators' .pth files."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..avcontrol_core.api import OPENPOSE_SOURCES, POSE_ANNOTATORS

        found = [n for n in host.list_models(POSE_ANNOTATORS) if "body_pose" in n.lower()]
        names = _choices(found, (OPENPOSE_SOURCES["body"].filename,))
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "body_model": (names, {"default": names[0], "tooltip":
                    "body_pose_model.pth in models/annotators (lllyasviel/Annotators on Hugging Face). Hands need "
                    "hand_pose_model.pth and the face facenet.pth in the same folder."}),
                "detect_resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                                              "tooltip": _DETECT_TIP}),
                "body": ("BOOLEAN", {"default": True, "tooltip": _BODY_TIP}),
                "hands": ("BOOLEAN", {"default": False, "tooltip": _HANDS_TIP + " Needs hand_pose_model.pth."}),
                "face": ("BOOLEAN", {"default": False, "tooltip": _FACE_TIP + " Needs facenet.pth."}),
                "device": (DEVICE_CHOICES, {"default": "auto", "tooltip": _DEVICE_TIP}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("OpenPose skeletons on black, the frames' size; connect to a pose control.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "OpenPose skeletons of every frame (controlnet-aux), from local .pth files."

    def run(self, image, body_model, detect_resolution, body, hands, face, device):
        from ..avcontrol_core.api import OpenposeModels, openpose_frames

        models = OpenposeModels(body_model, host.resolve_model, hands, face)
        bar, step = _steps(image.shape[0], "openpose")
        with bar:
            return (openpose_frames(models, image, detect_resolution, body, hands, face, _device(device), step),)


class AVCMediaPipePose:
    """MediaPipe pose: the light CPU option, weights inside the mediapipe wheel; one person."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "detect_resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                                              "tooltip": _DETECT_TIP}),
                "body": ("BOOLEAN", {"default": True, "tooltip": _BODY_TIP}),
                "hands": ("BOOLEAN", {"default": False, "tooltip": _HANDS_TIP + " Uses MediaPipe Holistic."}),
                "face": ("BOOLEAN", {"default": False, "tooltip":
                    _FACE_TIP + " Uses MediaPipe Holistic; 68 points picked from its face mesh."}),
                "tracking": ("BOOLEAN", {"default": True, "tooltip":
                    "Treat the frames as a video: MediaPipe follows the person from frame to frame (steadier, "
                    "faster). Off: every frame is detected on its own (unrelated images)."}),
                "min_confidence": ("FLOAT", {"default": 0.5, "min": 0.05, "max": 0.95, "step": 0.05, "tooltip":
                    "Detection / tracking confidence and keypoint visibility needed to draw (0.05-0.95)."}),
            },
            # optional, so workflows saved before it keep loading (one person)
            "optional": {
                "max_people": ("INT", {"default": 1, "min": 1, "max": 32, "tooltip":
                    "1: MediaPipe's pose model, which follows one person. Above 1: up to this many people per "
                    "frame, each found by its face (MediaPipe's face detector, inside the wheel) and posed in the "
                    "region below it; people facing away are missed (for crowds, DWPose finds bodies)."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("OpenPose-style skeletons on black (one person, or up to max_people), the frames' size.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = ("MediaPipe pose (CPU, no model files to fetch) drawn as an OpenPose skeleton: one person, or "
                   "up to max_people found by their faces. For crowds and people seen from behind, use DWPose.")

    def run(self, image, detect_resolution, body, hands, face, tracking, min_confidence, max_people=1):
        from ..avcontrol_core.api import mediapipe_frames

        bar, step = _steps(image.shape[0], "mediapipe pose")
        with bar:
            return (mediapipe_frames(image, detect_resolution, body, hands, face, tracking, min_confidence, step,
                                     max_people=max_people),)


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------

_FEATHER_TIP = "Soft edge width in pixels (0 = hard edge)."


class AVCMaskFromBox:
    """A rectangular MASK (1 inside) over every frame of an image batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Frames whose size and count the mask takes."}),
                "x": ("INT", {"default": 0, "min": -8192, "max": 8192, "tooltip": "Box left edge, pixels."}),
                "y": ("INT", {"default": 0, "min": -8192, "max": 8192, "tooltip": "Box top edge, pixels."}),
                "width": ("INT", {"default": 256, "min": 1, "max": 8192, "tooltip": "Box width, pixels."}),
                "height": ("INT", {"default": 256, "min": 1, "max": 8192, "tooltip": "Box height, pixels."}),
                "feather": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0,
                                      "tooltip": _FEATHER_TIP}),
                "invert": ("BOOLEAN", {"default": False, "tooltip": "1 outside the box instead of inside."}),
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 where the model should generate (inpaint), one mask per frame.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Inpaint mask from a box (the box clipped to the frame)."

    def run(self, image, x, y, width, height, feather, invert):
        from ..avcontrol_core.api import box_mask, check_images

        frames, h, w = check_images(image).shape[:3]
        return (_by_chunks(frames, "mask from box",
                           lambda a, b: box_mask(b - a, h, w, x, y, width, height, feather, invert)),)


class AVCMaskFromThreshold:
    """A MASK of the pixels brighter than a threshold (a matte, a green screen channel...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Frames (or a matte video) to threshold, frame by frame."}),
                "channel": (["luminance", "red", "green", "blue", "max", "min"], {"default": "luminance",
                    "tooltip": "Value compared with the threshold: luminance, one colour channel, or the max / "
                    "min over the channels."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                    "Pixels above this value (0..1) are masked."}),
                "invert": ("BOOLEAN", {"default": False, "tooltip": "Mask the pixels at or below instead."}),
                "grow": ("INT", {"default": 0, "min": -256, "max": 256, "tooltip":
                    "Grow the mask by this many pixels (negative shrinks) before feathering."}),
                "feather": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0,
                                      "tooltip": _FEATHER_TIP}),
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 where the model should generate, one mask per frame.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Inpaint mask from a threshold over an image batch, grown and feathered."

    def run(self, image, channel, threshold, invert, grow, feather):
        from ..avcontrol_core.api import check_images, threshold_mask

        images = check_images(image)
        return (_by_chunks(images.shape[0], "mask from threshold",
                           lambda a, b: threshold_mask(images[a:b], threshold, channel, invert, grow, feather)),)


class AVCOutpaintPad:
    """Pads frames to a larger canvas for outpainting; the MASK marks the new area."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..avcontrol_core.api import ALIGN_X, ALIGN_Y, ASPECTS, FILLS

        side = "Pixels added on the {} (ignored when target_aspect is set)."
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "left": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": side.format("left")}),
                "right": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": side.format("right")}),
                "top": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": side.format("top")}),
                "bottom": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": side.format("bottom")}),
                "target_aspect": (list(ASPECTS), {"default": "none", "tooltip":
                    "Pad out to this width:height instead of the pixel amounts (none: use them). Only one "
                    "direction grows; nothing is cropped."}),
                "align_x": (list(ALIGN_X), {"default": "center", "tooltip":
                    "With target_aspect: where the picture stays horizontally (left: all new area on the right)."}),
                "align_y": (list(ALIGN_Y), {"default": "center", "tooltip":
                    "With target_aspect: where the picture stays vertically."}),
                "fill": (list(FILLS), {"default": "edge", "tooltip":
                    "What the new area shows before generation: edge pixels stretched, a mirror image, or flat "
                    "grey / black / white."}),
                "feather": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0, "tooltip":
                    "Let the mask ramp this many pixels into the picture, so the seam is regenerated softly "
                    "(the picture itself is unchanged)."}),
            }
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The frames on the larger canvas.", "1 on the new area (and the feathered seam).")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Outpaint: pad frames by pixels per side or to a target aspect; MASK marks what to generate."

    def run(self, image, left, right, top, bottom, target_aspect, align_x, align_y, fill, feather):
        from ..avcontrol_core.api import aspect_padding, check_images, outpaint

        images = check_images(image)
        if target_aspect != "none":
            left, right, top, bottom = aspect_padding(images.shape[1], images.shape[2], target_aspect,
                                                      align_x, align_y)
        return _by_chunks(images.shape[0], "outpaint pad",
                          lambda a, b: outpaint(images[a:b], left, right, top, bottom, fill, feather))


class AVCFillMasked:
    """Blanks the masked area of frames (the usual input of an inpaint control)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "mask": ("MASK", {"tooltip": "1 where to blank; one mask for all frames or one per frame, the "
                                  "frames' size."}),
                "fill": (["grey", "black", "white"], {"default": "grey", "tooltip":
                    "Colour of the blanked area (soft mask values blend)."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The frames with the masked area blanked.",)
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "Inpaint: blank the masked area of every frame with grey, black or white."

    def run(self, image, mask, fill):
        from ..avcontrol_core.api import check_images, check_mask, fill_masked

        images, masks = check_images(image), check_mask(mask)
        if masks.shape[0] not in (1, images.shape[0]):  # as fill_masked says it, before any frame is touched
            return (fill_masked(images, masks, fill),)
        per_frame = masks.shape[0] == images.shape[0] and images.shape[0] > 1
        return (_by_chunks(images.shape[0], "inpaint fill",
                           lambda a, b: fill_masked(images[a:b], masks[a:b] if per_frame else masks, fill)),)


# --------------------------------------------------------------------------------------------
# Fit to the model grid
# --------------------------------------------------------------------------------------------


class AVCFitClip:
    """Fits a clip to LTX-2's grid (sides multiple of 32, frames 8n+1, optional frame-rate change) and says what
    it did."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": _IMAGE_TIP}),
                "width": ("INT", {"default": 768, "min": 0, "max": 8192, "step": 32, "tooltip":
                    "Target width, a multiple of 32; 0 = from the clip (keeps its aspect with height, or its own "
                    "width rounded to 32)."}),
                "height": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 32, "tooltip":
                    "Target height, a multiple of 32; 0 = from the clip."}),
                "resize": (["crop", "pad", "stretch"], {"default": "crop", "tooltip":
                    "crop: scale to cover and cut the centre; pad: scale to fit and add black bars; "
                    "stretch: scale each side on its own."}),
                "source_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001, "tooltip":
                    "The clip's frame rate; 0 = already target_fps (no resampling). When it differs, frames are "
                    "picked by time so the clip keeps its duration."}),
                "target_fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.001, "tooltip":
                    "Frame rate to generate at (1-120); also the fps output."}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 1025, "step": 8, "tooltip":
                    "Keep at most this many frames: 0 = all, else 8n+1 (9, 17, ..., 121, ...)."}),
                "frames_rule": (["drop", "repeat"], {"default": "drop", "tooltip":
                    "To reach 8n+1 frames: drop the last frames, or repeat the last frame."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "A mask to transform exactly like the frames (one for all frames or "
                                  "one per frame). Padded bars get 0."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT", "INT", "STRING")
    RETURN_NAMES = ("image", "mask", "fps", "frames", "report")
    OUTPUT_TOOLTIPS = ("The fitted frames.", "The fitted mask (zeros when none was given).", "target_fps.",
                       "Frame count (8n+1).", "What was done, in words.")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Resize / crop / pad a clip to sides that are multiples of 32, make its frame count 8n+1, "
                   "optionally change its frame rate; the report says what was done.")

    def run(self, image, width, height, resize, source_fps, target_fps, max_frames, frames_rule, mask=None):
        import torch

        from ..avcontrol_core.api import fit_clip, plan_frames

        total = len(plan_frames(int(image.shape[0]), source_fps, target_fps, max_frames, frames_rule).indices)
        bar, step = _steps(total, "fit clip")
        with bar:
            result = fit_clip(image, width, height, resize, source_fps, target_fps, max_frames, frames_rule,
                              mask, step)
        out_mask = result.mask if result.mask is not None else torch.zeros(result.images.shape[:3])
        print(f"[AVControl] Fit Clip: {result.report}")
        return {"ui": {"text": [result.report]},
                "result": (result.images, out_mask, result.fps, int(result.images.shape[0]), result.report)}
