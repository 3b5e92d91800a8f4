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
Anything else is refused before it is called. Each name is handed out as a fresh wrapper that
refuses BUILD (pickle's "set the state of this object"), so a file cannot change what a name
means for the next file.

The file is untrusted in its sizes too. Before a byte of tensor data is allocated: every tensor
must lie inside its storage without repeating an element (no zero stride on a dimension longer
than 1, no more elements than the storage holds); a zip member must declare exactly the bytes of
its storage; and the bytes the tensors need must stay within `max_bytes`. Storages are then read
by streaming, only as far as their tensors reach. Anything malformed is a ValueError naming the
file (UnsafePickleError, also a ValueError, for a refused name).
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": None,
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


# The largest state dict the converter maps is an SSD512 with COCO's 81 classes: about 36 million
# parameters, 145 MB as float32. Four times that leaves room for float64 files and extra tensors;
# anything larger is not one of the files this reader is for.
MAX_TENSOR_BYTES = 600_000_000
MAX_PICKLE_BYTES = 64_000_000  # the data.pkl of a state dict is a few hundred KB
MAX_NESTING = 32  # a state dict is a dict of tensors; a checkpoint nests a few dicts deep


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle names something outside the allow-list, or tries to change an allow-listed one."""


@dataclass(frozen=True)
class _StorageType:
    """torch.<Type>Storage: only a tag in a persistent id; never called, never BUILT."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(f"torch.{self.name} is called: storages come only by persistent id")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"refusing to set the state of torch.{self.name} (pickle BUILD on an allow-listed name)")


class _Allowed:
    """One allow-listed callable, handed out fresh per lookup; bad arguments are an UnpicklingError."""

    __slots__ = ("function", "qualname")

    def __init__(self, function: Callable[..., Any], qualname: str):
        self.function, self.qualname = function, qualname

    def __call__(self, *args: Any) -> Any:
        try:
            return self.function(*args)
        except (TypeError, ValueError, OverflowError) as err:
            raise pickle.UnpicklingError(f"{self.qualname}{_short(args)}: {err}") from None

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"refusing to set the state of {self.qualname} (pickle BUILD on an allow-listed name)")


def _short(args: tuple) -> str:
    text = repr(args)
    return text if len(text) <= 80 else text[:77] + "..."


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
    """Stand-in for torch._utils._rebuild_tensor(_v2): remember where the values are, once checked."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"a tensor's storage is {type(storage).__name__}, not a storage reference")
    tensor = _TensorRef(storage, _index(storage_offset), tuple(map(_index, size)), tuple(map(_index, stride)))
    _check_inside(tensor)
    return tensor


def _index(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise pickle.UnpicklingError(f"a tensor's offset, sizes and strides must be integers >= 0, got {value!r:.40}")
    return value


def _check_inside(tensor: _TensorRef) -> None:
    """The tensor reads each of its elements once, all inside its storage (checked before any copy)."""
    size, stride, numel = tensor.size, tensor.stride, tensor.storage.numel
    where = f"tensor of size {size} (stride {stride}, offset {tensor.offset})"
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"{where}: {len(size)} sizes but {len(stride)} strides")
    count = math.prod(size)
    if count == 0:
        return
    if any(s == 0 and n > 1 for n, s in zip(size, stride)):
        raise pickle.UnpicklingError(f"{where} repeats elements (stride 0): {count:,} elements from a storage of "
                                     f"{numel:,}")
    last = tensor.offset + sum((n - 1) * s for n, s in zip(size, stride))
    if count > numel or last >= numel:
        raise pickle.UnpicklingError(f"{where} has {count:,} elements reaching index {last:,}: it runs past its "
                                     f"storage of {numel:,}")


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter: a Parameter is its tensor."""
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | None] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): None for name in STORAGE_DTYPES},  # a storage type: a tag, see _StorageType
}


