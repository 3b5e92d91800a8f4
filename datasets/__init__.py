"""Dataset sources, one module each, all returning `ssd.records.DetectionDataset`.

- `datasets.voc`: Pascal VOC devkit folders or any VOC-format folder (`load_voc`).
- `datasets.coco`: a COCO `instances_*.json` and its image folder (`load_coco`).
- `datasets.yolo`: YOLO txt labels beside images (`load_yolo`).
- `datasets.synthetic`: the generated coloured-shapes set in any of the three formats
  (`generate_synthetic`, `load_synthetic`).

`datasets.exports` recognises a labelling tool's export as written (Ultralytics data.yaml,
Roboflow / CVAT / Label Studio COCO, LabelImg and CVAT VOC) and `load_splits` reads its splits;
`load_dataset` does both for split names given. `datasets.classes` picks and orders the classes.
This folder is used from the checkout (it is not installed), so it never shadows the PyPI package
called `datasets`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from datasets.classes import select_classes
from datasets.exports import Export, Split, load_split, recognise
from ssd.records import DetectionDataset, read_lines

logger = logging.getLogger(__name__)


def parse_class_names(spec: str) -> tuple[str, ...]:
    """Class names from "a,b,c" or from a file with one name per line."""
    path = Path(spec)
    names = tuple(read_lines(path, "class names file") if path.is_file()
                  else (n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise ValueError(f"class list {spec!r} names no classes")
    return names


def load_dataset(root: str | os.PathLike, splits: Sequence[str], class_names: str | Sequence[str] | None = None,
                 include_difficult: bool = True, strict: bool = False, verbose: bool = False,
                 data_format: str | None = None, include_crowd: bool = True, image_dir: str | os.PathLike | None = None,
                 allow_missing: bool = False) -> DetectionDataset:
    """One dataset from the named splits of the export at `root` (a folder or file, see `recognise`)."""
    export = recognise(root, data_format, image_dir)
    return load_splits(export, [export.split(s) for s in splits], class_names, include_difficult=include_difficult,
                       include_crowd=include_crowd, strict=strict, verbose=verbose, allow_missing=allow_missing)


def load_splits(export: Export, splits: Sequence[Split], class_names: str | Sequence[str] | None = None, *,
                include_difficult: bool = True, include_crowd: bool = True, strict: bool = False,
                verbose: bool = False, allow_missing: bool = False, what: str = "--classes") -> DetectionDataset:
    """The splits as one dataset (an image in two splits once), classes `class_names` if given.

    Classes: `class_names` (names or "a,b,c" / a file) selects and orders the export's classes by
    name, objects of the others left out and counted; without it, the export's own (see
    `datasets.exports`). A YOLO folder that names no classes takes `class_names` as its names.
    `allow_missing`: a class of `class_names` the data lacks is reported, not refused (evaluating
    a trained run). `include_difficult=False` drops VOC difficult and COCO crowd objects,
    `include_crowd=False` COCO crowd objects only (training never matches a crowd box).
    """
    if isinstance(class_names, str):
        class_names = parse_class_names(class_names)
    if export.format == "yolo" and export.class_names is None and class_names:
        export = dataclasses.replace(export, class_names=tuple(class_names), names_source=what)
    parts = [(split, *load_split(export, split, include_difficult, include_crowd, strict)) for split in splits]
    own = _union_classes(export, [dataset for _, dataset, _ in parts])
    if export.class_names is None and export.format == "voc":
        logger.info("classes found in the XML files of %s (sorted): %s", export.root, ", ".join(own.class_names))
    wanted = tuple(class_names) if class_names else own.class_names
    selection = select_classes(own, wanted, what, allow_missing)
    if selection.missing:
        logger.warning("%s: classes %s are not in the data at %s (its classes: %s); they are evaluated without "
                       "ground truth", what, ", ".join(selection.missing), export.root, ", ".join(own.class_names))
    samples, seen = [], set()
    for split, dataset, report in parts:
        part = select_classes(_relabelled(dataset, own), wanted, what, allow_missing=True)
        report.dropped_classes = part.dropped
        report.objects = sum(len(s.labels) for s in part.dataset.samples)
        report.log(logger, f"{split.name} ({split.describe()})", verbose)
        for sample in part.dataset.samples:
            if sample.image_id not in seen:
                seen.add(sample.image_id)
                samples.append(sample)
    return DetectionDataset(wanted, tuple(samples), selection.dataset.category_ids)


def _union_classes(export: Export, parts: Sequence[DetectionDataset]) -> DetectionDataset:
    """An empty dataset with every part's classes: the export's declared ones, else all parts' in
    first-seen order (VOC names: sorted); COCO ids must agree between parts."""
    ids: dict[str, int | None] = {}
    for part in parts:
        for k, name in enumerate(part.class_names):
            cid = part.category_ids[k] if part.category_ids is not None else None
            if ids.setdefault(name, cid) != cid:
                raise ValueError(f"{export.root}: the splits give class {name!r} different category ids "
                                 f"({ids[name]} and {cid})")
    names = tuple(sorted(ids)) if export.class_names is None and export.format == "voc" else tuple(ids)
    category_ids = tuple(ids[n] for n in names) if all(v is not None for v in ids.values()) else None
    return DetectionDataset(names, (), category_ids)


def _relabelled(part: DetectionDataset, union: DetectionDataset) -> DetectionDataset:
    """`part` with the union's class list, so every split's labels mean the same classes."""
    return select_classes(part, union.class_names, allow_missing=True).dataset if part.class_names != \
        union.class_names else part
