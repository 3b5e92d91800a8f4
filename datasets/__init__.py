"""Dataset sources, one module each, all returning `ssd.records.DetectionDataset`.

- `datasets.voc`: Pascal VOC devkit folders or any VOC-format folder (`load_voc`).
- `datasets.synthetic`: the generated coloured-shapes set in VOC format (`generate_synthetic_voc`,
  `load_synthetic`).

This folder is used from the checkout (it is not installed), so it never shadows the PyPI
package called `datasets`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datasets.voc import dataset_class_names, load_voc
from ssd.records import DetectionDataset, read_lines


def parse_class_names(spec: str) -> tuple[str, ...]:
    """Class names from "a,b,c" or from a file with one name per line."""
    path = Path(spec)
    names = tuple(read_lines(path, "class names file") if path.is_file()
                  else (n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise ValueError(f"class list {spec!r} names no classes")
    return names


def load_dataset(root: str | os.PathLike, splits: Sequence[str], class_names: str | Sequence[str] | None = None,
                 include_difficult: bool = True, strict: bool = False, verbose: bool = False) -> DetectionDataset:
    """A VOC-format dataset, its classes from `class_names`, else classes.txt, else VOC's."""
    if isinstance(class_names, str):
        class_names = parse_class_names(class_names)
    names = tuple(class_names) if class_names else dataset_class_names(root, splits)
    return load_voc(root, list(splits), names, include_difficult=include_difficult, strict=strict, verbose=verbose)
