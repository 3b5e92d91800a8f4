"""The protobuf wire format, enough to walk a message's fields without a schema or generated code.

A message is a sequence of (key, value); key = field_number << 3 | wire_type. Wire types:
0 varint, 1 fixed 64-bit, 2 length-delimited (bytes, strings, sub-messages, packed repeated
scalars), 5 fixed 32-bit. Groups (3, 4) are long deprecated and refused.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at `pos`."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WireFormatError(f"varint runs past the end of the data at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireFormatError(f"varint longer than 10 bytes before byte {pos}")


def iter_fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field: an int for varints, else the raw bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        else:
            if wire == LENGTH_DELIMITED:
                size, pos = read_varint(buf, pos)
            elif wire in (FIXED64, FIXED32):
                size = 8 if wire == FIXED64 else 4
            else:
                raise WireFormatError(f"field {field} at byte {pos} has wire type {wire} (groups or garbage)")
            if pos + size > end:
                raise WireFormatError(f"field {field} claims {size} bytes at byte {pos}, only {end - pos} remain")
            value, pos = buf[pos:pos + size], pos + size
        yield field, wire, value


def packed_varints(value: int | memoryview) -> list[int]:
    """A repeated integer field's values: one unpacked varint, or a packed run of them."""
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        number, pos = read_varint(value, pos)
        out.append(number)
    return out