class AllowListUnpickler(pickle.Unpickler):
    """Unpickles only state dicts: allow-listed names, and storages by persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a weights file needs only tensors and dicts "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))})")
        function = _ALLOWED[(module, name)]
        return _StorageType(name) if function is None else _Allowed(function, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 view metadata) are not supported")
        dtype = STORAGE_DTYPES[pid[1].name]
        if dtype is None:
            raise pickle.UnpicklingError(f"{pid[1].name} has no NumPy type")
        if not isinstance(pid[2], (str, int)) or not isinstance(pid[4], int) or pid[4] < 0:
            raise pickle.UnpicklingError(f"storage persistent id with a bad key or element count: {pid!r:.80}")
        return _StorageRef(str(pid[2]), dtype, pid[4])


def _unpickle(stream: BinaryIO) -> Any:
    return AllowListUnpickler(stream).load()


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    """Replace every tensor reference by a NumPy array copied out of its storage."""
    if isinstance(obj, _TensorRef):
        if not all(obj.size):
            return np.zeros(obj.size, storages[obj.storage.key].dtype)
        flat = storages[obj.storage.key]  # holds at least up to the tensor's last element (_needed)
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset:], obj.size, tuple(s * flat.itemsize for s in obj.stride), writeable=False)
        return np.array(view)
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v, storages)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _tensors(obj: Any, depth: int = 0) -> list[_TensorRef]:
    """Every tensor reference in dicts, lists and tuples; refuses nesting deeper than MAX_NESTING."""
    if isinstance(obj, _TensorRef):
        return [obj]
    if depth > MAX_NESTING:
        raise pickle.UnpicklingError(f"the object is nested more than {MAX_NESTING} levels deep: not a state dict")
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return [tensor for item in items for tensor in _tensors(item, depth + 1)]


def _needed(obj: Any, max_bytes: int) -> dict[str, tuple[_StorageRef, int]]:
    """{storage key: (storage, elements its tensors reach)}; ValueError if they need over `max_bytes`."""
    needed: dict[str, tuple[_StorageRef, int]] = {}
    for tensor in _tensors(obj):
        ref = tensor.storage
        reach = tensor.offset + 1 + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride)) if all(
            tensor.size) else 0
        if ref.key in needed and needed[ref.key][0] != ref:
            raise pickle.UnpicklingError(f"storage {ref.key} is declared twice, differently")
        needed[ref.key] = (ref, max(reach, needed.get(ref.key, (ref, 0))[1]))
    total = sum(count * np.dtype(ref.dtype).itemsize for ref, count in needed.values())
    if total > max_bytes:
        raise ValueError(f"its tensors need {total:,} bytes, more than the {max_bytes:,} of any SSD this reader "
                         f"converts (max_bytes)")
    return needed


def _read_into(stream: BinaryIO, count: int, dtype: np.dtype, where: str) -> np.ndarray:
    """Exactly `count` values of `dtype` from `stream`, read in chunks into one preallocated array."""
    out = np.empty(count, dtype)
    view, done = memoryview(out).cast("B"), 0
    while done < len(view):
        got = stream.readinto(view[done:done + (1 << 24)])
        if not got:
            raise ValueError(f"{where}: the data ends after {done:,} of its {len(view):,} bytes")
        done += got
    return out


def _member(archive: zipfile.ZipFile, name: str, size: int | None, limit: int) -> zipfile.ZipInfo:
    """The zip entry `name`, refused (before reading) unless it declares `size` bytes, or at most `limit`."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"the zip has no member {name}") from None
    if (size is not None and info.file_size != size) or info.file_size > limit:
        expected = f"{size:,} bytes" if size is not None else f"at most {limit:,} bytes"
        raise ValueError(f"zip member {name} declares {info.file_size:,} bytes (compressed {info.compress_size:,}); "
                         f"expected {expected}")
    return info


def _read_zip(path: Path, max_bytes: int) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"expected one data.pkl in the zip, found {pickles[:4]}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in archive.namelist():
            byteorder = archive.read(_member(archive, prefix + "byteorder", None, 16)).decode("ascii", "replace")
        with archive.open(_member(archive, pickles[0], None, MAX_PICKLE_BYTES)) as pickled:
            obj = _unpickle(pickled)
        order = "<" if byteorder == "little" else ">"
        storages = {}
        for key, (ref, count) in _needed(obj, max_bytes).items():
            dtype = np.dtype(order + ref.dtype)
            name = f"{prefix}data/{key}"
            with archive.open(_member(archive, name, ref.numel * dtype.itemsize, max_bytes)) as member:
                storages[key] = _read_into(member, count, dtype, f"zip member {name}")
    return _materialise(obj, storages)


def _read_legacy(path: Path, max_bytes: int) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _unpickle(f)
        except Exception:  # arbitrary bytes fail in many ways; all mean "not a legacy torch file"
            magic = None
        if magic != LEGACY_MAGIC:
            raise ValueError("neither a zip nor a legacy torch file (no torch magic number)")
        protocol, sys_info = _unpickle(f), _unpickle(f)
        if protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict) or not sys_info.get("little_endian"):
            raise ValueError(f"unsupported legacy protocol {protocol!r:.40} / sys info {sys_info!r:.200}")
        obj, keys = _unpickle(f), _unpickle(f)
        needed = _needed(obj, max_bytes)
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(needed):
            raise ValueError(f"the storage list {keys!r:.80} does not match the tensors' storages {sorted(needed)!r:.80}")
        size, storages = os.fstat(f.fileno()).st_size, {}
        for key in map(str, keys):
            ref, reach = needed[key]
            count = int.from_bytes(f.read(8), "little", signed=True)
            itemsize = np.dtype(ref.dtype).itemsize
            if count != ref.numel or count * itemsize > size - f.tell():
                raise ValueError(f"storage {key}: expected {ref.numel:,} values, the file declares {count:,} "
                                 f"with {size - f.tell():,} bytes left")
            storages[key] = _read_into(f, reach, np.dtype("<" + ref.dtype), f"storage {key}")
            f.seek((count - reach) * itemsize, os.SEEK_CUR)
    return _materialise(obj, storages)


def read_torch_file(path: str | Path, max_bytes: int = MAX_TENSOR_BYTES) -> Any:
    """The object in a torch.save file, tensors as NumPy arrays.

    Raises ValueError naming the file for anything malformed, UnsafePickleError (a ValueError) for
    a refused name, before any tensor data over `max_bytes` in all is allocated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PyTorch file {path}: no such file")
    try:
        return _read_zip(path, max_bytes) if zipfile.is_zipfile(path) else _read_legacy(path, max_bytes)
    except UnsafePickleError as error:
        raise UnsafePickleError(f"PyTorch file {path}: {error}") from None
    except (pickle.UnpicklingError, ValueError, KeyError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"PyTorch file {path}: cannot read it as a torch.save file: {error}") from None
    except (TypeError, AttributeError, IndexError, RecursionError) as error:  # a pickle of ill-fitting objects
        raise ValueError(f"PyTorch file {path}: cannot read it as a torch.save file: "
                         f"{type(error).__name__}: {error}"[:400]) from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A `.pth` state dict as {key: array}; anything but a flat dict of tensors is refused."""
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ValueError(f"PyTorch file {path}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    return dict(obj)
