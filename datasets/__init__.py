"""Dataset sources, one module each, all returning `ssd.records.DetectionDataset`.

- `ssd_datasets.voc`: Pascal VOC devkit folders or any VOC-format folder (`load_voc`).
- `ssd_datasets.coco`: a COCO `instances_*.json` and its image folder (`load_coco`).
- `ssd_datasets.yolo`: YOLO txt labels beside images (`load_yolo`).
- `ssd_datasets.synthetic`: the generated coloured-shapes set in any of the three formats
  (`generate_synthetic`, `load_synthetic`).

`ssd_datasets.exports` recognises a labelling tool's export as written (Ultralytics data.yaml,
Roboflow / CVAT / Label Studio COCO, LabelImg and CVAT VOC) and `load_splits` reads its splits;
`load_dataset` does both for split names given; `ssd_datasets.classes` picks and orders the
classes. This folder is installed under the import name `ssd_datasets`, so it never shadows the
PyPI package called `datasets`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssd_datasets.classes import select_classes
from ssd_datasets.exports import Export, Split, load_split, recognise
from ssd.image_header import names_a_file
from ssd.records import DetectionDataset, read_lines

logger = logging.getLogger(__name__)


def parse_class_names(spec: str) -> tuple[str, ...]:
    """Class names from "a,b,c" or from a file with one name per line."""
    path = Path(spec)
    names = tuple(read_lines(path, "class names file") if names_a_file(path)
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
    `ssd_datasets.exports`). A YOLO folder that names no classes takes `class_names` as its names.
    `allow_missing`: a class of `class_names` the data lacks is reported, not refused (evaluating
    a trained run). `include_difficult=False` drops VOC difficult and COCO crowd objects,
    `include_crowd=False` COCO crowd objects only (training never matches a crowd box).
    """
    if isinstance(class_names, str):
        class_names = parse_class_names(class_names)
    if export.format == "yolo" and export.class_names is None and class_names:
        export = dataclasses.replace(export, class_names=tuple(class_names))
    parts = [(split, *load_split(export, split, include_difficult, include_crowd, strict)) for split in splits]
    own = _union_classes(export, [dataset for _, dataset, _ in parts])
    if export.class_names is None and export.format == "voc":
        logger.info("classes found in the XML files of %s (sorted): %s", export.root, ", ".join(own.class_names))
    wanted = tuple(class_names) if class_names else own.class_names
    selection = select_classes(own, wanted, what, allow_missing)
    if selection.missing:
        logger.warning("%s: classes %s are not in the data at %s (its classes: %s); they are evaluated without "
                       "ground truth", what, ", ".join(selection.missing), export.root, ", ".join(own.class_names))
    for entry in dict.fromkeys(entry for _, _, report in parts for entry in report.not_classes):
        logger.info("%s: %s is the other categories' supercategory and no annotation uses it: not a class",
                    export.root, entry)
    samples, paths, ids = [], set(), set()
    for split, dataset, report in parts:
        report.not_classes = []  # said once above, not once per split
        part = select_classes(_relabelled(dataset, own), wanted, what, allow_missing=True)
        report.dropped_classes = part.dropped
        report.objects = sum(len(s.labels) for s in part.dataset.samples)
        report.log(logger, f"{split.name} ({split.describe()})", verbose)
        for sample in part.dataset.samples:
            if sample.image_path in paths:
                continue  # an image two splits list (train and trainval)
            if sample.image_id in ids:  # each split numbers its own images (Roboflow's COCO files)
                sample = dataclasses.replace(sample, image_id=f"{split.name}/{sample.image_id}")
            paths.add(sample.image_path)
            ids.add(sample.image_id)
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
    return select_classes(part, union.class_names, allow_missing=True).dataset


@dataclasses.dataclass(frozen=True)
class TrainValData:
    """What training reads: the training set, the validation set (None: no validation), their splits."""

    train: DetectionDataset
    val: DetectionDataset | None
    train_splits: tuple[str, ...]
    val_splits: tuple[str, ...]  # ("<fraction> of <split>",) when held out by --val-fraction


def load_train_val(data_root: str | os.PathLike, train_splits: Sequence[str] = (), val_splits: Sequence[str] = (),
                   class_names: str | Sequence[str] | None = None, val_fraction: float | None = None, seed: int = 0,
                   data_format: str | None = None, image_dir: str | os.PathLike | None = None,
                   include_difficult: bool = True, strict: bool = False, verbose: bool = False,
                   run_classes: bool = False) -> TrainValData:
    """The training and validation sets of an export: the splits named, else the export's own.

    An export with one split is the whole dataset: `val_fraction` of its images (a seeded random
    choice) is held out for validation, or training runs without validation. The validation set
    has the training set's classes. `run_classes`: `class_names` are a trained run's (resuming or
    repeating it), so one the data lacks is reported, not refused.
    """
    export = recognise(data_root, data_format, image_dir)
    default_train, default_val = export.default_splits()
    train = [export.split(s) for s in train_splits] or default_train
    val = [export.split(s) for s in val_splits] if val_splits else [s for s in default_val if s not in train]
    if val_fraction is not None and val_splits:
        raise ValueError("--val-fraction holds a part of the training data out: give it or --val-split, not both")
    logger.info("%s at %s: training on %s", export.tool, export.root, "; ".join(f"{s.name} ({s.describe()})"
                                                                                for s in train))
    train_set = load_splits(export, train, class_names, include_difficult=include_difficult, include_crowd=False,
                            strict=strict, verbose=verbose, allow_missing=run_classes,
                            what="the run's classes" if run_classes else "--classes")
    names = tuple(s.name for s in train)
    if val_fraction is not None:
        train_set, val_set = hold_out(train_set, val_fraction, seed)
        logger.info("validating on %d images held out of %s (--val-fraction %g, seed %d)", len(val_set),
                    ", ".join(names), val_fraction, seed)
        return TrainValData(train_set, val_set, names, (f"{val_fraction:g} of {', '.join(names)}",))
    if not val:
        logger.warning("%s at %s has no validation split: training without validation (--val-fraction F holds a "
                       "part out, --val-split names one)", export.tool, export.root)
        return TrainValData(train_set, None, names, ())
    logger.info("validating on %s", "; ".join(f"{s.name} ({s.describe()})" for s in val))
    val_set = load_splits(export, val, train_set.class_names, strict=strict, verbose=verbose, allow_missing=True,
                          what="the training classes")
    return TrainValData(train_set, val_set, names, tuple(s.name for s in val))


def hold_out(dataset: DetectionDataset, fraction: float, seed: int) -> tuple[DetectionDataset, DetectionDataset]:
    """(rest, held out): `fraction` of the images, at least one, chosen by a random permutation
    seeded with `seed`; both keep the dataset's image order."""
    if not 0 < fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {fraction}")
    if len(dataset) < 2:
        raise ValueError(f"--val-fraction {fraction}: the dataset has {len(dataset)} image(s), too few to split")
    count = min(len(dataset) - 1, max(1, round(fraction * len(dataset))))
    held = set(np.random.default_rng(seed).permutation(len(dataset))[:count].tolist())
    rest = tuple(s for k, s in enumerate(dataset.samples) if k not in held)
    out = tuple(s for k, s in enumerate(dataset.samples) if k in held)
    return dataclasses.replace(dataset, samples=rest), dataclasses.replace(dataset, samples=out)
