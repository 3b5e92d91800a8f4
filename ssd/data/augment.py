"""The SSD training augmentation (the Caffe release's chain) on uint8 images, NumPy + OpenCV.

Order, as in Caffe: photometric distortion -> expand onto a mean-filled canvas -> patch
sampling (crop) -> resize (warp) to the input size, with an interpolation drawn at random among
linear, area, nearest, cubic and Lanczos (Caffe's train `resize_param`; validation and test
resize bilinearly) -> horizontal flip. Boxes travel along in "xyxy" pixels and leave as
"rel_xyxy" of the output image.

The distributions are Caffe's (weiliu89/caffe, branch `ssd`: `ApplyDistort` and the `Adjust*`
functions of src/caffe/util/im_transforms.cpp, `SampleBBox` / `GenerateBatchSamples` of
src/caffe/util/sampler.cpp, `ExpandImage` / `CropImage` / `TransformAnnotation` of
src/caffe/data_transformer.cpp, the parameters of examples/ssd/ssd_pascal.py), and for fixed
parameters the photometric ops give Caffe's pixels exactly (tests/test_augment_caffe.py holds
both against a NumPy transcription of that source):
- brightness adds, contrast multiplies (about 0), each rounded and saturated like OpenCV's
  `convertTo`; saturation multiplies the S channel and hue adds its delta to the H channel of
  OpenCV's 8-bit HSV (H is 0..179 in 2-degree units, so a delta of U(-18, 18) turns colours by
  up to 36 degrees), each op in its own RGB->HSV->RGB round trip as in Caffe. A shifted H is
  saturated to 0..255: below 0 it sticks at 0 (red), above 179 OpenCV's HSV->RGB reads it modulo
  180 (a wrap). That asymmetry is Caffe's and is kept.
- a patch draws scale s ~ U(0.3, 1) and aspect ratio r ~ U(0.5, 2), then clamps r to
  [s^2, 1/s^2] (so a large share of big patches become full-width or full-height strips).
- a constrained sampler needs some ground-truth box with IoU >= its minimum (the last one, any
  IoU: some box at all), so an image without boxes is only ever cropped whole; a patch may hold
  no box centre, and the image then trains on background only (it adds nothing to the loss).

Where the work happens (exact, not approximate): the photometric ops are per-pixel maps, so
they commute exactly with cropping and with flipping. Caffe distorts the whole image before
expanding, so the mean fill is never distorted. We therefore draw all the random choices first,
then distort only the pixels of the original image that end up inside the patch and paste them
onto the (undistorted) mean canvas of the patch. The result is the same pixel for pixel as
distorting everything first; only work on pixels that are cropped away is saved. Resizing, in
contrast, does not commute with the non-linear ops, so we never distort after the resize.

Differences from Caffe, on purpose (each below the resolution of a training image):
- Caffe's data layer re-encodes the image as JPEG (OpenCV's default quality, 95) after the
  distortion, after the expansion and after the crop; this chain stays lossless.
- the patch is snapped to whole canvas pixels (x0 = floor, width = floor, as Caffe's crop) before
  its IoU test, and boxes are kept by centre, cut and normalised by the pixels actually cropped;
  Caffe tests and projects the unsnapped patch, up to one canvas pixel off the pixels it crops.
- a box centre exactly on the patch border is outside here (Caffe: inside); with Caffe's
  unsnapped patches that tie has probability zero.
- one random stream (NumPy's Generator) and one draw of every parameter per image; the order of
  the samplers is a random permutation taking the first success, which equals Caffe's uniform
  pick among all successes in distribution (see `sample_patch`).
- outside this module: VOC boxes arrive as 0-based continuous pixels (datasets/voc.py); Caffe's
  `convert_annoset` normalises the 1-based values as they are (one pixel narrower, shifted).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ssd.config import CAFFE_BGR_MEAN
from ssd.image_io import resize_rgb
from ssd.overlap import iou_matrix

MEAN_RGB = CAFFE_BGR_MEAN[::-1]  # the canvas fill, in the images' RGB order

# Patch samplers: None is the whole image, a number the minimum IoU with some ground-truth box
# (0.0: any patch, provided the image has a box; Caffe's `max_jaccard_overlap: 1.0`). Scale and
# aspect ratio ranges are the Caffe prototxt's.
SAMPLERS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
PATCH_SCALE = (0.3, 1.0)
PATCH_ASPECT = (0.5, 2.0)
# The training resize's interpolations, drawn uniformly (ssd_pascal.py's train `interp_mode`).
INTERPOLATIONS: dict[str, int] = {
    "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4,
}
MAX_TRIALS = 50
MAX_EXPAND = 4.0
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18.0  # in units of OpenCV's 8-bit H (0..179, 2 degrees each), as Caffe's hue_delta

_IDENTITY = np.arange(256, dtype=np.float64)


@dataclass(frozen=True)
class Photometric:
    """Drawn photometric parameters; None means the op is off for this image.

    brightness is added to every channel, contrast multiplies every channel, saturation
    multiplies HSV's S, hue is added to OpenCV's 8-bit H (2 degrees per unit); contrast comes
    right after brightness (`contrast_first`) or after the HSV ops.
    """

    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    contrast_first: bool = True


def draw_photometric(rng: np.random.Generator) -> Photometric:
    """Each op on with p=0.5; contrast before or after the HSV ops with p=0.5 (Caffe's two orders)."""
    contrast_first = bool(rng.random() < 0.5)

    def maybe(low: float, high: float) -> float | None:
        on = rng.random() < 0.5
        value = rng.uniform(low, high)  # drawn either way: a fixed number of draws per image
        return float(value) if on else None

    return Photometric(
        brightness=maybe(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA),
        contrast=maybe(*CONTRAST_RANGE),
        saturation=maybe(*SATURATION_RANGE),
        hue=maybe(-HUE_DELTA, HUE_DELTA),
        contrast_first=contrast_first,
    )


def _convert(values: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """OpenCV's `convertTo(-1, alpha, beta)` on uint8 values: round half to even, saturate."""
    return np.clip(np.rint(values * alpha + beta), 0, 255)


def _adjust_hsv(image: np.ndarray, channel: int, lut: np.ndarray) -> np.ndarray:
    """One RGB->HSV->RGB round trip mapping HSV `channel` (0 = H, 1 = S) through `lut`."""
    planes = list(cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)))
    planes[channel] = cv2.LUT(planes[channel], lut.astype(np.uint8))
    return cv2.cvtColor(cv2.merge(planes), cv2.COLOR_HSV2RGB)


