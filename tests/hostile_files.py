"""Hostile weights files written by hand (pickle opcodes, zip members, protobuf fields), and a way
to measure the peak memory of reading them in a fresh process.

The pickles follow torch.save's layout (torch/serialization.py): a protocol-2 pickle whose tensors
are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` calls
and whose storages are persistent ids ("storage", torch.<Type>Storage, key, location, numel).
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

PROTO, STOP, MARK, TUPLE, REDUCE, BUILD, BINPERSID = b"\x80\x02", b".", b"(", b"t", b"R", b"b", b"Q"
EMPTY_DICT, EMPTY_LIST, APPEND, SETITEMS, EMPTY_TUPLE = b"}", b"]", b"a", b"u", b")"
LEGACY_HEAD = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})


def value(x: object) -> bytes:
    """The opcodes that push a plain value (int, str, tuple, dict of those), without PROTO and STOP."""
    return pickletools.optimize(pickle.dumps(x, protocol=2))[2:-1]


def global_(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def call(function: bytes, *args: bytes) -> bytes:
    return function + MARK + b"".join(args) + TUPLE + REDUCE


def storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    """A storage by persistent id, as torch.save writes it."""
    return MARK + value("storage") + global_("torch", kind) + value(key) + value("cpu") + value(numel) + TUPLE + BINPERSID


def tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    hooks = call(global_("collections", "OrderedDict"))
    return call(global_("torch._utils", "_rebuild_tensor_v2"), storage(key, numel), value(offset), value(size),
                value(stride), value(False), hooks)


def state_dict(**items: bytes) -> bytes:
    """A whole pickle: {name: the object the opcodes build}."""
    body = b"".join(value(k) + v for k, v in items.items())
    return PROTO + EMPTY_DICT + MARK + body + SETITEMS + STOP


def whole(opcodes: bytes) -> bytes:
    return PROTO + opcodes + STOP


def nested_list(depth: int) -> bytes:
    """[[[...]]] `depth` deep: EMPTY_LIST ... then APPEND each into its parent."""
    return PROTO + EMPTY_LIST * depth + APPEND * (depth - 1) + STOP


def write_zip(path: Path, pickled: bytes, members: dict[str, bytes] | None = None) -> Path:
    """torch.save's zip layout: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, data in (members or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def write_zip_bomb(path: Path, pickled: bytes, key: str, size: int) -> Path:
    """A zip .pth whose storage member `key` is `size` zero bytes, deflated (about size / 1000 on disk)."""
    chunk = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("archive/data.pkl", pickled)
        with archive.open(f"archive/data/{key}", "w", force_zip64=True) as member:
            for start in range(0, size, len(chunk)):
                member.write(chunk[: size - start])
    return path


def legacy_file(pickled: bytes, keys: list[str], storages: bytes = b"", head: tuple = LEGACY_HEAD) -> bytes:
    """The legacy layout: magic, protocol, sys info, the object, its storage keys, then the storages."""
    return b"".join(pickle.dumps(x, protocol=2) for x in head) + pickled + pickle.dumps(keys, protocol=2) + storages


def measure(imports: str, body: str, *args: object, timeout: float = 120) -> dict:
    """Run `body` in a fresh Python after `imports`: {"result": what body assigns to `result`,
    "baseline_mb": the process's RSS peak after the imports, "peak_mb": its RSS peak at the end,
    "seconds": how long the body took}.

    The peak is the process's own VmHWM (Linux), reset after the imports, not ru_maxrss: across fork
    and exec, ru_maxrss keeps the parent's peak (a pytest worker with TensorFlow loaded: ~750 MB),
    and the imports' own transient peak would hide any rise below either.

    `sys.argv[1:]` holds `args` as strings. A body that hangs fails the test at `timeout`.
    """
    code = f"""
import json, sys, time
def rss_peak_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
{imports}
try:  # the peak from here on, not the imports' transient peak (Linux >= 4.0: "5" resets VmHWM to VmRSS)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
except OSError:
    pass
baseline = rss_peak_kb()
start = time.monotonic()
{body}
seconds = time.monotonic() - start
peak = rss_peak_kb()
print(json.dumps({{"result": result, "baseline_mb": baseline / 1024, "peak_mb": peak / 1024, "seconds": seconds}}))
"""
    run = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def peak_memory_of_reading(reader: str, paths: list[Path]) -> dict:
    """Read each file with `reader` ("module:function") in a fresh Python (see `measure`); "result"
    holds the error message (or None) per path."""
    module, function = reader.split(":")
    body = """
result = []
for path in sys.argv[1:]:
    try:
        read(path)
        result.append(None)
    except (ValueError, FileNotFoundError) as err:
        result.append(str(err))
"""
    return measure(f"from {module} import {function} as read", body, *paths)


def cli_error_line(capsys, main, path: Path, *args: str) -> str:
    """Run a CLI's main([path, *args]): it must exit 2 with one error line naming the file; that line."""
    assert main([str(path), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], err
    return lines[0]


SPECIAL = {"zero": "is a character device, not a regular file", "fifo": "is a FIFO (named pipe), not a regular file"}


def make_special(path: Path, kind: str) -> str:
    """`path` (replaced if it exists) made a link to /dev/zero ("zero": endless bytes) or a named pipe
    ("fifo": a read blocks until a writer comes); what a refusal must say."""
    path.unlink(missing_ok=True)
    if kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return SPECIAL[kind]


def special_files(folder: Path, suffix: str = ".jpg") -> dict[str, str]:
    """In `folder`: zero<suffix> and fifo<suffix> (see `make_special`). {stem: what a refusal must say}."""
    folder.mkdir(parents=True, exist_ok=True)
    return {kind: make_special(folder / f"{kind}{suffix}", kind) for kind in SPECIAL}


LOAD_BOUND_MB, LOAD_BOUND_S = 50, 20  # special files are refused at once: no read that could grow or block
