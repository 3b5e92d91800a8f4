"""Image files declaring huge sizes in few bytes, written here by hand (independent of any encoder)."""

from __future__ import annotations

import struct
import zlib


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """PNG signature and an IHDR chunk: 8-bit RGB, width x height."""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height, and a tiny IDAT (not decodable)."""
    return png_header(width, height) + png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + png_chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int, app_segments: int = 3) -> bytes:
    """SOI, a few APPn segments, fill bytes, and a baseline SOF0 declaring width x height, by hand."""
    data = b"\xff\xd8"
    # A DHT (0xC4, inside the SOF range but not a frame header) first, as some cameras write it.
    table = bytes([0x00]) + bytes(range(1, 17)) + bytes(range(136))
    data += b"\xff\xc4" + struct.pack(">H", len(table) + 2) + table
    for k in range(app_segments):
        body = bytes(100 + k)
        data += bytes([0xFF, 0xE0 + k]) + struct.pack(">H", len(body) + 2) + body
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return data + b"\xff\xff" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def zero_png(width: int, height: int) -> bytes:
    """A valid, fully decodable black 8-bit RGB PNG: a 8000x8000 one is about 190 KB."""
    deflate, row = zlib.compressobj(9), bytes(1 + 3 * width)  # filter byte 0 + the row
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    return png_header(width, height) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
