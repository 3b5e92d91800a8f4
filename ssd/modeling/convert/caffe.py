"""Read the learned blobs of a Caffe `.caffemodel` (a binary NetParameter) without Caffe.

Field numbers, from Caffe's src/caffe/proto/caffe.proto:

    NetParameter      name 1, layers 2 (V1LayerParameter, deprecated), layer 100 (LayerParameter)
    LayerParameter    name 1, type 2 (string), blobs 7
    V1LayerParameter  name 4, type 5 (enum), blobs 6
    BlobProto         num 1, channels 2, height 3, width 4 (legacy 4-D shape), data 5 (float,
                      packed), diff 6, shape 7 (BlobShape), double_data 8 (packed), double_diff 9
    BlobShape         dim 1 (int64, packed)

Blobs are returned in Caffe's layout: a convolution's weights (out, in, kh, kw), its bias (out,).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ssd.modeling.convert.protobuf_wire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    WireFormatError,
    iter_fields,
    packed_varints,
)

NET_V1_LAYERS, NET_LAYER = 2, 100
# (name field, blobs field) of LayerParameter and V1LayerParameter.
_LAYER_FIELDS = {NET_LAYER: (1, 7), NET_V1_LAYERS: (4, 6)}
BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8


# Caffe's own limit on a blob's axes (kMaxBlobAxes); more blobs per layer or layers with weights
# than any network holds (a ResNet-152 has about 500) are refused before they are built: each blob
# costs an array object, so a file of tiny fields would otherwise cost ~50 times its size.
MAX_BLOB_AXES, MAX_BLOBS_PER_LAYER, MAX_LAYERS = 32, 16, 10_000
_ITEMSIZE = {BLOB_DATA: 4, BLOB_DOUBLE_DATA: 8}


def parse_blob(buf: memoryview) -> np.ndarray:
    """A BlobProto -> float32 array in its declared shape (`shape`, else num/channels/height/width).

    Values are gathered as bytes, not an array per field: an unpacked float is one 5-byte field.
    """
    data = {BLOB_DATA: bytearray(), BLOB_DOUBLE_DATA: bytearray()}
    shape, legacy = None, {}
    for field, wire, value in iter_fields(buf):
        if field in data:
            if wire not in (LENGTH_DELIMITED, FIXED32, FIXED64) or len(value) % _ITEMSIZE[field]:
                raise WireFormatError(f"float data with wire type {wire} and {len(value)} bytes")
            data[field] += value
        elif field == BLOB_SHAPE:
            shape = _dims(value)
        elif field in BLOB_LEGACY_DIMS:
            legacy[field] = value
    if shape is None:
        shape = [legacy.get(f, 0) for f in BLOB_LEGACY_DIMS] if legacy else [0]
    size = sum(len(b) // _ITEMSIZE[f] for f, b in data.items())
    if size != math.prod(shape):  # Python integers: dims such as [2**32, 2**32] cannot wrap to 0
        raise WireFormatError(f"blob of shape {tuple(shape)} holds {size} values")
    values = np.concatenate([np.frombuffer(data[BLOB_DATA], "<f4"), np.frombuffer(data[BLOB_DOUBLE_DATA], "<f8")])
    try:
        return values.astype(np.float32, copy=False).reshape(shape)
    except (ValueError, OverflowError) as err:  # an empty blob with a dimension over 2**63
        raise WireFormatError(f"blob of shape {tuple(shape)}: {err}") from None


def _dims(value: int | memoryview) -> list[int]:
    """BlobShape's dims, at most MAX_BLOB_AXES of them (packed or not)."""
    dims: list[int] = []
    for field, _, dim in iter_fields(value):
        if field == 1:
            if isinstance(dim, memoryview) and len(dim) > 10 * MAX_BLOB_AXES:  # a varint takes at most 10 bytes
                raise WireFormatError(f"blob shape of {len(dim):,} bytes: more than {MAX_BLOB_AXES} dims")
            dims += packed_varints(dim)
            if len(dims) > MAX_BLOB_AXES:
                raise WireFormatError(f"blob shape with more than {MAX_BLOB_AXES} dims")
    return dims


def _parse_layer(buf: memoryview, name_field: int, blobs_field: int) -> tuple[str, list[np.ndarray]]:
    name, blobs = "", []
    for field, wire, value in iter_fields(buf):
        if field == name_field and wire == LENGTH_DELIMITED:
            try:
                name = bytes(value).decode("utf8")
            except UnicodeDecodeError as err:
                raise WireFormatError(f"layer name {bytes(value)[:40]!r} is not UTF-8 ({err.reason})") from None
        elif field == blobs_field and wire == LENGTH_DELIMITED:
            if len(blobs) == MAX_BLOBS_PER_LAYER:
                raise WireFormatError(f"layer {name!r} has more than {MAX_BLOBS_PER_LAYER} blobs")
            blobs.append(parse_blob(value))
    return name, blobs


def parse_net(data: bytes) -> dict[str, list[np.ndarray]]:
    """Every layer that has blobs, in file order: {layer name: [blob, ...]} (V1 and V2 layers)."""
    layers: dict[str, list[np.ndarray]] = {}
    for field, wire, value in iter_fields(memoryview(data)):
        if field not in _LAYER_FIELDS or wire != LENGTH_DELIMITED:
            continue
        name, blobs = _parse_layer(value, *_LAYER_FIELDS[field])
        if not blobs:
            continue
        if name in layers:
            raise WireFormatError(f"two layers named {name!r} have weights")
        if len(layers) == MAX_LAYERS:
            raise WireFormatError(f"more than {MAX_LAYERS:,} layers have weights")
        layers[name] = blobs
    return layers


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """{layer name: blobs} of a `.caffemodel` file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Caffe model {path}: no such file")
    try:
        layers = parse_net(path.read_bytes())
    except WireFormatError as error:
        raise ValueError(f"Caffe model {path}: not a binary NetParameter (.caffemodel): {error}") from None
    if not layers:
        raise ValueError(f"Caffe model {path}: no layer with weights (is it a .prototxt, or empty?)")
    return layers
