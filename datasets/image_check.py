"""The cheap checks every dataset image and annotation gets at load, before a worker ever decodes it.

Reads at most a few KB per file: the header (format and declared size, through
`ssd.image_header`, no pixel decoded) and, for a JPEG, the end-of-image marker in the file's
last bytes — a JPEG cut short (a partial download or copy) still decodes, as a half-grey image
with only libjpeg's anonymous warning, so its missing marker is the one cheap sign. Only regular
files are opened (a FIFO would block the load, a link to /dev/zero never end). Pixel data that
is corrupt inside an intact file is found by the decoder at training time instead (the pipeline
skips and counts it).

Shared by every source (VOC, COCO, YOLO), with the checks on what an annotation declares: the
image size and the image path.
"""

from __future__ import annotations

import math
import os

from ssd.image_header import DEFAULT_MAX_PIXELS, check_pixels, image_size, open_regular

# The largest side a JPEG can declare (its header stores 16 bits): a larger annotated size is absurd.
MAX_IMAGE_SIDE = 65535

_JPEG_EOI = b"\xff\xd9"
_HEAD_BYTES = 4096  # holds a JPEG's frame header unless a large EXIF block comes first
_TAIL_BYTES = 64  # some writers pad after the end marker (zeros, a newline)


def image_file_problem(path: str, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """What is wrong with the image at `path` for an annotation of `width` x `height`, or None.

    Checked: a regular file, not empty; a JPEG/PNG/BMP/WebP header whose size can be read; that
    size equal to the annotation's and within `max_pixels`; for a JPEG, the end-of-image marker.
    One open and two small reads for most files.
    """
    try:
        declared = checked_image_size(path, max_pixels)
    except ValueError as err:
        return str(err)
    if declared != (width, height):
        return f"image {path} is {declared[0]}x{declared[1]}, the annotation's size says {width}x{height}"
    return None


def checked_image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the image file at `path` once it passes the checks of `image_file_problem`;
    ValueError naming the file otherwise."""
    name = f"image {os.fspath(path)}"
    try:
        head, tail = _head_and_tail(path)
        if not head:
            raise ValueError(f"{name} is empty (0 bytes)")
        try:
            declared = image_size(head, name)
        except ValueError:  # the header goes on past the first bytes (or is bad): read the file itself
            declared = image_size(path, name)
    except FileNotFoundError:
        raise ValueError(f"{name} is missing") from None
    except OSError as err:
        raise ValueError(f"{name} cannot be read: {err.strerror or err}") from None
    check_pixels(*declared, max_pixels, name)
    if head.startswith(b"\xff\xd8") and not tail.rstrip(b"\x00\r\n \t").endswith(_JPEG_EOI):
        raise ValueError(f"{name} is a JPEG without its end marker: truncated (a partial copy or download?)")
    return declared


def size_problem(width: object, height: object) -> str | None:
    """Why an annotated image size is unusable, or None: each side a whole number in 1..MAX_IMAGE_SIDE."""
    try:
        sides = [float(width), float(height)]
    except (TypeError, ValueError):
        return f"size must be numbers, got width={width!r:.20} height={height!r:.20}"
    if not all(math.isfinite(v) and v == int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in sides):
        return f"size must be whole numbers of 1..{MAX_IMAGE_SIDE} pixels per side, got {width!r:.20}x{height!r:.20}"
    return None


def path_inside(folder: str | os.PathLike, name: str) -> str | None:
    """`folder`/`name` if `name` is a relative path that stays inside `folder` (no leading '/', no
    '..' climbing out), else None; links inside the folder are followed as usual."""
    normal = os.path.normpath(name)
    if os.path.isabs(name) or normal == ".." or normal.startswith(".." + os.sep) or not name.strip():
        return None
    return os.path.join(os.fspath(folder), normal)


def _head_and_tail(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """The file's first `_HEAD_BYTES` and last `_TAIL_BYTES` bytes (a regular file only)."""
    with open_regular(path, "image") as f:
        head = f.read(_HEAD_BYTES)
        if len(head) < _HEAD_BYTES:
            return head, head[-_TAIL_BYTES:]
        f.seek(max(_HEAD_BYTES, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
        return head, f.read(_TAIL_BYTES)
