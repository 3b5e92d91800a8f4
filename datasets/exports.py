"""Recognising a labelling tool's export as it is written, and reading its splits.

`recognise(path)` takes a folder or a file and returns an `Export`: which layout it is, its
splits by the export's own names, and the classes it declares. Layouts, tried in this order:

    Ultralytics YOLO    data.yaml (the file, or a folder holding it with train:/val: keys):
                        splits train / val / test as the yaml names them (`ssd_datasets.data_yaml`)
    Label Studio COCO   result.json + images/ (one split)
    Roboflow COCO       train/, valid/, test/, each with _annotations.coco.json and its images
    COCO / CVAT COCO    annotations/instances_<split>.json (CVAT: <split> = default, Train, ...)
                        + images/, images/<split>/ or <split>/
    a COCO .json file   the file itself (one split, named by its stem)
    YOLO folder         images/ + labels/: splits are list files (train.txt) or images/ subfolders
    VOCdevkit           VOC2007/, VOC2012/, ...: splits "VOC2007:trainval", ...
    VOC with ImageSets  Annotations/ + ImageSets/Main/<split>.txt + JPEGImages/ (CVAT "Pascal VOC 1.1")
    VOC folder          .xml files anywhere below, no ImageSets (LabelImg): one split, `ssd_datasets.voc_folder`

COCO `file_name`s are looked up in the JSON's folder, then the image folders, then the export
root (`ssd_datasets.coco.image_folders`); `image_dir` replaces that list with one folder.
Classes: the yaml's names, the COCO categories, classes.txt or CVAT's labelmap.txt; a VOCdevkit
has VOC's 20; any other VOC folder the names its XML files use, sorted.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ssd_datasets.coco import image_folders, load_coco_with_report
from ssd_datasets.data_yaml import read_data_yaml
from ssd_datasets.report import LoadReport
from ssd_datasets.voc import CLASSES_FILE, VOC_CLASSES, load_voc_with_report, parse_split
from ssd_datasets.voc_folder import annotation_files, load_voc_folder_with_report
from ssd_datasets.yolo import IMAGE_SUFFIXES, load_yolo_images_with_report, yolo_class_names
from ssd.image_header import names_a_file, read_regular
from ssd.records import DATA_FORMATS, DetectionDataset, read_lines

logger = logging.getLogger(__name__)

ROBOFLOW_JSON, LABEL_STUDIO_JSON, CVAT_LABELMAP = "_annotations.coco.json", "result.json", "labelmap.txt"
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
# Split names a tool gives its training and validation parts, most specific first (compared in lower case).
TRAIN_NAMES, VAL_NAMES = ("train", "training", "trainval"), ("val", "valid", "validation", "test")


@dataclass(frozen=True)
class Split:
    """One split of an export: its name and the files its reader takes."""

    name: str
    format: str  # "voc", "coco" or "yolo"
    paths: tuple[Path, ...]  # coco: the JSON; yolo: image folders / list files; voc: "<subdir>:<set>" or the folder

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)


@dataclass(frozen=True)
class Export:
    """A dataset as a tool wrote it: layout, root, splits by their own names, declared classes."""

    tool: str
    format: str
    root: Path
    splits: tuple[Split, ...]
    class_names: tuple[str, ...] | None = None  # None: the annotations' own (COCO categories, VOC names)
    image_dir: Path | None = None  # COCO: the one folder every file_name is relative to

    def split(self, name: str) -> Split:
        """A split by the export's name for it (any case), or a path or name the format reads."""
        for split in self.splits:
            if split.name == name or split.name.lower() == name.lower():
                return split
        return _named_split(self, name)

    def default_splits(self) -> tuple[list[Split], list[Split]]:
        """(train, val) by the export's own names; one split alone is the whole dataset (val empty)."""
        if len(self.splits) == 1:
            return [self.splits[0]], []
        if self.tool == "VOCdevkit":
            train = [s for s in self.splits if s.name.endswith(":trainval")]
            return train, [s for s in self.splits if s.name.endswith(":test")]
        names = {s.name.lower(): s for s in self.splits}
        if "trainval" in names and "test" in names:  # VOC-style sets: train and val are its parts
            return [names["trainval"]], [names["test"]]
        train = _first(self.splits, TRAIN_NAMES)
        val = _first([s for s in self.splits if s is not train], VAL_NAMES)
        if train is None:
            raise ValueError(f"{self.root} ({self.tool}): none of its splits {[s.name for s in self.splits]} is "
                             f"named like {'/'.join(TRAIN_NAMES)}: pass --train-split (and --val-split)")
        return [train], [val] if val else []


def _first(splits: Sequence[Split], names: Sequence[str]) -> Split | None:
    """The split whose name (lower case, digits dropped: "train2017") is the first of `names`."""
    for name in names:
        for split in splits:
            if re.sub(r"\d+$", "", split.name.lower()) == name:
                return split
    return None