def distort(image: np.ndarray, params: Photometric) -> np.ndarray:
    """Apply photometric `params` to uint8 [H, W, 3] RGB; returns a new array or `image` itself.

    Caffe's `AdjustBrightness`, `AdjustContrast`, `AdjustSaturation` and `AdjustHue` in Caffe's
    order (brightness, contrast, saturation, hue, or brightness, saturation, hue, contrast), each
    a value map through one cv2.LUT (brightness and an adjacent contrast share one).
    """
    if image.size == 0:
        return image
    contrast_late = params.contrast is not None and not params.contrast_first
    contrast_late = contrast_late and (params.saturation is not None or bool(params.hue))
    before = _IDENTITY
    if params.brightness is not None:
        before = _convert(before, 1.0, params.brightness)
    if params.contrast is not None and not contrast_late:
        before = _convert(before, params.contrast, 0.0)
    out = image if before is _IDENTITY else cv2.LUT(image, before.astype(np.uint8))
    if params.saturation is not None:
        out = _adjust_hsv(out, 1, _convert(_IDENTITY, params.saturation, 0.0))
    if params.hue:  # Caffe skips a delta of exactly 0 (a round trip would still round pixels)
        # Not wrapped here: H above 179 goes to HSV->RGB as it is, which reads it modulo 180.
        out = _adjust_hsv(out, 0, _convert(_IDENTITY, 1.0, params.hue))
    if contrast_late:
        out = cv2.LUT(out, _convert(_IDENTITY, params.contrast, 0.0).astype(np.uint8))
    return out


def draw_expand(
    rng: np.random.Generator, width: int, height: int, max_ratio: float = MAX_EXPAND
) -> tuple[int, int, int, int]:
    """Canvas for expand: (left, top, canvas_width, canvas_height), same ratio on both sides."""
    ratio = rng.uniform(1.0, max_ratio)
    canvas_w, canvas_h = int(width * ratio), int(height * ratio)
    left = int(rng.uniform(0.0, canvas_w - width))
    top = int(rng.uniform(0.0, canvas_h - height))
    return left, top, canvas_w, canvas_h


