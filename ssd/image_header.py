"""Image size from a file's or a buffer's first bytes, without decoding: JPEG, PNG, BMP, WebP.

A decoder allocates width x height x channels before it reads a single pixel, so a 5 KB PNG that
declares 50000 x 50000 pixels costs gigabytes (or an OpenCV assertion). Read the declared size
here, refuse it with `check_pixels`, and only then decode:

    width, height = image_size(path_or_bytes)          # ValueError naming the file if unreadable
    check_pixels(width, height, max_pixels, name)      # TooManyPixels (a ValueError) if too large

Only these four formats are recognised; anything else OpenCV might decode (TIFF, PNM, HDR,
JPEG 2000, ...) is refused, since its declared size is not checked. NumPy-free, stdlib only.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from typing import BinaryIO

DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels (e.g. 8000 x 5000): 120 MB as decoded RGB
FORMATS = ("JPEG", "PNG", "BMP", "WebP")

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): not DHT (C4),
# JPG (C8) or DAC (CC), which share the range.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field
_MAX_JPEG_STEPS = 4096  # segments and fill bytes before the frame header; real files use < 100
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Reader = Callable[[int, int], bytes]  # (offset, count) -> up to `count` bytes from `offset`


class ImageHeaderError(ValueError):
    """The bytes are not a JPEG/PNG/BMP/WebP image whose size can be read from its header."""


class UnknownImageFormat(ImageHeaderError):
    """The bytes start like none of the recognised formats."""


class TooManyPixels(ValueError):
    """The image declares more pixels than allowed."""


def image_size(data_or_path: bytes | bytearray | memoryview | str | os.PathLike, name: str | None = None
               ) -> tuple[int, int]:
    """(width, height) declared by the header of image bytes or an image file; no pixel is decoded.

    `name` names a buffer in error messages (a path names itself). Raises ImageHeaderError (a
    ValueError) naming the file for an unknown format (UnknownImageFormat, a subclass), a
    truncated or malformed header, an empty size, or a file that cannot be read.
    """
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        data = bytes(data_or_path)
        return _checked_size(lambda offset, count: data[offset : offset + count], name or "image bytes")
    path = os.fspath(data_or_path)
    try:
        with open_regular(path, "image file") as file:
            return _checked_size(_file_reader(file), name or f"image file {path}")
    except NotARegularFile as err:
        raise ImageHeaderError(str(err)) from None  # an ImageHeaderError, as the docstring promises
    except OSError as err:
        raise ImageHeaderError(f"image file {path} cannot be read: {err.strerror or err}") from err


class NotARegularFile(ValueError):
    """A path that names a FIFO, a device, a socket or a directory where a file is expected."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """"is a FIFO (named pipe), not a regular file" and the like for a path that exists but is not a
    regular file (after symlinks), else None; nothing is opened."""
    try:
        return _kind_problem(os.stat(path).st_mode)
    except OSError:
        return None  # missing or unreadable: the caller's open says so


def names_a_file(path: str | os.PathLike) -> bool:
    """Whether `path` exists as something other than a folder. Unlike Path.is_file(), a FIFO or a device
    counts, so the reader it is handed to refuses it by name instead of passing it over as missing."""
    return os.path.exists(path) and not os.path.isdir(path)