def recognise(path: str | os.PathLike, data_format: str | None = None,
              image_dir: str | os.PathLike | None = None) -> Export:
    """The export at `path` (a folder, a data.yaml or a COCO .json); `data_format` limits the layouts tried."""
    path = Path(path).expanduser()
    if data_format is not None and data_format not in DATA_FORMATS:
        raise ValueError(f"data format must be one of {DATA_FORMATS}, got {data_format!r}")
    if not path.exists():
        raise FileNotFoundError(f"--data-root {path} does not exist")
    image = Path(image_dir) if image_dir is not None else None
    if image is not None and not image.is_dir():
        raise FileNotFoundError(f"--images {image} is not a folder")
    for recogniser, fmt in _RECOGNISERS:
        if data_format in (None, fmt):
            export = recogniser(path, image)
            if export is not None:
                return export
    raise ValueError(f"--data-root {path}: not a dataset export this library knows (looked for data.yaml, "
                     f"{LABEL_STUDIO_JSON}, <split>/{ROBOFLOW_JSON}, annotations/*.json, images/ + labels/, "
                     f"Annotations/ or .xml files); the README's \"Your own data\" table lists the layouts")


def _ultralytics(path: Path, image_dir: Path | None) -> Export | None:
    yaml = path if names_a_file(path) and path.suffix.lower() in (".yaml", ".yml") else next(
        (path / n for n in YAML_NAMES if path.is_dir() and names_a_file(path / n)), None)
    if yaml is None:
        return None
    if path.is_dir() and not _has_split_keys(yaml):  # names only: a YOLO folder (images/, labels/)
        return None
    data = read_data_yaml(yaml)
    splits = tuple(Split(key, "yolo", tuple(data.entry_path(e) for e in entries))
                   for key, entries in data.splits.items())
    return Export("Ultralytics YOLO", "yolo", data.root, splits, data.names)


def _has_split_keys(yaml: Path) -> bool:
    # Only a look at its keys: bad UTF-8 is named later, when read_data_yaml reads the file.
    text = read_regular(yaml, "dataset YAML file").decode("utf-8", errors="replace")
    return bool(re.search(r"^(train|val)\s*:", text, re.MULTILINE))


def _coco_file(path: Path, image_dir: Path | None) -> Export | None:
    if path.is_dir() and names_a_file(path / LABEL_STUDIO_JSON):
        path = path / LABEL_STUDIO_JSON
    if not (names_a_file(path) and path.suffix.lower() == ".json"):
        return None
    tool = "Label Studio COCO" if path.name == LABEL_STUDIO_JSON else "COCO file"
    name = path.parent.name if path.name == ROBOFLOW_JSON else path.stem.removeprefix("instances_")
    return Export(tool, "coco", path.parent, (Split(name, "coco", (path,)),), image_dir=image_dir)


def _roboflow(path: Path, image_dir: Path | None) -> Export | None:
    if not path.is_dir():
        return None
    files = sorted(path.glob(f"*/{ROBOFLOW_JSON}"))
    if not files:
        return None
    splits = tuple(Split(f.parent.name, "coco", (f,)) for f in files)
    return Export("Roboflow COCO", "coco", path, splits, image_dir=image_dir)


def _coco_folder(path: Path, image_dir: Path | None) -> Export | None:
    files = sorted((path / "annotations").glob("*.json")) if path.is_dir() else []
    if not files:
        return None
    splits = tuple(Split(f.stem.removeprefix("instances_"), "coco", (f,)) for f in files)
    return Export("COCO (annotations/*.json)", "coco", path, splits, image_dir=image_dir)


def _yolo_folder(path: Path, image_dir: Path | None) -> Export | None:
    if not (path.is_dir() and (path / "labels").is_dir() and (path / "images").is_dir()):
        return None
    lists = [f for f in sorted(path.glob("*.txt")) if f.name != "classes.txt"]
    folders = sorted(d for d in (path / "images").iterdir() if d.is_dir())
    splits = tuple(Split(f.stem, "yolo", (f,)) for f in lists) + tuple(
        Split(d.name, "yolo", (d,)) for d in folders if d.name not in {f.stem for f in lists})
    names = yolo_class_names(path) if any(names_a_file(path / n) for n in ("data.yaml", "classes.txt")) else None
    return Export("YOLO folder", "yolo", path, splits or (Split("images", "yolo", (path / "images",)),), names)


def _vocdevkit(path: Path, image_dir: Path | None) -> Export | None:
    years = sorted(d for d in path.iterdir() if d.is_dir() and (d / "Annotations").is_dir()
                   and (d / "ImageSets" / "Main").is_dir()) if path.is_dir() else []
    if not years:
        return None
    splits = tuple(Split(f"{d.name}:{s.stem}", "voc", (path,)) for d in years for s in _image_sets(d))
    return Export("VOCdevkit", "voc", path, splits, _voc_names(path) or VOC_CLASSES)