def centres_inside(boxes: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Whether the centre of each box [N, 4] lies strictly inside each patch [P, 4] -> [P, N]."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    return np.all((centre[None] > patches[:, None, :2]) & (centre[None] < patches[:, None, 2:]), axis=-1)


def try_patch(
    rng: np.random.Generator,
    width: int,
    height: int,
    boxes: np.ndarray,
    min_iou: float,
    max_trials: int = MAX_TRIALS,
) -> tuple[int, int, int, int] | None:
    """One patch sampler: up to `max_trials` random patches, the first that satisfies it.

    Caffe's `SampleBBox`: scale s ~ U(0.3, 1), aspect ratio r ~ U(0.5, 2) (relative to the
    canvas) then clamped to [s^2, 1/s^2] so the patch fits; the patch is s*sqrt(r) of the width
    by s/sqrt(r) of the height at a uniform position, snapped to whole pixels as Caffe's crop
    snaps it. It satisfies the sampler when some box has IoU >= `min_iou` with it (never when
    there is no box). All trials are drawn at once (vectorised, bounded work); the first success
    is the one Caffe's sequential trials would keep.

    Args:
        boxes: float [N, 4] "xyxy" pixels on the canvas of size width x height.
    Returns:
        the patch as integer "xyxy" pixels (x0, y0, x1, y1) on the canvas, or None.
    """
    if not len(boxes):
        return None
    scale = rng.uniform(*PATCH_SCALE, max_trials)
    aspect = np.clip(rng.uniform(*PATCH_ASPECT, max_trials), scale**2, 1.0 / scale**2)
    w, h = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    # max(0, .): s * sqrt(1 / s^2) may round to a hair above 1
    x0 = np.floor(rng.random(max_trials) * np.maximum(1.0 - w, 0.0) * width)
    y0 = np.floor(rng.random(max_trials) * np.maximum(1.0 - h, 0.0) * height)
    x1 = np.minimum(x0 + np.maximum(np.floor(w * width), 1), width)
    y1 = np.minimum(y0 + np.maximum(np.floor(h * height), 1), height)
    patches = np.stack([x0, y0, x1, y1], axis=1)
    hits = np.flatnonzero(np.any(iou_matrix(patches, boxes) >= min_iou, axis=1))
    if not len(hits):
        return None
    return tuple(int(v) for v in patches[hits[0]])  # type: ignore[return-value]


def sample_patch(
    rng: np.random.Generator, width: int, height: int, boxes: np.ndarray, max_trials: int = MAX_TRIALS
) -> tuple[int, int, int, int]:
    """Pick a patch like Caffe's batch sampler: integer "xyxy" pixels on the width x height canvas.

    Caffe runs every sampler (each keeping its first success) and then picks one of the
    successes uniformly. Trying the samplers in a random order and taking the first success is
    the same distribution (each success is equally likely to come first) with less work; the
    whole-image sampler always succeeds, so the loop ends there at the latest.
    """
    for index in rng.permutation(len(SAMPLERS)):
        min_iou = SAMPLERS[index]
        if min_iou is None:
            break
        patch = try_patch(rng, width, height, boxes, min_iou, max_trials)
        if patch is not None:
            return patch
    return 0, 0, width, height


def crop_boxes(
    boxes: np.ndarray, labels: np.ndarray, patch: tuple[int, int, int, int], clip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes whose centre is inside `patch`, in patch pixels; clipped to it when `clip`.

    Args:
        boxes: float32 [N, 4] "xyxy" pixels; labels: int32 [N]; patch: integer "xyxy".
    Returns:
        float32 [M, 4] "xyxy" pixels relative to the patch, int32 [M]; zero-size boxes dropped.
    """
    x0, y0, x1, y1 = patch
    keep = centres_inside(boxes, np.array([patch], np.float64))[0]
    kept = boxes[keep] - np.array([x0, y0, x0, y0], np.float32)
    if clip:
        kept = np.clip(kept, 0.0, np.array([x1 - x0, y1 - y0] * 2, np.float32))
    size_ok = (kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])
    return kept[size_ok].astype(np.float32), labels[keep][size_ok].astype(np.int32)


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Mirror "rel_xyxy" boxes [N, 4] left-right: (x0, y0, x1, y1) -> (1 - x1, y0, 1 - x0, y1)."""
    return np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)


def render_patch(
    image: np.ndarray,
    left: int,
    top: int,
    patch: tuple[int, int, int, int],
    fill: np.ndarray,
    params: Photometric,
) -> np.ndarray:
    """Pixels of `patch` on the expand canvas (image at (left, top), `fill` elsewhere).

    Only the part of `image` inside the patch is distorted with `params` (see the module
    docstring for why this equals distorting the whole image first). Returns uint8 [h, w, 3],
    possibly a view of a new array; `image` is never written.
    """
    height, width = image.shape[:2]
    px0, py0, px1, py1 = patch
    ix0, iy0 = max(px0, left), max(py0, top)
    ix1, iy1 = min(px1, left + width), min(py1, top + height)
    if ix1 <= ix0 or iy1 <= iy0:  # the patch shows only mean fill: pad one fill pixel out
        region, ix0, iy0, ix1, iy1 = fill.reshape(1, 1, 3), px0, py0, px0 + 1, py0 + 1
    else:
        region = distort(image[iy0 - top : iy1 - top, ix0 - left : ix1 - left], params)
    if (ix0, iy0, ix1, iy1) == (px0, py0, px1, py1):
        return region
    # One C call writes the mean border around the region (a NumPy fill of [h, w, 3] is slow:
    # its innermost loop is only 3 long).
    return cv2.copyMakeBorder(
        region, iy0 - py0, py1 - iy1, ix0 - px0, px1 - ix1, cv2.BORDER_CONSTANT,
        value=tuple(int(v) for v in fill),
    )  # fmt: skip


def _check_inputs(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int32).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(f"need one label per box, got {len(labels)} labels for {len(boxes)} boxes")
    return boxes, labels


@dataclass(frozen=True)
class Geometry:
    """Drawn geometry of one image: the expand canvas, the patch on it and the flip.

    The image sits at (left, top) on a canvas_w x canvas_h canvas (the image itself when not
    expanded); `patch` is integer "xyxy" pixels on the canvas.
    """

    left: int
    top: int
    canvas_w: int
    canvas_h: int
    patch: tuple[int, int, int, int]
    flip: bool


class TrainAugmentation:
    """The SSD training chain: uint8 RGB + "xyxy" pixel boxes -> uint8 [S, S, 3] + "rel_xyxy".

    A plain class (picklable, for spawned workers); all randomness comes from the `rng` passed
    to each call, so a seed reproduces the output exactly.
    """

    def __init__(
        self,
        image_size: int,
        mean_rgb: tuple[float, float, float] = MEAN_RGB,
        clip_boxes: bool = True,
        expand_probability: float = 0.5,
        interpolations: tuple[str, ...] = tuple(INTERPOLATIONS),
    ) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0.0 <= expand_probability <= 1.0:
            raise ValueError(f"expand_probability must be in [0, 1], got {expand_probability}")
        unknown = [name for name in interpolations if name not in INTERPOLATIONS]
        if unknown or not interpolations:
            raise ValueError(f"interpolations must be a non-empty subset of {tuple(INTERPOLATIONS)}, "
                             f"got {tuple(interpolations)!r}")
        self.interpolations = tuple(interpolations)
        # The paper's 0.5 adds small-object practice for long runs; short runs converge faster without.
        self.expand_probability = float(expand_probability)
        self.image_size = int(image_size)
        self.mean_rgb = tuple(float(m) for m in mean_rgb)
        self.clip_boxes = bool(clip_boxes)

    def draw_geometry(self, rng: np.random.Generator, width: int, height: int, boxes: np.ndarray) -> Geometry:
        """Expand, patch and flip for a width x height image with boxes float [N, 4] "xyxy" pixels."""
        left, top, canvas_w, canvas_h = 0, 0, width, height
        if rng.random() < self.expand_probability:
            left, top, canvas_w, canvas_h = draw_expand(rng, width, height)
        patch = sample_patch(rng, canvas_w, canvas_h, boxes + np.array([left, top, left, top], np.float32))
        return Geometry(left, top, canvas_w, canvas_h, patch, bool(rng.random() < 0.5))

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment one image.

        Args:
            image: uint8 [H, W, 3] RGB; boxes: float32 [N, 4] "xyxy" pixels; labels: int32 [N].
        Returns:
            uint8 [S, S, 3] RGB, float32 [M, 4] "rel_xyxy" (in [0, 1] when clipping), int32 [M].
        """
        boxes, labels = _check_inputs(image, boxes, labels)
        height, width = image.shape[:2]
        params = draw_photometric(rng)
        geometry = self.draw_geometry(rng, width, height, boxes)
        left, top, patch = geometry.left, geometry.top, geometry.patch
        fill = np.rint(np.array(self.mean_rgb)).astype(np.uint8)
        pixels = render_patch(image, left, top, patch, fill, params)
        canvas_boxes = boxes + np.array([left, top, left, top], np.float32)
        out_boxes, out_labels = crop_boxes(canvas_boxes, labels, patch, self.clip_boxes)
        # Drawn last, so the other draws of a seed do not depend on the list of interpolations.
        interpolation = INTERPOLATIONS[self.interpolations[rng.integers(len(self.interpolations))]]
        out = resize_rgb(pixels, self.image_size, self.image_size, interpolation)
        patch_w, patch_h = patch[2] - patch[0], patch[3] - patch[1]
        out_boxes = out_boxes / np.array([patch_w, patch_h, patch_w, patch_h], np.float32)
        if geometry.flip:
            out, out_boxes = cv2.flip(out, 1), flip_boxes(out_boxes)
        return out, out_boxes.astype(np.float32).reshape(-1, 4), out_labels
