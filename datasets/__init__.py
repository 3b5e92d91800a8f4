"""Dataset sources, one module each, all returning `ssd.records.DetectionDataset`.

- `ssd_datasets.voc`: Pascal VOC devkit folders or any VOC-format folder (`load_voc`).
- `ssd_datasets.coco`: a COCO `instances_*.json` and its image folder (`load_coco`).
- `ssd_datasets.yolo`: YOLO txt labels beside images (`load_yolo`).
- `ssd_datasets.synthetic`: the generated coloured-shapes set in any of the three formats
  (`generate_synthetic`, `load_synthetic`).

`load_dataset` reads any of them, the format given or detected from the folder. This folder is
used from the checkout (it is not installed), so it never shadows the PyPI package called
`datasets`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssd_datasets.coco import load_coco
from ssd_datasets.voc import dataset_class_names, load_voc
from ssd_datasets.yolo import load_yolo
from ssd.records import DATA_FORMATS, DetectionDataset, read_lines


def parse_class_names(spec: str) -> tuple[str, ...]:
    """Class names from "a,b,c" or from a file with one name per line."""
    path = Path(spec)
    names = tuple(read_lines(path, "class names file") if path.is_file()
                  else (n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise ValueError(f"class list {spec!r} names no classes")
    return names


def detect_format(root: str | os.PathLike, splits: Sequence[str] = ()) -> str:
    """"coco" for JSON splits or an annotations/ folder of JSON, "yolo" for labels/ or data.yaml,
    "voc" for Annotations/ (in the folder or its year subfolders) or devkit splits."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} is not a folder")
    if any(s.endswith(".json") for s in splits) or any((root / "annotations").glob("*.json")):
        return "coco"
    if (root / "labels").is_dir() or (root / "data.yaml").is_file():
        return "yolo"
    if (root / "Annotations").is_dir() or any((root / s.split(":")[0] / "Annotations").is_dir()
                                              for s in splits if ":" in s):
        return "voc"
    raise ValueError(f"--data-root {root}: cannot tell its format (no annotations/*.json for COCO, labels/ or "
                     f"data.yaml for YOLO, Annotations/ for VOC); pass --data-format {'|'.join(DATA_FORMATS)}")


def coco_annotation_file(root: Path, split: str) -> Path:
    """A COCO split: a JSON path (absolute or under root), or a name: annotations/instances_<name>.json."""
    if split.endswith(".json"):
        return Path(split) if os.path.isabs(split) else root / split
    return root / "annotations" / f"instances_{split}.json"


def load_dataset(root: str | os.PathLike, splits: Sequence[str], class_names: str | Sequence[str] | None = None,
                 include_difficult: bool = True, strict: bool = False, verbose: bool = False,
                 data_format: str | None = None, include_crowd: bool = True) -> DetectionDataset:
    """One dataset from the splits of a VOC, COCO or YOLO folder (`data_format`, else detected).

    Classes: `class_names` (names or "a,b,c" / a file), else the dataset's own (VOC: classes.txt
    or VOC's 20; COCO: the file's categories, which `class_names` must then equal; YOLO: data.yaml
    or classes.txt). `include_difficult=False` drops VOC difficult and COCO crowd objects,
    `include_crowd=False` COCO crowd objects only (training never matches a crowd box).
    """
    if isinstance(class_names, str):
        class_names = parse_class_names(class_names)
    data_format = data_format or detect_format(root, splits)
    if data_format == "voc":
        names = tuple(class_names) if class_names else dataset_class_names(root, splits)
        return load_voc(root, list(splits), names, include_difficult=include_difficult, strict=strict,
                        verbose=verbose)
    if data_format == "yolo":
        return load_yolo(root, list(splits), class_names, strict=strict, verbose=verbose)
    if data_format != "coco":
        raise ValueError(f"data format must be one of {DATA_FORMATS}, got {data_format!r}")
    parts = [load_coco(coco_annotation_file(Path(root), split), include_crowd=include_crowd and include_difficult,
                       strict=strict, verbose=verbose) for split in splits]
    return _merge_coco(parts, class_names)


def _merge_coco(parts: list[DetectionDataset], class_names: Sequence[str] | None) -> DetectionDataset:
    """Several COCO files as one dataset; they must share their categories (an image in two files once)."""
    first = parts[0]
    for part in parts[1:]:
        if (part.class_names, part.category_ids) != (first.class_names, first.category_ids):
            raise ValueError(f"COCO splits with different categories: {first.class_names} vs {part.class_names}")
    if class_names and tuple(class_names) != first.class_names:
        raise ValueError(f"classes {list(class_names)} differ from the COCO file's categories {list(first.class_names)}")
    seen, samples = set(), []
    for sample in (s for part in parts for s in part.samples):
        if sample.image_id not in seen:
            seen.add(sample.image_id)
            samples.append(sample)
    return DetectionDataset(first.class_names, tuple(samples), first.category_ids)