def _kind_problem(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return f"is {next((name for test, name in _KINDS if test(mode)), 'something else')}, not a regular file"


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading if it is a regular file (after symlinks); NotARegularFile if not.

    Opened without blocking, so a FIFO is refused at once instead of waiting for a writer, and a
    link to /dev/zero or /dev/urandom is refused before a byte is read from it.
    """
    fd, _ = _regular_fd(path, what)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _regular_fd(path: str | os.PathLike, what: str) -> tuple[int, os.stat_result]:
    """A read-only descriptor of `path` and its stat, if it is a regular file; NotARegularFile if not."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(fd)
        problem = _kind_problem(status.st_mode)
        if problem:
            raise NotARegularFile(f"{what} {os.fspath(path)} {problem}")
        os.set_blocking(fd, True)
        return fd, status
    except BaseException:
        os.close(fd)
        raise


# The largest file read whole (an annotation JSON or XML, an image list, a data.yaml, class names):
# 4 GiB, about nine times COCO train2017's 448 MB instances file. A larger file is refused before
# a byte of it is read (a sparse file can declare terabytes at no cost).
MAX_TEXT_BYTES = 4 << 30


class FileTooLarge(ValueError):
    """A file larger than the caller reads whole."""


def read_regular(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; NotARegularFile or FileTooLarge (ValueErrors
    naming `what` and the file) otherwise, decided before reading (see `open_regular`).

    Plain descriptor reads, no file object: VOC loads call this once per annotation file.
    """
    fd, status = _regular_fd(path, what)
    try:
        chunks, total = [], 0
        while total <= max_bytes and status.st_size <= max_bytes:  # up to max_bytes + 1: a file that grew shows
            chunk = os.read(fd, min(max(status.st_size + 1 - total, 1 << 16), max_bytes + 1 - total, 1 << 30))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if max(status.st_size, total) > max_bytes:
        raise FileTooLarge(f"{what} {os.fspath(path)} is {max(status.st_size, total):,} bytes, more than the limit "
                           f"of {max_bytes:,} bytes for a file read whole")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    """TooManyPixels (a ValueError) naming `name` if width x height exceeds `max_pixels`."""
    if width * height > max_pixels:
        raise TooManyPixels(f"{name} declares {width}x{height} = {width * height:,} pixels, more than the limit "
                            f"of {max_pixels:,} pixels")


def _file_reader(file) -> Reader:
    def read(offset: int, count: int) -> bytes:
        file.seek(offset)
        return file.read(count)

    return read


def _checked_size(read: Reader, name: str) -> tuple[int, int]:
    head = read(0, 30)
    parser = _parser(head)
    if parser is None:
        raise UnknownImageFormat(f"{name} is not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image "
                               f"(it starts with {head[:12]!r})")
    try:
        width, height = parser(read)
    except (struct.error, IndexError) as err:  # a field cut off by the end of the data
        raise ImageHeaderError(f"{name}: the image header is truncated ({err})") from err
    except ImageHeaderError as err:
        raise ImageHeaderError(f"{name}: {err}") from err
    if width <= 0 or height <= 0:
        raise ImageHeaderError(f"{name} declares an empty image of {width}x{height} pixels")
    return width, height


def _parser(head: bytes) -> Callable[[Reader], tuple[int, int]] | None:
    """The size reader for the format `head` (the first bytes) starts like, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return _jpeg_size
    if head.startswith(_PNG_SIGNATURE):
        return _png_size
    if head.startswith(b"BM"):
        return _bmp_size
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size
    return None


def _png_size(read: Reader) -> tuple[int, int]:
    """The IHDR chunk must come first: length, b"IHDR", width, height (big-endian uint32)."""
    chunk = read(8, 16)
    if chunk[4:8] != b"IHDR":
        raise ImageHeaderError(f"PNG without an IHDR chunk first (found {chunk[4:8]!r})")
    width, height = struct.unpack(">II", chunk[8:16])
    return width, height


def _bmp_size(read: Reader) -> tuple[int, int]:
    """The DIB header after the 14-byte file header: OS/2 1.x (12 bytes, uint16) or later (int32)."""
    dib = read(14, 12)
    (dib_size,) = struct.unpack("<I", dib[:4])
    if dib_size == 12:
        width, height = struct.unpack("<HH", dib[4:8])
        return width, height
    if dib_size < 16:
        raise ImageHeaderError(f"BMP with an unknown DIB header of {dib_size} bytes")
    width, height = struct.unpack("<ii", dib[4:12])
    return width, abs(height)  # a negative height marks a top-down bitmap


def _webp_size(read: Reader) -> tuple[int, int]:
    """The first RIFF chunk: VP8 (lossy key frame), VP8L (lossless) or VP8X (extended canvas)."""
    chunk = read(12, 18)
    kind, body = chunk[:4], chunk[8:]
    if kind == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise ImageHeaderError("WebP VP8 chunk without a key-frame start code")
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF  # the top 2 bits are a scaling hint
    if kind == b"VP8L":
        if body[0] != 0x2F:
            raise ImageHeaderError("WebP VP8L chunk without its 0x2f signature")
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
    raise ImageHeaderError(f"WebP with an unknown first chunk {kind!r}")


def _jpeg_size(read: Reader) -> tuple[int, int]:
    """Walk the marker segments to the first start-of-frame; its fields are P, height, width."""
    offset = 2
    for _ in range(_MAX_JPEG_STEPS):
        marker = read(offset, 2)
        if len(marker) < 2:
            raise ImageHeaderError(f"JPEG ends at byte {offset} before its frame header (SOF)")
        if marker[0] != 0xFF:
            raise ImageHeaderError(f"JPEG has no marker at byte {offset} (found 0x{marker[0]:02x})")
        code = marker[1]
        if code == 0xFF:  # a fill byte before the marker
            offset += 1
            continue
        if code in _STANDALONE_MARKERS:
            offset += 2
            continue
        if code in (0xD9, 0xDA):  # end of image or start of scan: no frame header came first
            raise ImageHeaderError(f"JPEG has no frame header (SOF) before marker 0x{code:02x} at byte {offset}")
        (length,) = struct.unpack(">H", read(offset + 2, 2))
        if length < 2:
            raise ImageHeaderError(f"JPEG segment 0x{code:02x} at byte {offset} has an invalid length {length}")
        if code in _SOF_MARKERS:
            height, width = struct.unpack(">HH", read(offset + 5, 4))
            return width, height  # height 0 (size given later by a DNL marker) is refused as empty
        offset += 2 + length
    raise ImageHeaderError(f"JPEG has no frame header (SOF) in its first {_MAX_JPEG_STEPS} segments")
