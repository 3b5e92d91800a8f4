"""A folder of VOC XML files without `ImageSets/` (LabelImg's output) -> `DetectionDataset`.

LabelImg saves `<image stem>.xml` beside each image, or into an annotation folder of its own;
every annotated image is the dataset. An XML file's image is the file of the same stem with an
image suffix (any case), looked for in this order: beside the XML, in `images/` or
`JPEGImages/` next to the XML's folder, in the folder above. The XML's own `<path>` is not used:
LabelImg writes the absolute path on the machine that labelled it. Image ids are the XML paths
relative to the root, without suffix ("000005", "train/000005").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ssd_datasets.report import FILE_MISSING, LoadReport
from ssd_datasets.yolo import IMAGE_SUFFIXES
from ssd_datasets.voc import add_annotation, finish, load_context
from ssd.image_header import names_a_file
from ssd.records import DetectionDataset

logger = logging.getLogger(__name__)




def annotation_files(root: str | os.PathLike) -> list[Path]:
    """Every .xml file under `root`, sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() == ".xml" and names_a_file(p))


def _image_folders(xml: Path) -> list[Path]:
    return [xml.parent, xml.parent.parent / "images", xml.parent.parent / "JPEGImages", xml.parent.parent]


class _ImageIndex:
    """Image files by (folder, stem), one listing per folder."""

    def __init__(self) -> None:
        self._stems: dict[Path, dict[str, str]] = {}

    def find(self, xml: Path) -> str | None:
        for folder in _image_folders(xml):
            name = self._listing(folder).get(xml.stem)
            if name:
                return str(folder / name)
        return None

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._stems:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            self._stems[folder] = {}
            for name in names:
                stem, suffix = os.path.splitext(name)
                if suffix.lower() in IMAGE_SUFFIXES:
                    self._stems[folder].setdefault(stem, name)
        return self._stems[folder]


def load_voc_folder_with_report(root: str | os.PathLike, class_names: Sequence[str] | None = None,
                                include_difficult: bool = True, strict: bool = False,
                                check_images: bool = True) -> tuple[DetectionDataset, LoadReport]:
    """Every annotated image under `root` (boxes "xyxy", 0-based pixels, as `load_voc`).

    Args:
        class_names: classes 1..C in this order (objects of others are skipped); None: the names
            the annotations use, sorted.
    """
    root = Path(root)
    files = annotation_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no VOC annotation (.xml) files in it or its subfolders")
    ctx = load_context(class_names, include_difficult, strict)
    index, samples = _ImageIndex(), []
    for xml in files:
        image = index.find(xml)
        if image is None:
            missing = str(xml.with_suffix(".jpg"))
            ctx.issue(str(xml), f"no image named {xml.stem}.* beside it or in "
                      f"{', '.join(str(f) for f in _image_folders(xml)[1:])}", "skipped file", FILE_MISSING, missing)
            continue
        add_annotation(ctx, samples, str(xml), xml.relative_to(root).with_suffix("").as_posix(), image, check_images)
    return finish(ctx, samples, class_names, root)
