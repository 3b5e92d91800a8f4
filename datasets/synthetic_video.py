"""Write an mp4 of synthetic shapes moving over a textured background (for detect.py demos and tests).

Frames use the synthetic dataset's own drawing (datasets/synthetic.py: its textured
low-saturation backgrounds, class shapes and class hues, sensor grain), so a model trained on
that set detects the shapes here. Each shape moves in a straight line and bounces off the
borders; later shapes pass over earlier ones.

    python tools/make_synthetic_video.py --out shapes.mp4 --frames 120 --fps 25 --width 480 --height 360
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


import cv2
import numpy as np

# The dataset's drawing helpers, so the video looks like its images.
from ssd_datasets.synthetic import SYNTHETIC_CLASSES, background_texture, object_colour, shape_mask


@dataclass
class _Mover:
    """One shape: its mask (uint8 [h, w]), RGB colour, top-left position and velocity in pixels."""

    name: str
    mask: np.ndarray
    colour: np.ndarray
    position: np.ndarray
    velocity: np.ndarray


def _movers(rng: np.random.Generator, width: int, height: int, count: int) -> list[_Mover]:
    movers = []
    for _ in range(count):
        name = SYNTHETIC_CLASSES[rng.integers(len(SYNTHETIC_CLASSES))]
        smaller = min(width, height)
        side = rng.uniform(min(40.0, 0.25 * smaller), 0.45 * smaller)
        mask = shape_mask(name, side, side * rng.uniform(0.8, 1.25), rng)
        h, w = mask.shape
        position = np.array([rng.uniform(0, max(width - w, 1)), rng.uniform(0, max(height - h, 1))])
        speed, angle = rng.uniform(1.0, 4.0), rng.uniform(0, 2 * np.pi)
        velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        movers.append(_Mover(name, mask.astype(bool), object_colour(name, rng).astype(np.float32), position, velocity))
    return movers


def synthetic_frames(
    num_frames: int, width: int, height: int, seed: int = 0, num_objects: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Frames of moving shapes: (uint8 [H, W, 3] RGB, boxes float [N, 4] "xyxy" pixels, class names).

    Boxes are the shapes' full masks (occlusion ignored), clipped to the frame.
    """
    if num_frames < 1 or width < 64 or height < 64 or num_objects < 1:
        raise ValueError(f"need num_frames >= 1, width and height >= 64, num_objects >= 1; "
                         f"got {num_frames}, {width}x{height}, {num_objects}")
    rng = np.random.default_rng(seed)
    background = background_texture(width, height, rng)  # float32 [3, H, W]
    movers = _movers(rng, width, height, num_objects)
    for _ in range(num_frames):
        planes = background.copy()
        boxes = []
        for mover in movers:
            boxes.append(_paint(planes, mover, width, height))
            _step(mover, width, height)
        planes += rng.standard_normal((height, width), dtype=np.float32) * np.float32(4.0)  # grain
        frame = cv2.merge(list(np.clip(planes, 0, 255).astype(np.uint8)))
        yield frame, np.array(boxes, np.float64).reshape(-1, 4), [m.name for m in movers]


def _paint(planes: np.ndarray, mover: _Mover, width: int, height: int) -> tuple[float, float, float, float]:
    """Draw the shape into the float [3, H, W] planes; its box "xyxy" clipped to the frame."""
    h, w = mover.mask.shape
    left, top = (int(round(v)) for v in mover.position)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, width), min(top + h, height)
    visible = mover.mask[y0 - top : y1 - top, x0 - left : x1 - left]
    planes[:, y0:y1, x0:x1][:, visible] = mover.colour[:, None]
    return float(x0), float(y0), float(x1), float(y1)


def _step(mover: _Mover, width: int, height: int) -> None:
    """Move one frame on; bounce off the borders (a shape may leave the frame by a third)."""
    h, w = mover.mask.shape
    mover.position += mover.velocity
    lo = np.array([-w / 3, -h / 3])
    hi = np.array([width - 2 * w / 3, height - 2 * h / 3])
    for axis in range(2):
        if not lo[axis] <= mover.position[axis] <= hi[axis]:
            mover.velocity[axis] = -mover.velocity[axis]
            mover.position[axis] = np.clip(mover.position[axis], lo[axis], hi[axis])


def write_synthetic_video(
    path: str | Path, num_frames: int = 120, fps: float = 25.0, width: int = 480, height: int = 360,
    seed: int = 0, num_objects: int = 4,
) -> Path:
    """Write `synthetic_frames` as an mp4 ('mp4v') at `path`, or an .avi (Motion JPEG); returns the path.

    mp4 needs even sizes (OpenCV's FFmpeg writer would silently drop an odd last column or row);
    OpenCV's own Motion JPEG writer keeps any size, so an odd-sized clip is refused as .mp4 and
    written as .avi.
    """
    path = Path(path)
    if path.suffix.lower() != ".avi" and (width % 2 or height % 2):
        raise ValueError(f"{path}: an mp4 holds even sizes only, {width}x{height} would be written as "
                         f"{width - width % 2}x{height - height % 2}; choose even sizes or an .avi file (any size)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".avi":
        writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    else:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"cannot write video {path} (mp4v, {width}x{height} @ {fps})")
    try:
        for frame, _, _ in synthetic_frames(num_frames, width, height, seed, num_objects):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("shapes.mp4"),
                   help="mp4 to write, or .avi for Motion JPEG (any size; mp4 needs even sizes) (default: shapes.mp4)")
    p.add_argument("--frames", type=int, default=120, help="number of frames (default: 120)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default: 25)")
    p.add_argument("--width", type=int, default=480, help="frame width (default: 480)")
    p.add_argument("--height", type=int, default=360, help="frame height (default: 360)")
    p.add_argument("--objects", type=int, default=4, help="moving shapes (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same video (default: 0)")
    args = p.parse_args(argv)
    try:
        write_synthetic_video(args.out, args.frames, args.fps, args.width, args.height, args.seed, args.objects)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.frames} frames {args.width}x{args.height} @ {args.fps:g} fps to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
