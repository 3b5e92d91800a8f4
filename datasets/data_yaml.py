"""Ultralytics' dataset YAML (`data.yaml`): the keys a detection dataset uses, without a YAML library.

    path: ../datasets/shapes     # root: absolute, or relative to this file (default: its folder)
    train: images/train          # a folder, a list file, or a list of them, relative to path
    val: [images/val, extra.txt]
    test:                        # optional
    nc: 3                        # optional; must equal the number of names
    names: {0: circle, 1: square, 2: triangle}    # or a list, flow or block style

Only top-level keys are read, each a scalar, a flow list/map, or a block list/map indented below
it; anything else (download scripts, ...) is skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd_datasets.yolo import _split_flow, _strip_comment, _unquote
from ssd.image_header import names_a_file
from ssd.records import class_name_problem, read_text

SPLIT_KEYS = ("train", "val", "test")
_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(?:\s+(.*)|\s*)$")


@dataclass(frozen=True)
class DataYaml:
    """What a data.yaml says: its root, the image entries of each split, the class names."""

    path: Path  # the yaml file
    root: Path
    splits: dict[str, tuple[str, ...]]  # "train"/"val"/"test" -> folders or list files, relative to root
    names: tuple[str, ...]

    def entry_path(self, entry: str) -> Path:
        """A split entry as a path: absolute, else under the root (Ultralytics also drops a leading ../)."""
        path = Path(entry) if os.path.isabs(entry) else self.root / entry
        if not path.exists() and entry.startswith("../") and (self.root / entry[3:]).exists():
            return self.root / entry[3:]
        return path


def read_yaml_keys(path: str | os.PathLike) -> dict[str, Any]:
    """Top-level keys: str for a scalar, list for a list, dict for a map, None when empty."""
    lines = read_text(path, "dataset YAML file").splitlines()
    keys: dict[str, Any] = {}
    current = None
    for line in lines:
        text = _strip_comment(line)
        if not text:
            continue
        if not line[:1].isspace() and not text.startswith("-"):
            match = _KEY.match(text)
            if not match:
                current = None
                continue
            current, value = match.group(1), (match.group(2) or "").strip()
            keys[current] = _flow(value) if value else None
        elif current is not None:
            keys[current] = _block_item(keys[current], text, current, path)
    return keys


def _flow(value: str) -> Any:
    if value.startswith("[") and value.endswith("]"):
        return [_unquote(v) for v in _split_flow(value[1:-1])]
    if value.startswith("{") and value.endswith("}"):
        return dict(_pair(item) for item in _split_flow(value[1:-1]))
    return _unquote(value)


def _pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition(":")
    return _unquote(key.strip()), _unquote(value.strip())


def _block_item(container: Any, text: str, key: str, path: str | os.PathLike) -> Any:
    if text.startswith("-"):
        return (container if isinstance(container, list) else []) + [_unquote(text[1:].strip())]
    if ":" not in text:  # a line of a script or text block: only the names block must be a map
        if key == "names":
            raise ValueError(f"{path}: expected '- name' or 'id: name' under 'names:', got {text!r}")
        return container
    key, value = _pair(text)
    return {**(container if isinstance(container, dict) else {}), key: value}


def read_data_yaml(path: str | os.PathLike) -> DataYaml:
    """The yaml's root, splits and names, checked: names present, nc equal to their number."""
    path = Path(path)
    if not names_a_file(path):
        raise FileNotFoundError(f"dataset YAML {path} does not exist")
    keys = read_yaml_keys(path)
    names = _names(keys.get("names"), path)
    nc = keys.get("nc")
    if nc not in (None, "") and (not str(nc).isdigit() or int(nc) != len(names)):
        raise ValueError(f"{path}: nc is {nc} but names lists {len(names)} classes: set nc: {len(names)} or "
                         "remove the nc line")
    root = Path(keys["path"]) if keys.get("path") else path.parent
    root = root if root.is_absolute() else Path(os.path.normpath(path.parent / root))
    splits = {k: tuple(v) if isinstance(v, list) else (v,) for k in SPLIT_KEYS if (v := keys.get(k))}
    if "train" not in splits:
        raise ValueError(f"{path}: no 'train:' key: add train: images/train (a folder or list file relative to "
                         f"{root})")
    return DataYaml(path, root, splits, names)


def _names(value: Any, path: Path) -> tuple[str, ...]:
    if value in (None, "", [], {}):
        raise ValueError(f"{path}: no 'names:' key: add the class names, e.g. names: [circle, square] or one "
                         "'0: circle' line per class under names:")
    if isinstance(value, dict):
        if not all(str(k).isdigit() for k in value) or sorted(int(k) for k in value) != list(range(len(value))):
            raise ValueError(f"{path}: names ids must be 0..{len(value) - 1}, got {sorted(value)}")
        value = [value[k] for k in sorted(value, key=int)]
    if not isinstance(value, list) or not all(value):
        raise ValueError(f"{path}: 'names' must list non-empty class names, got {value!r}")
    for k, name in enumerate(value):
        problem = class_name_problem(str(name))
        if problem:
            raise ValueError(f"{path}: class {k}: name {problem}")
    return tuple(str(v) for v in value)