def _voc_image_sets(path: Path, image_dir: Path | None) -> Export | None:
    if not (path.is_dir() and (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()):
        return None
    splits = tuple(Split(s.stem, "voc", (path,)) for s in _image_sets(path))
    return Export("VOC (ImageSets/Main)", "voc", path, splits, _voc_names(path))


def _voc_folder(path: Path, image_dir: Path | None) -> Export | None:
    if not (path.is_dir() and annotation_files(path)):
        return None
    return Export("VOC XML folder", "voc", path, (Split(path.name or "all", "voc", (path,)),), _voc_names(path))


def _image_sets(folder: Path) -> list[Path]:
    """ImageSets/Main/<set>.txt files, without VOC's per-class lists (<class>_<set>.txt)."""
    files = sorted((folder / "ImageSets" / "Main").glob("*.txt"))
    stems = {f.stem for f in files}
    return [f for f in files if not ("_" in f.stem and f.stem.rsplit("_", 1)[1] in stems)]


def _voc_names(root: Path) -> tuple[str, ...] | None:
    """Classes declared by classes.txt or CVAT's labelmap.txt (without its background), else None."""
    if names_a_file(root / CLASSES_FILE):
        names = tuple(read_lines(root / CLASSES_FILE, "class names file"))
        if not names:
            raise ValueError(f"{root / CLASSES_FILE} names no classes: write one class name per line")
        return names
    if names_a_file(root / CVAT_LABELMAP):  # "# label:color_rgb:parts:actions" then "name:r,g,b::" lines
        names = tuple(n for line in read_lines(root / CVAT_LABELMAP, "label map") if not line.startswith("#")
                      if (n := line.split(":")[0].strip()) and n != "background")
        return names or None
    return None


_RECOGNISERS = ((_ultralytics, "yolo"), (_coco_file, "coco"), (_roboflow, "coco"), (_coco_folder, "coco"),
                (_yolo_folder, "yolo"), (_vocdevkit, "voc"), (_voc_image_sets, "voc"), (_voc_folder, "voc"))


def _named_split(export: Export, name: str) -> Split:
    """A split the export does not list under that name: a path or name its format reads."""
    root = export.root
    if export.format == "coco":
        path = Path(name) if os.path.isabs(name) else root / name
        if name.endswith(".json") and names_a_file(path):
            return Split(path.stem, "coco", (path,))
        path = root / "annotations" / f"instances_{name}.json"
        if names_a_file(path):
            return Split(name, "coco", (path,))
    elif export.format == "yolo":
        for candidate in (Path(name), root / name, root / "images" / name, root / f"{name}.txt"):
            if candidate.exists():
                return Split(name, "yolo", (candidate,))
    elif export.format == "voc":
        subdir, set_name = parse_split(name)
        if names_a_file(root / subdir / "ImageSets" / "Main" / f"{set_name}.txt"):
            return Split(name, "voc", (root,))
    own = ", ".join(s.name for s in export.splits) or "none"
    raise FileNotFoundError(f"--data-root {root} ({export.tool}): no split {name!r}; its splits: {own}")


def split_image_files(entry: Path) -> list[Path]:
    """A YOLO split entry's images: a folder's image files (recursive, sorted), or a list file's lines
    (relative lines are relative to the list file's folder, as Ultralytics reads "./" lines)."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if names_a_file(entry):
        lines = read_lines(entry, "image list file")
        return [Path(line) if os.path.isabs(line) else entry.parent / line.removeprefix("./") for line in lines]
    raise FileNotFoundError(f"YOLO split {entry}: no such folder or list file")


def load_split(export: Export, split: Split, include_difficult: bool = True, include_crowd: bool = True,
               strict: bool = False) -> tuple[DetectionDataset, LoadReport]:
    """One split with the export's own classes (VOC without declared classes: its names, sorted)."""
    if split.format == "coco":
        folders = [export.image_dir] if export.image_dir else image_folders(split.paths[0], export.root)
        return load_coco_with_report(split.paths[0], folders, include_crowd=include_crowd and include_difficult,
                                     strict=strict)
    if split.format == "yolo":
        names = export.class_names
        if names is None:
            raise FileNotFoundError(f"{export.root} has neither data.yaml nor classes.txt: the YOLO classes are "
                                    "unnamed; pass --classes a,b,c (in the order of the class ids)")
        images = [image for entry in split.paths for image in split_image_files(entry)]
        return load_yolo_images_with_report(export.root, images, names, strict)
    if export.tool == "VOC XML folder":
        return load_voc_folder_with_report(split.paths[0], export.class_names, include_difficult, strict)
    return load_voc_with_report(split.paths[0], [split.name], export.class_names, include_difficult, strict)
