"""The cheap check every dataset image gets at load, before a worker ever decodes it.

Reads at most a few hundred bytes per file: the header (format and declared size, through
`ssd.image_header`, no pixel decoded) and, for a JPEG, the end-of-image marker in the file's
last bytes — a JPEG cut short (a partial download or copy) still decodes, as a half-grey image
with only libjpeg's anonymous warning, so its missing marker is the one cheap sign. Pixel data
that is corrupt inside an intact file is found by the decoder at training time instead (the
pipeline skips and counts it).
"""

from __future__ import annotations

import os

from ssd.image_header import DEFAULT_MAX_PIXELS, check_pixels, image_size

_JPEG_EOI = b"\xff\xd9"
_HEAD_BYTES = 4096  # holds a JPEG's frame header unless a large EXIF block comes first
_TAIL_BYTES = 64  # some writers pad after the end marker (zeros, a newline)


def image_file_problem(path: str, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """What is wrong with the image at `path` for an annotation of `width` x `height`, or None.

    Checked: not empty; a JPEG/PNG/BMP/WebP header whose size can be read; that size equal to the
    annotation's and within `max_pixels`; for a JPEG, the end-of-image marker. One open and two
    small reads for most files.
    """
    name = f"image {path}"
    try:
        head, tail = _head_and_tail(path)
        if not head:
            return f"{name} is empty (0 bytes)"
        try:
            declared = image_size(head, name)
        except ValueError:  # the header goes on past the first bytes (or is bad): read the file itself
            declared = image_size(path, name)
        check_pixels(*declared, max_pixels, name)
    except (OSError, ValueError) as err:
        return str(err)
    if declared != (width, height):
        return f"{name} is {declared[0]}x{declared[1]}, the annotation's <size> says {width}x{height}"
    if head.startswith(b"\xff\xd8") and not tail.rstrip(b"\x00\r\n \t").endswith(_JPEG_EOI):
        return f"{name} is a JPEG without its end marker: truncated (a partial copy or download?)"
    return None


def _head_and_tail(path: str) -> tuple[bytes, bytes]:
    """The file's first `_HEAD_BYTES` and last `_TAIL_BYTES` bytes."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        if len(head) < _HEAD_BYTES:
            return head, head[-_TAIL_BYTES:]
        f.seek(-_TAIL_BYTES, os.SEEK_END)
        return head, f.read()
