"""Read a PyTorch `.pth` state dict into NumPy arrays without importing torch.

Both of torch.save's formats:
- zip (torch >= 1.6): `<name>/data.pkl` is the pickled object; tensors refer to storages by
  persistent id ("storage", storage type, key, location, numel), stored raw in `<name>/data/<key>`
  (byte order in `<name>/byteorder`, little-endian when absent).
- legacy (ssd.pytorch's files): five things back to back: a pickled magic number, the protocol
  version (1001), a sys-info dict, the pickled object (persistent ids ("storage", type, key,
  location, numel, view metadata)), a pickled list of storage keys; then each storage in that
  order as an int64 element count and its raw little-endian bytes.

A pickle can run any code it names, so objects are rebuilt only through an allow-list (the names
torch's own weights-only loader needs for a state dict): collections.OrderedDict,
torch._utils._rebuild_tensor(_v2), torch._utils._rebuild_parameter, and torch.<Type>Storage.
Anything else is refused before it is called.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": None,
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the allow-list."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor(_v2): remember where the values are."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"a tensor's storage is {type(storage).__name__}, not a storage reference")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter: a Parameter is its tensor."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class AllowListUnpickler(pickle.Unpickler):
    """Unpickles only state dicts: allow-listed names, and storages by persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a weights file needs only tensors and dicts "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))})") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 view metadata) are not supported")
        dtype = STORAGE_DTYPES[pid[1].name]
        if dtype is None:
            raise pickle.UnpicklingError(f"{pid[1].name} has no NumPy type")
        return _StorageRef(str(pid[2]), dtype, int(pid[4]))


def _unpickle(stream) -> Any:
    return AllowListUnpickler(stream).load()


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    """Replace every tensor reference by a NumPy array copied out of its storage."""
    if isinstance(obj, _TensorRef):
        flat = storages[obj.storage.key]
        empty = not all(obj.size)
        last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
        if obj.offset < 0 or any(s < 0 for s in obj.stride) or (not empty and last >= len(flat)):
            raise pickle.UnpicklingError(
                f"tensor {obj.size} at offset {obj.offset} runs past its storage of {len(flat)}")
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset:], obj.size, tuple(s * flat.itemsize for s in obj.stride), writeable=False)
        return np.array(view)
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v, storages)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _storage_refs(obj: Any) -> dict[str, _StorageRef]:
    if isinstance(obj, _TensorRef):
        return {obj.storage.key: obj.storage}
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    refs: dict[str, _StorageRef] = {}
    for item in items:
        refs.update(_storage_refs(item))
    return refs


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"expected one data.pkl in the zip, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        obj = _unpickle(io.BytesIO(archive.read(pickles[0])))
        order = "<" if byteorder == "little" else ">"
        storages = {key: np.frombuffer(archive.read(f"{prefix}data/{key}"), order + ref.dtype, count=ref.numel)
                    for key, ref in _storage_refs(obj).items()}
    return _materialise(obj, storages)


def _read_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _unpickle(f)
        except Exception:  # arbitrary bytes fail in many ways; all mean "not a legacy torch file"
            magic = None
        if magic != LEGACY_MAGIC:
            raise ValueError("neither a zip nor a legacy torch file (no torch magic number)")
        protocol, sys_info = _unpickle(f), _unpickle(f)
        if protocol != LEGACY_PROTOCOL or not sys_info.get("little_endian", False):
            raise ValueError(f"unsupported legacy protocol {protocol} / sys info {sys_info}")
        obj, keys = _unpickle(f), _unpickle(f)
        refs = _storage_refs(obj)
        storages = {}
        for key in keys:
            ref = refs[key]
            count = int.from_bytes(f.read(8), "little", signed=True)
            data = f.read(count * np.dtype(ref.dtype).itemsize)
            if count != ref.numel or len(data) != count * np.dtype(ref.dtype).itemsize:
                raise ValueError(f"storage {key}: expected {ref.numel} values, the file has {count} "
                                 f"({len(data)} bytes left)")
            storages[key] = np.frombuffer(data, "<" + ref.dtype)
    return _materialise(obj, storages)


def read_torch_file(path: str | Path) -> Any:
    """The object in a torch.save file, tensors as NumPy arrays; a refused name raises UnsafePickleError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PyTorch file {path}: no such file")
    try:
        return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except UnsafePickleError as error:
        raise UnsafePickleError(f"PyTorch file {path}: {error}") from None
    except (pickle.UnpicklingError, ValueError, KeyError, EOFError) as error:
        raise ValueError(f"PyTorch file {path}: cannot read it as a torch.save file: {error}") from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A `.pth` state dict as {key: array}; anything but a flat dict of tensors is refused."""
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ValueError(f"PyTorch file {path}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    return dict(obj)
