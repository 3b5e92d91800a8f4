"""Image sizes read from headers match what independent encoders wrote; bombs and junk are refused by name."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from ssd.image_header import (
    DEFAULT_MAX_PIXELS,
    ImageHeaderError,
    TooManyPixels,
    UnknownImageFormat,
    check_pixels,
    image_size,
)
from tests.image_bombs import jpeg_bomb, png_bomb

SIZES = [(1, 1), (37, 23), (300, 7), (641, 479)]


def pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def pillow_bytes(width: int, height: int, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels(width, height)).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
@pytest.mark.parametrize("size", SIZES)
def test_opencv_encoded_sizes(ext, size):
    data = cv2.imencode(ext, pixels(*size))[1].tobytes()
    assert image_size(data) == size
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[1::-1] == size  # the decoder agrees


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {"progressive": True}),  # SOF2
        ("JPEG", {"exif": b"Exif\0\0" + bytes(2000), "icc_profile": bytes(3000)}),  # APP1/APP2 before SOF
        ("PNG", {}),
        ("BMP", {}),
        ("WEBP", {"lossless": True}),  # VP8L
        ("WEBP", {"quality": 50}),  # VP8
        ("WEBP", {"exif": b"Exif\0\0" + bytes(64)}),  # VP8X extended header
    ],
)
@pytest.mark.parametrize("size", [(5, 3), (1000, 17)])
def test_pillow_encoded_sizes(fmt, options, size):
    assert image_size(pillow_bytes(*size, fmt, **options)) == size


def test_bmp_core_header_and_top_down_rows():
    # OS/2 BITMAPCOREHEADER (12 bytes, uint16 sizes), then a BITMAPINFOHEADER with negative height.
    core = b"BM" + bytes(12) + struct.pack("<IHHHH", 12, 321, 123, 1, 24)
    assert image_size(core) == (321, 123)
    info = b"BM" + bytes(12) + struct.pack("<Iii", 40, 64, -48) + bytes(28)
    assert image_size(info) == (64, 48)


def test_webp_lossy_scale_bits_are_not_part_of_the_size():
    # VP8 key frame: 3-byte frame tag, start code, then 14-bit width/height with 2 scaling bits on top.
    frame = bytes(3) + b"\x9d\x01\x2a" + struct.pack("<HH", 640 | 0x4000, 480 | 0xC000)
    data = b"RIFF" + struct.pack("<I", 4 + 8 + len(frame)) + b"WEBPVP8 " + struct.pack("<I", len(frame)) + frame
    assert image_size(data) == (640, 480)


def test_path_and_bytes_agree_and_files_are_named(tmp_path):
    data = pillow_bytes(33, 44, "JPEG", exif=b"Exif\0\0" + bytes(5000))
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert image_size(path) == image_size(str(path)) == image_size(data) == (33, 44)
    with pytest.raises(ImageHeaderError, match=r"missing\.jpg cannot be read"):
        image_size(tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_bytes(b"GIF89a\x10\x00\x10\x00")
    with pytest.raises(UnknownImageFormat, match=r"notes\.jpg is not a JPEG, PNG, BMP or WebP image .*GIF89a"):
        image_size(tmp_path / "notes.jpg")


def test_bombs_are_read_without_decoding_and_refused_by_check_pixels():
    bomb = png_bomb(50000, 50000)
    assert len(bomb) < 200
    assert image_size(bomb) == (50000, 50000)
    assert image_size(jpeg_bomb(60000, 40000)) == (60000, 40000)
    with pytest.raises(TooManyPixels, match=r"upload\.png declares 50000x50000 = 2,500,000,000 pixels.*40,000,000"):
        check_pixels(50000, 50000, DEFAULT_MAX_PIXELS, "upload.png")
    check_pixels(8000, 5000, DEFAULT_MAX_PIXELS, "exactly at the limit")
    check_pixels(3, 4, 12, "at a small limit")
    with pytest.raises(TooManyPixels, match="13 pixels"):
        check_pixels(13, 1, 12, "one pixel over")
    with pytest.raises(TooManyPixels):
        check_pixels(8000, 5001, DEFAULT_MAX_PIXELS, "one row over")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "is not a JPEG"),
        (b"II*\0" + bytes(20), "is not a JPEG"),  # TIFF: OpenCV decodes it, its size is not checked
        (b"P6\n50000 50000\n255\n", "is not a JPEG"),  # PNM
        (png_bomb(10, 10)[:20], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IDAT" + bytes(13), "without an IHDR"),
        (png_bomb(0, 10), "empty image of 0x10"),
        (jpeg_bomb(100, 0), "empty image of 100x0"),  # DNL-style height 0
        (jpeg_bomb(100, 100)[:40], "before its frame header"),
        (b"\xff\xd8\xff\xda\x00\x02", "no frame header"),  # scan before any SOF
        (b"\xff\xd8\xff\xe0\x00\x01", "invalid length"),
        (b"\xff\xd8\xff\xe0\x00\x04\x00\x00\x12\x34", "no marker at byte 8"),
        (b"\xff\xd8" + b"\xff" * 10000, "first 4096 segments"),
        (b"BM" + bytes(12) + struct.pack("<I", 8) + bytes(8), "unknown DIB header"),
        (b"RIFF\0\0\0\0WEBPVP8 " + bytes(18), "start code"),
        (b"RIFF\0\0\0\0WEBPVP8L" + bytes(18), "signature"),
        (b"RIFF\0\0\0\0WEBPALPH" + bytes(18), "unknown first chunk"),
    ],
)
def test_malformed_headers_are_named(data, message):
    with pytest.raises(ImageHeaderError, match=message) as info:
        image_size(data, name="upload #3")
    assert str(info.value).startswith("upload #3")
